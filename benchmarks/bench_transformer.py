"""Stage-2 training step of the transformer per layout (W.A.L.T windows, full attention, Latte), the
tiny demo model per thread setting, and MFU of W.A.L.T-L on a GPU.

All variants are built in one process and timed interleaved (A, B, C, A, B, C, ...), so a busy
machine slows them alike; the median over repeats is reported with the ratio to full attention.
A training step is the real one: diffusion loss (v-prediction), backward, AdamW step.

    python benchmarks/bench_transformer.py                                  # CPU, reduced width/depth
    python benchmarks/bench_transformer.py --layouts walt full latte_v1 s_plus_t split
    python benchmarks/bench_transformer.py --device cuda --bf16 --preset walt_l --batch 8
    python benchmarks/bench_transformer.py --demo                           # tiny demo model, 1 vs 2 threads
    python benchmarks/bench_transformer.py --mfu --device cuda --bf16       # W.A.L.T-L MFU (GPU)

Paper (TPU v5, W.A.L.T-L, Table 3b): steps/s 2.24 (5x4x4), 2.00 (5x8x8), 1.75 (5x16x16), 1.20 (full):
full attention is 1.67x slower than the default 5x8x8 window.

Layouts are named in STAGE2_LAYOUTS (overrides of ModelConfig); any name of
walt.transformer.LAYOUTS works as well (layout=<name>), so a new layout kind is benchmarked by name.
"""
from __future__ import annotations

import argparse
import contextlib
import json
from typing import Optional, Sequence

import torch

from common import interleaved, peak_memory_mib, param_count
from walt.diffusion import NoiseSchedule, diffusion_loss
from walt.transformer import LAYOUTS, WALT, preset_config, tokens_per_sample, train_flops_per_sample

# name -> ModelConfig overrides. Add a layout here (or use any walt.transformer.LAYOUTS name directly).
STAGE2_LAYOUTS = {
    "walt": dict(layout="walt", st_window=(5, 8, 8)),  # S (whole frame) / ST 5x8x8: the paper's default
    "walt_st5x4x4": dict(layout="walt", st_window=(5, 4, 4)),
    "walt_st5x16x16": dict(layout="walt", st_window=(5, 16, 16)),
    "full": dict(layout="full"),  # full self-attention in every block (Table 3b's last row)
    "latte_v1": dict(layout="s_t"),  # Latte variant 1: alternating spatial / temporal blocks
    "latte_v2": dict(layout="s_then_t"),  # V2 late fusion: all spatial blocks, then all temporal
    "latte_v3": dict(layout="s_plus_t"),  # V3: spatial then temporal attention inside each block
    "latte_v4": dict(layout="split"),  # V4: heads split between spatial and temporal attention
    "lavie": dict(layout="s_plus_t", temporal_pos="rope", zero_init_temporal=True),  # LaVie: V3 + temporal RoPE
}
DEFAULT_LAYOUTS = ("walt", "walt_st5x4x4", "full", "latte_v1", "latte_v2", "latte_v3", "latte_v4", "lavie")
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16
DEFAULT_PEAK_FLOPS = 989e12  # H100 SXM dense bf16


def layout_overrides(name: str) -> dict:
    if name in STAGE2_LAYOUTS:
        return dict(STAGE2_LAYOUTS[name])
    if name in LAYOUTS:
        return dict(layout=name)
    raise ValueError(f"unknown layout {name!r}; valid: {sorted(STAGE2_LAYOUTS)} or one of {sorted(LAYOUTS)}")


def window_str(cfg, kind: str) -> str:
    """Token window(s) of a block kind, e.g. '5x8x8' or '1x16x16+5x1x1' (S+T, split)."""
    return "+".join("x".join(map(str, w)) for w in cfg.windows(kind))


