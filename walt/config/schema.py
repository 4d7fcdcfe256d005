"""Typed schemas of the Hydra config groups.

The primary config lists `train_schema` first in its defaults, so Hydra checks every group's keys
and values against these dataclasses while composing: a misspelt key or a value of the wrong type or
outside an enum fails at start, and OmegaConf's message names the valid choices. The stage parts
whose fields mix strings and lists (autoencoder, model, diffusion, eval) are typed by their own
dataclasses in `walt.config.run.RunConfig.from_hydra`, together with the checks that span fields.
"""
from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from walt.data.video import Sampling



def _config_tree(name: str) -> str:
    """The checkout's top-level experiments/ or sweeps/; an installed wheel carries them as walt/<name>
    (pyproject's package-dir mapping), so both layouts read the one tree the repository holds."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    installed = os.path.join(package, name)
    return installed if os.path.isdir(installed) else os.path.join(os.path.dirname(package), name)


CONFIG_DIR = _config_tree("experiments")
SWEEPS_DIR = _config_tree("sweeps")
AUTO = "auto"  # first_stage_ckpt / data.latent_cache: found (or made once) by config hash
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "64-true")


class Dataset(str, enum.Enum):
    ucf101 = "ucf101"
    kinetics600 = "kinetics600"
    imagenet = "imagenet"
    synthetic = "synthetic"


class Stage(str, enum.Enum):
    """Which LightningModule `walt-train` builds."""

    autoencoder = "autoencoder"
    diffusion = "diffusion"
    super_resolution = "super_resolution"
    interpolation = "interpolation"


LOWRES_UPSAMPLE = ("depth_to_space", "bilinear", "nearest")


@dataclass
class LowResConfig:
    """How a cascade stage (stage=super_resolution | interpolation) is conditioned on the previous stage.

    factor: spatial upsampling factor (super-resolution) or frame-rate factor (interpolation).
    upsample: super-resolution's latent-space upsampling of the low-res latents to the high-res grid:
        "depth_to_space" (default; W.A.L.T Sec. 5 upsamples the low-res input "in latent space" by
        depth-to-space): the model itself projects each low-res latent pixel linearly to factor^2 * c
        channels and pixel-shuffles them into a factor x factor block, per frame (model.cond_upsample =
        factor, the projection `cond_proj` is learned with the model and starts as nearest-neighbour);
        "bilinear" / "nearest": fixed per-frame interpolation outside the model (model.cond_upsample = 1).
        Interpolation stages ignore it (they repeat the nearest low-rate frame).
    aug_max: noise-conditioning augmentation in training: the low-res latents are diffused to a level
        t_sr ~ U[0, aug_max * num_timesteps), which the model reads through AdaLN (model.noise_cond).
    aug_sample: the fixed level (fraction of num_timesteps) used at sampling and validation.
    """

    factor: int = 2
    upsample: str = "depth_to_space"
    aug_max: float = 0.3
    aug_sample: float = 0.1

    def cond_upsample(self, stage: str) -> int:
        """The model's cond_upsample for `stage`: factor for depth-to-space super-resolution, else 1."""
        return int(self.factor) if stage == "super_resolution" and self.upsample == "depth_to_space" else 1


@dataclass
class SyntheticConfig:
    """Moving-shapes generator settings (walt.data.synthetic.SyntheticSpec)."""

    num_classes: int = 8
    num_groups: int = 25
    clips_per_group: int = 1
    num_frames: int = 17
    resolution: int = 64
    fps: int = 8
    seed: int = 0


