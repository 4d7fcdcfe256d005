"""Stage 2 as a LightningModule: the W.A.L.T transformer trained by latent diffusion, with EMA.

Batches are dicts: 'latents' (B, c, T, H, W), already normalised (from a latent cache), or
'video' (B, C, T, H, W) in [-1, 1] encoded on the fly by the frozen first stage; plus 'label'
(B,) ints when num_classes > 0, and optionally 'is_image' (B,) bool and 'frame_is_image' (B, T) bool
(image-video joint training, walt.data.joint: image frames are encoded one by one, appended images
reach the transformer as image frames, padding latent frames of image samples carry no loss); text-conditioned models
(cross_attention_dim) read 'caption' (B strings, encoded by the frozen text encoder) or pre-computed
'text_states' (B, L, D) with 'text_mask' (B, L). A batch may also fix the diffusion draws of its samples:
'noise' (like the latents) and 't' (B,) timesteps (otherwise drawn at random): reproducible losses,
and how the DDP test makes per-sample randomness independent of which rank holds the sample.
The first stage is held outside the module's state: checkpoints hold only stage 2 (online + EMA).
"""
from __future__ import annotations

import logging
from typing import Any, Optional, Sequence, Union

import lightning as L
import torch
from einops import rearrange
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn

from walt.config.schema import OptimConfig
from walt.diffusion import ClassifierFreeGuidance, DiffusionConfig, diffusion_loss
from walt.diffusion import sample as run_sampler
from walt.modules.ema import EMA
from walt.modules.schedules import lr_factor, set_base_lrs
from walt.transformer import WALT, ModelConfig
from walt.utils import from_dict, plain

log = logging.getLogger(__name__)


