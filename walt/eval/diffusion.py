"""Stage 2: eval.num_samples generated clips through every network the metrics need, then the numbers.

Frame-prediction runs (model.context_frames > 0, e.g. Kinetics-600) are measured as the paper does: sample
j encodes the first context frames of real reference clip j mod N (2 latent = 5 video frames), the sampler
predicts the rest, and the metrics see the whole decoded clip (context frames included) against the same
real clips; every protocol records task "frame_prediction" and its context.

The sampler runs once per batch and feeds each network's own resumable pass (walt.eval.state), so a
network added later (another metric) or a pass killed halfway continues without redoing the others.
Sample j is the same clip whatever the batch size (walt.eval.sampling), so passes of different batch
sizes continue one stream. Every value is stored beside its MetricProtocol.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable

import numpy as np
import torch
from einops import rearrange

from walt.eval.context import EvalContext, Measurement
from walt.eval.sampling import class_cycle, context_frames, generate, sampling_settings
from walt.eval.state import Partial, Progress, fingerprint, progress_bar
from walt.metrics import FeatureStats, MetricProtocol, inception_score

log = logging.getLogger(__name__)
PREVIEW_SAMPLES = 8  # clips shown in TensorBoard per checkpoint (labels j % num_classes)


def measure_diffusion(ctx: EvalContext, module) -> Measurement:
    """Sample, feed the networks, compute ctx.metrics. module: a LatentDiffusionModule on ctx.device."""
    ev, n = ctx.run.eval, ctx.run.eval.num_samples
    settings = sampling_settings(module, ev)
    weights = fingerprint(module.ema if ev.use_ema else module.model, module.first_stage)
    key = {"weights": weights, "sampling": settings, "diffusion": module.diffusion_cfg.to_dict()}
    task = _task(ctx, module)
    source = ctx.context_clips() if task["task"] == "frame_prediction" else None
    if source is not None:
        key["task"] = task
    nets = ctx.nets.present()
    passes = {net.tag: Progress(ctx.cache_dir, f"fake_{net.tag}", {**key, "net": net.key}) for net in nets}
    done = {tag: p.load().done for tag, p in passes.items()}
    start = min([min(d, n) for d in done.values()], default=n)
    if start:
        log.info("resuming: %d of %d samples already measured", start, n)
    expected = (ctx.run.clip_frames, *ctx.run.data.frame_size)
    t0, generated = time.perf_counter(), 0
    with progress_bar("sampling", n, start) as update:
        for b in range(start, n, ev.batch_size):
            stop = min(b + ev.batch_size, n)
            labels, videos = _generate(module, ev, b, stop, source)
            if tuple(videos.shape[2:]) != expected:
                raise ValueError(f"decoded samples are {tuple(videos.shape[2:])} (T, H, W) "
                                 f"but reference clips are {expected}")
            for net in nets:
                if done[net.tag] >= stop:
                    continue
                first = done[net.tag] - b  # a pass ahead of this batch's start takes only its new rows
                rows = net.outputs(videos[first:])
                if labels is not None:
                    rows["labels"] = labels[first:].numpy()
                passes[net.tag].commit(stop, rows, final=stop == n)
                done[net.tag] = stop
            generated += stop - b
            update(stop)
    elapsed = time.perf_counter() - t0
    fake = {tag: p.load().head(n) for tag, p in passes.items()}
    notes = _notes(module, settings, task)
    values, protocols = {}, {}
    for metric in ctx.metrics:
        for name, (value, protocol) in METRICS[metric](ctx, fake, notes).items():
            values[name] = value
            if protocol.n_fake is not None:  # values of samples (not synth_acc_real: real clips only)
                protocol = dataclasses.replace(protocol, task=task["task"], context=task.get("context"))
            protocols[name] = protocol
    k = min(PREVIEW_SAMPLES, n)
    if source is None:
        _, preview = generate(module, ev, 0, k, class_cycle(module.model_cfg.num_classes, k))
    else:  # real clip | its prediction, side by side
        real, _ = source.clips(0, k)
        preview = torch.cat([real.float(), _generate(module, ev, 0, k, source)[1].cpu()], dim=-1)
    extra = {"num_samples": n, **settings, **task,
             "samples_per_sec": generated / elapsed if generated and elapsed > 0 else None}
    return Measurement(values, protocols, extra, preview.cpu())


def _task(ctx: EvalContext, module) -> dict:
    """{"task": "generation"} or, for frame-prediction models, {"task": "frame_prediction", "context": {...}}:
    how many latent / video frames come from which real clips, how many frames are predicted, and how many of
    each the metrics see (K600 with I3D: clips of 17 frames for the causal encoder, FVD on the first 16 =
    5 context + 11 predicted frames, the paper's protocol)."""
    latent, video = context_frames(module)
    if not latent:
        return {"task": "generation"}
    source, measured = ctx.context_clips(), ctx.run.metric_frames()
    return {"task": "frame_prediction", "context": {
        "latent_frames": latent, "video_frames": video, "predicted_video_frames": ctx.run.clip_frames - video,
        "clip_frames": ctx.run.clip_frames, "metric_frames": measured, "predicted_frames_measured": measured - video,
        "source": f"first {video} frames of the real {source.description}; sample j continues clip j mod {len(source)}"}}


def _generate(module, ev, start: int, stop: int, source):
    """generate() for samples start..stop-1, from their real context clips when `source` is given (with the
    clips' own labels for class-conditional models)."""
    if source is None:
        return generate(module, ev, start, stop)
    real, labels = source.clips(start, stop)
    return generate(module, ev, start, stop, labels if module.model_cfg.num_classes else None, context=real)


def _notes(module, s: dict, task: dict) -> str:
    nc = module.model_cfg.num_classes
    if task["task"] == "frame_prediction":
        c = task["context"]
        labels = (f"frame prediction: the first {c['video_frames']} frames ({c['latent_frames']} latent frames) of "
                  f"each real clip encoded as context, {c['predicted_video_frames']} frames predicted, metrics on "
                  f"the first {c['metric_frames']} frames ({c['video_frames']} decoded context + "
                  f"{c['predicted_frames_measured']} predicted)" + (", labels of the real clips" if nc else ""))
    else:
        labels = f"labels uniform over {nc} classes" if nc else "unconditional"
    schedule = s.get("guidance_schedule", "constant") + (f" power {s['guidance_power']}" if "guidance_power" in s else "")
    return (f"{s['sampler']} {s['sampling_steps']} steps (eta {s['eta']}), guidance {s['guidance_scale']} ({schedule}), "
            f"{'EMA' if s['use_ema'] else 'online'} weights, {labels}, seed {s['seed']}")


def _frames_note(ctx: EvalContext, frames: int) -> str:
    return f"first {frames} of {ctx.run.clip_frames} frames"


# ------------------------------------------------------------------------------------ metrics
Result = dict[str, tuple[float, MetricProtocol]]


def _fvd(metric: str) -> Callable[[EvalContext, dict, str], Result]:
    def compute(ctx: EvalContext, fake: dict[str, Partial], notes: str) -> Result:
        net = ctx.nets.video
        real, desc = ctx.real(net)
        r, f = real.stats["features"], FeatureStats().update(fake["video"].rows["features"])
        protocol = MetricProtocol.for_extractor(metric, net, n_real=r.n, n_fake=f.n, frames=net.frames,
                                                reference_split=desc, notes=f"{_frames_note(ctx, net.frames)}; {notes}")
        return {metric: (r.frechet_distance(f), protocol)}
    return compute


def _is_synth(ctx: EvalContext, fake: dict[str, Partial], notes: str) -> Result:
    net, splits = ctx.nets.video, ctx.run.eval.is_splits
    mean, std = inception_score(fake["video"].rows["probs"], splits=splits)
    protocol = MetricProtocol.for_extractor(
        "is_synth", net, n_fake=fake["video"].done, frames=net.frames,
        notes=f"classifier probabilities, {splits} split(s), std {std:.4g}; {_frames_note(ctx, net.frames)}; {notes}")
    return {"is_synth": (mean, protocol)}


def _synth_acc(ctx: EvalContext, fake: dict[str, Partial], notes: str) -> Result:
    """The class asked for vs the class the synthetic classifier recognises, beside its accuracy on
    held-out real clips (the val split it never trained on): the ceiling synth_acc is read against."""
    net, rows = ctx.nets.video, fake["video"].rows
    if "labels" not in rows:
        raise ValueError("synth_acc needs a class-conditional model (model.num_classes > 0)")
    real, desc = ctx.real(net, split="val")
    acc = float(np.mean(rows["probs"].argmax(-1) == rows["labels"]))
    acc_real = float(np.mean(real.rows["probs"].argmax(-1) == real.rows["labels"]))
    k = rows["probs"].shape[1]
    common = dict(frames=net.frames, reference_split=desc)
    return {
        "synth_acc": (acc, MetricProtocol.for_extractor(
            "synth_acc", net, n_fake=fake["video"].done, n_real=real.done, **common,
            notes=f"fraction of samples whose argmax class is the class asked for (chance 1/{k}); the same "
                  f"classifier on {real.done} held-out real clips: {acc_real:.4g} (synth_acc_real); "
                  f"{_frames_note(ctx, net.frames)}; {notes}")),
        "synth_acc_real": (acc_real, MetricProtocol.for_extractor(
            "synth_acc_real", net, n_real=real.done, **common,
            notes=f"fraction of held-out real clips classified as their label (chance 1/{k}); the ceiling for "
                  f"synth_acc; {_frames_note(ctx, net.frames)}")),
    }


def _images(rows: np.ndarray) -> np.ndarray:
    return rearrange(rows, "n t d -> (n t) d")


def _fid(ctx: EvalContext, fake: dict[str, Partial], notes: str) -> Result:
    from walt.metrics.fidelity import fidelity_protocol

    net = ctx.nets.inception
    real, desc = ctx.real(net)
    r, f = real.stats["features"], FeatureStats().update(_images(fake["inception"].rows["features"]))
    notes = (f"images: {_frames_note(ctx, net.frames)} of {fake['inception'].done} samples; "
             f"Frechet distance in float64 (eigh); {notes}")
    protocol = fidelity_protocol("fid", weights_checksum=net.weights_checksum, n_real=r.n, n_fake=f.n,
                                 frames=net.frames, reference_split=desc, notes=notes)
    return {"fid": (r.frechet_distance(f), protocol)}


def _kid(ctx: EvalContext, fake: dict[str, Partial], notes: str) -> Result:
    from walt.metrics.fidelity import fidelity_protocol, kernel_inception_distance

    net = ctx.nets.inception
    real, desc = ctx.real(net)
    r, f = _images(real.rows["features"]), _images(fake["inception"].rows["features"])
    mean, std = kernel_inception_distance(f, r)
    notes = (f"torch-fidelity KID, 100 subsets of {min(1000, len(r), len(f))}, std {std:.4g}; "
             f"images: {_frames_note(ctx, net.frames)}; {notes}")
    protocol = fidelity_protocol("kid", weights_checksum=net.weights_checksum, n_real=len(r), n_fake=len(f),
                                 frames=net.frames, reference_split=desc, notes=notes)
    return {"kid": (mean, protocol)}


def _is(ctx: EvalContext, fake: dict[str, Partial], notes: str) -> Result:
    from walt.metrics.fidelity import fidelity_protocol, inception_score_of_logits

    net, logits = ctx.nets.inception, _images(fake["inception"].rows["logits"])
    splits = min(ctx.run.eval.is_splits, len(logits))
    mean, std = inception_score_of_logits(logits, splits)
    notes = (f"torch-fidelity IS, {splits} split(s), rows shuffled with seed 2020, std {std:.4g}; "
             f"images: {_frames_note(ctx, net.frames)}; {notes}")
    return {"is": (mean, fidelity_protocol("is", weights_checksum=net.weights_checksum, n_fake=len(logits),
                                           frames=net.frames, notes=notes))}


def _is_c3d(ctx: EvalContext, fake: dict[str, Partial], notes: str) -> Result:
    net, probs = ctx.nets.c3d, fake["c3d"].rows["probs"]
    splits = min(ctx.run.eval.is_splits, len(probs))
    mean, std = inception_score(probs, splits=splits, shuffle_seed=42)
    protocol = MetricProtocol(
        metric="is_c3d", extractor=f"C3D UCF-101 class probabilities ({probs.shape[1]} classes)",
        weights_checksum=net.weights_checksum, frames=net.frames, resolution=net.resolution, n_fake=len(probs),
        notes=f"{splits} split(s), rows shuffled with seed 42 (StyleGAN-V), std {std:.4g}; uint8 input, the "
              f"classifier resizes internally; first {net.frames} of {ctx.run.clip_frames} frames; {notes}")
    return {"is_c3d": (mean, protocol)}


METRICS: dict[str, Callable[[EvalContext, dict, str], Result]] = {
    "fvd": _fvd("fvd"), "fvd_synth": _fvd("fvd_synth"), "is_synth": _is_synth, "synth_acc": _synth_acc,
    "fid": _fid, "kid": _kid, "is": _is, "is_c3d": _is_c3d,
}
