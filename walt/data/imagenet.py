"""ImageNet (and any class-folder image tree) read as 1-frame clips (C, 1, H, W).

Layouts:
    <root>/<split_dir>/<wnid>/*.JPEG             class folders (train as distributed; val when sorted)
    <root>/<split_dir>/ILSVRC2012_val_*.JPEG     flat val, labelled by one of
        <root>/LOC_val_solution.csv              (Kaggle: ImageId,PredictionString "wnid x y x y ...")
        <root>/ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt + meta.mat (devkit)
    <root>/LOC_synset_mapping.txt                optional "wnid name, synonyms": captions become names
The class index is the sorted wnids (the synset mapping's, else the train folders', else the
ground truth's), as torchvision's ImageFolder numbers them.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from walt.data.datasets import ClipDataset, Entry, drop_missing, require_dir
from walt.data.health import SplitHealth
from walt.data.video import Reason, VideoDecodeError, channels_first, resize_crop, scaled_size

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".webp")
SYNSET_MAPPING = "LOC_synset_mapping.txt"
LOC_SOLUTION = "LOC_val_solution.csv"
DEVKIT_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
DEVKIT_DIRS = ("ILSVRC2012_devkit_t12/data", "devkit/data", "data", ".")


def read_image(path: str, short_side: int) -> np.ndarray:
    """uint8 (H, W, 3) with the short side resized to `short_side`. JPEGs are decoded at a reduced
    DCT scale when that still covers the target (PIL draft mode), then resized (antialiased)."""
    try:
        if os.path.getsize(path) == 0:
            raise VideoDecodeError(path, Reason.empty, "file is empty (0 bytes)")
        with Image.open(path) as img:
            img.draft("RGB", scaled_size(img.height, img.width, short_side)[::-1])
            img = img.convert("RGB")
            h, w = scaled_size(img.height, img.width, short_side)
            if (h, w) != (img.height, img.width):
                img = img.resize((w, h), Image.BILINEAR)
            return np.array(img)  # a writable copy (torch warns on read-only arrays)
    except VideoDecodeError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise VideoDecodeError(path, Reason.unreadable, str(err)) from err


class ImageClips(ClipDataset):
    """Images as 1-frame clips; subclasses build the index."""

    def load(self, entry: Entry) -> torch.Tensor:
        frame = read_image(entry.path, self.resolution)[None]  # (1, H, W, 3)
        return resize_crop(channels_first(frame), self.resolution, self.crop)

    def check(self, entry: Entry) -> None:
        """Header only: the file opens as an image (PIL reads no pixels here)."""
        try:
            if os.path.getsize(entry.path) == 0:
                raise VideoDecodeError(entry.path, Reason.empty, "file is empty (0 bytes)")
            with Image.open(entry.path) as img:
                if min(img.size) < 1:
                    raise VideoDecodeError(entry.path, Reason.no_video, f"image size {img.size}")
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise VideoDecodeError(entry.path, Reason.unreadable, str(err)) from err


def synset_names(root: str | os.PathLike) -> dict[str, str]:
    """wnid -> 'tench, Tinca tinca' from LOC_synset_mapping.txt, or the devkit's meta.mat; {} when neither."""
    mapping = Path(root) / SYNSET_MAPPING
    if mapping.is_file():
        pairs = (line.split(" ", 1) for line in mapping.read_text().splitlines() if line.strip())
        return {p[0]: (p[1] if len(p) > 1 else p[0]).strip() for p in pairs}
    meta = _devkit_dir(root)
    return {wnid: words for _, wnid, words in _devkit_meta(meta / "meta.mat")} if meta else {}


def _devkit_dir(root: str | os.PathLike) -> Path | None:
    return next((Path(root) / d for d in DEVKIT_DIRS if (Path(root) / d / DEVKIT_TRUTH).is_file()), None)


