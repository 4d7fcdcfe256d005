"""DataModule throughput: clips/s of 17x128x128 clips from mp4, by worker count and decode path.

    python benchmarks/bench_data.py [--videos 24] [--seconds 8] [--rounds 3] [--batch-size 8]

The videos are UCF-101-like: 320x240, 25 fps, `--seconds` long, a keyframe every second (web
video has one every 1-5 s), smooth moving shapes plus sensor-like noise. Decode paths:
    seek+resized   keyframe seek, frames converted straight to 128 on the short side (the default)
    seek           keyframe seek, full-size RGB, torch resize
    full           decode from the first frame, full-size RGB, torch resize (the old loader)
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

from walt.data.datamodule import VideoDataModule
from walt.data.synthetic import SyntheticSpec, generate, render_clip
from walt.data.video import write_video

CLASSES = 4


def make_videos(root: Path, n: int, seconds: int, fps: int = 25) -> None:
    """n videos of 320x240 in the UCF-101 layout (classInd + trainlist01)."""
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
    (lists / "trainlist01.txt").write_text("\n".join(lines) + "\n")
    (lists / "testlist01.txt").write_text("\n".join(lines[:CLASSES]) + "\n")


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of processes (Linux /proc), plus this process's own."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = time.process_time()
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def clips_per_second(root: str, workers: int, path: str, batch_size: int, clips: int) -> tuple[float, float]:
    """(clips per wall-clock second, CPU milliseconds per clip over the main process and its workers)."""
    dm = VideoDataModule(dataset="ucf101", root=root, num_classes=CLASSES, num_frames=17, resolution=128,
                         batch_size=batch_size, num_workers=workers, pin_memory=False, persistent_workers=True,
                         probe=False)
    dm.setup("fit")
    dm.train_set.seek = path != "full"
    dm.train_set.decode_resized = path == "seek+resized"
    loader = dm.train_dataloader()
    it = iter(loader)
    for _ in range(max(1, workers)):  # start-up: worker spawn and each worker's first batch
        next(it)
    pids = [w.pid for w in getattr(it, "_workers", [])]
    start, cpu, n = time.perf_counter(), _cpu_seconds(pids), 0
    while n < clips:
        for batch in it:
            n += batch["video"].shape[0]
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--clips", type=int, default=96, help="clips timed per configuration and round")
    args = parser.parse_args()
    configs = [(0, "full"), (0, "seek"), (0, "seek+resized"), (1, "seek+resized"), (2, "seek+resized"), (2, "full")]
    print(f"{os.cpu_count()} CPUs; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        make_videos(Path(tmp), args.videos, args.seconds)
        print(f"generated {args.videos} mp4 videos of 320x240, {args.seconds} s at 25 fps "
              f"in {time.perf_counter() - t:.1f} s")
        print(f"header probe at setup: {probe_cost(tmp, CLASSES):.2f} ms per file (these videos)")
        with tempfile.TemporaryDirectory() as syn:
            generate(syn, SyntheticSpec())
            print(f"header probe at setup: {probe_cost(syn, SyntheticSpec().num_classes):.2f} ms per file "
                  f"(default synthetic set, 17x64x64)")
        rates = {c: [] for c in configs}
        cpu = {c: [] for c in configs}
        for r in range(args.rounds):
            for workers, path in configs:
                rate, ms = clips_per_second(tmp, workers, path, args.batch_size, args.clips)
                rates[(workers, path)].append(rate)
                cpu[(workers, path)].append(ms)
            print(f"round {r + 1}: " + ", ".join(f"{w}w {p} {rates[(w, p)][-1]:.1f}" for w, p in configs)
                  + f" (load {os.getloadavg()[0]:.2f})")
        med = {c: statistics.median(v) for c, v in rates.items()}
        print(f"\nclips/s of 17x128x128 (batch {args.batch_size}, median of {args.rounds} interleaved rounds), "
              f"and CPU ms per clip (main process + workers; independent of other load):")
        for (workers, path), rate in med.items():
            print(f"  workers={workers} {path:<13} {rate:6.1f} clips/s  {statistics.median(cpu[(workers, path)]):6.1f} "
                  f"CPU ms/clip")
        print("ratios (same run):")
        print(f"  seek vs full decode, 0 workers:           {med[(0, 'seek')] / med[(0, 'full')]:.2f}x")
        print(f"  decode to 128 vs full size, 0 workers:    {med[(0, 'seek+resized')] / med[(0, 'seek')]:.2f}x")
        print(f"  new loader vs old (seek+resized / full):  {med[(0, 'seek+resized')] / med[(0, 'full')]:.2f}x "
              f"(0 workers), {med[(2, 'seek+resized')] / med[(2, 'full')]:.2f}x (2 workers)")
        print(f"  1 worker vs 0 workers:                    {med[(1, 'seek+resized')] / med[(0, 'seek+resized')]:.2f}x")
        print(f"  2 workers vs 1 worker:                    {med[(2, 'seek+resized')] / med[(1, 'seek+resized')]:.2f}x")
        one = statistics.median(cpu[(1, "seek+resized")])
        two = statistics.median(cpu[(2, "seek+resized")])
        print(f"  CPU per clip, 2 workers vs 1:             {two / one:.2f}x (1.00 = no contention between workers: "
              f"on 2 free cores 2 workers would give {2 * one / two:.2f}x)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