@dataclass
class DataConfig:
    """walt.data.datamodule.VideoDataModule arguments (see its docstring); `datamodule()` builds it.

    resolution: one int (square frames, e.g. 128) or [H, W] (e.g. [128, 224], W.A.L.T's text-to-video clips:
        frames are resized to cover H x W, aspect kept, then cropped); typed Any because OmegaConf has no
        int-or-list type, checked in RunConfig.validate. The latent grid (model.input_size) follows from it.
    """

    dataset: Dataset = Dataset.synthetic
    root: str = MISSING
    num_classes: int = MISSING
    split: int = 1
    train_dir: str = "train"
    val_dir: str = "val"
    num_frames: int = 17
    frame_stride: int = 1
    resolution: Any = 64  # int (square) or [H, W]
    temporal_sampling: Sampling = Sampling.random
    crop: Sampling = Sampling.random
    batch_size: int = 8
    num_workers: int = 2
    pin_memory: bool = True
    persistent_workers: bool = True
    synthetic: Optional[SyntheticConfig] = None
    latent_cache: Optional[str] = None
    max_bad_fraction: float = 0.01
    probe: bool = True
    image_ratio: float = 0.0
    images_per_sample: int = 1
    append_images: int = 0
    image_source: str = "frames"
    image_root: Optional[str] = None

    @property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) of `resolution` (ValueError naming the valid forms otherwise)."""
        from walt.data.video import frame_size

        value = self.resolution
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, (list, tuple)) and len(value) == 2
                                                                      and all(isinstance(v, int) for v in value))):
            raise ValueError(f"data.resolution must be one int (square frames) or [height, width], got {value!r}")
        return frame_size(value)

    def datamodule(self, seed: int = 0, **changes):
        """The VideoDataModule of these settings, with `changes` (e.g. latent_cache=None) applied; `seed`
        fixes the train order of every epoch (the run's seed)."""
        import dataclasses

        from walt.data.datamodule import VideoDataModule
        from walt.utils import plain

        return VideoDataModule(**plain(dataclasses.replace(self, **changes)), seed=seed)


@dataclass
class TrainerConfig:
    """lightning.Trainer arguments the suite uses; logger and callbacks are passed separately."""

    _target_: str = "lightning.Trainer"
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: Any = "auto"  # a name (auto, ddp, ddp_spawn, ...) or a _target_ spec (trainer=fsdp)
    precision: str = "32-true"
    max_steps: int = -1
    max_epochs: Optional[int] = None
    val_check_interval: Optional[Any] = None
    check_val_every_n_epoch: Optional[int] = 1
    limit_train_batches: Optional[Any] = None
    limit_val_batches: Optional[Any] = None
    num_sanity_val_steps: int = 0
    log_every_n_steps: int = 10
    gradient_clip_val: Optional[float] = None
    accumulate_grad_batches: int = 1
    deterministic: Optional[bool] = None
    benchmark: Optional[bool] = None
    enable_progress_bar: bool = True
    enable_model_summary: bool = True
    overfit_batches: float = 0.0
    profiler: Optional[str] = None
    default_root_dir: Optional[str] = None


@dataclass
class OptimConfig:
    """Stage-2 optimisation (the autoencoder's lives in autoencoder.optim): AdamW, linear warm-up, cosine
    decay, EMA of the weights used for sampling.

    lr, betas, weight_decay (linear weights only): AdamW. warmup_steps: linear warm-up.
    max_steps: end of the cosine decay; None = trainer.max_steps. min_lr_ratio: floor of the decay.
    ema_decay: EMA of the weights, warmed up as min(ema_decay, (1 + n) / (10 + n)) after n updates.
    sample_every_n_steps: decoded EMA samples to TensorBoard every N steps (0 = never).
    num_log_samples: videos per sample log.
    fused: AdamW's fused kernel (one kernel for all parameters; torch has it for CUDA and CPU tensors) instead
        of the default multi-tensor (foreach) one. Same update up to float round-off. Refused with
        trainer.precision=16-mixed plus gradient clipping (Lightning cannot unscale before a fused step).
    """

    lr: float = 5e-4
    betas: List[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0
    warmup_steps: int = 1000
    max_steps: Optional[int] = None
    min_lr_ratio: float = 0.0
    ema_decay: float = 0.9999
    sample_every_n_steps: int = 0
    num_log_samples: int = 4
    fused: bool = False


@dataclass
class PathsConfig:
    """Where data and runs live. data_dir defaults to $WALT_DATA, else <repo>/data."""

    root_dir: str = MISSING
    data_dir: str = MISSING
    output_dir: str = MISSING
    run_dir: str = MISSING


@dataclass
class TrainConfig:
    """Top level of `walt-train`: the groups plus run-level settings.

    stage: which LightningModule to train. seed: global seed (workers too).
    run_name: the run directory's name; re-using it resumes from last.ckpt.
    force: train even when the run directory already holds a completion marker.
    first_stage_ckpt: stage-2's frozen autoencoder checkpoint; "auto" finds or trains it by config
        hash (walt.pipeline.first_stage), with first_stage_steps training steps and seed first_stage_seed
        (fixed, so that stage-2 replicates seed=0,1,... share one autoencoder and its latent cache).
    ckpt_path: warm start: initialise the weights from this checkpoint (fresh optimizer, step 0); ignored
        when the run resumes from its own checkpoints.
    tags, notes: free-form labels of the run, stored in results.json and TensorBoard's HPARAMS.
    seeds: replicates per sweep point: the sweep presets sweep `seed` over range(0, seeds), so every
        table row carries n = seeds runs (`walt-train -m +sweep=table3a seeds=3`).
    first_stage_seeds: autoencoder replicates K: the sweep presets also sweep `first_stage_seed` over
        range(0, first_stage_seeds), each autoencoder shared by every grid point that uses it, so a row
        holds K x seeds runs and its comparisons can resample autoencoders (analysis.stats).
    dry_run: print what the run (or every job of a -m sweep) would do and where, then stop.
    axis: set by a sweep preset: the table its swept values are the rows of (analysis.axes reads it from the
        preset; training ignores it).
    autoencoder/model/diffusion/eval: checked by their own dataclasses (walt.autoencoder.config,
    walt.transformer.config, walt.diffusion.config, walt.config.eval) in RunConfig.from_hydra; their
    fields mix strings and lists (st_window: [5,8,8] or full), which OmegaConf's typed nodes cannot express.
    """

    stage: Stage = Stage.diffusion
    seed: int = 0
    run_name: str = MISSING
    force: bool = False
    first_stage_ckpt: Optional[str] = "auto"
    first_stage_steps: int = 2000
    first_stage_seed: int = 0
    ckpt_path: Optional[str] = None
    paths: PathsConfig = MISSING
    data: DataConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: Any = None  # a Lightning logger's _target_ spec (logger=tensorboard | csv | none)
    callbacks: Dict[str, Any] = field(default_factory=dict)
    tags: List[str] = field(default_factory=list)
    notes: str = ""
    seeds: int = 1
    first_stage_seeds: int = 1
    dry_run: bool = False
    axis: Optional[Dict[str, Any]] = None
    autoencoder: Any = None
    model: Any = None
    diffusion: Any = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: Any = None
    text: Any = None  # walt.text.TextConfig, typed in RunConfig.from_hydra (used when model.cross_attention_dim)
    lowres: LowResConfig = field(default_factory=LowResConfig)


def run_dirname(overrides: str, first_stage_seed: int = 0, limit: int = 120) -> str:
    """A sweep job's directory name from its overrides: readable, one path component (no '/'), and
    at most `limit` characters (long override lists end in a hash), so re-running the same sweep
    maps every job to the same directory and file systems accept the name. first_stage_seed is left
    out of the overrides (it is no axis) and named only when it is not 0, so K = 1 keeps its names."""
    import hashlib

    name = str(overrides).replace(os.sep, "_") or "default"
    if int(first_stage_seed):
        name = f"{name},first_stage_seed={int(first_stage_seed)}"
    if len(name) <= limit:
        return name
    return f"{name[: limit - 13]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def sweep_names() -> str:
    """The sweep presets (+sweep=NAME): the files of sweeps/sweep, so a new preset is listed by existing."""
    return " ".join(sorted(f[:-5] for f in os.listdir(os.path.join(SWEEPS_DIR, "sweep")) if f.endswith(".yaml")))


def register() -> None:
    """Put the schemas into Hydra's ConfigStore and the `walt.*` resolvers into OmegaConf (idempotent).

    `${walt.cwd:}` is the directory the command started in; `${walt.sweeps:}` the sweeps tree, which the
    primary config adds to Hydra's search path (sweep presets, launchers); `${walt.sweep_names:}` the sweep
    presets in it, for walt-train --help.
    """
    OmegaConf.register_new_resolver("walt.cwd", os.getcwd, replace=True)
    OmegaConf.register_new_resolver("walt.dirname", run_dirname, replace=True)
    OmegaConf.register_new_resolver("walt.sweeps", lambda: SWEEPS_DIR, replace=True)
    OmegaConf.register_new_resolver("walt.sweep_names", sweep_names, replace=True)
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