def _devkit_meta(path: Path) -> list[tuple[int, str, str]]:
    """(ILSVRC2012_ID, wnid, words) of the 1000 leaf synsets of the devkit's meta.mat."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the devkit ground truth is in ILSVRC2012 ids, which "
                                f"meta.mat maps to wnids (keep the devkit's data/ folder whole)")
    from scipy.io import loadmat

    synsets = loadmat(str(path), squeeze_me=True)["synsets"]
    return [(int(s["ILSVRC2012_ID"]), str(s["WNID"]), str(s["words"]))
            for s in synsets if int(s["num_children"]) == 0]


def _class_folders(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def imagenet_classes(root: str, split_dirs: list[str]) -> list[str]:
    """The class index: sorted wnids of the synset mapping, else of the first split with class
    folders, else of the validation ground truth."""
    mapping = Path(root) / SYNSET_MAPPING
    if mapping.is_file():
        return sorted(synset_names(root))
    for split in split_dirs:
        if folders := _class_folders(Path(root) / split):
            return folders
    for split in split_dirs:
        truth = flat_ground_truth(root, Path(root) / split)
        if truth is not None:
            return sorted(set(truth[1].values()))
    return []


def flat_ground_truth(root: str, base: Path) -> tuple[Path, dict[str, str]] | None:
    """(source file, image stem -> wnid) of a flat val folder, or None when no ground truth is found."""
    for csv_path in (Path(root) / LOC_SOLUTION, base / LOC_SOLUTION, base.parent / LOC_SOLUTION):
        if csv_path.is_file():
            with open(csv_path, newline="") as f:
                return csv_path, {r["ImageId"]: r["PredictionString"].split()[0] for r in csv.DictReader(f)}
    devkit = _devkit_dir(root)
    if devkit is not None:
        wnid_of = {i: wnid for i, wnid, _ in _devkit_meta(devkit / "meta.mat")}
        ids = [int(x) for x in (devkit / DEVKIT_TRUTH).read_text().split()]
        return devkit / DEVKIT_TRUTH, {f"ILSVRC2012_val_{n:08d}": wnid_of[i] for n, i in enumerate(ids, 1)}
    return None


class ImageNet(ImageClips):
    """One split of ImageNet: class folders, or a flat folder labelled by the ground truth (module docstring).

    classes: the class index (imagenet_classes over all splits); None = this split's wnids, sorted.
    Captions: class names when LOC_synset_mapping.txt (or the devkit) is present, else the wnid.
    """

    def __init__(self, root: str, split: str = "train", classes: list[str] | None = None, **kw):
        super().__init__(**kw)
        base = Path(root) / split
        require_dir(base, f"image folder split '{split}'")
        names = synset_names(root)
        if folders := _class_folders(base):
            self.source = str(base)
            self.health = SplitHealth(f"imagenet {split} split ({base})")
            wnid_files = [(wnid, os.path.join(base, wnid, f)) for wnid in folders
                          for f in sorted(os.listdir(base / wnid)) if f.lower().endswith(IMG_EXTENSIONS)]
            self.split_classes = set(folders)
        else:
            truth = flat_ground_truth(root, base)
            if truth is None:
                raise FileNotFoundError(
                    f"{base} has no class folders and no ground truth was found for a flat layout: put "
                    f"{LOC_SOLUTION} in {root} (Kaggle) or the devkit's data/{DEVKIT_TRUTH} + meta.mat under "
                    f"{Path(root) / DEVKIT_DIRS[0]}")
            self.source = str(truth[0])
            self.health = SplitHealth(f"imagenet {split} split ({base}, labels from {truth[0]})")
            ext = {os.path.splitext(f)[0]: os.path.splitext(f)[1] for f in os.listdir(base)
                   if f.lower().endswith(IMG_EXTENSIONS)}
            wnid_files = [(wnid, str(base / f"{stem}{ext.get(stem, '.JPEG')}")) for stem, wnid in sorted(truth[1].items())]
            self.split_classes = set(truth[1].values())
        self.classes = list(classes) if classes is not None else sorted(self.split_classes)
        label_of = {c: i for i, c in enumerate(self.classes)}
        unknown = self.split_classes - set(label_of)
        if unknown:
            raise ValueError(f"{self.source}: wnids outside the class index: {sorted(unknown)[:5]}")
        entries = [Entry(path, label_of[w], names.get(w, w)) for w, path in wnid_files]
        self.items = drop_missing(entries, self.health)
        if not self.items:
            raise FileNotFoundError(f"no images ({', '.join(IMG_EXTENSIONS)}) under {base}")