def autocast(device, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


class TrainStep:
    """One real stage-2 training step (diffusion loss, backward, AdamW) of a model on fixed inputs."""

    def __init__(self, cfg, device="cpu", batch: int = 2, bf16: bool = False, compile: bool = False,
                 seed: int = 0, text: Optional[tuple] = None):
        torch.manual_seed(seed)
        self.cfg, self.device, self.bf16 = cfg, device, bf16
        self.model = WALT(cfg).to(device).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=torch.device(device).type == "cuda")
        self.net = torch.compile(self.model) if compile else self.model
        self.schedule = NoiseSchedule()
        self.x0 = torch.randn(batch, cfg.in_channels, *cfg.input_size, device=device)
        self.kwargs = {}
        if cfg.num_classes:
            self.kwargs["y"] = torch.randint(0, cfg.num_classes, (batch,), device=device)
        if text is not None:
            length, dim = text
            self.kwargs["text"] = torch.randn(batch, length, dim, device=device)
        self.batch = batch
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def predict(self, x: torch.Tensor, t: torch.Tensor, self_cond=None) -> torch.Tensor:
        return self.net(x, t, self_cond=self_cond, **self.kwargs)

    def forward(self) -> torch.Tensor:
        """One forward pass on the step's inputs at a mid-schedule timestep (for FLOP counting)."""
        return self.predict(self.x0, torch.full((self.batch,), 500, device=self.device))

    def __call__(self) -> None:
        coins = (torch.rand(self.batch, device=self.device, generator=self.generator) < self.cfg.self_cond_prob
                 if self.cfg.self_cond_prob > 0 else False)
        with autocast(self.device, self.bf16):
            loss = diffusion_loss(self.predict, self.schedule, self.x0, "v", self_condition=coins,
                                  generator=self.generator)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def peak_flops_for(device, peak: Optional[float]) -> Optional[float]:
    if peak:
        return peak
    if torch.device(device).type != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_FLOPS.items() if k in name), DEFAULT_PEAK_FLOPS)


def layouts_bench(layouts: Sequence[str] = DEFAULT_LAYOUTS, *, device="cpu", bf16=False, preset="walt_l",
                  depth: Optional[int] = 4, hidden_size: Optional[int] = 256, num_heads: Optional[int] = 4,
                  input_size=(5, 16, 16), in_channels=8, patch_size=1, batch=2, repeats=3, warmup=1,
                  compile=False, peak_flops: Optional[float] = None, memory=True) -> dict:
    """Train-step time, tokens/s, peak memory and params per layout at one width/depth, interleaved."""
    size = {k: v for k, v in dict(depth=depth, hidden_size=hidden_size, num_heads=num_heads).items() if v}
    base = dict(in_channels=in_channels, input_size=tuple(input_size), patch_size=patch_size, num_classes=101,
                self_cond_prob=0.0)
    runs = {name: TrainStep(preset_config(preset, **{**base, **size, **layout_overrides(name)}), device, batch, bf16,
                            compile) for name in layouts}
    timing = interleaved(runs, repeats, warmup, device)
    peak = peak_flops_for(device, peak_flops)
    cfg0 = next(iter(runs.values())).cfg
    tokens = tokens_per_sample(cfg0) * batch
    rows = {}
    for name, step in runs.items():
        median = timing[name]["median_s"]
        cfg = step.cfg
        row = {"layout": cfg.layout, "blocks": "/".join(dict.fromkeys(cfg.blocks)),
               "windows": {k: window_str(cfg, k) for k in dict.fromkeys(cfg.blocks)},
               "params_m": round(param_count(step.model) / 1e6, 2), "s_per_step": round(median, 4),
               "steps_per_s": round(1 / median, 3), "tokens_per_s": round(tokens / median, 1),
               "times_s": timing[name]["times_s"],
               "model_tflop_per_step": round(train_flops_per_sample(cfg) * batch / 1e12, 4)}
        if "full" in timing:
            row["full_over_this"] = round(timing["full"]["median_s"] / median, 3)
        if peak:
            row["mfu"] = round(train_flops_per_sample(cfg) * batch / median / peak, 4)
        rows[name] = row
    if memory:  # separately from the timing: one more step per layout, measured alone
        for name, step in runs.items():
            rows[name]["peak_step_mem_mib"] = peak_memory_mib(step, device)
    del runs
    return {"config": {"preset": preset, **size, "latents": f"{'x'.join(map(str, input_size))}x{in_channels}",
                       "patch_size": patch_size, "batch": batch, "tokens_per_step": tokens, "bf16": bf16,
                       "device": str(device), "threads": torch.get_num_threads(), "repeats": repeats,
                       "compile": compile, "peak_flops": peak,
                       "memory": "CUDA max allocated" if torch.device(device).type == "cuda" else
                                 "CPU peak RSS increase over one step (after warm-up, heap trimmed)"},
            "layouts": rows}


