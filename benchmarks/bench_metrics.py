"""I3D feature throughput (videos/s) for FVD, with random weights, plus the cost of the Frechet step.

    python benchmarks/bench_metrics.py                      # CPU, batch 2, 16x224x224
    python benchmarks/bench_metrics.py --device cuda --batch-size 16 --iters 10

Throughput includes the canonical preprocessing (per-frame bilinear resize to 224, a no-op when the
input already is 224) and the copy of the (N, 400) features back to the CPU.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from walt.metrics.frechet import FeatureStats, frechet_distance
from walt.metrics.i3d import I3DExtractor, InceptionI3d


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_i3d(device: torch.device, batch_size: int, frames: int, resolution: int, iters: int, warmup: int) -> dict:
    torch.manual_seed(0)
    extractor = I3DExtractor(InceptionI3d().eval().to(device), None, batch_size=batch_size)
    videos = (torch.rand(batch_size, 3, frames, resolution, resolution) * 2 - 1).to(device)
    for _ in range(warmup):
        extractor.features(videos)
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        feats = extractor.features(videos)
    sync(device)
    seconds = time.perf_counter() - start
    assert feats.shape == (batch_size, 400)
    out = {"videos_per_s": iters * batch_size / seconds, "s_per_batch": seconds / iters}
    if device.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def bench_frechet(dim: int, n: int) -> dict:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(n, dim)), rng.normal(size=(n, dim)) + 0.1
    start = time.perf_counter()
    sa, sb = FeatureStats().update(a), FeatureStats().update(b)
    stats_s = time.perf_counter() - start
    out = {"stats_s": stats_s}
    for method in ("eigh", "sqrtm"):
        start = time.perf_counter()
        frechet_distance(sa.mean, sa.cov, sb.mean, sb.cov, method=method)
        out[f"{method}_s"] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=224, help="input frame size (resized to 224 inside)")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--frechet-dims", type=int, nargs="*", default=[400], help="also time 2048 (Inception)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    result = {
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"cpu ({torch.get_num_threads()} threads)"),
        "input": f"{args.batch_size}x3x{args.frames}x{args.resolution}x{args.resolution}",
        "i3d": bench_i3d(device, args.batch_size, args.frames, args.resolution, args.iters, args.warmup),
    }
    for dim in args.frechet_dims:
        result[f"frechet_{dim}d_2048_samples"] = bench_frechet(dim, 2048)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
