"""Clip datasets over on-disk layouts: the shared base (index, probe, unreadable-file handling),
UCF-101 (and the synthetic set) and class-folder video trees. Kinetics annotation CSVs live in
kinetics.py, ImageNet in imagenet.py.

Each item is a dict: video (C, T, H, W) uint8 pixels (video.to_model_range: the models' [-1, 1]),
label (int), caption (str), index (int: the item actually returned), skipped (int: unreadable files
passed over to produce it) and bad_files (str: the failures first met by this item, see
health.encode_failures; "" normally).
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import Dataset

from walt.data.health import SplitHealth, encode_failures, probe_split
from walt.data.video import (ClipSpec, Reason, Sampling, VideoDecodeError, channels_first, probe, read_clip,
                             resize_crop)
from walt.utils import mix_seed

log = logging.getLogger(__name__)
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov")
MAX_ATTEMPTS = 16  # files tried for one item before giving up (a run of bad files this long means a bad root)


class Entry(NamedTuple):
    """One indexed file. segment: (start_s, end_s) to sample inside, for untrimmed videos; None = whole file."""

    path: str
    label: int
    caption: str
    segment: tuple[float, float] | None = None


def camel_to_words(name: str) -> str:
    """'ApplyEyeMakeup' -> 'apply eye makeup' (UCF class names as captions)."""
    return " ".join(re.findall(r"[A-Z][a-z]*|[a-z]+|\d+", name)).lower()


def replacement(index: int, attempt: int, size: int) -> int:
    """The item tried instead of `index` after `attempt + 1` failures: pseudo-random but fixed in
    (index, attempt), so every worker and every rerun agrees, and the replacements of different bad
    files spread over the whole set instead of doubling the weight of one neighbour."""
    return random.Random(mix_seed(index, attempt)).randrange(size)


class ClipDataset(Dataset):
    """A list of Entry read as fixed-size clips; subclasses build `items`, `classes` and `health`.

    A file that fails to decode is never fatal and never replaced by its neighbour: the item is
    taken from `replacement(...)` instead (the batch keeps its size, no clip is oversampled) and the
    failure travels with the item to the main process, which counts it once per file. Files are
    listed in `self.failed` per process, so each is decoded (and logged) at most once per worker.

    seek / decode_resized: read_clip's fast paths (keyframe seek; decode straight to the short
    side = resolution). Attributes, so benchmarks can compare them.
    """

    def __init__(self, clip: ClipSpec, resolution: int, crop: Sampling = Sampling.center):
        self.clip, self.resolution, self.crop = clip, resolution, crop
        self.seek, self.decode_resized = True, True
        self.items: list[Entry] = []
        self.classes: list[str] = []
        self.split_classes: set[str] | None = None  # classes this split's list names; None = all of `classes`
        self.source = ""  # the list / annotation / folder the index comes from (for messages)
        self.health = SplitHealth(type(self).__name__)
        self.failed: dict[str, VideoDecodeError] = {}  # per process

    def __len__(self) -> int:
        return len(self.items)

    def load(self, entry: Entry) -> torch.Tensor:
        """Decoded, resized and cropped clip, uint8 (C, T, H, W)."""
        frames = read_clip(entry.path, self.clip, short_side=self.resolution if self.decode_resized else None,
                           segment=entry.segment, seek=self.seek)
        return resize_crop(channels_first(frames), self.resolution, self.crop)

    def check(self, entry: Entry) -> None:
        """Header-only check of one file: opens, has video, spans a clip (raises VideoDecodeError)."""
        info = probe(entry.path)
        first, end = info.segment_frames(entry.segment)
        if info.frames > 0 and end - first < self.clip.span:
            where = f" in segment {entry.segment[0]:g}-{entry.segment[1]:g} s" if entry.segment else ""
            raise VideoDecodeError(entry.path, Reason.too_short,
                                   f"{end - first} frames{where}, a clip spans {self.clip.span}")

    def probe(self) -> None:
        """Check every file's header and drop the bad ones from the index (recorded in `health`)."""
        bad = probe_split(self.items, self.check, self.health)
        if bad:
            self.items = [e for e in self.items if e.path not in bad]

    def __getitem__(self, index: int) -> dict:
        failures, i = [], index
        for attempt in range(MAX_ATTEMPTS):
            entry = self.items[i]
            if entry.path not in self.failed:
                try:
                    video = self.load(entry)
                except VideoDecodeError as err:
                    self.failed[entry.path] = err
                    failures.append(err)
                    log.warning("skipping unreadable file (item %d, trying item %d instead): %s",
                                i, replacement(index, attempt, len(self.items)), err)
                else:
                    return {"video": video, "label": entry.label, "caption": entry.caption, "index": i,
                            "skipped": attempt, "bad_files": encode_failures(failures)}
            i = replacement(index, attempt, len(self.items))
        raise RuntimeError(
            f"{MAX_ATTEMPTS} unreadable files in a row for item {index} of {self.health.name}; known bad files "
            f"in this process: " + "; ".join(str(e) for e in list(self.failed.values())[:5])
        )


