"""Typed schemas of the Hydra config groups.

The primary config lists `train_schema` first in its defaults, so Hydra checks every group's keys
and values against these dataclasses while composing: a misspelt key or a value of the wrong type or
outside an enum fails at start, and OmegaConf's message names the valid choices. Checks that
span several fields live in `validate`.
"""
from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from walt.data.video import Sampling
from walt.utils import plain

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO_DIR, "experiments")
SWEEPS_DIR = os.path.join(REPO_DIR, "sweeps")
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
    """walt.data.datamodule.VideoDataModule arguments (see its docstring)."""

    _target_: str = "walt.data.datamodule.VideoDataModule"
    dataset: Dataset = Dataset.synthetic
    root: str = MISSING
    num_classes: int = MISSING
    split: int = 1
    train_dir: str = "train"
    val_dir: str = "val"
    num_frames: int = 17
    frame_stride: int = 1
    resolution: int = 64
    temporal_sampling: Sampling = Sampling.random
    crop: Sampling = Sampling.random
    batch_size: int = 8
    num_workers: int = 2
    pin_memory: bool = True
    persistent_workers: bool = True
    synthetic: Optional[SyntheticConfig] = None
    latent_cache: Optional[str] = None


@dataclass
class TrainerConfig:
    """lightning.Trainer arguments the suite uses; logger and callbacks are passed separately."""

    _target_: str = "lightning.Trainer"
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
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
    default_root_dir: Optional[str] = None


@dataclass
class LoggerConfig:
    """TensorBoard logger; `version=""` keeps events directly under the run directory."""

    _target_: str = "lightning.pytorch.loggers.TensorBoardLogger"
    save_dir: str = "${paths.run_dir}"
    name: str = "tensorboard"
    version: str = ""
    default_hp_metric: bool = False


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
        hash (walt.first_stage), with first_stage_steps training steps.
    autoencoder/model/diffusion/optim: checked by their own dataclasses (walt.autoencoder.config,
    walt.transformer.config, walt.diffusion.config) in `validate`; their fields mix strings and
    lists (st_window: [5,8,8] or full), which OmegaConf's typed nodes cannot express.
    """

    stage: Stage = Stage.autoencoder
    seed: int = 0
    run_name: str = MISSING
    force: bool = False
    first_stage_ckpt: Optional[str] = "auto"
    first_stage_steps: int = 2000
    paths: PathsConfig = MISSING
    data: DataConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: Optional[LoggerConfig] = None
    callbacks: Dict[str, Any] = field(default_factory=dict)
    autoencoder: Any = None
    model: Any = None
    diffusion: Any = None
    optim: Any = None
    eval: Any = None


def run_dirname(overrides: str, limit: int = 120) -> str:
    """A sweep job's directory name from its overrides: readable, one path component (no '/'), and
    at most `limit` characters (long override lists end in a hash), so re-running the same sweep
    maps every job to the same directory and file systems accept the name."""
    import hashlib

    name = str(overrides).replace(os.sep, "_") or "default"
    if len(name) <= limit:
        return name
    return f"{name[: limit - 13]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def register() -> None:
    """Put the schemas into Hydra's ConfigStore and the `walt.*` resolvers into OmegaConf (idempotent).

    `${walt.cwd:}` is the directory the command started in; `${walt.repo:}` the checkout, which
    lets the primary config add sweeps/ (sweep presets, launchers) to Hydra's search path.
    """
    OmegaConf.register_new_resolver("walt.cwd", os.getcwd, replace=True)
    OmegaConf.register_new_resolver("walt.dirname", run_dirname, replace=True)
    OmegaConf.register_new_resolver("walt.repo", lambda: REPO_DIR, replace=True)
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


def validate(cfg: DictConfig) -> None:
    """Cross-field checks that a schema cannot express; raises ValueError naming the valid values."""
    if str(cfg.trainer.precision) not in PRECISIONS:
        raise ValueError(f"trainer.precision={cfg.trainer.precision!r} is not one of {PRECISIONS}")
    data = cfg.data
    if data.num_frames < 1 or data.frame_stride < 1:
        raise ValueError("data.num_frames and data.frame_stride must be >= 1")
    if data.dataset == Dataset.synthetic and data.synthetic is None:
        raise ValueError("data.dataset=synthetic needs a data.synthetic block (use data=synthetic)")
    if data.dataset == Dataset.synthetic:
        span = (data.num_frames - 1) * data.frame_stride + 1
        if span > data.synthetic.num_frames:
            raise ValueError(
                f"clips need {span} frames (num_frames={data.num_frames}, frame_stride={data.frame_stride}) "
                f"but synthetic videos have data.synthetic.num_frames={data.synthetic.num_frames}"
            )
    if data.dataset == Dataset.ucf101 and data.split not in (1, 2, 3):
        raise ValueError(f"data.split must be 1, 2 or 3 for UCF-101, got {data.split}")
    ae = autoencoder_config(cfg)
    frames = clip_frames(cfg)
    if (frames - 1) % ae.temporal_factor or data.resolution % ae.spatial_factor:
        raise ValueError(
            f"clips of {frames}x{data.resolution}x{data.resolution} do not fit the autoencoder's /{ae.temporal_factor} "
            f"time and /{ae.spatial_factor} space factors: data.num_frames must be 1 + k*{ae.temporal_factor} "
            f"(e.g. 17) and data.resolution a multiple of {ae.spatial_factor}"
        )
    if cfg.stage == Stage.diffusion:
        model_config(cfg)
        from walt.diffusion.config import DiffusionConfig

        DiffusionConfig.from_dict(plain(cfg.diffusion))
    if cfg.get("eval") is not None:
        from walt.evaluate import check_config

        check_config(cfg)


def clip_frames(cfg: DictConfig) -> int:
    """Frames per clip (images are 1-frame clips)."""
    return 1 if cfg.data.dataset == Dataset.imagenet else int(cfg.data.num_frames)


def autoencoder_config(cfg: DictConfig):
    """The validated walt.autoencoder.config.AutoencoderConfig of a composed config."""
    from walt.autoencoder.config import AutoencoderConfig

    return AutoencoderConfig.from_dict(plain(cfg.autoencoder))


def latent_shape(cfg: DictConfig) -> tuple[int, int, int, int]:
    """(c, t, h, w) of the configured clip's latent."""
    res = int(cfg.data.resolution)
    return autoencoder_config(cfg).latent_shape(clip_frames(cfg), res, res)


def model_config(cfg: DictConfig):
    """The validated stage-2 ModelConfig: in_channels / input_size left null come from the latent shape,
    num_classes from the data."""
    from walt.transformer.config import ModelConfig

    model = dict(plain(cfg.model))
    c, t, h, w = latent_shape(cfg)
    if model.get("in_channels") is None:
        model["in_channels"] = c
    if model.get("input_size") is None:
        model["input_size"] = [t, h, w]
    model["num_classes"] = int(cfg.data.num_classes)
    return ModelConfig.from_dict(model)
