"""DataModule throughput: clips/s of 17x128x128 clips from mp4, by worker count, decode path and item dtype.

    python benchmarks/bench_data.py [--videos 24] [--seconds 8] [--repeat 8] [--rounds 3] [--batch-size 8]

The videos are UCF-101-like: 320x240, 25 fps, `--seconds` long, a keyframe every second (web
video has one every 1-5 s), smooth moving shapes plus sensor-like noise; the train list names each
video `--repeat` times, so an epoch is many batches as on a real dataset (a DataLoader drains its
workers at every epoch end; with 3-batch epochs that drain, not decoding, set the 2-worker figure).
Configurations (workers, decode path, item dtype):
    seek+resized   keyframe seek, frames converted straight to 128 on the short side (the default)
    seek           keyframe seek, full-size RGB, torch resize
    full           decode from the first frame, full-size RGB, torch resize (the old loader)
    uint8          items carry pixels, converted to float after the transfer (the default)
    float32        items converted to [-1, 1] in the worker (the old batch contract: 4x the bytes to move)
Configurations run in interleaved rounds (A B C A B C ...) so a changing machine load hits all of
them alike; each figure is the median over rounds, and ratios are of those medians. The first
batch of every worker is excluded (start-up); workers persist across epochs. The load average is printed: on a shared
machine it bounds what extra workers can gain.
"""
import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from walt.data.datamodule import VideoDataModule
from walt.data.synthetic import SyntheticSpec, generate, render_clip
from walt.data.video import to_model_range, write_video

CLASSES = 4
CONFIGS = [(0, "full", "uint8"), (0, "seek", "uint8"), (0, "seek+resized", "uint8"), (1, "seek+resized", "uint8"),
           (2, "seek+resized", "uint8"), (2, "full", "uint8"), (1, "seek+resized", "float32"),
           (2, "seek+resized", "float32")]
DEFAULT = "seek+resized", "uint8"
RATIOS = [  # (name, numerator, denominator, of clips/s "rate" or CPU "ms" per clip); shown when both were measured
    ("seek vs full decode (0 workers)", (0, "seek", "uint8"), (0, "full", "uint8"), "rate"),
    ("decode to 128 vs full size (0 workers)", (0, *DEFAULT), (0, "seek", "uint8"), "rate"),
    ("new loader vs old, seek+resized / full (0 workers)", (0, *DEFAULT), (0, "full", "uint8"), "rate"),
    ("new loader vs old, seek+resized / full (2 workers)", (2, *DEFAULT), (2, "full", "uint8"), "rate"),
    ("1 worker vs 0 workers", (1, *DEFAULT), (0, *DEFAULT), "rate"),
    ("2 workers vs 1 worker", (2, *DEFAULT), (1, *DEFAULT), "rate"),
    ("CPU per clip, 2 workers vs 1 (1.00: no contention)", (2, *DEFAULT), (1, *DEFAULT), "ms"),
    ("uint8 vs float32 items (1 worker)", (1, *DEFAULT), (1, "seek+resized", "float32"), "rate"),
    ("uint8 vs float32 items (2 workers)", (2, *DEFAULT), (2, "seek+resized", "float32"), "rate"),
]


