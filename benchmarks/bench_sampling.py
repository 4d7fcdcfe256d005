"""DDIM sampling time per video with the tiny models (the demo's evaluation path), and decoding.

    python benchmarks/bench_sampling.py                  # CPU: walt_tiny at latent 5x4x4 (17x32x32 clips)
    python benchmarks/bench_sampling.py --latent 5 8 8 --size 64 --device cuda

Denoising = the DDIM loop (v-prediction, trailing spacing, self-conditioning as trained with
self_cond_prob > 0, no guidance) over a batch of noise; decoding = the tiny autoencoder's decoder
on the resulting latents. Both are reported per video; step counts are timed interleaved.
"""
from __future__ import annotations

import argparse
import json

import torch

from common import interleaved
from walt.autoencoder.config import preset as ae_preset
from walt.autoencoder.model import CausalAutoencoder
from walt.diffusion import NoiseSchedule, ddim_sample
from walt.transformer import WALT, preset_config


def ddim_bench(*, device="cpu", latent=(5, 4, 4), steps=(25, 50), batch=16, num_classes=8, self_cond_prob=0.9,
               patch_size=1, repeats=3, warmup=1, decode=True) -> dict:
    torch.manual_seed(0)
    cfg = preset_config("walt_tiny", in_channels=8, input_size=tuple(latent), num_classes=num_classes,
                        self_cond_prob=self_cond_prob, patch_size=patch_size)
    model = WALT(cfg).to(device).eval()
    schedule = NoiseSchedule()
    noise = torch.randn(batch, 8, *latent, device=device)
    y = torch.randint(0, num_classes, (batch,), device=device) if num_classes else None

    def model_fn(x, t, sc):
        return model(x, t, y, self_cond=sc)

    runs = {f"ddim_{n}": (lambda n=n: ddim_sample(model_fn, schedule, noise, steps=n, prediction="v",
                                                  self_condition=self_cond_prob > 0)) for n in steps}
    autoencoder = None
    if decode:
        autoencoder = CausalAutoencoder(ae_preset("tiny")).to(device).eval()

        def decode_fn():
            with torch.inference_mode():
                autoencoder.decode(noise)
        runs["decode_tiny_ae"] = decode_fn
    with torch.inference_mode():
        timing = interleaved(runs, repeats, warmup, device)
    rows = {name: {"s_per_batch": round(t["median_s"], 4), "s_per_video": round(t["median_s"] / batch, 5),
                   "times_s": t["times_s"]} for name, t in timing.items()}
    for n in steps:
        rows[f"ddim_{n}"]["ms_per_video_per_step"] = round(timing[f"ddim_{n}"]["median_s"] / batch / n * 1e3, 3)
    frames = 1 + (latent[0] - 1) * 4
    return {"config": {"model": "walt_tiny", "latent": "x".join(map(str, latent)) + "x8", "patch_size": patch_size,
                       "video": f"{frames}x{latent[1] * 8}x{latent[2] * 8}", "batch": batch, "self_condition":
                       self_cond_prob > 0, "guidance": None, "device": str(device),
                       "threads": torch.get_num_threads(), "repeats": repeats}, "results": rows}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--latent", type=int, nargs=3, default=[5, 4, 4])
    p.add_argument("--steps", type=int, nargs="+", default=[25, 50])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(ddim_bench(device=args.device, latent=tuple(args.latent), steps=tuple(args.steps),
                                batch=args.batch, repeats=args.repeats), indent=1))


if __name__ == "__main__":
    main()
