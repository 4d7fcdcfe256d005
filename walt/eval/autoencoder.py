"""Stage 1: the reference clips through the autoencoder -> psnr, ssim and rFVD (I3D or synthetic).

Per-clip rows (PSNR / SSIM frame sums, features of the real clip and of its reconstruction) are
committed after every batch (walt.eval.state), so a killed pass resumes at its next batch and a
finished one is read back without reconstructing anything.
"""
from __future__ import annotations

import dataclasses

import torch

from walt.data.video import to_model_range
from walt.eval.context import EvalContext, Measurement
from walt.eval.reference import clip_loader, clips_key, reference_clips
from walt.eval.state import Progress, fingerprint, progress_bar
from walt.metrics import FeatureStats, ReconstructionMeter, frame_psnr, frame_ssim

PREVIEW_CLIPS = 4  # real | reconstruction pairs shown in TensorBoard


def measure_autoencoder(ctx: EvalContext, module) -> Measurement:
    """Reconstruct the reference clips, compute ctx.metrics. module: an AutoencoderModule on ctx.device."""
    run, net = ctx.run, ctx.nets.video
    subset, desc = reference_clips(run, ctx.datamodule)
    key = {"weights": fingerprint(module.inference_model), "net": net and net.key,
           "clips": clips_key(run, subset, run.eval.reference_split)}
    progress = Progress(ctx.cache_dir, "recon", key)
    done, total = progress.load().done, len(subset)
    preview = None
    with progress_bar("reconstructing reference clips", total, done) as update:
        for batch in clip_loader(run, subset, done):
            x = to_model_range(batch["video"].to(ctx.device))
            y = module.reconstruct(x).float()
            x, y = x.float().cpu(), y.cpu()
            frames = x.shape[2]
            rows = {"psnr_sum": frame_psnr(x, y).double().view(-1, frames).sum(1).numpy(),
                    "ssim_sum": frame_ssim(x, y).double().view(-1, frames).sum(1).numpy()}
            if net is not None:
                rows["real"], rows["recon"] = net.outputs(x)["features"], net.outputs(y)["features"]
            done += len(x)
            progress.commit(done, rows, final=done == total)
            update(done)
            if preview is None:
                preview = torch.cat([x, y], dim=-1)[:PREVIEW_CLIPS]  # (N, C, T, H, 2W): real | reconstruction
    rows = progress.load().rows
    if preview is None:  # all rows came from the cache: reconstruct the first clips for TensorBoard
        x = to_model_range(next(iter(clip_loader(run, subset, 0)))["video"][:PREVIEW_CLIPS])
        preview = torch.cat([x, module.reconstruct(x.to(ctx.device)).float().cpu()], dim=-1)
    meter = ReconstructionMeter(
        net, real_stats=FeatureStats().update(rows["real"]) if net else FeatureStats(),
        recon_stats=FeatureStats().update(rows["recon"]) if net else FeatureStats(),
        psnr_sum=float(rows["psnr_sum"].sum()), ssim_sum=float(rows["ssim_sum"].sum()),
        frames=total * run.clip_frames, videos=total, clip_frames=run.clip_frames)
    out, protos = meter.compute(), meter.protocols(desc)
    values, protocols = {}, {}
    for m in ctx.metrics:
        src = "rfvd" if m.startswith("rfvd") else m
        values[m], protocol = out[src], protos[src]
        if src == "rfvd":
            protocol = dataclasses.replace(protocol, metric=m, frames=net.frames,
                                           notes=f"{protocol.notes}; first {net.frames} of {run.clip_frames} frames")
        protocols[m] = protocol
    return Measurement(values, protocols, {"num_real": total}, preview)
