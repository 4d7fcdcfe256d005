"""Training throughput of the W.A.L.T transformer for ST window sizes vs full attention (Table 3b).

All variants are built in one process and timed interleaved (variant A, B, C, D, A, B, ...), so a
busy machine slows them alike; the median over repeats is reported with the ratio to full attention.
A training step is the real one: diffusion loss (v-prediction), backward, AdamW step.

    python benchmarks/bench_transformer.py                                  # CPU, reduced width/depth
    python benchmarks/bench_transformer.py --device cuda --bf16 --preset walt_l --batch 8

Paper (TPU v5, W.A.L.T-L, Table 3b): steps/s 2.24 (5x4x4), 2.00 (5x8x8), 1.75 (5x16x16), 1.20 (full):
full attention is 1.67x slower than the default 5x8x8 window.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from walt.diffusion import NoiseSchedule, diffusion_loss
from walt.transformer import WALT, preset_config, tokens_per_sample, train_flops_per_sample

VARIANTS = {  # name -> overrides; "full" is full self-attention in every block (Table 3b's last row)
    "5x4x4": dict(st_window=(5, 4, 4)),
    "5x8x8": dict(st_window=(5, 8, 8)),
    "5x16x16": dict(st_window=(5, 16, 16)),
    "full": dict(layout="full"),
}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--preset", default=None, help="model preset (default: walt_l shape at reduced depth/width)")
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--num-heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=2, help="timed steps per repeat")
    p.add_argument("--threads", type=int, default=None, help="CPU intra-op threads")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--peak-tflops", type=float, default=None, help="for MFU (default: by GPU name)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    return p.parse_args()


def build(args, overrides):
    base = dict(in_channels=8, input_size=(5, 16, 16), patch_size=1, num_classes=101, self_cond_prob=0.0)
    if args.preset:
        cfg = preset_config(args.preset, **base, **overrides)
    else:
        size = dict(depth=args.depth, hidden_size=args.hidden_size, num_heads=args.num_heads)
        cfg = preset_config("walt_l", **base, **size, **overrides)
    model = WALT(cfg).to(args.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    step_model = torch.compile(model) if args.compile else model
    return cfg, model, opt, step_model


def train_step(step_model, opt, schedule, x0, labels, args):
    with torch.autocast(device_type=torch.device(args.device).type, dtype=torch.bfloat16, enabled=args.bf16):
        loss = diffusion_loss(lambda x, t, sc: step_model(x, t, labels), schedule, x0, "v")
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    schedule = NoiseSchedule()
    x0 = torch.randn(args.batch, 8, 5, 16, 16, device=args.device)
    labels = torch.randint(0, 101, (args.batch,), device=args.device)
    runs = {name: build(args, VARIANTS[name]) for name in args.variants}
    for _, _, opt, step_model in runs.values():  # warm-up (allocations, compilation)
        train_step(step_model, opt, schedule, x0, labels, args)
    sync(args.device)
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, (_, _, opt, step_model) in runs.items():
            sync(args.device)
            start = time.perf_counter()
            for _ in range(args.steps):
                train_step(step_model, opt, schedule, x0, labels, args)
            sync(args.device)
            times[name].append((time.perf_counter() - start) / args.steps)

    cfg0 = next(iter(runs.values()))[0]
    tokens = tokens_per_sample(cfg0) * args.batch
    device_name = torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in device_name), None)
    print(f"device={device_name} threads={torch.get_num_threads()} bf16={args.bf16} batch={args.batch} "
          f"latents=5x16x16x8 p=1 depth={cfg0.depth} d={cfg0.hidden_size} heads={cfg0.num_heads} "
          f"repeats={args.repeats}x{args.steps} steps")
    header = f"{'ST window':>10} {'params(M)':>9} {'s/step':>8} {'steps/s':>8} {'tokens/s':>9} {'full/this':>9}"
    print(header + ("  MFU" if peak else ""))
    median = {name: statistics.median(t) for name, t in times.items()}
    for name, (cfg, model, _, _) in runs.items():
        params = sum(p.numel() for p in model.parameters()) / 1e6
        line = (f"{name:>10} {params:9.2f} {median[name]:8.3f} {1 / median[name]:8.2f} "
                f"{tokens / median[name]:9.0f} {median.get('full', float('nan')) / median[name]:9.2f}")
        if peak:
            line += f"  {train_flops_per_sample(cfg) * args.batch / median[name] / (peak * 1e12):.1%}"
        print(line)
    print("paper (Table 3b, steps/s): 5x4x4 2.24, 5x8x8 2.00, 5x16x16 1.75, full 1.20 -> full/5x8x8 = 1.67x")


if __name__ == "__main__":
    main()
