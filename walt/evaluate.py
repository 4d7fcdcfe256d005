"""walt-eval: the metrics of a run, written into its results.json and TensorBoard.

Stage 2 (diffusion): N generated clips against reference clips -> fvd (I3D) or fvd_synth, and
is_synth. Stage 1 (autoencoder): reference clips against their reconstructions -> psnr, ssim and
rfvd (I3D) or rfvd_synth. Every number is stored beside its MetricProtocol.

Design choices, and why:
- Samples do not depend on batching: sample j draws its label and initial noise from its own
  generator seeded by (eval.seed, j), on the CPU. So the sample set is the same on any device and
  batch size, and an interrupted evaluation that resumes produces exactly the samples it would have.
- Resumable: after every batch the partial statistics are committed to <run_dir>/eval/ (data files
  first, then an atomically replaced JSON pointer), so a killed job continues at the next batch. The
  file name hashes everything that defines the samples or features (weights fingerprint, sampler,
  extractor, frames, seed), so stale partial results are never mixed in; asking for more samples
  later continues the same stream.
- Real statistics are cached the same way, keyed by extractor + dataset + split + frames +
  resolution + num_real + seed; the reference clips are the val-style centred clips of
  eval.reference_split, a seeded subset when the split holds more than num_real.
- TensorBoard: scalars `eval/<metric>` go into the run's own TensorBoard dir (<run_dir>/tensorboard),
  the run the training logger's HPARAMS session lives in. The HPARAMS tab shows a metric column only
  when the experiment summary written at training start declares it, so walt-train should declare
  `hp_metric_tags(cfg)` there (NaN until evaluated). A directory without any HPARAMS session (an
  untrained baseline, a run trained without a logger) gets one here, declaring the same tags.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from walt import runs
from walt.config import CONFIG_DIR, clip_frames
from walt.utils import from_dict

log = logging.getLogger(__name__)

I3D_EXTRACTORS = ("i3d", "i3d_torchscript")
EXTRACTOR_NAMES = ("synthetic", *I3D_EXTRACTORS)
REFERENCE_SPLITS = ("train", "val")
# metric -> extractors that can measure it (None: no extractor, pixels only)
METRIC_EXTRACTORS: dict[str, Optional[tuple[str, ...]]] = {
    "fvd": I3D_EXTRACTORS, "fvd_synth": ("synthetic",), "is_synth": ("synthetic",),
    "rfvd": I3D_EXTRACTORS, "rfvd_synth": ("synthetic",), "psnr": None, "ssim": None,
}
STAGE_METRICS = {"diffusion": ("fvd", "fvd_synth", "is_synth"), "autoencoder": ("psnr", "ssim", "rfvd", "rfvd_synth")}
EVAL_DIR = "eval"
TB_DIR = "tensorboard"
TAG_PREFIX = "eval/"


# ------------------------------------------------------------------------------------ config
@dataclass
class EvalConfig:
    """The `eval` config group (experiments/eval/*.yaml).

    metrics: names to compute; None = the stage's defaults for the extractor (`stage_metrics`).
        Stage 2: fvd (I3D), fvd_synth, is_synth. Stage 1: psnr, ssim, rfvd (I3D), rfvd_synth.
        The *_synth names are measured by the synthetic-data classifier, so no table reads them as I3D.
    extractor: feature network, "synthetic" | "i3d" | "i3d_torchscript".
    weights: the I3D file; None = the extractor's environment variable ($WALT_I3D_WEIGHTS, ...).
    extractor_options: extra extractor arguments (synthetic: SynthClassifierConfig fields such as
        width, epochs, resolution; i3d: resolution, verify); None = none. Null rather than {} in the
        YAML, so that a Hydra override can put a whole dict there.
    num_samples: generated clips (stage 2).
    num_real: reference clips, capped at the split's size; stage 1 reconstructs these.
    reference_split: "train" | "val": the split whose centred clips are the real data.
    batch_size: clips per sampling / reconstruction / feature batch.
    sampling_steps, guidance_scale: None = the diffusion config's values.
    use_ema: sample with the EMA weights.
    num_frames_metric: the first n frames of each clip are fed to the extractor (16 of 17 for I3D,
        the eval=i3d preset); None = all frames. More frames than the clips have is an error.
    is_splits: Inception-score splits.
    seed: labels, initial noise and the reference subset.
    device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
    after_train: walt-train evaluates the run when training ends.
    """

    metrics: Optional[list] = None
    extractor: str = "synthetic"
    weights: Optional[str] = None
    extractor_options: Optional[dict] = None
    num_samples: int = 256
    num_real: int = 2048
    reference_split: str = "train"
    batch_size: int = 16
    sampling_steps: Optional[int] = None
    guidance_scale: Optional[float] = None
    use_ema: bool = True
    num_frames_metric: Optional[int] = None
    is_splits: int = 1
    seed: int = 0
    device: str = "auto"
    after_train: bool = False

    def __post_init__(self):
        if self.extractor not in EXTRACTOR_NAMES:
            raise ValueError(f"eval.extractor={self.extractor!r} is not one of {EXTRACTOR_NAMES}")
        if self.reference_split not in REFERENCE_SPLITS:
            raise ValueError(f"eval.reference_split={self.reference_split!r} is not one of {REFERENCE_SPLITS}")
        for name in ("num_samples", "num_real", "batch_size", "is_splits"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"eval.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_frames_metric is not None and self.num_frames_metric < 1:
            raise ValueError(f"eval.num_frames_metric must be >= 1 or null, got {self.num_frames_metric}")
        if self.sampling_steps is not None and self.sampling_steps < 1:
            raise ValueError(f"eval.sampling_steps must be >= 1 or null, got {self.sampling_steps}")
        if self.metrics is not None:
            self.metrics = [str(m) for m in self.metrics]
            unknown = [m for m in self.metrics if m not in METRIC_EXTRACTORS]
            if unknown or not self.metrics:
                raise ValueError(f"eval.metrics {unknown or '[]'} unknown; valid metrics: {sorted(METRIC_EXTRACTORS)}")
            for m in self.metrics:
                needs = METRIC_EXTRACTORS[m]
                if needs is not None and self.extractor not in needs:
                    raise ValueError(f"eval.metrics has {m!r}, which needs eval.extractor in {needs}, "
                                     f"not {self.extractor!r}")
        self.extractor_options = dict(self.extractor_options or {})

    @classmethod
    def from_dict(cls, d: Any) -> "EvalConfig":
        """From a dict or DictConfig; unknown keys fail naming the valid ones."""
        return from_dict(cls, d, "eval")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def stage_metrics(self, stage: str) -> list[str]:
        """The metrics computed for `stage`: eval.metrics (all valid for the stage) or the defaults,
        diffusion [fvd_synth, is_synth] | [fvd] and autoencoder [psnr, ssim, rfvd_synth] | [psnr, ssim, rfvd]."""
        if stage not in STAGE_METRICS:
            raise ValueError(f"unknown stage {stage!r}; choose one of {sorted(STAGE_METRICS)}")
        synthetic = self.extractor == "synthetic"
        if self.metrics is None:
            if stage == "diffusion":
                return ["fvd_synth", "is_synth"] if synthetic else ["fvd"]
            return ["psnr", "ssim", "rfvd_synth" if synthetic else "rfvd"]
        wrong = [m for m in self.metrics if m not in STAGE_METRICS[stage]]
        if wrong:
            raise ValueError(f"eval.metrics {wrong} do not apply to stage {stage}; valid for it: {STAGE_METRICS[stage]}")
        return list(self.metrics)


def load_eval_preset(name: str = "default") -> dict:
    """experiments/eval/<name>.yaml as a plain dict, its `defaults` list applied (own values last)."""
    path = Path(CONFIG_DIR) / "eval" / f"{name}.yaml"
    if not path.exists():
        valid = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ValueError(f"unknown eval preset {name!r}; valid: {valid}")
    node = OmegaConf.to_container(OmegaConf.load(path))
    defaults = node.pop("defaults", None) or []
    out: dict = {}
    for entry in defaults if "_self_" in defaults else [*defaults, "_self_"]:
        out.update(node if entry == "_self_" else load_eval_preset(entry))
    return out


def eval_config(cfg: DictConfig) -> EvalConfig:
    """The validated EvalConfig of a composed or stored run config (the default preset when it has none)."""
    node = cfg["eval"] if "eval" in cfg and cfg["eval"] is not None else load_eval_preset("default")
    return EvalConfig.from_dict(node)


def stage_of(cfg: DictConfig) -> str:
    stage = cfg.stage
    return str(stage.value if hasattr(stage, "value") else stage)


def check_config(cfg: DictConfig) -> EvalConfig:
    """Checks for walt.config.validate, so a run fails before training rather than after: eval keys and
    values and the stage's metrics; with after_train also the frames and the I3D weights file."""
    ev = eval_config(cfg)
    ev.stage_metrics(stage_of(cfg))
    if ev.after_train:
        metric_frames(cfg, ev)
        if ev.extractor in I3D_EXTRACTORS:
            from walt.metrics import I3D_SPEC, I3D_TORCHSCRIPT_SPEC
            from walt.weights import resolve_weights

            resolve_weights(I3D_SPEC if ev.extractor == "i3d" else I3D_TORCHSCRIPT_SPEC, ev.weights)
    return ev


def hp_metric_tags(cfg: DictConfig) -> list[str]:
    """TensorBoard tags of the metrics evaluation will write for this config (declare them in the
    training logger's log_hyperparams so the HPARAMS tab has the columns)."""
    return [TAG_PREFIX + m for m in eval_config(cfg).stage_metrics(stage_of(cfg))]


def run_config(run_dir: str | os.PathLike, overrides: Sequence[str] = ()) -> DictConfig:
    """A finished run's stored config.yaml with overrides applied, paths.run_dir set to `run_dir`.

    Overrides use Hydra's syntax: key=value, +key=value, ~key, and eval=<preset> (experiments/eval/)
    to swap the evaluation preset. Other groups cannot be re-selected on a trained run.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    run_dir = Path(run_dir)
    path = run_dir / runs.CONFIG
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a run directory (walt-train writes {runs.CONFIG})")
    cfg = OmegaConf.load(path)
    with open_dict(cfg):
        if cfg.get("eval") is None:
            cfg.eval = load_eval_preset("default")
        cfg.paths.run_dir = str(run_dir)
        for o in OverridesParser.create().parse_overrides(list(overrides)):
            key = o.key_or_group
            if o.is_delete():
                parent, _, leaf = key.rpartition(".")
                node = OmegaConf.select(cfg, parent) if parent else cfg
                node.pop(leaf, None)
            elif "." not in key and isinstance(o.value(), str) and (Path(CONFIG_DIR) / key).is_dir():
                if key != "eval":
                    raise ValueError(f"{key}={o.value()}: only eval=<preset> can be re-selected on a trained run; "
                                     f"change single fields with {key}.<field>=<value>")
                cfg.eval = load_eval_preset(o.value())
            else:
                OmegaConf.update(cfg, key, o.value(), merge=False, force_add=True)
    return cfg


# ------------------------------------------------------------------------------------ modules
def eval_device(ev: EvalConfig) -> torch.device:
    """The torch device of eval.device ("auto": CUDA when available)."""
    if ev.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(ev.device)


def resolve_first_stage(cfg: DictConfig) -> DictConfig:
    """cfg with first_stage_ckpt=auto replaced by the checkpoint walt-train would use (walt.first_stage
    finds it, or trains it once). Runs store the resolved path in config.yaml already."""
    if stage_of(cfg) != "diffusion" or cfg.get("first_stage_ckpt") != "auto":
        return cfg
    from walt import first_stage

    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.first_stage_ckpt = first_stage.resolve(cfg)
    return cfg


def build_module(cfg: DictConfig):
    """A freshly initialised module of the run's stage, as walt-train builds it (the untrained baseline);
    stage 2 with its frozen first stage."""
    from walt.train import build_module as build

    return build(resolve_first_stage(cfg))


def load_module(cfg: DictConfig, run_dir: str | os.PathLike):
    """(module, global_step) from <run_dir>/checkpoints/last.ckpt, loaded with weights_only=True.

    Stage 1: `load_autoencoder` (EMA weights, frozen). Stage 2: rebuilt from the run's config (with the
    first stage of first_stage_ckpt), then the checkpoint's weights, strictly, so a config that does
    not match the checkpoint fails naming the tensors.
    """
    path = Path(run_dir) / runs.LAST_CKPT
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint {path}: train the run first (walt-train) or pass the module")
    if stage_of(cfg) == "autoencoder":
        from walt.modules.autoencoder import load_autoencoder

        module = load_autoencoder(str(path))
        step = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step", 0)
        return module, int(step)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    module = build_module(cfg)
    module.load_state_dict(ckpt["state_dict"])
    module.on_load_checkpoint(ckpt)
    return module.eval(), int(ckpt.get("global_step", 0))


def _fingerprint(*modules: torch.nn.Module) -> str:
    """Hash of the exact weights (CPU bytes), so partial results of other weights are never reused."""
    h = hashlib.blake2b(digest_size=12)
    for module in modules:
        for name, t in module.state_dict().items():
            t = t.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# ------------------------------------------------------------------------------------ sampling
def _sample_seed(seed: int, index: int) -> int:
    return (int(seed) & 0xFFFFFFFF) << 32 | (index & 0xFFFFFFFF)


def sample_inputs(module, seed: int, start: int, stop: int,
                  labels: Optional[Sequence[int]] = None) -> tuple[Optional[torch.Tensor], torch.Tensor]:
    """(labels (B,) or None, initial noise (B, c, T, H, W)) of samples start..stop-1, on the CPU.

    Sample j uses its own generator seeded by (seed, j): its label (uniform over the classes unless
    `labels`, indexed by j, is given) and its noise do not depend on batching or device.
    """
    mc = module.model_cfg
    shape = (mc.in_channels, *mc.input_size)
    ys, noise = [], []
    for j in range(start, stop):
        g = torch.Generator().manual_seed(_sample_seed(seed, j))
        y = int(torch.randint(mc.num_classes, (1,), generator=g)) if mc.num_classes else None
        ys.append(int(labels[j]) if labels is not None else y)
        noise.append(torch.randn(shape, generator=g))
    y = torch.tensor(ys) if mc.num_classes else None
    return y, torch.stack(noise)


@torch.no_grad()
def generate(module, ev: EvalConfig, start: int, stop: int, labels: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Decoded videos (B, C, T, H, W) in [-1, 1] of samples start..stop-1 (see `sample_inputs`).

    Stochastic samplers (ddpm, eta > 0) draw their step noise from one generator per batch, seeded by
    (seed, start): reproducible for the same batch boundaries.
    """
    device = module.device
    y, noise = sample_inputs(module, ev.seed, start, stop, labels)
    step_gen = torch.Generator(device=device).manual_seed(_sample_seed(ev.seed, start) ^ (1 << 63))
    latents = module.sample(None if y is None else y.to(device), ev.sampling_steps, ev.guidance_scale,
                            noise=noise.to(device), use_ema=ev.use_ema, generator=step_gen)
    return module.decode(latents).float()


# ------------------------------------------------------------------------------------ resumable state
def _key_name(kind: str, key: dict) -> str:
    return f"{kind}_{hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]}"


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class _State:
    done: int
    stats: dict
    arrays: dict
    values: dict


class Progress:
    """One evaluation pass's partial results on disk: FeatureStats, arrays and numbers after `done` items.

    A commit writes generation-numbered data files (each atomically), then atomically replaces the
    small JSON pointer <name>.json, then deletes the previous generation: a kill at any moment
    leaves the last committed state readable. `key` (everything that defines the items) is hashed
    into the name and checked on load.
    """

    def __init__(self, directory: str | os.PathLike, kind: str, key: dict):
        self.dir, self.key = Path(directory), json.loads(json.dumps(key, sort_keys=True, default=str))
        self.name = _key_name(kind, self.key)
        self.pointer = self.dir / f"{self.name}.json"

    def load(self) -> Optional[_State]:
        from walt.metrics import FeatureStats

        if not self.pointer.exists():
            return None
        meta = json.loads(self.pointer.read_text())
        if meta.get("key") != self.key:
            log.warning("%s belongs to another evaluation; starting over", self.pointer)
            return None
        stats = {k: FeatureStats.load(self.dir / f) for k, f in meta["stats"].items()}
        arrays = {k: np.load(self.dir / f, allow_pickle=False) for k, f in meta["arrays"].items()}
        return _State(int(meta["done"]), stats, arrays, meta["values"])

    def commit(self, done: int, stats: dict, arrays: Optional[dict] = None, values: Optional[dict] = None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        files: dict[str, dict] = {"stats": {}, "arrays": {}}
        for k, s in stats.items():
            files["stats"][k] = f"{self.name}.{done}.{k}.npz"
            s.save(self.dir / files["stats"][k])
        for k, a in (arrays or {}).items():
            files["arrays"][k] = f"{self.name}.{done}.{k}.npy"
            _save_npy_atomic(self.dir / files["arrays"][k], np.asarray(a))
        runs.write_json_atomic(self.pointer, {"key": self.key, "done": done, "values": values or {}, **files})
        keep = {self.pointer.name, *files["stats"].values(), *files["arrays"].values()}
        for old in self.dir.glob(f"{self.name}.*"):
            if old.name not in keep:
                old.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------ data and features
class FirstFrames:
    """An extractor fed the first `frames` frames of every clip (the protocol's frames, e.g. 16 of 17)."""

    def __init__(self, extractor, frames: int):
        self.extractor, self.frames = extractor, frames
        self.name, self.dim = extractor.name, extractor.dim
        self.weights_checksum, self.resolution = extractor.weights_checksum, extractor.resolution
        self.has_probs = hasattr(extractor, "probs")

    def _check(self, videos: torch.Tensor) -> torch.Tensor:
        if videos.shape[2] < self.frames:
            raise ValueError(f"clips have {videos.shape[2]} frames, the metric takes {self.frames} (eval.num_frames_metric)")
        return videos[:, :, : self.frames]

    def features(self, videos: torch.Tensor) -> torch.Tensor:
        return self.extractor.features(self._check(videos))

    def probs(self, videos: torch.Tensor) -> torch.Tensor:
        return self.extractor.probs(self._check(videos))


def metric_frames(cfg: DictConfig, ev: EvalConfig) -> int:
    frames = clip_frames(cfg)
    n = ev.num_frames_metric or frames
    if n > frames:
        raise ValueError(f"eval.num_frames_metric={n} but the run's clips have {frames} frames "
                         f"(data.num_frames); set eval.num_frames_metric <= {frames} or null")
    return n


def build_eval_extractor(cfg: DictConfig, ev: EvalConfig, frames: int, device: torch.device) -> FirstFrames:
    """The configured extractor, fed the first `frames` frames. I3D weights are resolved here, so a
    missing file fails before any sampling; the synthetic classifier is trained once per dataset."""
    from walt.metrics import build_extractor

    opts = dict(ev.extractor_options)
    if ev.extractor == "synthetic":
        root = Path(str(cfg.data.root))
        if not (root / "spec.json").exists():
            raise ValueError(f"eval.extractor=synthetic needs the synthetic dataset (a root with spec.json); "
                             f"{root} has none. Use eval=i3d for real videos.")
        opts.setdefault("num_frames", frames)
        opts.setdefault("split", int(cfg.data.get("split", 1)))
        ext = build_extractor("synthetic", root=str(root), device=str(device), batch_size=ev.batch_size, **opts)
    else:
        ext = build_extractor(ev.extractor, weights=ev.weights, device=str(device), batch_size=ev.batch_size, **opts)
    return FirstFrames(ext, frames)


def reference_clips(cfg: DictConfig, ev: EvalConfig, datamodule=None):
    """(dataset subset, description) of the real clips: centred clips of eval.reference_split, all of
    them or a seeded subset of eval.num_real (sorted, for sequential reads)."""
    from torch.utils.data import Subset

    dm = datamodule or reference_datamodule(cfg)
    ds = dm.build(train=ev.reference_split == "train")
    n = min(ev.num_real, len(ds))
    if n < len(ds):
        perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(ev.seed))
        indices = sorted(perm[:n].tolist())
    else:
        indices = list(range(n))
    split = f" split {cfg.data.split}" if _str(cfg.data.dataset) in ("ucf101", "synthetic") else ""
    desc = f"{_str(cfg.data.dataset)} {ev.reference_split}{split}, centred clips ({n} of {len(ds)})"
    return Subset(ds, indices), desc


def reference_datamodule(cfg: DictConfig):
    """The run's DataModule with validation-style (centred, deterministic) video clips (never the
    latent cache: metrics compare decoded videos with real ones); data prepared."""
    from hydra.utils import instantiate

    dm = instantiate(cfg.data, _convert_="all", temporal_sampling="center", crop="center",
                     pin_memory=False, persistent_workers=False, latent_cache=None)
    dm.prepare_data()
    return dm


def _loader(subset, start: int, cfg: DictConfig, ev: EvalConfig):
    from torch.utils.data import DataLoader, Subset

    rest = Subset(subset.dataset, subset.indices[start:])
    return DataLoader(rest, batch_size=ev.batch_size, shuffle=False, num_workers=int(cfg.data.get("num_workers", 0)))


def _str(value: Any) -> str:
    return str(value.value if hasattr(value, "value") else value)


def real_statistics(cfg: DictConfig, ev: EvalConfig, extractor: FirstFrames, cache_dir: Path, datamodule=None):
    """(FeatureStats of the reference clips, description); cached and resumable under cache_dir."""
    from walt.metrics import FeatureStats

    subset, desc = reference_clips(cfg, ev, datamodule)
    data = cfg.data
    key = {"extractor": extractor.name, "checksum": extractor.weights_checksum, "resolution": extractor.resolution,
           "frames": extractor.frames, "dataset": _str(data.dataset), "root": str(data.root),
           "split": ev.reference_split, "data_split": data.get("split"), "clip_frames": clip_frames(cfg),
           "frame_stride": data.frame_stride, "data_resolution": data.resolution, "num_real": len(subset),
           "seed": ev.seed}
    progress = Progress(cache_dir, "real", key)
    state = progress.load()
    done, stats = (state.done, state.stats["real"]) if state else (0, FeatureStats(extractor.dim))
    if done < len(subset):
        log.info("real statistics: %d of %d clips done", done, len(subset))
        for batch in _loader(subset, done, cfg, ev):
            stats.update(extractor.features(batch["video"]))
            done += len(batch["video"])
            progress.commit(done, {"real": stats})
    return stats, desc


# ------------------------------------------------------------------------------------ evaluation
def evaluate_run(cfg: DictConfig, run_dir: str | os.PathLike | None = None, module=None) -> dict:
    """Evaluate a run's model and write metrics + protocols into <run_dir>/results.json and TensorBoard.

    module: the trained LightningModule (walt-train's hook; EMA weights are used); None = load
    <run_dir>/checkpoints/last.ckpt. Returns {"metrics", "protocol", "evaluation"} as written.
    """
    run_dir = Path(run_dir or cfg.paths.run_dir)
    return _evaluate(cfg, run_dir, module, hparams=None)


def evaluate_after_train(cfg: DictConfig, module, trainer=None) -> dict:
    """walt-train's end-of-run hook: evaluate when eval.after_train is set (rank 0 only); else {}."""
    if not eval_config(cfg).after_train:
        return {}
    if trainer is not None and not trainer.is_global_zero:
        return {}
    return evaluate_run(cfg, cfg.paths.run_dir, module=module)


def evaluate_untrained(cfg: DictConfig, out_dir: str | os.PathLike) -> dict:
    """The same evaluation of a freshly initialised model of the same config (seeded with cfg.seed),
    written as a run-like directory: config.yaml, results.json (baseline: untrained), tensorboard/.
    It has no COMPLETED marker: it is a reference point, not a trained run."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.paths.run_dir = str(out_dir)
    (out_dir / runs.CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    torch.manual_seed(int(cfg.get("seed", 0)))
    module = build_module(cfg)
    runs.update_results(out_dir, stage=stage_of(cfg), baseline="untrained", global_step=0,
                        params=sum(p.numel() for p in module.parameters() if p.requires_grad))
    return _evaluate(cfg, out_dir, module, hparams={"baseline": "untrained"})


def _evaluate(cfg: DictConfig, run_dir: Path, module, hparams: Optional[dict]) -> dict:
    start_time = time.perf_counter()
    ev = eval_config(cfg)
    stage = stage_of(cfg)
    metrics = ev.stage_metrics(stage)
    frames = metric_frames(cfg, ev)
    device = eval_device(ev)
    needs_extractor = any(METRIC_EXTRACTORS[m] for m in metrics)
    extractor = build_eval_extractor(cfg, ev, frames, device) if needs_extractor and ev.extractor != "synthetic" else None
    datamodule = reference_datamodule(cfg)  # the synthetic extractor trains on this data
    if needs_extractor and extractor is None:
        extractor = build_eval_extractor(cfg, ev, frames, device)
    if module is None:
        module, step = load_module(cfg, run_dir)
    else:
        step = int(getattr(module, "global_step", 0) or 0)
    module = module.float().eval().to(device)
    cache_dir = run_dir / EVAL_DIR
    if stage == "diffusion":
        values, protocols, extra = _evaluate_diffusion(cfg, ev, module, extractor, metrics, datamodule, cache_dir)
    else:
        values, protocols, extra = _evaluate_autoencoder(cfg, ev, module, extractor, metrics, datamodule, cache_dir)
    evaluation = {"stage": stage, "global_step": step, "device": str(device),
                  "wall_time_s": time.perf_counter() - start_time, "config": ev.to_dict(), **extra}
    protocol = {name: p.to_dict() for name, p in protocols.items()}
    runs.update_results(run_dir, metrics=values, protocol=protocol, evaluation=evaluation)
    from walt.train import flat_hparams

    session = {**flat_hparams(cfg), **(hparams or {})}
    log_to_tensorboard(run_dir / TB_DIR, values, step, session, declared=[TAG_PREFIX + m for m in metrics])
    log.info("evaluated %s at step %d: %s", run_dir, step, values)
    return {"metrics": values, "protocol": protocol, "evaluation": evaluation}


def _sampling_notes(module, ev: EvalConfig, frames: int, clip_len: int) -> tuple[str, int, float]:
    d = module.diffusion_cfg
    steps = ev.sampling_steps or d.sampling_steps
    scale = d.guidance_scale if ev.guidance_scale is None else ev.guidance_scale
    nc = module.model_cfg.num_classes
    labels = f"labels uniform over {nc} classes" if nc else "unconditional"
    notes = (f"first {frames} of {clip_len} frames; {d.sampler} {steps} steps (eta {d.eta}), guidance {scale}, "
             f"{'EMA' if ev.use_ema else 'online'} weights, {labels}, seed {ev.seed}")
    return notes, steps, scale


def _evaluate_diffusion(cfg, ev: EvalConfig, module, extractor: FirstFrames, metrics, datamodule, cache_dir: Path):
    from walt.metrics import FeatureStats, MetricProtocol, inception_score

    if module.first_stage is None:
        raise ValueError("stage-2 evaluation decodes samples with the first stage: set first_stage_ckpt "
                         "(a stage-1 last.ckpt, or auto)")
    clip_len = clip_frames(cfg)
    notes, steps, scale = _sampling_notes(module, ev, extractor.frames, clip_len)
    key = {"weights": _fingerprint(module.ema if ev.use_ema else module.model, module.first_stage),
           "diffusion": {**module.diffusion_cfg.to_dict(), "sampling_steps": steps, "guidance_scale": scale},
           "use_ema": ev.use_ema, "seed": ev.seed, "extractor": extractor.name,
           "checksum": extractor.weights_checksum, "frames": extractor.frames}
    progress = Progress(cache_dir, "fake", key)
    state = progress.load()
    n = ev.num_samples
    if state is not None and state.done > n:
        log.warning("%d samples were evaluated before, %d are asked for: starting over", state.done, n)
        state = None
    done = state.done if state else 0
    stats = state.stats["fake"] if state else FeatureStats(extractor.dim)
    probs = state.arrays["probs"][:done] if state and "probs" in state.arrays else np.zeros((0, 0))
    if done:
        log.info("resuming: %d of %d samples already evaluated", done, n)
    real, desc = real_statistics(cfg, ev, extractor, cache_dir, datamodule)
    expected = (clip_len, int(cfg.data.resolution), int(cfg.data.resolution))
    t0, generated = time.perf_counter(), 0
    for start in range(done, n, ev.batch_size):
        stop = min(start + ev.batch_size, n)
        videos = generate(module, ev, start, stop)
        if tuple(videos.shape[2:]) != expected:
            raise ValueError(f"decoded samples are {tuple(videos.shape[2:])} (T, H, W) but reference clips are {expected}")
        stats.update(extractor.features(videos))
        arrays = {}
        if extractor.has_probs:
            p = extractor.probs(videos).double().numpy()
            probs = p if not len(probs) else np.concatenate([probs, p])
            arrays["probs"] = probs
        progress.commit(stop, {"fake": stats}, arrays)
        generated += stop - start
    elapsed = time.perf_counter() - t0

    values, protocols = {}, {}
    common = dict(frames=extractor.frames, reference_split=desc)
    for m in metrics:
        if m in ("fvd", "fvd_synth"):
            values[m] = real.frechet_distance(stats)
            protocols[m] = MetricProtocol.for_extractor(m, extractor, n_real=real.n, n_fake=stats.n, notes=notes, **common)
        elif m == "is_synth":
            mean, std = inception_score(probs, splits=ev.is_splits)
            values[m] = mean
            protocols[m] = MetricProtocol.for_extractor(
                m, extractor, n_fake=len(probs), frames=extractor.frames,
                notes=f"classifier probabilities, {ev.is_splits} split(s), std {std:.4g}; {notes}")
    extra = {"num_samples": n, "sampling_steps": steps, "guidance_scale": scale,
             "samples_per_sec": generated / elapsed if generated and elapsed > 0 else None}
    return values, protocols, extra


def _evaluate_autoencoder(cfg, ev: EvalConfig, module, extractor: Optional[FirstFrames], metrics, datamodule,
                          cache_dir: Path):
    from walt.metrics import ReconstructionMeter

    subset, desc = reference_clips(cfg, ev, datamodule)
    key = {"weights": _fingerprint(module.inference_model), "extractor": extractor and extractor.name,
           "checksum": extractor and extractor.weights_checksum, "frames": extractor and extractor.frames,
           "dataset": _str(cfg.data.dataset), "root": str(cfg.data.root), "split": ev.reference_split,
           "clip_frames": clip_frames(cfg), "data_resolution": cfg.data.resolution, "num_real": len(subset),
           "seed": ev.seed}
    progress = Progress(cache_dir, "recon", key)
    state = progress.load()
    meter = ReconstructionMeter(extractor)
    if state is not None:
        meter = ReconstructionMeter(extractor, real_stats=state.stats["real"], recon_stats=state.stats["recon"],
                                    **state.values)
    done = meter.videos
    device = module.device
    for batch in _loader(subset, done, cfg, ev):
        x = batch["video"].to(device)
        meter.update(x, module.reconstruct(x))
        values = {k: getattr(meter, k) for k in ("psnr_sum", "ssim_sum", "frames", "videos", "clip_frames")}
        progress.commit(meter.videos, {"real": meter.real_stats, "recon": meter.recon_stats}, values=values)
    out, protos = meter.compute(), meter.protocols(desc)
    values, protocols = {}, {}
    for m in metrics:
        src = "rfvd" if m.startswith("rfvd") else m
        values[m] = out[src]
        p = protos[src]
        if src == "rfvd":
            p = dataclasses.replace(p, metric=m, frames=extractor.frames,
                                    notes=f"{p.notes}; first {extractor.frames} of {meter.clip_frames} frames")
        protocols[m] = p
    return values, protocols, {"num_real": meter.videos}


# ------------------------------------------------------------------------------------ TensorBoard
def _has_hparams_session(tb_dir: Path) -> bool:
    """Whether an events file in tb_dir holds an HPARAMS session (tags are stored verbatim in the records)."""
    from tensorboard.plugins.hparams.metadata import SESSION_START_INFO_TAG

    tag = SESSION_START_INFO_TAG.encode()
    return any(tag in f.read_bytes() for f in tb_dir.glob("events.out.tfevents.*"))


def log_to_tensorboard(tb_dir: str | os.PathLike, values: dict, step: int, hparams: Optional[dict] = None,
                       declared: Iterable[str] = ()) -> None:
    """Scalars eval/<metric> at `step`; plus an HPARAMS session declaring `declared` tags when the
    directory has none yet (a run's training logger normally wrote it)."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    tb_dir = Path(tb_dir)
    tb_dir.mkdir(parents=True, exist_ok=True)
    new_session = hparams is not None and not _has_hparams_session(tb_dir)
    writer = SummaryWriter(log_dir=str(tb_dir))
    try:
        if new_session:
            tags = dict.fromkeys([*declared, *(TAG_PREFIX + k for k in values)])
            metric_dict = {t: float(values.get(t[len(TAG_PREFIX):], math.nan)) for t in tags}
            for summary in hparams_summary(hparams, metric_dict):
                writer._get_file_writer().add_summary(summary)  # same call as Lightning's TensorBoardLogger
        for name, value in values.items():
            writer.add_scalar(TAG_PREFIX + name, float(value), step)
    finally:
        writer.close()


# ------------------------------------------------------------------------------------ CLI
def main(argv: Optional[Sequence[str]] = None) -> None:
    """walt-eval <run_dir> [--untrained OUT_DIR] [overrides]: metrics into <run_dir>/results.json.

    Overrides (eval=i3d, eval.num_samples=2048, eval.weights=<file>, ...) apply to the run's stored
    config. --untrained OUT_DIR evaluates a freshly initialised model of the same config into OUT_DIR
    (the baseline a trained model must beat). Prints the metrics as one JSON line.
    """
    parser = argparse.ArgumentParser(prog="walt-eval", description=main.__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--untrained", metavar="OUT_DIR", default=None,
                        help="evaluate an untrained model of the same config into OUT_DIR")
    args, overrides = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    cfg = run_config(args.run_dir, overrides)
    out = evaluate_untrained(cfg, args.untrained) if args.untrained else evaluate_run(cfg, args.run_dir)
    print(json.dumps(out["metrics"]))
