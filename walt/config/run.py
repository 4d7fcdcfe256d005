"""The one raw -> typed step: a composed Hydra config becomes a frozen, validated `RunConfig`.

Every layer below the entry points receives a RunConfig or one of its typed parts, never the raw
DictConfig. A run is re-created (walt-eval on a finished run, the first stage a stage-2 run needs,
resume checks) by composing its stored Hydra overrides again (`RunConfig.stored`), so a stored run
means exactly what the config tree says, not a hand-merged copy.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from walt import runs
from walt.autoencoder.config import AutoencoderConfig
from walt.config.eval import I3D_EXTRACTORS, EvalConfig
from walt.config.schema import (CONFIG_DIR, LOWRES_UPSAMPLE, PRECISIONS, DataConfig, Dataset, LowResConfig, OptimConfig, PathsConfig,
                                register)
from walt.diffusion.config import DiffusionConfig
from walt.text.config import TextConfig
from walt.transformer.config import ModelConfig
from walt.utils import plain

log = logging.getLogger(__name__)
STAGES = ("autoencoder", "diffusion", "super_resolution", "interpolation")
CASCADE_STAGES = ("super_resolution", "interpolation")
# Sections a finished run may be re-evaluated with differently; any other difference means the config
# tree no longer composes to what the run trained with.
# Environment variable that lets bf16 precision run on a CPU without native bf16 (slow; for numerics checks).
ALLOW_CPU_BF16 = "WALT_ALLOW_CPU_BF16"
CUDA_ONLY_SDPA = ("efficient", "cudnn")
# Efficiency switches: they change speed and memory, not the numbers (runs stored before they existed lack them).
EFFICIENCY_KEYS = ("model.compile", "model.sdpa_backend", "model.grad_checkpointing", "optim.fused")
REEVALUATION_SECTIONS = ("eval", "trainer", "logger", "callbacks", "paths", "force", "tags", "notes", *EFFICIENCY_KEYS)


def compose(overrides: Sequence[str] = (), hydra_config: bool = False) -> DictConfig:
    """walt-train's config for `overrides`, composed without starting a Hydra run (inside a running
    Hydra app, through its already initialised config search path)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    def run(overrides):
        from hydra.errors import ConfigCompositionException, MissingConfigException

        try:
            return hydra_compose(config_name="train", overrides=list(overrides), return_hydra_config=hydra_config)
        except AssertionError as err:  # OmegaConf's message for a key set under a null node
            raise ValueError(_null_parent(run, overrides) or str(err)) from None
        except MissingConfigException as err:  # one line: the group's options, not a cut-off listing
            listing = str(err).split("Available options in", 1)[-1].split("Config search path", 1)[0]
            options = [line.strip() for line in listing.splitlines()[1:] if line.startswith("\t")]
            first = str(err).strip().splitlines()[0]
            raise ValueError(f"{first}; options: {', '.join(options)}" if options else first) from err
        except ConfigCompositionException as err:
            hint = _valid_keys(run, overrides, err)
            if hint is None:
                raise
            raise ValueError(hint) from err

    register()
    if GlobalHydra.instance().is_initialized():
        return run(overrides)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return run(overrides)


def _group_choices(overrides: Sequence[str]) -> list[str]:
    """The config-group choices among overrides (data=ucf101, +sweep=table3a): what a section's keys depend on."""
    return [o for o in overrides if "." not in override_key(o) and "=" in o]


def _valid_keys(compose_fn, overrides: Sequence[str], err: Exception) -> str | None:
    """For a mistyped key ("not in struct"): the message with the valid keys of its section."""
    from omegaconf import DictConfig, OmegaConf

    cause = str(err.__cause__ or "")
    found = re.search(r"full_key: (\S+)", cause)
    if not re.search(r"not in (struct|'\w+')", cause) or not found:
        return None
    key = found.group(1)
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    groups = _group_choices(overrides)
    node = OmegaConf.select(compose_fn(groups), parent) if parent else compose_fn(groups)
    if not isinstance(node, DictConfig):
        return None
    return f"{key} is not a config key; valid keys of {parent or 'the config'}: {', '.join(sorted(node.keys()))}"