class LatentDiffusionModule(L.LightningModule):
    """Latent diffusion training, validation, EMA and sampling around a WALT backbone.

    model, diffusion, optim: the typed configs (or their plain dicts, as stored in checkpoints):
        walt.transformer.ModelConfig (complete: in_channels, input_size, num_classes), DiffusionConfig,
        walt.config.schema.OptimConfig (AdamW + warm-up/cosine schedule, EMA decay, sample logging).
    first_stage: frozen autoencoder with encode / decode / normalize / denormalize, or None when
        batches carry latents. Not a hyperparameter and not in the checkpoint.
    text_encoder: frozen walt.text.TextEncoder (captions -> token states), needed when the model has
        cross_attention_dim and batches carry captions; like first_stage, outside the checkpoint.
    Gradient clipping is the Trainer's (gradient_clip_val).
    """

    hp_metrics = ("val/loss", "val/loss_ema")

    def __init__(
        self,
        model: Union[ModelConfig, dict],
        diffusion: Union[DiffusionConfig, dict, None] = None,
        optim: Union[OptimConfig, dict, None] = None,
        first_stage: Optional[nn.Module] = None,
        text_encoder: Optional[nn.Module] = None,
    ):
        super().__init__()
        self.model_cfg = ModelConfig.from_dict(model)
        self.diffusion_cfg = DiffusionConfig.from_dict(diffusion or {})
        self.optim_cfg = from_dict(OptimConfig, optim or {}, "optim")
        # plain containers only: checkpoints must load with torch.load(weights_only=True)
        self.save_hyperparameters({"model": self.model_cfg.to_dict(), "diffusion": self.diffusion_cfg.to_dict(),
                                   "optim": plain(self.optim_cfg)}, logger=False)
        self.schedule = self.diffusion_cfg.make_schedule()
        self.model = WALT(self.model_cfg)
        self.ema = EMA(self.model, self.optim_cfg.ema_decay)  # no dropout / BN: mode is irrelevant
        if self.model_cfg.compile:  # in place: parameter names and checkpoints stay those of the eager model
            self.model.compile()
            self.ema.module.compile()
        self._first_stage = [first_stage.eval().requires_grad_(False)] if first_stage is not None else []
        if text_encoder is not None and self.model_cfg.cross_attention_dim != text_encoder.dim:
            raise ValueError(f"the text encoder {getattr(text_encoder, 'path', '')} gives states of width "
                             f"{text_encoder.dim} but model.cross_attention_dim={self.model_cfg.cross_attention_dim}: "
                             f"set model.cross_attention_dim={text_encoder.dim}")
        self._text_encoder = [text_encoder.eval().requires_grad_(False)] if text_encoder is not None else []

    # ----------------------------------------------------------------------------- first stage
    @property
    def first_stage(self) -> Optional[nn.Module]:
        """The frozen autoencoder (kept in a list so it is neither a submodule nor checkpointed)."""
        if not self._first_stage:
            return None
        return self._first_stage[0].to(self.device)

    @property
    def text_encoder(self) -> Optional[nn.Module]:
        """The frozen text encoder (outside the module's state, like the first stage)."""
        return self._text_encoder[0] if self._text_encoder else None

    @torch.no_grad()
    def encode_text(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(states (B, L, D), mask (B, L)) of captions on this module's device."""
        if self.text_encoder is None:
            raise RuntimeError("captions need a text encoder: build the module with text_encoder=walt.text."
                               "load_text_encoder(...) (walt-train does so from the `text` config group)")
        enc = self.text_encoder
        if self.device.type != "cpu" and getattr(enc, "cache", None) is None:
            enc.to(self.device)
        return enc.encode(list(captions), device=self.device)

    def drop_text(self, states: torch.Tensor, mask: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Caption dropout for CFG: each sample's text becomes the null text with text_dropout_prob."""
        drop = torch.rand(states.shape[0], device=states.device, generator=generator) < self.model_cfg.text_dropout_prob
        return states * ~drop[:, None, None], mask & ~drop[:, None]

    def batch_text(self, batch: dict, train: bool, generator=None) -> dict:
        """{'text', 'text_mask'} of a batch for text-conditioned models ({} otherwise)."""
        if not self.model_cfg.cross_attention_dim:
            return {}
        if "text_states" in batch:
            states = batch["text_states"].float()
            mask = batch.get("text_mask")
            mask = torch.ones(states.shape[:2], dtype=torch.bool, device=states.device) if mask is None else mask.bool()
        elif "caption" in batch:
            states, mask = self.encode_text(batch["caption"])
        else:
            raise KeyError("a text-conditioned model (model.cross_attention_dim) needs 'caption' or 'text_states' "
                           "in its batches")
        if train:
            states, mask = self.drop_text(states, mask, generator)
        return {"text": states, "text_mask": mask}

    def extra_conditions(self, batch: dict, x0: torch.Tensor, train: bool, generator=None) -> dict:
        """Further model keyword conditions of a batch; the cascade stages add their low-res input here."""
        return {}

    @torch.no_grad()
    def batch_latents(self, batch: dict) -> torch.Tensor:
        """Normalised latents (B, c, T, H, W) of a batch: cached 'latents' or encoded 'video'.

        With 'frame_is_image' flags (joint training, walt.data.joint) every flagged frame is encoded
        alone (a 1-frame clip -> 1 latent frame): in image samples ('is_image') the k images become
        latent frames 0..k-1 and the rest are the padded clip's later latent frames (padding, see
        `latent_frame_flags`); in video samples the unflagged frames are encoded as one clip and the
        images, which must follow them, are appended in order after its latent frames.
        """
        if "latents" in batch:
            return batch["latents"].float()
        if self.first_stage is None:
            raise KeyError("batch has no 'latents' and the module has no first_stage to encode 'video'; "
                           "pass first_stage=<autoencoder> or train from a latent cache")
        video = batch["video"]
        flags = batch.get("frame_is_image")
        if flags is None or not bool(flags.any()):
            return self._encode(video)
        B, T = flags.shape
        flags = flags.to(video.device, torch.bool)
        is_image = torch.as_tensor(batch.get("is_image", torch.zeros(B, dtype=torch.bool)), device=video.device).bool()
        images = self._encode(rearrange(video, "b c t h w -> b t c h w")[flags][:, :, None])  # (N, c, 1, h, w)
        sample, frame = flags.nonzero(as_tuple=True)  # image frames, batch-major like `images`
        rank = flags.long().cumsum(1)[sample, frame] - 1  # the image's place among its sample's images
        vflags = flags[~is_image]
        if not bool(vflags.any()):  # W.A.L.T image samples: padded clips, their images at latent frames 0..k-1
            latents = self._encode(video)
            if bool((rank >= latents.shape[2]).any()):
                raise ValueError(f"an image sample holds more images than its clip has latent frames ({latents.shape[2]})")
            latents[sample, :, rank] = images[:, :, 0].to(latents.dtype)
            return latents
        if bool(is_image.any()):
            raise ValueError("joint batches either mix image samples (is_image) or append images to clips, not both")
        n_video = int((~vflags[0]).sum())
        if bool((vflags != (torch.arange(T, device=flags.device) >= n_video)).any()):
            raise ValueError("joint batches: in video samples the image frames must follow the clip's frames, the same "
                             "number in every sample (walt.data.joint's append mode)")
        clips = self._encode(video[:, :, :n_video])  # (B, c, t, h, w)
        appended = rearrange(images[:, :, 0], "(b n) c h w -> b c n h w", b=B)
        return torch.cat([clips, appended], dim=2)

    def _encode(self, video: torch.Tensor) -> torch.Tensor:
        fs = self.first_stage
        weight = next(fs.parameters(), None)
        if weight is not None and video.is_floating_point():
            video = video.to(weight.dtype)  # bf16-true casts batches, not the (unregistered) first stage
        return fs.normalize(fs.encode(video)).float()

    @staticmethod
    def latent_frame_flags(batch: dict, x0: torch.Tensor) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """(image frames, kept frames) of the latents x0 (B, c, T, h, w) of a joint batch, each (B, T) bool or None.

        Image frames: the appended images of video samples (what the transformer keeps out of the
        clip's temporal mixing; None when there is none, image samples pass by 'is_image'). Kept
        frames: all but the padding latent frames of image samples (the loss mask; None = all kept).
        Pixel-frame flags map to latent frames as `batch_latents` lays them out; a latent-cache batch
        may carry its flags per latent frame already (frame_is_image of length T).
        """
        flags = batch.get("frame_is_image")
        if flags is None:
            return None, None
        B, T = x0.shape[0], x0.shape[2]
        flags = flags.to(x0.device, torch.bool)
        is_image = batch.get("is_image")
        is_image = (torch.zeros(B, dtype=torch.bool, device=x0.device) if is_image is None
                    else torch.as_tensor(is_image, device=x0.device).bool())
        count = flags.sum(1, keepdim=True)  # images per sample
        frame = torch.arange(T, device=x0.device)[None]
        if flags.shape[1] == T and "latents" in batch:
            latent_images = flags
        else:  # images last in video samples, first in image samples
            latent_images = torch.where(is_image[:, None], frame < count, frame >= T - count)
        keep = ~is_image[:, None] | latent_images
        image_frames = latent_images & ~is_image[:, None]
        return (image_frames if bool(image_frames.any()) else None), (None if bool(keep.all()) else keep)

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
        image_frames = self.latent_frame_flags(batch, x0)[0]
        if image_frames is not None:  # appended images (Latte / LaVie): frames kept out of temporal mixing
            cond["frame_is_image"] = image_frames
        if cfg.num_classes > 0:
            y = torch.as_tensor(batch["label"], device=x0.device).long()
            cond["y"] = self.model.drop_labels(y, generator) if train else y
        if cfg.context_frames > 0 and T > 1:
            keep = torch.rand(B, device=x0.device, generator=generator) < cfg.context_prob
            frames = torch.arange(T, device=x0.device) < cfg.context_frames
            cond["context"], cond["context_mask"] = x0, keep[:, None] & frames[None, :]
        cond.update(self.batch_text(batch, train, generator))
        cond.update(self.extra_conditions(batch, x0, train, generator))
        return cond

    def _loss(self, net: WALT, batch: dict, train: bool, generator=None) -> torch.Tensor:
        x0 = self.batch_latents(batch)
        cond = self._conditions(batch, x0, train, generator)
        keep = self.latent_frame_flags(batch, x0)[1]  # padding latent frames of image samples: no loss
        weight = None if keep is None else keep[:, None, :, None, None].to(x0.dtype)
        p = self.model_cfg.self_cond_prob
        if train:  # one coin per sample (Chen et al.'s recipe)
            coin = torch.rand(x0.shape[0], device=x0.device, generator=generator) < p
        else:
            coin = p > 0  # evaluate the way we sample
        model_fn = lambda x, t, sc: net(x, t, self_cond=sc, **cond)  # noqa: E731
        return diffusion_loss(model_fn, self.schedule, x0, self.diffusion_cfg.prediction,
                              self_condition=coin, t=batch.get("t"), noise=batch.get("noise"), generator=generator,
                              weight=weight)

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
        self.log("val/loss_ema", self._loss(self.ema.module, batch, train=False, generator=gen()), batch_size=n, sync_dist=True)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.ema.update(self.model)  # before any callback checkpoints this step

    def on_train_start(self) -> None:
        """A resumed run trains with this config's learning rate (its schedule's lambdas are new already).
        Under DDP, every rank gets its own random stream for the diffusion draws."""
        scheduler = self.lr_schedulers()
        for old, new in set_base_lrs(scheduler, [self.optim_cfg.lr] * len(scheduler.base_lrs)):
            if old != new:
                log.info("resume: optim.lr %g -> %g applied from step %d", old, new, self.global_step)
        if self.trainer.world_size > 1:
            # every rank starts from the same state (seed_everything, or rank 0's state restored from the
            # checkpoint), so each would draw the same timesteps, noise and coins for its batch positions: one
            # shared draw + the rank seeds each rank's stream (deterministic, also on resume)
            torch.manual_seed(int(torch.randint(0, 2**62, (1,)).item()) + self.trainer.global_rank)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        step, every = self.trainer.global_step, self.optim_cfg.sample_every_n_steps
        if every and step % every == 0 and self.first_stage is not None and self.trainer.is_global_zero:
            if isinstance(self.trainer.strategy, FSDPStrategy):
                # the EMA copy is sharded: rank 0 alone cannot sample from it (it would wait for the others)
                if step == every:
                    log.warning("optim.sample_every_n_steps: no sample videos during training under FSDP "
                                "(sharded weights); walt-eval / eval.after_train sample from the gathered weights")
                return
            self.log_samples(step, batch)

    def configure_optimizers(self):
        opt = plain(self.optim_cfg)
        decay, no_decay = [], []
        # The parameters of the module as the strategy wrapped it (DDP: the same tensors; FSDP: its sharded
        # views, use_orig_params=True), as Lightning asks; the frozen EMA copy has requires_grad=False.
        root = self.trainer.model if self._trainer is not None and self.trainer.model is not None else self
        for module in root.modules():
            for name, p in module.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                # weight decay on linear weights only, not on norms, biases, embeddings, bias tables
                (decay if isinstance(module, nn.Linear) and name == "weight" else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": opt["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=opt["lr"], betas=tuple(opt["betas"]),
                                      **({"fused": True} if opt["fused"] else {}))
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
        text: Optional[Sequence[str]] = None,
        text_states: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
        extra: Optional[dict] = None,
    ) -> torch.Tensor:
        """Generate normalised latents (B, c, T, H, W); `decode` turns them into videos.

        labels: (B,) class ids (None = unconditional / null class). num_steps, guidance_scale,
        sampler, eta, guidance_schedule: override the DiffusionConfig defaults.
        context, context_mask: clean latents (B, c, T, H, W) and (B, T) bool for frame prediction;
        the context frames are copied into the result. num_frames: 1 for images (default: a video).
        text: B captions (text-conditioned models; encoded by the text encoder), or text_states: their
        (states (B, L, D), mask (B, L)); guidance then contrasts them with the null text (and the null
        class). extra: further model keywords shared by both guidance halves (the cascade's low-res input).
        """
        cfg = self.diffusion_cfg
        mcfg = self.model_cfg
        net = self.ema.module if use_ema else self.model
        sized = ([len(v) for v in (labels, noise, context, text) if v is not None]
                 + ([len(text_states[0])] if text_states is not None else []) + ([num_samples] if num_samples else []))
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
        uncond: dict[str, Any] = {"y": torch.full_like(cond["y"], net.null_class)} if "y" in cond else {}
        if mcfg.cross_attention_dim and (text is not None or text_states is not None):
            states, mask = text_states if text_states is not None else self.encode_text(text)
            cond["text"], cond["text_mask"] = states.to(self.device), mask.to(self.device)
            uncond["text"], uncond["text_mask"] = torch.zeros_like(cond["text"]), torch.zeros_like(cond["text_mask"])
        cond.update(extra or {})
        scale = cfg.guidance_scale if guidance_scale is None else guidance_scale
        g_schedule = guidance_schedule or cfg.guidance_schedule
        if uncond and (scale != 1.0):
            model_fn = ClassifierFreeGuidance(net, cond, uncond, scale, g_schedule, cfg.guidance_power,
                                              cfg.num_timesteps)
        else:
            model_fn = lambda x, t, sc: net(x, t, self_cond=sc, **cond)  # noqa: E731
        run_cfg = DiffusionConfig.from_dict({**cfg.to_dict(), **({"sampler": sampler} if sampler else {})})
        out = run_sampler(model_fn, self.schedule, noise, run_cfg, steps=num_steps, eta=eta,
                          self_condition=mcfg.self_cond_prob > 0, generator=generator)
        if context is not None and context_mask is not None:
            keep = context_mask.to(out.device).view(B, 1, T, 1, 1)
            out = torch.where(keep, context.to(out.dtype), out)
        return out

    def log_samples(self, step: int, batch: Optional[dict] = None) -> None:
        """EMA samples to TensorBoard; a frame-prediction model continues the first clips of `batch` (their real
        context latents and labels), as it is evaluated."""
        from lightning.pytorch.loggers import TensorBoardLogger

        if not isinstance(self.logger, TensorBoardLogger):
            return
        n = self.optim_cfg.num_log_samples
        labels = torch.arange(n, device=self.device) % self.model_cfg.num_classes if self.model_cfg.num_classes else None
        context = {}
        if self.model_cfg.context_frames > 0 and batch is not None:
            x0 = self.batch_latents(batch)[:n]  # (n, c, T, h, w)
            n = x0.shape[0]
            frames = torch.arange(x0.shape[2], device=x0.device) < self.model_cfg.context_frames
            context = {"context": x0, "context_mask": frames[None, :].expand(n, -1)}
            if labels is not None:
                labels = torch.as_tensor(batch["label"], device=self.device)[:n].long()
        generator = torch.Generator(device=self.device).manual_seed(0)
        video = self.decode(self.sample(labels, num_samples=n, generator=generator, **context))  # (N, C, T, H, W)
        video = ((video.float() + 1) / 2).clamp(0, 1).permute(0, 2, 1, 3, 4).cpu()  # (N, T, C, H, W) in [0, 1]
        self.logger.experiment.add_video("samples", video, global_step=step, fps=8)


def _batch_size(batch: dict) -> int:
    x = batch.get("latents", batch.get("video"))
    return int(x.shape[0])
