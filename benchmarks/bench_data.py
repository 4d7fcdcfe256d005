"""DataModule throughput on the synthetic set: clips/s of 17x64x64 mp4 video, 0 vs 2 workers.

    python benchmarks/bench_data.py [--epochs 3] [--batch-size 16]

Figures are side by side in one run (machines are noisy); the first batch of each loader is
excluded (worker start-up).
"""
import argparse
import tempfile
import time

from walt.data.datamodule import VideoDataModule
from walt.data.synthetic import SyntheticSpec, generate


def clips_per_second(root: str, workers: int, batch_size: int, epochs: int) -> float:
    dm = VideoDataModule(dataset="ucf101", root=root, num_classes=8, num_frames=17, resolution=64,
                         batch_size=batch_size, num_workers=workers, pin_memory=False, persistent_workers=True)
    dm.setup("fit")
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)  # start-up
    start, n = time.perf_counter(), 0
    for batch in it:
        n += batch["video"].shape[0]
    for _ in range(epochs - 1):
        for batch in loader:
            n += batch["video"].shape[0]
    return n / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        generate(tmp, SyntheticSpec(num_classes=8, num_groups=25, num_frames=17, resolution=64))
        print(f"generated 200 clips of 17x64x64 in {time.perf_counter() - t:.1f} s")
        for workers in (0, 2):
            rate = clips_per_second(tmp, workers, args.batch_size, args.epochs)
            print(f"workers={workers}: {rate:.0f} clips/s (batch {args.batch_size}, 17x64x64 mp4, decode+to [-1,1])")


if __name__ == "__main__":
    main()