def _null_parent(compose_fn, overrides: Sequence[str]) -> str | None:
    """The message for an override that sets a key under a node that is null in the chosen groups
    (`data=ucf101 data.synthetic.resolution=16`: the ucf101 data group has no synthetic block)."""
    from omegaconf import OmegaConf

    groups = _group_choices(overrides)
    cfg = compose_fn(groups)
    for o in overrides:
        parts = override_key(o).split(".")
        for depth in range(1, len(parts)):
            parent = ".".join(parts[:depth])
            if OmegaConf.select(cfg, parent, default="<absent>") is None:
                return (f"{override_key(o)} cannot be set: {parent} is null in this config "
                        f"({' '.join(groups) or 'the defaults'}); it applies where {parent} is a section")
    return None


def override_key(override: str) -> str:
    """The key an override sets ('+a.b=1' -> 'a.b', '~x' -> 'x')."""
    return override.split("=", 1)[0].lstrip("+~")


def merge_overrides(*groups: Sequence[str]) -> list[str]:
    """Override lists joined so that a later override of the same key replaces the earlier one."""
    merged: dict[str, str] = {}
    for group in groups:
        for o in group:
            merged.pop(override_key(o), None)
            merged[override_key(o)] = o
    return list(merged.values())


def quote(value: Any) -> str:
    """A value as a Hydra override literal (paths may hold characters Hydra's grammar reserves)."""
    if value is None:
        return "null"
    text = str(value)
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class RunConfig:
    """One run, typed: the run-level settings plus one typed part per config group.

    stage: "autoencoder" (stage 1), "diffusion" (stage 2), or a cascade stage: "super_resolution",
    "interpolation" (stage 2 conditioned on the previous stage's latents, configured by `lowres`).
    text: the text encoder of text-conditioned models (model.cross_attention_dim). seed, run_name, force, first_stage_ckpt,
    first_stage_steps, first_stage_seed, ckpt_path, tags, notes: see walt.config.schema.TrainConfig.
    paths, data, optim: the schema's typed groups. autoencoder, model, diffusion, eval: the leaf
    libraries' configs (model completed with the latent shape and the data's class count).
    trainer, logger, callbacks: Hydra `_target_` specs, instantiated by the pipeline.
    overrides: the Hydra overrides that compose this run (what `stored` and `with_overrides` re-compose).
    Parts are not to be mutated: derive a changed run with `with_overrides`.
    """

    stage: str
    seed: int
    run_name: str
    force: bool
    first_stage_ckpt: Optional[str]
    first_stage_steps: int
    first_stage_seed: int
    ckpt_path: Optional[str]
    paths: PathsConfig
    data: DataConfig
    autoencoder: AutoencoderConfig
    model: ModelConfig
    diffusion: DiffusionConfig
    optim: OptimConfig
    eval: EvalConfig
    trainer: dict
    logger: Optional[dict]
    callbacks: dict
    tags: tuple = ()
    notes: str = ""
    text: TextConfig = field(default_factory=TextConfig)
    lowres: LowResConfig = field(default_factory=LowResConfig)
    overrides: tuple = field(default=(), compare=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_hydra(cls, cfg: DictConfig, overrides: Sequence[str] = ()) -> "RunConfig":
        """Type and validate a composed config; raises ValueError naming the key and the valid values."""
        from hydra.core.hydra_config import HydraConfig

        cfg = cfg.copy()
        run_dir = OmegaConf.to_container(cfg.paths, resolve=False)["run_dir"]
        if "${hydra:" in str(run_dir) and not HydraConfig.initialized():
            cfg.paths.run_dir = "${paths.output_dir}/runs/${run_name}"  # composed outside a Hydra run
        t = OmegaConf.to_object(cfg)
        data: DataConfig = t.data
        autoencoder = AutoencoderConfig.from_dict(t.autoencoder)
        run = cls(
            stage=str(t.stage.value), seed=int(t.seed), run_name=str(t.run_name), force=bool(t.force),
            first_stage_ckpt=t.first_stage_ckpt, first_stage_steps=int(t.first_stage_steps),
            first_stage_seed=int(t.first_stage_seed), ckpt_path=t.ckpt_path,
            paths=t.paths, data=data, autoencoder=autoencoder,
            model=complete_model(t.model or {}, autoencoder, data, t.lowres.cond_upsample(str(t.stage.value))),
            diffusion=DiffusionConfig.from_dict(t.diffusion or {}),
            optim=t.optim, eval=EvalConfig.from_dict(t.eval or {}),
            trainer=plain(t.trainer), logger=plain(t.logger) if t.logger else None,
            callbacks={k: v for k, v in plain(t.callbacks).items() if v},
            tags=tuple(str(x) for x in t.tags), notes=str(t.notes), overrides=tuple(overrides),
            text=TextConfig.from_dict(t.text), lowres=t.lowres,
        )
        run.validate()
        return run

    @classmethod
    def load(cls, overrides: Sequence[str] = ()) -> "RunConfig":
        """Compose walt-train's config for `overrides` and type it."""
        return cls.from_hydra(compose(overrides), overrides)

    @classmethod
    def stored(cls, run_dir: str | os.PathLike, overrides: Sequence[str] = (),
               changeable: Sequence[str] = REEVALUATION_SECTIONS) -> "RunConfig":
        """A run directory's config, re-composed from its stored overrides plus `overrides`.

        Only sections in `changeable` may differ from the stored config.yaml; any other difference
        (a changed preset, an override of model.*) fails listing the differences.
        """
        run_dir = Path(run_dir)
        path = run_dir / runs.CONFIG
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: {run_dir} is not a run directory (walt-train writes {runs.CONFIG})")
        stored = OmegaConf.to_container(OmegaConf.load(path))
        pins = pinned_overrides(stored, run_dir)
        run = cls.load(merge_overrides(runs.read_overrides(run_dir), pins, overrides))
        diff = differences(stored, run.to_dict(), ignore=changeable)
        if diff:
            raise ValueError(f"{run_dir} was trained with another config than its overrides compose to now: "
                             + "; ".join(diff) + f". Only {', '.join(changeable)} may change on a trained run.")
        return run

    def with_overrides(self, *extra: str) -> "RunConfig":
        """This run re-composed with `extra` overrides (paths and run name kept unless overridden)."""
        return RunConfig.load(merge_overrides(self.overrides, pinned_overrides(self.to_dict()), extra))

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Cross-field checks a schema cannot express; ValueError naming the keys and valid values."""
        if self.stage not in STAGES:
            raise ValueError(f"stage={self.stage!r} is not one of {STAGES}")
        if str(self.trainer.get("precision")) not in PRECISIONS:
            raise ValueError(f"trainer.precision={self.trainer.get('precision')!r} is not one of {PRECISIONS}")
        self.check_ranges()
        self.check_efficiency()
        name = PurePosixPath(self.run_name.replace("\\", "/"))
        if not self.run_name or name.is_absolute() or ".." in name.parts:
            raise ValueError(f"run_name={self.run_name!r} must be a relative name inside outputs/runs (or "
                             f"outputs/multirun): no leading '/', no '..'")
        data = self.data
        if data.num_frames < 1 or data.frame_stride < 1:
            raise ValueError("data.num_frames and data.frame_stride must be >= 1")
        if data.dataset == Dataset.synthetic:
            if data.synthetic is None:
                raise ValueError("data.dataset=synthetic needs a data.synthetic block (use data=synthetic)")
            span = (data.num_frames - 1) * data.frame_stride + 1
            if span > data.synthetic.num_frames:
                raise ValueError(
                    f"clips need {span} frames (num_frames={data.num_frames}, frame_stride={data.frame_stride}) "
                    f"but synthetic videos have data.synthetic.num_frames={data.synthetic.num_frames}: raise "
                    f"data.synthetic.num_frames to {span} or lower data.num_frames / data.frame_stride")
        if data.dataset == Dataset.ucf101 and data.split not in (1, 2, 3):
            raise ValueError(f"data.split must be 1, 2 or 3 for UCF-101, got {data.split}")
        if self.stage == "diffusion" and data.latent_cache and (data.image_ratio > 0 or data.append_images > 0):
            raise ValueError("image-video joint training (data.image_ratio / data.append_images) encodes its clips and "
                             "images on the fly: set data.latent_cache=null (a latent cache holds the videos only)")
        ae, frames = self.autoencoder, self.clip_frames
        height, width = data.frame_size
        if (frames - 1) % ae.temporal_factor or height % ae.spatial_factor or width % ae.spatial_factor:
            raise ValueError(
                f"clips of {frames}x{height}x{width} do not fit the autoencoder's /{ae.temporal_factor} "
                f"time and /{ae.spatial_factor} space factors: data.num_frames must be 1 + k*{ae.temporal_factor} "
                f"(e.g. 17) and data.resolution (or both of its [H, W]) a multiple of {ae.spatial_factor}")
        if self.stage in CASCADE_STAGES:
            self.validate_cascade()
            return
        self.eval_metrics  # eval.metrics checked against the stage and the model (synth_acc needs classes)
        if self.eval.after_train:
            self.metric_frames()
            self.eval_weights()

    def check_ranges(self) -> None:
        """Numbers outside what they mean (a negative rate, an empty batch), refused before any work."""
        def number(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        trainer = self.trainer
        interval = trainer.get("val_check_interval")
        checks = [
            ("optim.lr", self.optim.lr, self.optim.lr > 0, "> 0"),
            ("optim.warmup_steps", self.optim.warmup_steps, self.optim.warmup_steps >= 0, ">= 0"),
            ("optim.weight_decay", self.optim.weight_decay, self.optim.weight_decay >= 0, ">= 0"),
            ("optim.ema_decay", self.optim.ema_decay, 0 <= self.optim.ema_decay < 1, "in [0, 1)"),
            ("data.batch_size", self.data.batch_size, self.data.batch_size >= 1, ">= 1"),
            ("data.num_workers", self.data.num_workers, self.data.num_workers >= 0, ">= 0"),
            ("trainer.max_steps", trainer.get("max_steps"), not number(trainer.get("max_steps"))
             or trainer.get("max_steps") == -1 or trainer.get("max_steps") >= 1, ">= 1 (or -1: no limit)"),
            ("trainer.val_check_interval", interval, not number(interval) or interval > 0,
             "> 0 (steps, or a fraction of an epoch)"),
            ("first_stage_steps", self.first_stage_steps, self.first_stage_steps >= 1, ">= 1"),
        ]
        for key, value, ok, need in checks:
            if not ok:
                raise ValueError(f"{key}={value} must be {need}")

    def validate_cascade(self) -> None:
        """A cascade stage's model must take the low-res latents (cond_channels) and their noise level."""
        lr, m = self.lowres, self.model
        if lr.factor < 1 or lr.upsample not in LOWRES_UPSAMPLE or not 0 <= lr.aug_sample <= lr.aug_max <= 1:
            raise ValueError(f"lowres: factor >= 1, upsample one of {'|'.join(LOWRES_UPSAMPLE)} and "
                             f"0 <= aug_sample <= aug_max <= 1, got {lr}")
        if m.cond_channels != m.in_channels or not m.noise_cond:
            raise ValueError(f"stage={self.stage} feeds the low-res latents ({m.in_channels} channels) and their noise "
                             f"level to the model: set model.cond_channels=null (= the latent channels) and "
                             f"model.noise_cond=true (e.g. model=walt_tiny_sr), got cond_channels={m.cond_channels}, "
                             f"noise_cond={m.noise_cond}")
        if m.cond_upsample != lr.cond_upsample(self.stage):
            raise ValueError(f"stage={self.stage} with lowres.upsample={lr.upsample} and lowres.factor={lr.factor} needs "
                             f"model.cond_upsample={lr.cond_upsample(self.stage)} (null derives it), got {m.cond_upsample}")
        if self.eval.after_train:
            raise ValueError(f"eval.after_train: the video metrics are defined for stage=diffusion; the cascade is "
                             f"measured end to end (walt.pipeline.cascade). Set eval.after_train=false for stage={self.stage}")

    @property
    def on_cpu(self) -> bool:
        """Whether the trainer runs on the CPU (accelerator=cpu, or auto on a machine without CUDA)."""
        accelerator = str(self.trainer.get("accelerator", "auto"))
        if accelerator == "auto":
            import torch

            return not torch.cuda.is_available()
        return accelerator == "cpu"

    @property
    def strategy_name(self) -> str:
        """trainer.strategy as a name: a string, or the _target_ of a strategy spec ('fsdp' for walt's FSDP one)."""
        strategy = self.trainer.get("strategy", "auto")
        if isinstance(strategy, dict):
            target = str(strategy.get("_target_", ""))
            return "fsdp" if "fsdp" in target.lower() else target
        return str(strategy)

    def check_efficiency(self) -> None:
        """The efficiency switches (precision, fused AdamW, compile, SDPA backend, strategy) against the
        machine they would run on: refused before anything is built where they cannot work or are a trap."""
        from walt.utils import CPU_BF16_FLAGS, cpu_has_native_bf16

        precision, cpu = str(self.trainer.get("precision")), self.on_cpu
        if self.strategy_name.startswith("fsdp") and cpu:
            raise ValueError(
                "trainer=fsdp needs CUDA GPUs: Lightning's FSDPStrategy refuses the CPU accelerator ('The strategy "
                "`fsdp` requires a GPU accelerator'), and so does torch's FSDP ('FSDP needs a non-CPU accelerator "
                "device'). On CPUs use trainer=cpu (one process) or trainer=ddp trainer.accelerator=cpu (gloo)")
        if (cpu and precision.startswith("bf16") and not cpu_has_native_bf16()
                and os.environ.get(ALLOW_CPU_BF16, "") not in ("1", "true", "yes")):
            raise ValueError(
                f"trainer.precision={precision} on a CPU without native bf16 (no {' / '.join(CPU_BF16_FLAGS)} in "
                f"/proc/cpuinfo): torch emulates it, a bf16-autocast step of the transformer was 27x slower than "
                f"fp32 on such a CPU. Use trainer.precision=32-true on this machine (bf16 is for GPUs: trainer=gpu), "
                f"or set {ALLOW_CPU_BF16}=1 to run it anyway (e.g. to check bf16 numerics)")
        if (self.optim.fused and precision == "16-mixed" and self.trainer.get("gradient_clip_val")):
            raise ValueError(
                "optim.fused=true with trainer.precision=16-mixed and trainer.gradient_clip_val: the fused AdamW "
                "unscales fp16 gradients inside its step, so Lightning cannot clip them first. Use bf16-mixed, "
                "optim.fused=false, or no clipping")
        if cpu and self.model.sdpa_backend in CUDA_ONLY_SDPA:
            raise ValueError(
                f"model.sdpa_backend={self.model.sdpa_backend} is a CUDA kernel; on the CPU use auto, flash or math")

    def metric_frames(self) -> int:
        """Frames fed to the metrics' extractor (eval.num_frames_metric, else the whole clip)."""
        frames = self.clip_frames
        n = self.eval.num_frames_metric or frames
        if n > frames:
            raise ValueError(f"eval.num_frames_metric={n} but the run's clips have {frames} frames "
                             f"(data.num_frames); set eval.num_frames_metric <= {frames} or null")
        return n

    def eval_weights(self) -> dict[str, Path]:
        """The verified weights files the configured metrics need (raises WeightsError when one is missing),
        so a run fails before training rather than after."""
        from walt.metrics import C3D_SPEC, I3D_SPEC, I3D_TORCHSCRIPT_SPEC, INCEPTION_SPEC
        from walt.weights import resolve_weights

        ev, metrics, found = self.eval, self.eval_metrics, {}
        if ev.extractor in I3D_EXTRACTORS and any(m in ("fvd", "rfvd") for m in metrics):
            found["i3d"] = resolve_weights(I3D_SPEC if ev.extractor == "i3d" else I3D_TORCHSCRIPT_SPEC, ev.weights,
                                           verify=bool(ev.extractor_options.get("verify", True)))
        if any(m in ("fid", "is", "kid") for m in metrics):
            found["inception"] = resolve_weights(INCEPTION_SPEC, ev.inception_weights)
        if "is_c3d" in metrics:
            found["c3d"] = resolve_weights(C3D_SPEC, ev.c3d_weights)
        return found

    # ------------------------------------------------------------------ derived values
    @property
    def run_dir(self) -> Path:
        return Path(self.paths.run_dir)

    @property
    def eval_metrics(self) -> list[str]:
        """The metrics an evaluation of this run computes (eval.metrics or its stage's defaults)."""
        return self.eval.stage_metrics(self.stage, class_conditional=self.model.num_classes > 0)

    @property
    def clip_frames(self) -> int:
        """Frames per clip (images are 1-frame clips)."""
        return clip_frames(self.data)

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """(c, t, h, w) of the configured clip's latent."""
        return self.autoencoder.latent_shape(self.clip_frames, *self.data.frame_size)

    def to_dict(self) -> dict:
        """The resolved config as plain containers: what config.yaml holds and analysis reads."""
        out = {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "overrides"}
        out["autoencoder"], out["model"] = self.autoencoder.to_dict(), self.model.to_dict()
        # the cascade's parts only where they apply, so the stored config of any other run is unchanged
        if self.model.cross_attention_dim:
            out["text"] = self.text.to_dict()
        else:
            del out["text"]
        if self.stage not in CASCADE_STAGES:
            del out["lowres"]
        return out

    def hparams(self) -> dict:
        """Scalar leaves as 'group.key' -> value for TensorBoard's HPARAMS tab (paths and callbacks left out)."""
        out: dict[str, Any] = {}

        def walk(node: dict, prefix: str) -> None:
            for key, value in node.items():
                if isinstance(value, dict):
                    walk(value, f"{prefix}{key}.")
                elif value is None or isinstance(value, (list, tuple)):
                    out[f"{prefix}{key}"] = str(value)
                else:
                    out[f"{prefix}{key}"] = value

        walk({k: v for k, v in self.to_dict().items() if k not in ("paths", "callbacks")}, "")
        return out


def clip_frames(data: DataConfig) -> int:
    """Frames per clip of a data config (images are 1-frame clips)."""
    return 1 if data.dataset == Dataset.imagenet else int(data.num_frames)


def complete_model(model: Any, autoencoder: AutoencoderConfig, data: DataConfig, cond_upsample: int = 1) -> ModelConfig:
    """The stage-2 ModelConfig: in_channels / input_size / cond_channels left null come from the latent shape,
    num_classes (unless given) from the data, cond_upsample (null) from the cascade stage's lowres settings
    (`cond_upsample`: LowResConfig.cond_upsample(stage))."""
    values = dict(plain(model))
    if "cond_upsample" in values and values["cond_upsample"] is None:
        values["cond_upsample"] = cond_upsample
    c, t, h, w = autoencoder.latent_shape(clip_frames(data), *data.frame_size)
    if values.get("in_channels") is None:
        values["in_channels"] = c
    elif int(values["in_channels"]) != c:
        raise ValueError(f"model.in_channels={values['in_channels']} but the autoencoder's latents have {c} channels "
                         f"(autoencoder.latent_channels): leave model.in_channels null (derived) or make them equal")
    if values.get("input_size") is None:
        values["input_size"] = [t, h, w]
    if "cond_channels" in values and values["cond_channels"] is None:  # cascade stages: the low-res latents
        values["cond_channels"] = c
    if values.get("num_classes") is None:  # text-to-video presets set 0: captions, not classes
        values["num_classes"] = int(data.num_classes)
    return ModelConfig.from_dict(values)


def pinned_overrides(stored: dict, run_dir: str | os.PathLike | None = None) -> list[str]:
    """Overrides that fix what depends on when and where a command runs (paths, a timestamped run name)."""
    paths = dict(stored["paths"], **({"run_dir": str(run_dir)} if run_dir is not None else {}))
    return [f"paths.{k}={quote(v)}" for k, v in paths.items()] + [f"run_name={quote(stored['run_name'])}"]


def differences(old: dict, new: dict, ignore: Sequence[str] = (), prefix: str = "") -> list[str]:
    """'key: old -> new' for every leaf that differs between two plain configs (sections in `ignore` skipped)."""
    out = []
    for key in sorted(set(old) | set(new)):
        name = f"{prefix}{key}"
        if name in ignore:
            continue
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, ignore, f"{name}.")
        elif plain(a) != plain(b):
            out.append(f"{name}: {a!r} -> {b!r}")
    return out
