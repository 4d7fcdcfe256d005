"""Stage-1 autoencoder: parameter count, encode+decode throughput, and the demo's training-step levers.

    python benchmarks/bench_autoencoder.py                       # CPU, 17x128x128, tiny and magvit2
    python benchmarks/bench_autoencoder.py --device cuda --bf16  # GPU run (bf16 autocast)
    python benchmarks/bench_autoencoder.py --levers              # demo levers: tiny training step, 17x32x32

Both presets are timed in the same process, one after the other, on the same input size, so their
numbers compare. Throughput = clips / (encode + decode wall time), after warm-up iterations.
Prints one JSON line per measurement.

--levers times the tiny preset's training step as the demo runs it (17x32x32 clips, batch 16,
generator loss only: the demo's 300 steps end before disc_start = 1000; reconstruction L2, backward,
grad-norm clip, AdamW) for several variants built in one process and timed interleaved (median of
repeats), each with its ratio to the fp32 / NCDHW / 2-thread / batch-16 baseline:
    channels_last_3d   model and input in torch.channels_last_3d (oneDNN's preferred conv layout)
    base8              base_channels 8 instead of 16 (a smaller tiny preset)
    res0               num_res_blocks 0 (convs of the resampling layers only)
    batch8             batch 8: compare s_per_sample (fewer but larger steps, or the reverse)
    threads1           torch.set_num_threads(1) for this variant only
and combinations (channels_last_3d+base8, ...). Variant names are built from LEVERS, so a new lever
is one entry there.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import time
from typing import Sequence

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


# lever name -> what it changes: config fields (cfg), memory format, batch, threads
LEVERS = {
    "fp32": {},
    "channels_last_3d": {"channels_last": True},
    "base8": {"cfg": {"base_channels": 8}},
    "res0": {"cfg": {"num_res_blocks": 0}},
    "batch8": {"batch": 8},
    "threads1": {"threads": 1},
}
DEFAULT_LEVERS = ("fp32", "channels_last_3d", "base8", "channels_last_3d+base8", "batch8",
                  "channels_last_3d+batch8", "threads1", "channels_last_3d+threads1")


def lever_spec(name: str, batch: int, threads: int) -> dict:
    """Merge the '+'-joined levers of a variant name into one spec."""
    spec = {"cfg": {}, "channels_last": False, "batch": batch, "threads": threads}
    for part in name.split("+"):
        if part not in LEVERS:
            raise ValueError(f"unknown lever {part!r}; valid: {sorted(LEVERS)} (join with '+')")
        lever = LEVERS[part]
        spec["cfg"].update(lever.get("cfg", {}))
        for key in ("channels_last", "batch", "threads"):
            spec[key] = lever.get(key, spec[key])
    return spec


class AutoencoderTrainStep:
    """The demo's stage-1 generator step: forward (posterior sample), L2 reconstruction, backward,
    grad-norm clip 1.0, AdamW (no discriminator: the demo's 300 steps end before disc_start)."""

    def __init__(self, name: str, spec: dict, frames: int, size: int, seed: int = 0):
        torch.manual_seed(seed)
        cfg = copy.deepcopy(preset(name))
        for key, value in spec["cfg"].items():
            setattr(cfg, key, value)
        self.cfg = cfg.validate()
        self.model = CausalAutoencoder(self.cfg).train()
        self.x = torch.rand(spec["batch"], 3, frames, size, size) * 2 - 1
        if spec["channels_last"]:
            self.model = self.model.to(memory_format=torch.channels_last_3d)
            self.x = self.x.contiguous(memory_format=torch.channels_last_3d)
        o = self.cfg.optim
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        self.spec = spec

    def __call__(self) -> None:
        recon, _, _ = self.model(self.x, sample=True)
        loss = (recon - self.x).pow(2).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.opt.step()


def train_levers(levers: Sequence[str] = DEFAULT_LEVERS, *, preset_name="tiny", frames=17, size=32, batch=16,
                 threads=2, repeats=3, warmup=1) -> dict:
    """Training-step time of the autoencoder per lever, interleaved in one process (see module doc)."""
    from common import interleaved, param_count

    steps, setup = {}, {}
    for name in levers:
        spec = lever_spec(name, batch, threads)
        steps[name] = AutoencoderTrainStep(preset_name, spec, frames, size)
        setup[name] = (lambda n=spec["threads"]: torch.set_num_threads(n))
    before = torch.get_num_threads()
    try:
        timing = interleaved(steps, repeats, warmup, "cpu", setup)
    finally:
        torch.set_num_threads(before)
    base = levers[0]
    base_per_sample = timing[base]["median_s"] / steps[base].spec["batch"]
    rows = {}
    for name, step in steps.items():
        med, b = timing[name]["median_s"], step.spec["batch"]
        rows[name] = {"batch": b, "threads": step.spec["threads"], "channels_last_3d": step.spec["channels_last"],
                      "params_m": round(param_count(step.model) / 1e6, 3), "s_per_step": round(med, 3),
                      "s_per_sample": round(med / b, 4), "times_s": timing[name]["times_s"],
                      "per_sample_vs_base": round(med / b / base_per_sample, 3),
                      **({"cfg": step.spec["cfg"]} if step.spec["cfg"] else {})}
    return {"config": {"preset": preset_name, "clip": f"{frames}x{size}x{size}", "base": base, "batch": batch,
                       "threads": threads, "repeats": repeats, "warmup": warmup,
                       "step": "generator only: L2 recon, backward, clip 1.0, AdamW"},
            "variants": rows}


def omp_env_levers(envs=None, *, levers=("fp32", "threads1"), rounds=2, repeats=2, frames=17, size=32,
                   batch=16) -> dict:
    """OpenMP settings that must be fixed before the process starts (OMP_WAIT_POLICY, ...): the same
    --levers run in child processes with each environment, alternating A, B, A, B (process-level
    interleaving); per environment and lever, the median over rounds of each child's median."""
    import os
    import statistics
    import subprocess
    import sys

    envs = envs or {"default": {}, "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}}
    got = {env: {lever: [] for lever in levers} for env in envs}
    for _ in range(rounds):
        for env, extra in envs.items():
            cmd = [sys.executable, __file__, "--levers", *levers, "--repeats", str(repeats), "--frames", str(frames),
                   "--size", str(size), "--batch", str(batch)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **extra}, timeout=1800)
            if proc.returncode:
                raise RuntimeError(f"{' '.join(cmd)} with {extra} failed: {proc.stderr[-2000:]}")
            variants = json.loads(proc.stdout)["variants"]
            for lever in levers:
                got[env][lever].append(variants[lever]["s_per_step"])
    base_env, base_lever = next(iter(envs)), levers[0]
    base = statistics.median(got[base_env][base_lever])
    rows = {f"{env} / {lever}": {"s_per_step": round(statistics.median(t), 3), "runs_s": t,
                                 "vs_default_env_first_lever": round(statistics.median(t) / base, 3)}
            for env, per in got.items() for lever, t in per.items()}
    return {"config": {"clip": f"{frames}x{size}x{size}", "batch": batch, "rounds": rounds, "repeats": repeats,
                       "envs": envs}, "variants": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--size", type=int, default=None, help="frame size (default 128; 32 with --levers, the demo's)")
    p.add_argument("--presets", default="tiny,magvit2")
    p.add_argument("--batch", type=int, default=None, help="clips per call (default: 4 tiny, 1 magvit2 on CPU; 8 on GPU)")
    p.add_argument("--iters", type=int, default=None, help="timed iterations (default 3; 1 for magvit2 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations (default 1; 0 for magvit2 on CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU")
    p.add_argument("--levers", nargs="*", default=None,
                   help=f"training-step levers of the demo (default set: {' '.join(DEFAULT_LEVERS)})")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats for --levers")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.levers is not None:
        print(json.dumps(train_levers(args.levers or DEFAULT_LEVERS, frames=args.frames, size=args.size or 32,
                                      batch=args.batch or 16, threads=args.threads or 2, repeats=args.repeats),
                         indent=1))
        return
    args.size = args.size or 128
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