def require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path} (set data.root to the dataset directory)")


def drop_missing(entries: list[Entry], health: SplitHealth) -> list[Entry]:
    """Keep the entries whose file exists; record listed / missing and log the one summary line."""
    health.listed = len(entries)
    exists = [os.path.isfile(e.path) for e in entries]
    health.missing = [e.path for e, ok in zip(entries, exists) if not ok]
    health.log_missing()
    return [e for e, ok in zip(entries, exists) if ok]


class UCF101(ClipDataset):
    """UCF-101 layout: <root>/<Class>/<video>, <root>/ucfTrainTestlist/{classInd,trainlist0N,testlist0N}.txt.

    split: 1..3 (the official three splits); train: train list or test list. Files the list names
    but the disk lacks (a partial download) are dropped with one summary line.
    Captions come from <root>/captions.json when present, else from the class name.
    """

    def __init__(self, root: str, split: int = 1, train: bool = True, **kw):
        super().__init__(**kw)
        root_path = Path(root)
        lists = root_path / "ucfTrainTestlist"
        require_dir(root_path, "UCF-101 root")
        require_dir(lists, "UCF-101 split lists (ucfTrainTestlist/)")
        if split not in (1, 2, 3):
            raise ValueError(f"UCF-101 split must be 1, 2 or 3, got {split}")
        class_file = lists / "classInd.txt"
        ind = [line.split() for line in class_file.read_text().splitlines() if line.strip()]
        self.classes = [name for _, name in sorted(ind, key=lambda p: int(p[0]))]
        label_of = {name: i for i, name in enumerate(self.classes)}
        captions_file = root_path / "captions.json"
        captions = json.loads(captions_file.read_text()) if captions_file.exists() else {}
        list_file = lists / f"{'train' if train else 'test'}list0{split}.txt"
        self.source = str(list_file)
        self.health = SplitHealth(f"ucf101 {list_file.name} ({list_file})")
        entries = []
        for n, line in enumerate(list_file.read_text().splitlines(), 1):
            if not line.strip():
                continue
            rel = line.split()[0]
            cls = rel.split("/")[0]
            if cls not in label_of:
                raise ValueError(f"class {cls!r} of {list_file} line {n} ({rel}) is not in {class_file} "
                                 f"({len(self.classes)} classes); the two files come from different releases?")
            entries.append(Entry(str(root_path / rel), label_of[cls], captions.get(rel, camel_to_words(cls))))
        self.split_classes = {self.classes[e.label] for e in entries}
        self.items = drop_missing(entries, self.health)


class VideoFolder(ClipDataset):
    """Class-folder tree <root>/<split>/<class>/<video> (Kinetics-600 as sorted by the k600 scripts).

    classes: the class index to use (e.g. the train split's); None = this split's folders, sorted.
    """

    def __init__(self, root: str, split: str = "train", classes: list[str] | None = None, **kw):
        super().__init__(**kw)
        base = Path(root) / split
        require_dir(base, f"video folder split '{split}'")
        self.source = str(base)
        self.health = SplitHealth(f"{split} split ({base})")
        folders = sorted(p.name for p in base.iterdir() if p.is_dir())
        self.classes = list(classes) if classes is not None else folders
        self.split_classes = set(folders)
        label_of = {c: i for i, c in enumerate(self.classes)}
        for cls in folders:
            if cls not in label_of:
                raise ValueError(f"class folder {base / cls} is not one of the {len(self.classes)} classes of the index")
            for path in sorted((base / cls).iterdir()):
                if path.suffix.lower() in VIDEO_EXTENSIONS:
                    self.items.append(Entry(str(path), label_of[cls], cls.replace("_", " ")))
        if not self.items:
            raise FileNotFoundError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) under {base}")
        self.health.listed = len(self.items)
