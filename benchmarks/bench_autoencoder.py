"""Stage-1 autoencoder: parameter count of the magvit2 preset and encode+decode throughput.

    python benchmarks/bench_autoencoder.py                       # CPU, 17x128x128, tiny and magvit2
    python benchmarks/bench_autoencoder.py --device cuda --bf16  # GPU run (bf16 autocast)

Both presets are timed in the same process, one after the other, on the same input size, so their
numbers compare. Throughput = clips / (encode + decode wall time), after warm-up iterations.
Prints one JSON line per measurement.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from walt.autoencoder.config import preset
from walt.autoencoder.model import CausalAutoencoder


def count_params(name: str) -> dict:
    with torch.device("meta"):  # no memory: shapes only
        model = CausalAutoencoder(preset(name))
    enc = sum(p.numel() for p in model.encoder.parameters())
    dec = sum(p.numel() for p in model.decoder.parameters())
    return {"preset": name, "params_m": round((enc + dec) / 1e6, 2), "encoder_m": round(enc / 1e6, 2),
            "decoder_m": round(dec / 1e6, 2)}


def count_flops(name: str, frames: int, size: int) -> dict:
    """Exact forward FLOPs of one clip, counted on the meta device (no compute, no memory)."""
    with torch.device("meta"):
        model = CausalAutoencoder(preset(name))
        with FlopCounterMode(display=False) as enc:
            z = model.encode(torch.empty(1, 3, frames, size, size))
        with FlopCounterMode(display=False) as dec:
            model.decode(z)
    return {"encode_gflop": round(enc.get_total_flops() / 1e9, 1), "decode_gflop": round(dec.get_total_flops() / 1e9, 1)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(name: str, device: torch.device, bf16: bool, batch: int, frames: int, size: int,
               warmup: int, iters: int) -> dict:
    torch.manual_seed(0)
    model = CausalAutoencoder(preset(name)).to(device).eval()
    x = torch.rand(batch, 3, frames, size, size, device=device) * 2 - 1
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    enc_s = dec_s = 0.0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode(), autocast:
        for i in range(warmup + iters):
            sync(device)
            t0 = time.perf_counter()
            z = model.encode(x)
            sync(device)
            t1 = time.perf_counter()
            model.decode(z)
            sync(device)
            t2 = time.perf_counter()
            if i >= warmup:
                enc_s += t1 - t0
                dec_s += t2 - t1
    clips = batch * iters
    out = {"preset": name, "device": str(device), "bf16": bf16, "batch": batch, "clip": f"{frames}x{size}x{size}",
           "latent": list(z.shape[1:]), "iters": iters, "encode_s_per_clip": round(enc_s / clips, 4),
           "decode_s_per_clip": round(dec_s / clips, 4), "clips_per_s": round(clips / (enc_s + dec_s), 4)}
    flops = count_flops(name, frames, size)
    out.update(flops, achieved_tflops=round((flops["encode_gflop"] + flops["decode_gflop"]) * clips
                                            / (enc_s + dec_s) / 1e3, 3))
    if device.type == "cuda":
        out["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    else:
        out["threads"] = torch.get_num_threads()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--presets", default="tiny,magvit2")
    p.add_argument("--batch", type=int, default=None, help="clips per call (default: 4 tiny, 1 magvit2 on CPU; 8 on GPU)")
    p.add_argument("--iters", type=int, default=None, help="timed iterations (default 3; 1 for magvit2 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations (default 1; 0 for magvit2 on CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(json.dumps(count_params("magvit2")))
    for name in args.presets.split(","):
        heavy_cpu = name == "magvit2" and device.type == "cpu"
        batch = args.batch or (8 if device.type == "cuda" else (1 if heavy_cpu else 4))
        iters = args.iters or (1 if heavy_cpu else 3)
        warmup = args.warmup if args.warmup is not None else (0 if heavy_cpu else 1)
        print(json.dumps(throughput(name, device, args.bf16, batch, args.frames, args.size, warmup, iters)), flush=True)


if __name__ == "__main__":
    main()