def make_videos(root: Path, n: int, seconds: int, fps: int = 25, repeat: int = 1) -> None:
    """n videos of 320x240 in the UCF-101 layout (classInd + trainlist01 naming each video `repeat` times)."""
    lines = []
    for i in range(n):
        label = i % CLASSES
        rng = np.random.default_rng(i)
        shapes, _ = render_clip(label, rng, seconds * fps, 240)
        frames = np.concatenate([shapes, shapes[:, :, :80]], axis=2)  # 240x320
        noise = rng.integers(-6, 7, frames.shape[1:], dtype=np.int16)
        frames = np.clip(frames.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        name = f"C{label}"
        (root / name).mkdir(parents=True, exist_ok=True)
        write_video(str(root / name / f"v_{i:03d}.mp4"), frames, fps=fps, gop=fps)
        lines.append(f"{name}/v_{i:03d}.mp4 {label + 1}")
    lists = root / "ucfTrainTestlist"
    lists.mkdir(exist_ok=True)
    (lists / "classInd.txt").write_text("".join(f"{c + 1} C{c}\n" for c in range(CLASSES)))
    (lists / "trainlist01.txt").write_text("\n".join(lines * repeat) + "\n")
    (lists / "testlist01.txt").write_text("\n".join(lines[:CLASSES]) + "\n")


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of processes (Linux /proc), plus this process's own."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = time.process_time()
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


class FloatItems(Dataset):
    """The old batch contract, for comparison: items converted to float in [-1, 1] inside the worker."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        item = self.dataset[i]
        return {**item, "video": to_model_range(item["video"])}


def clips_per_second(root: str, workers: int, path: str, batch_size: int, clips: int,
                     items: str = "uint8") -> tuple[float, float]:
    """(clips per wall-clock second, CPU milliseconds per clip over the main process and its workers). The
    main process converts every batch to float as the DataModule does after the transfer (on the CPU here)."""
    dm = VideoDataModule(dataset="ucf101", root=root, num_classes=CLASSES, num_frames=17, resolution=128,
                         batch_size=batch_size, num_workers=workers, pin_memory=False, persistent_workers=True,
                         probe=False)
    dm.setup("fit")
    dm.train_set.seek = path != "full"
    dm.train_set.decode_resized = path == "seek+resized"
    if items == "float32":
        dm.train_set = FloatItems(dm.train_set)
    loader = dm.train_dataloader()
    it = iter(loader)
    for _ in range(max(1, workers)):  # start-up: worker spawn and each worker's first batch
        next(it)
    pids = [w.pid for w in getattr(it, "_workers", [])]
    start, cpu, n = time.perf_counter(), _cpu_seconds(pids), 0
    while n < clips:
        for batch in it:
            n += dm.on_after_batch_transfer(batch, 0)["video"].shape[0]
            if n >= clips:
                break
        it = iter(loader)  # next epoch (persistent workers carry on)
    wall, cpu = time.perf_counter() - start, _cpu_seconds(pids) - cpu
    return n / wall, cpu / n * 1e3


def probe_cost(root: str, num_classes: int) -> float:
    """Milliseconds per file of the setup-time header probe (train split)."""
    dm = VideoDataModule(dataset="ucf101", root=root, num_classes=num_classes, num_frames=17, num_workers=0, probe=False)
    dm.setup("fit")
    start = time.perf_counter()
    dm.train_set.probe()
    return (time.perf_counter() - start) / len(dm.train_set) * 1e3


def _name(config: tuple[int, str, str]) -> str:
    workers, path, items = config
    return f"workers={workers} {path} {items}"


def measure(videos: int = 24, seconds: int = 8, repeat: int = 8, rounds: int = 3, batch_size: int = 8,
            clips: int = 160, configs=CONFIGS, log=print) -> dict:
    """clips/s and CPU ms per clip of every configuration (medians of interleaved rounds), their ratios, and the
    setup-time header probe's cost per file of the same videos."""
    rates = {c: [] for c in configs}
    cpu = {c: [] for c in configs}
    with tempfile.TemporaryDirectory() as tmp:
        make_videos(Path(tmp), videos, seconds, repeat=repeat)
        probe_ms = probe_cost(tmp, CLASSES)
        for r in range(rounds):
            for c in configs:
                rate, ms = clips_per_second(tmp, c[0], c[1], batch_size, clips, c[2])
                rates[c].append(rate)
                cpu[c].append(ms)
            log(f"round {r + 1}: " + ", ".join(f"{_name(c)} {rates[c][-1]:.1f}" for c in configs)
                + f" (load {os.getloadavg()[0]:.2f})")
    med = {c: statistics.median(v) for c, v in rates.items()}
    ms = {c: statistics.median(v) for c, v in cpu.items()}
    ratios = {}
    for name, top, bottom, of in RATIOS:
        source = med if of == "rate" else ms
        if top in source and bottom in source:
            ratios[name] = source[top] / source[bottom]
    return {"config": {"videos": videos, "seconds": seconds, "repeat": repeat, "rounds": rounds,
                       "batch": batch_size, "clips": clips, "clip": "17x128x128 from 320x240 mp4",
                       "cpus": os.cpu_count()},
            "clips_per_s": {_name(c): round(v, 1) for c, v in med.items()},
            "cpu_ms_per_clip": {_name(c): round(v, 1) for c, v in ms.items()},
            "ratios": {k: round(v, 2) for k, v in ratios.items()}, "probe_ms_per_file": round(probe_ms, 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=8, help="times the train list names each video")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--clips", type=int, default=160, help="clips timed per configuration and round")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as syn:
        generate(syn, SyntheticSpec())
        print(f"header probe at setup: {probe_cost(syn, SyntheticSpec().num_classes):.2f} ms per file "
              f"(default synthetic set, 17x64x64)")
    out = measure(args.videos, args.seconds, args.repeat, args.rounds, args.batch_size, args.clips)
    print(f"header probe at setup: {out['probe_ms_per_file']:.2f} ms per file (320x240 videos)")
    print(f"\nclips/s of 17x128x128 (batch {args.batch_size}, median of {args.rounds} interleaved rounds), "
          f"and CPU ms per clip (main process + workers; independent of other load):")
    for name, rate in out["clips_per_s"].items():
        print(f"  {name:<34} {rate:6.1f} clips/s  {out['cpu_ms_per_clip'][name]:6.1f} CPU ms/clip")
    print("ratios (same run):")
    for name, r in out["ratios"].items():
        print(f"  {name:<52} {r:.2f}x")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
