"""Clip datasets over on-disk layouts: UCF-101 (and the synthetic set), class-folder video trees
(Kinetics-600) and image folders (ImageNet, as 1-frame clips).

Each item is a dict: video (C, T, H, W) float in [-1, 1], label (int), caption (str), index (int)
and skipped (int: unreadable files passed over to produce this item). A corrupt, empty or too
short file is never fatal: it is logged once per process, remembered, and the next file is used.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
from torch.utils.data import Dataset

from walt.data.video import ClipSpec, Sampling, VideoDecodeError, read_clip, resize_crop, to_model_range

log = logging.getLogger(__name__)
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov")
MAX_CONSECUTIVE_SKIPS = 64


def camel_to_words(name: str) -> str:
    """'ApplyEyeMakeup' -> 'apply eye makeup' (UCF class names as captions)."""
    return " ".join(re.findall(r"[A-Z][a-z]*|[a-z]+|\d+", name)).lower()


class ClipDataset(Dataset):
    """A list of (path, label, caption) read as fixed-size clips; subclasses build the list."""

    def __init__(self, clip: ClipSpec, resolution: int, crop: Sampling = Sampling.center):
        self.clip, self.resolution, self.crop = clip, resolution, crop
        self.items: list[tuple[str, int, str]] = []
        self.classes: list[str] = []
        self.bad: dict[str, str] = {}  # path -> reason, per process

    def __len__(self) -> int:
        return len(self.items)

    def load(self, path: str) -> torch.Tensor:
        """Decoded, resized and cropped clip (C, T, H, W) in [-1, 1]."""
        return resize_crop(to_model_range(read_clip(path, self.clip)), self.resolution, self.crop)

    def __getitem__(self, index: int) -> dict:
        skipped = 0
        for offset in range(min(len(self.items), MAX_CONSECUTIVE_SKIPS)):
            i = (index + offset) % len(self.items)
            path, label, caption = self.items[i]
            if path in self.bad:
                skipped += 1
                continue
            try:
                video = self.load(path)
            except (VideoDecodeError, OSError) as err:
                self.bad[path] = str(err)
                log.warning("skipping unreadable clip (%d skipped in this process): %s", len(self.bad), err)
                skipped += 1
                continue
            return {"video": video, "label": label, "caption": caption, "index": i, "skipped": skipped}
        raise RuntimeError(
            f"{skipped} consecutive unreadable files from index {index} in {type(self).__name__}; "
            f"first: {next(iter(self.bad.items()), None)}. Check the dataset root."
        )


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path} (set data.root to the dataset directory)")


class UCF101(ClipDataset):
    """UCF-101 layout: <root>/<Class>/<video>, <root>/ucfTrainTestlist/{classInd,trainlist0N,testlist0N}.txt.

    split: 1..3 (the official three splits); train: train list or test list.
    Captions come from <root>/captions.json when present, else from the class name.
    """

    def __init__(self, root: str, split: int = 1, train: bool = True, **kw):
        super().__init__(**kw)
        root_path = Path(root)
        lists = root_path / "ucfTrainTestlist"
        _require_dir(root_path, "UCF-101 root")
        _require_dir(lists, "UCF-101 split lists (ucfTrainTestlist/)")
        if split not in (1, 2, 3):
            raise ValueError(f"UCF-101 split must be 1, 2 or 3, got {split}")
        ind = [line.split() for line in (lists / "classInd.txt").read_text().splitlines() if line.strip()]
        self.classes = [name for _, name in sorted(ind, key=lambda p: int(p[0]))]
        label_of = {name: i for i, name in enumerate(self.classes)}
        captions_file = root_path / "captions.json"
        captions = json.loads(captions_file.read_text()) if captions_file.exists() else {}
        list_file = lists / f"{'train' if train else 'test'}list0{split}.txt"
        for line in list_file.read_text().splitlines():
            if not line.strip():
                continue
            rel = line.split()[0]
            cls = rel.split("/")[0]
            self.items.append((str(root_path / rel), label_of[cls], captions.get(rel, camel_to_words(cls))))


class VideoFolder(ClipDataset):
    """Class-folder tree <root>/<split>/<class>/<video> (Kinetics-600 as distributed by the k600 scripts)."""

    def __init__(self, root: str, split: str = "train", **kw):
        super().__init__(**kw)
        base = Path(root) / split
        _require_dir(base, f"video folder split '{split}'")
        self.classes = sorted(p.name for p in base.iterdir() if p.is_dir())
        for label, cls in enumerate(self.classes):
            for path in sorted((base / cls).iterdir()):
                if path.suffix.lower() in VIDEO_EXTENSIONS:
                    self.items.append((str(path), label, cls.replace("_", " ")))
        if not self.items:
            raise FileNotFoundError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) under {base}")


class ImageFolderClips(ClipDataset):
    """ImageNet-style <root>/<split>/<wnid>/<image> read as 1-frame clips (C, 1, H, W)."""

    def __init__(self, root: str, split: str = "train", **kw):
        super().__init__(**kw)
        from torchvision.datasets import ImageFolder

        base = Path(root) / split
        _require_dir(base, f"image folder split '{split}'")
        folder = ImageFolder(str(base))
        self.classes = folder.classes
        self.items = [(path, label, folder.classes[label]) for path, label in folder.samples]

    def load(self, path: str) -> torch.Tensor:
        from torchvision.io import ImageReadMode, decode_image

        try:
            image = decode_image(path, mode=ImageReadMode.RGB)  # (3, H, W) uint8
        except RuntimeError as err:
            raise VideoDecodeError(f"cannot decode image {path}: {err}") from err
        video = image.unsqueeze(1).float().div_(127.5).sub_(1.0)  # (C, 1, H, W)
        return resize_crop(video, self.resolution, self.crop)
