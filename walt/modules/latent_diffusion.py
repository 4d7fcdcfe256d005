"""Stage 2 as a LightningModule: the W.A.L.T transformer trained by latent diffusion, with EMA.

Batches are dicts: 'latents' (B, c, T, H, W), already normalised (from a latent cache), or
'video' (B, C, T, H, W) in [-1, 1] encoded on the fly by the frozen first stage; plus 'label'
(B,) ints when num_classes > 0, and optionally 'is_image' (B,) bool.
The first stage is held outside the module's state: checkpoints hold only stage 2 (online + EMA).
"""
from __future__ import annotations

import copy
import logging
import math
from typing import Any, Optional

import lightning as L
import torch
from torch import nn

from walt.diffusion import ClassifierFreeGuidance, DiffusionConfig, diffusion_loss
from walt.diffusion import sample as run_sampler
from walt.transformer import WALT, ModelConfig
from walt.utils import plain

log = logging.getLogger(__name__)

OPTIM_DEFAULTS = dict(lr=5e-4, betas=[0.9, 0.99], weight_decay=0.0, warmup_steps=1000, max_steps=None, min_lr_ratio=0.0)


class LatentDiffusionModule(L.LightningModule):
    """Latent diffusion training, validation, EMA and sampling around a WALT backbone.

    model: ModelConfig fields (dict); num_classes overrides model['num_classes'].
    diffusion: DiffusionConfig fields (dict).
    optim: AdamW + schedule: lr, betas, weight_decay (matrices only), warmup_steps (linear warmup),
        max_steps (end of the cosine decay; None = trainer.max_steps), min_lr_ratio (floor of the decay).
    ema_decay: EMA of the weights, warmed up as min(ema_decay, (1 + n) / (10 + n)) after n updates.
    sample_every_n_steps: decode EMA samples to TensorBoard every N steps (0 = never; needs first_stage).
    num_log_samples: videos per sample log.
    first_stage: frozen autoencoder with encode / decode / normalize / denormalize, or None when
        batches carry latents. Not a hyperparameter and not in the checkpoint.
    Gradient clipping is the Trainer's (gradient_clip_val).
    """

    hp_metrics = ("val/loss", "val/loss_ema")

    def __init__(
        self,
        model: Optional[dict] = None,
        diffusion: Optional[dict] = None,
        optim: Optional[dict] = None,
        num_classes: int = 0,
        ema_decay: float = 0.9999,
        sample_every_n_steps: int = 0,
        num_log_samples: int = 4,
        first_stage: Optional[nn.Module] = None,
    ):
        super().__init__()
        # plain containers only: checkpoints must load with torch.load(weights_only=True)
        model, diffusion = plain(model or {}), plain(diffusion or {})
        optim = {**OPTIM_DEFAULTS, **plain(optim or {})}
        unknown = sorted(set(optim) - set(OPTIM_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown optim key(s) {unknown}; valid keys: {sorted(OPTIM_DEFAULTS)}")
        self.save_hyperparameters(ignore=["first_stage"])
        self.model_cfg = ModelConfig.from_dict({**model, "num_classes": num_classes})
        self.diffusion_cfg = DiffusionConfig.from_dict(diffusion)
        self.schedule = self.diffusion_cfg.make_schedule()
        self.model = WALT(self.model_cfg)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)  # no dropout / BN: mode is irrelevant
        self._first_stage = [first_stage.eval().requires_grad_(False)] if first_stage is not None else []
        self._ema_updates = 0
        self._last_ema_step = -1

    # ----------------------------------------------------------------------------- first stage
    @property
    def first_stage(self) -> Optional[nn.Module]:
        """The frozen autoencoder (kept in a list so it is neither a submodule nor checkpointed)."""
        if not self._first_stage:
            return None
        return self._first_stage[0].to(self.device)

    @torch.no_grad()
    def batch_latents(self, batch: dict) -> torch.Tensor:
        """Normalised latents (B, c, T, H, W) of a batch: cached 'latents' or encoded 'video'."""
        if "latents" in batch:
            return batch["latents"].float()
        if self.first_stage is None:
            raise KeyError("batch has no 'latents' and the module has no first_stage to encode 'video'; "
                           "pass first_stage=<autoencoder> or train from a latent cache")
        fs = self.first_stage
        video = batch["video"]
        weight = next(fs.parameters(), None)
        if weight is not None and video.is_floating_point():
            video = video.to(weight.dtype)  # bf16-true casts batches, not the (unregistered) first stage
        return fs.normalize(fs.encode(video)).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> video (B, C, T', H', W') in [-1, 1] through the first stage."""
        if self.first_stage is None:
            raise RuntimeError("decode needs a first_stage")
        fs = self.first_stage
        return fs.decode(fs.denormalize(latents)).clamp(-1, 1)

    # ----------------------------------------------------------------------------- training
    def _conditions(self, batch: dict, x0: torch.Tensor, train: bool, generator=None) -> dict:
        """Model keyword conditions of a batch: labels, frame-prediction context, image flags."""
        cfg, B, T = self.model_cfg, x0.shape[0], x0.shape[2]
        cond: dict[str, Any] = {"is_image": batch.get("is_image")}
        if cfg.num_classes > 0:
            y = torch.as_tensor(batch["label"], device=x0.device).long()
            cond["y"] = self.model.drop_labels(y, generator) if train else y
        if cfg.context_frames > 0 and T > 1:
            keep = torch.rand(B, device=x0.device, generator=generator) < cfg.context_prob
            frames = torch.arange(T, device=x0.device) < cfg.context_frames
            cond["context"], cond["context_mask"] = x0, keep[:, None] & frames[None, :]
        if "text_states" in batch:
            cond["text"], cond["text_mask"] = batch["text_states"], batch.get("text_mask")
        return cond

    def _loss(self, net: WALT, batch: dict, train: bool, generator=None) -> torch.Tensor:
        x0 = self.batch_latents(batch)
        cond = self._conditions(batch, x0, train, generator)
        p = self.model_cfg.self_cond_prob
        if train:
            coin = p > 0 and bool(torch.rand((), generator=generator) < p)
        else:
            coin = p > 0  # evaluate the way we sample
        model_fn = lambda x, t, sc: net(x, t, self_cond=sc, **cond)  # noqa: E731
        return diffusion_loss(model_fn, self.schedule, x0, self.diffusion_cfg.prediction,
                              self_condition=coin, generator=generator)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._loss(self.model, batch, train=True)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=_batch_size(batch))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # the same noise and timesteps at every evaluation, so curves are comparable
        def gen():
            return torch.Generator(device=self.device).manual_seed(batch_idx)

        n = _batch_size(batch)
        self.log("val/loss", self._loss(self.model, batch, train=False, generator=gen()), batch_size=n, sync_dist=True)
        self.log("val/loss_ema", self._loss(self.ema, batch, train=False, generator=gen()), batch_size=n, sync_dist=True)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        step = self.trainer.global_step
        if step != self._last_ema_step:  # once per optimizer step (gradient accumulation safe)
            self._last_ema_step = step
            self.update_ema()
        every = self.hparams.sample_every_n_steps
        if every and step % every == 0 and self.first_stage is not None and self.trainer.is_global_zero:
            self.log_samples(step)

    @torch.no_grad()
    def update_ema(self) -> None:
        self._ema_updates += 1
        n = self._ema_updates
        decay = min(self.hparams.ema_decay, (1 + n) / (10 + n))
        ema, online = list(self.ema.parameters()), list(self.model.parameters())
        torch._foreach_lerp_(ema, [p.detach() for p in online], 1 - decay)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["ema_updates"] = self._ema_updates

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._ema_updates = int(checkpoint.get("ema_updates", 0))

    def configure_optimizers(self):
        opt = self.hparams.optim
        decay, no_decay = [], []
        for module in self.model.modules():
            for name, p in module.named_parameters(recurse=False):
                # weight decay on linear weights only, not on norms, biases, embeddings, bias tables
                (decay if isinstance(module, nn.Linear) and name == "weight" else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": opt["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=opt["lr"], betas=tuple(opt["betas"]))
        max_steps = opt["max_steps"] or (self.trainer.max_steps if self.trainer.max_steps and self.trainer.max_steps > 0 else None)
        warmup = opt["warmup_steps"]
        if max_steps is not None and warmup >= max_steps:
            log.warning("optim.warmup_steps=%d >= max_steps=%d: the learning rate never reaches optim.lr", warmup, max_steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, max_steps, opt["min_lr_ratio"]))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # ----------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        labels: Optional[torch.Tensor] = None,
        num_steps: Optional[int] = None,
        guidance_scale: Optional[float] = None,
        *,
        num_samples: Optional[int] = None,
        noise: Optional[torch.Tensor] = None,
        context: Optional[torch.Tensor] = None,
        context_mask: Optional[torch.Tensor] = None,
        num_frames: Optional[int] = None,
        sampler: Optional[str] = None,
        eta: Optional[float] = None,
        guidance_schedule: Optional[str] = None,
        use_ema: bool = True,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Generate normalised latents (B, c, T, H, W); `decode` turns them into videos.

        labels: (B,) class ids (None = unconditional / null class). num_steps, guidance_scale,
        sampler, eta, guidance_schedule: override the DiffusionConfig defaults.
        context, context_mask: clean latents (B, c, T, H, W) and (B, T) bool for frame prediction;
        the context frames are copied into the result. num_frames: 1 for images (default: a video).
        """
        cfg = self.diffusion_cfg
        mcfg = self.model_cfg
        net = self.ema if use_ema else self.model
        sized = [len(v) for v in (labels, noise, context) if v is not None] + ([num_samples] if num_samples else [])
        if not sized:
            raise ValueError("sample() needs labels, noise, context or num_samples to know the batch size")
        B = sized[0]
        T = num_frames or mcfg.input_size[0]
        shape = (B, mcfg.in_channels, T, *mcfg.input_size[1:])
        if noise is None:
            noise = torch.randn(shape, device=self.device, generator=generator)
        cond: dict[str, Any] = {}
        if labels is not None and mcfg.num_classes > 0:
            cond["y"] = torch.as_tensor(labels, device=self.device).long()
        if context is not None:
            cond["context"], cond["context_mask"] = context, context_mask
        scale = cfg.guidance_scale if guidance_scale is None else guidance_scale
        g_schedule = guidance_schedule or cfg.guidance_schedule
        if "y" in cond and (scale != 1.0):
            model_fn = ClassifierFreeGuidance(net, cond, {"y": torch.full_like(cond["y"], net.null_class)}, scale,
                                              g_schedule, cfg.guidance_power, cfg.num_timesteps)
        else:
            model_fn = lambda x, t, sc: net(x, t, self_cond=sc, **cond)  # noqa: E731
        run_cfg = DiffusionConfig.from_dict({**cfg.to_dict(), **({"sampler": sampler} if sampler else {})})
        out = run_sampler(model_fn, self.schedule, noise, run_cfg, steps=num_steps, eta=eta,
                          self_condition=mcfg.self_cond_prob > 0, generator=generator)
        if context is not None and context_mask is not None:
            keep = context_mask.to(out.device).view(B, 1, T, 1, 1)
            out = torch.where(keep, context.to(out.dtype), out)
        return out

    def log_samples(self, step: int) -> None:
        from lightning.pytorch.loggers import TensorBoardLogger

        if not isinstance(self.logger, TensorBoardLogger):
            return
        n = self.hparams.num_log_samples
        labels = torch.arange(n, device=self.device) % self.model_cfg.num_classes if self.model_cfg.num_classes else None
        generator = torch.Generator(device=self.device).manual_seed(0)
        video = self.decode(self.sample(labels, num_samples=n, generator=generator))  # (N, C, T, H, W) in [-1, 1]
        video = ((video.float() + 1) / 2).clamp(0, 1).permute(0, 2, 1, 3, 4).cpu()  # (N, T, C, H, W) in [0, 1]
        self.logger.experiment.add_video("samples", video, global_step=step, fps=8)


def lr_factor(step: int, warmup: int, max_steps: Optional[int], min_ratio: float = 0.0) -> float:
    """Linear warmup to 1 over `warmup` steps, then cosine decay to min_ratio at max_steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if not max_steps or max_steps <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / (max_steps - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _batch_size(batch: dict) -> int:
    x = batch.get("latents", batch.get("video"))
    return int(x.shape[0])

def build_from_config(cfg) -> LatentDiffusionModule:
    """The module of a composed `walt-train stage=diffusion` config.

    Reads cfg.model (completed by walt.config.model_config), cfg.diffusion, cfg.optim (optim may
    also carry ema_decay, sample_every_n_steps and num_log_samples) and cfg.first_stage_ckpt.
    """
    from walt.config import model_config

    model = model_config(cfg).to_dict()
    diffusion = plain(cfg.get("diffusion") or {})
    optim = plain(cfg.get("optim") or {})
    extra = {k: optim.pop(k) for k in ("ema_decay", "sample_every_n_steps", "num_log_samples") if k in optim}
    return LatentDiffusionModule(model, diffusion, optim, num_classes=model["num_classes"],
                                 first_stage=_first_stage(cfg), **extra)


def _first_stage(cfg) -> Optional[nn.Module]:
    """The frozen autoencoder of cfg.first_stage_ckpt (None: batches must carry latents).

    Latent normalisation follows this run's `autoencoder.normalize_latents` (Table 3e ablates it
    in stage 2), not the flag the autoencoder was trained with; the statistics are in its checkpoint.
    """
    path = cfg.get("first_stage_ckpt")
    if not path or path == "auto":
        return None
    from walt.modules.autoencoder import load_autoencoder

    ae = cfg.get("autoencoder")
    return load_autoencoder(path, normalize_latents=None if ae is None else bool(ae.normalize_latents))