def demo_threads(latents=((5, 4, 4), (5, 8, 8)), threads=(2, 1), *, batch=16, patch_size=1, self_cond_prob=0.9,
                 num_classes=8, repeats=5, warmup=2, steps_per_call=5) -> dict:
    """The demo's stage-2 step (walt_tiny, batch 16, from cached latents) per latent grid and thread count.

    Thread counts are switched with torch.set_num_threads before each call, so all variants interleave
    in one process. steps_per_call steps are timed together (a tiny step is milliseconds).
    """
    steps, setup = {}, {}
    for grid in latents:
        cfg = preset_config("walt_tiny", in_channels=8, input_size=tuple(grid), patch_size=patch_size,
                            num_classes=num_classes, self_cond_prob=self_cond_prob)
        step = TrainStep(cfg, "cpu", batch)
        for n in threads:
            name = f"{'x'.join(map(str, grid))} threads={n}"
            steps[name] = (lambda s=step: [s() for _ in range(steps_per_call)])
            setup[name] = (lambda n=n: torch.set_num_threads(n))
    before = torch.get_num_threads()
    try:
        timing = interleaved(steps, repeats, warmup, "cpu", setup)
    finally:
        torch.set_num_threads(before)
    rows = {}
    for name, t in timing.items():
        grid, n = name.split(" threads=")
        per_step = t["median_s"] / steps_per_call
        ref = timing[f"{grid} threads={max(threads)}"]["median_s"] / steps_per_call
        rows[name] = {"latent": grid, "threads": int(n), "s_per_step": round(per_step, 5),
                      "ms_per_sample": round(per_step / batch * 1e3, 3),
                      "over_max_threads": round(per_step / ref, 3)}
    return {"config": {"preset": "walt_tiny", "batch": batch, "patch_size": patch_size,
                       "self_cond_prob": self_cond_prob, "num_classes": num_classes, "repeats": repeats,
                       "steps_per_call": steps_per_call, "note": "raw step (loss, backward, AdamW); no Lightning, "
                       "EMA or data loading"}, "variants": rows}


def mfu_walt_l(*, device="cuda", bf16=True, batch=8, repeats=5, warmup=2, compile=False,
               peak_flops: Optional[float] = None, layouts=("walt", "full")) -> dict:
    """W.A.L.T-L (24 x 1024, 16 heads) at 17x128x128 (latent 5x16x16x8, p=1): step time and MFU.

    MFU = model FLOPs of a training step (walt.transformer.train_flops_per_sample x batch; matmuls,
    forward + backward = 3x forward, no self-conditioning pass) / (step time x peak FLOPS).
    """
    out = layouts_bench(layouts, device=device, bf16=bf16, preset="walt_l", depth=None, hidden_size=None,
                        num_heads=None, batch=batch, repeats=repeats, warmup=warmup, compile=compile,
                        peak_flops=peak_flops or peak_flops_for(device, None) or DEFAULT_PEAK_FLOPS)
    if "walt" in out["layouts"] and "full" in out["layouts"]:
        out["full_over_windowed"] = out["layouts"]["walt"]["full_over_this"]
        out["paper_full_over_windowed"] = 1.67
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU; on CPUs without native bf16 it is slow)")
    p.add_argument("--preset", default="walt_l", help="model preset whose shape is used (walt_l)")
    p.add_argument("--depth", type=int, default=4, help="0 = the preset's")
    p.add_argument("--hidden-size", type=int, default=256, help="0 = the preset's")
    p.add_argument("--num-heads", type=int, default=4, help="0 = the preset's")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="CPU intra-op threads")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--peak-flops", type=float, default=None, help="for MFU (default: by GPU name, else 989e12)")
    p.add_argument("--layouts", nargs="+", default=list(DEFAULT_LAYOUTS),
                   help=f"names in {sorted(STAGE2_LAYOUTS)} or walt.transformer.LAYOUTS")
    p.add_argument("--demo", action="store_true", help="the demo's tiny model at 5x4x4 / 5x8x8, 1 vs 2 threads")
    p.add_argument("--mfu", action="store_true", help="W.A.L.T-L MFU at 5x16x16 p=1 (GPU)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.demo:
        result = demo_threads(repeats=args.repeats)
    elif args.mfu:
        result = mfu_walt_l(device=args.device, bf16=args.bf16, batch=args.batch, repeats=args.repeats,
                            compile=args.compile, peak_flops=args.peak_flops)
    else:
        result = layouts_bench(args.layouts, device=args.device, bf16=args.bf16, preset=args.preset,
                               depth=args.depth or None, hidden_size=args.hidden_size or None,
                               num_heads=args.num_heads or None, batch=args.batch, repeats=args.repeats,
                               compile=args.compile, peak_flops=args.peak_flops)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
