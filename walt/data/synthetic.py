"""Embedded "moving shapes" video dataset, written as real video files in the UCF-101 layout.

The class of a clip is its (shape, motion direction) pair: what a video model has to get right.
Colour, speed, background and start position vary inside a class as nuisance factors, and each
clip has a caption naming all of them (for text-conditioned stages). Generation is deterministic
in (seed, class, group, clip), so two machines build byte-identical frame arrays, and the files are
encoded at a fixed quantiser (walt.data.video.write_video), so two generations give the same files.

Layout (the same loader as real UCF-101 reads it):
    <root>/<Class>/v_<Class>_gGG_cCC.mp4
    <root>/ucfTrainTestlist/{classInd.txt, trainlist0K.txt, testlist0K.txt}   K = 1..3
    <root>/captions.json     {"<Class>/v_..._gGG_cCC.mp4": "a red circle moving left ..."}
"""
from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from walt.data.video import write_video

SHAPES = ("circle", "square", "triangle", "diamond")
DIRECTIONS = {  # name -> unit (dy, dx)
    "right": (0.0, 1.0), "left": (0.0, -1.0), "down": (1.0, 0.0), "up": (-1.0, 0.0),
    "downright": (0.7071, 0.7071), "upleft": (-0.7071, -0.7071),
    "downleft": (0.7071, -0.7071), "upright": (-0.7071, 0.7071),
}
COLOURS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (240, 220, 40),
           "magenta": (220, 50, 220), "cyan": (40, 220, 220)}
BACKGROUNDS = {"black": (0, 0, 0), "grey": (110, 110, 110), "white": (245, 245, 245)}
SPEEDS = {"slowly": 0.5, "quickly": 1.0}  # fraction of the free travel distance covered by the clip
MAX_CLASSES = len(SHAPES) * len(DIRECTIONS)
SPLIT_FILE_DIR = "ucfTrainTestlist"
NUM_SPLITS = 3


@dataclass(frozen=True)
class SyntheticSpec:
    """What the generator writes.

    num_classes: classes = first N (shape, direction) pairs, at most 32.
    num_groups: UCF-style groups per class; each split holds out about 7/25 of them for test.
    clips_per_group: clips per (class, group).
    num_frames, resolution, fps: clip geometry (resolution must be even for yuv420p).
    seed: master seed; the same spec gives the same frames.
    """

    num_classes: int = 8
    num_groups: int = 25
    clips_per_group: int = 1
    num_frames: int = 17
    resolution: int = 64
    fps: int = 8
    seed: int = 0

    def __post_init__(self):
        if not 1 <= self.num_classes <= MAX_CLASSES:
            raise ValueError(f"num_classes must be in 1..{MAX_CLASSES}, got {self.num_classes}")
        if self.resolution % 2 or self.resolution < 8:
            raise ValueError(f"resolution must be even and >= 8, got {self.resolution}")
        if self.num_groups < 2:
            raise ValueError(f"num_groups must be >= 2 so that train and test both get videos, got {self.num_groups}")


def class_names(num_classes: int) -> list[str]:
    pairs = list(itertools.product(SHAPES, DIRECTIONS))[:num_classes]
    return [f"{s.capitalize()}{d.capitalize()}" for s, d in pairs]


def class_attributes(label: int) -> tuple[str, str]:
    return list(itertools.product(SHAPES, DIRECTIONS))[label]


def held_out_groups(split: int, num_groups: int) -> set[int]:
    """Groups (1-based) held out for test in split 1..3; UCF-101 uses blocks of 7 of its 25."""
    block = math.ceil(num_groups * 7 / 25)
    return {g for g in range(1, num_groups + 1) if (g - 1) // block == split - 1}


def _shape_mask(shape: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    if shape == "diamond":
        return np.abs(dy) + np.abs(dx) <= r
    # triangle pointing up: below the two slanted edges and above the base
    return (dy <= r * 0.8) & (dy >= -r + 2 * np.abs(dx))


def render_clip(label: int, rng: np.random.Generator, num_frames: int, resolution: int) -> tuple[np.ndarray, str]:
    """One clip as uint8 (T, H, W, 3) and its caption."""
    shape, direction = class_attributes(label)
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    if colour in ("yellow", "cyan") and background == "white":
        background = "black"  # keep the shape visible
    speed = list(SPEEDS)[rng.integers(len(SPEEDS))]
    r = resolution * rng.uniform(0.12, 0.18)
    dy, dx = DIRECTIONS[direction]
    lo, hi = r + 1, resolution - r - 1
    travel = (hi - lo) * SPEEDS[speed]
    # start so that the whole path stays inside the frame
    start = []
    for d in (dy, dx):
        a, b = (lo, hi - d * travel) if d >= 0 else (lo - d * travel, hi)
        start.append(rng.uniform(a, max(a, b)))
    yy, xx = np.mgrid[0:resolution, 0:resolution].astype(np.float32)
    frames = np.empty((num_frames, resolution, resolution, 3), np.uint8)
    frames[:] = BACKGROUNDS[background]
    for t in range(num_frames):
        f = t / max(num_frames - 1, 1)
        mask = _shape_mask(shape, yy, xx, start[0] + dy * travel * f, start[1] + dx * travel * f, r)
        frames[t][mask] = COLOURS[colour]
    caption = f"a {colour} {shape} moving {direction} {speed} on a {background} background"
    return frames, caption


def generate(root: str | os.PathLike, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Write the dataset under `root` (atomically marked complete) and return the root."""
    root = Path(root)
    names = class_names(spec.num_classes)
    captions: dict[str, str] = {}
    for label, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        for g, c in itertools.product(range(1, spec.num_groups + 1), range(1, spec.clips_per_group + 1)):
            rng = np.random.default_rng([spec.seed, label, g, c])
            frames, caption = render_clip(label, rng, spec.num_frames, spec.resolution)
            rel = f"{name}/v_{name}_g{g:02d}_c{c:02d}.mp4"
            write_video(str(root / rel), frames, fps=spec.fps)
            captions[rel] = caption
    lists = root / SPLIT_FILE_DIR
    lists.mkdir(exist_ok=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
    for split in range(1, NUM_SPLITS + 1):
        held_out = held_out_groups(split, spec.num_groups)
        train, test = [], []
        for rel in captions:
            group = int(rel.rsplit("_g", 1)[1][:2])
            label = names.index(rel.split("/")[0]) + 1
            if group in held_out:
                test.append(rel)
            else:
                train.append(f"{rel} {label}")
        (lists / f"trainlist0{split}.txt").write_text("\n".join(train) + "\n")
        (lists / f"testlist0{split}.txt").write_text("\n".join(test) + "\n")
    (root / "captions.json").write_text(json.dumps(captions, indent=0))
    (root / "spec.json").write_text(json.dumps(spec.__dict__))  # written last: marks completion
    return root


def is_generated(root: str | os.PathLike, spec: SyntheticSpec) -> bool:
    """True when `root` holds a finished dataset made from exactly this spec."""
    path = Path(root) / "spec.json"
    return path.exists() and json.loads(path.read_text()) == spec.__dict__
