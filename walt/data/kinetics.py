"""Kinetics(-600) from the official annotation CSVs, or from class folders when there are none.

CSV layout (what the download scripts leave):
    <root>/annotations/{train,val|validate}.csv   (also <root>/<name>.csv, kinetics_600_<name>.csv)
        columns label,youtube_id,time_start,time_end[,split]
    <root>/<split_dir>/...                         the files, flat or in any sub-folders (class folders)
        named <youtube_id>_<start:06d>_<end:06d>.<ext> (trimmed 10 s clips: the whole file is the clip)
        or <youtube_id>.<ext> (the full video: clips are taken inside [time_start, time_end])
The class index is the sorted set of labels of every annotation CSV found, so train and val agree
and a partial download never shifts labels. Rows whose file is absent are dropped with one summary line.
Class-folder layout without CSVs: <root>/<split_dir>/<class>/<video>, as walt.data.datasets.VideoFolder.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from walt.data.datasets import VIDEO_EXTENSIONS, ClipDataset, Entry, VideoFolder, require_dir
from walt.data.health import SplitHealth

SPLIT_ALIASES = {"train": ("train", "training"), "val": ("val", "validate", "validation"), "test": ("test", "testing")}
CSV_DIRS = ("annotations", ".")
CSV_PATTERNS = ("{}.csv", "kinetics_600_{}.csv", "kinetics600_{}.csv", "k600_{}.csv")


def aliases(split: str) -> tuple[str, ...]:
    """'validate' -> ('val', 'validate', 'validation'): the names one split goes by."""
    return next((names for names in SPLIT_ALIASES.values() if split in names), (split,))


def find_annotation(root: str | os.PathLike, split: str) -> Path | None:
    """The annotation CSV of `split` under root (see the module docstring), or None."""
    for folder in CSV_DIRS:
        for name in aliases(split):
            for pattern in CSV_PATTERNS:
                path = Path(root) / folder / pattern.format(name)
                if path.is_file():
                    return path
    return None


def read_annotation(path: Path, split: str) -> list[dict]:
    """Rows of one annotation CSV (the rows of `split` when the file has a split column)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"label", "youtube_id", "time_start", "time_end"}
    if rows and not need <= set(rows[0]):
        raise ValueError(f"{path}: expected columns {sorted(need)} (label,youtube_id,time_start,time_end,split), "
                         f"found {list(rows[0])}")
    if rows and "split" in rows[0]:
        names = aliases(split)
        kept = [r for r in rows if r["split"] in names]
        if not kept:
            raise ValueError(f"{path} has no rows whose split column is one of {names} "
                             f"(found {sorted({r['split'] for r in rows})})")
        rows = kept
    return rows


def kinetics_classes(root: str, split_dirs: list[str]) -> list[str]:
    """The class index: sorted labels of every annotation CSV found, else the class folders of the
    first split folder that exists."""
    labels = set()
    for split in split_dirs:
        path = find_annotation(root, split)
        if path is not None:
            labels |= {r["label"] for r in read_annotation(path, split)}
    if labels:
        return sorted(labels)
    for split in split_dirs:
        base = Path(root) / split
        if base.is_dir():
            return sorted(p.name for p in base.iterdir() if p.is_dir())
    return []


def video_files(base: Path) -> dict[str, str]:
    """stem -> path of every video file under base (flat or nested); the first in sorted order wins."""
    found: dict[str, str] = {}
    for folder, dirs, files in os.walk(base):
        dirs.sort()
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() in VIDEO_EXTENSIONS:
                found.setdefault(stem, os.path.join(folder, name))
    return found


class KineticsCSV(ClipDataset):
    """One split from its annotation CSV and the files under <root>/<split_dir> (module docstring).

    classes: the class index (kinetics_classes over all splits); None = this CSV's labels, sorted.
    """

    def __init__(self, root: str, split: str = "train", classes: list[str] | None = None,
                 annotation: Path | None = None, **kw):
        super().__init__(**kw)
        annotation = annotation or find_annotation(root, split)
        if annotation is None:
            raise FileNotFoundError(f"no annotation CSV for split '{split}' under {root} (looked for "
                                    f"{CSV_DIRS[0]}/{CSV_PATTERNS[0].format(split)} and the names in walt.data.kinetics)")
        base = Path(root) / split
        require_dir(base, f"Kinetics split folder '{split}'")
        rows = read_annotation(annotation, split)
        self.source = str(annotation)
        self.health = SplitHealth(f"kinetics {split} split ({annotation}, files under {base})")
        self.split_classes = {r["label"] for r in rows}
        self.classes = list(classes) if classes is not None else sorted(self.split_classes)
        label_of = {c: i for i, c in enumerate(self.classes)}
        unknown = self.split_classes - set(label_of)
        if unknown:
            raise ValueError(f"{annotation} has labels outside the class index: {sorted(unknown)[:5]}")
        files = video_files(base)
        missing = []
        for r in rows:
            start, end = int(float(r["time_start"])), int(float(r["time_end"]))
            trimmed = f"{r['youtube_id']}_{start:06d}_{end:06d}"
            caption = r["label"].replace("_", " ")
            if trimmed in files:
                self.items.append(Entry(files[trimmed], label_of[r["label"]], caption))
            elif r["youtube_id"] in files:  # the full video: sample inside the annotated segment
                self.items.append(Entry(files[r["youtube_id"]], label_of[r["label"]], caption,
                                        (float(r["time_start"]), float(r["time_end"]))))
            else:
                missing.append(str(base / f"{trimmed}.mp4"))
        self.health.listed, self.health.missing = len(rows), missing
        self.health.log_missing()


def kinetics(root: str, split: str, classes: list[str] | None = None, **kw) -> ClipDataset:
    """A split from its annotation CSV when there is one, else from class folders."""
    annotation = find_annotation(root, split)
    if annotation is not None:
        return KineticsCSV(root, split, classes, annotation, **kw)
    return VideoFolder(root, split, classes, **kw)
