"""Stage-1 LightningModule: trains the causal autoencoder with the MAGVIT-v2 loss recipe.

Manual optimisation with two AdamW optimisers (generator, discriminator). `trainer.global_step`
counts batches (generator steps) only: the discriminator step goes straight through the
strategy, so `max_steps` and `loss.disc_start` both mean batches. The generator's EMA is used for
validation, encoding and the latent statistics; `load_autoencoder` returns it frozen for stage 2.
"""
from __future__ import annotations

import logging
from functools import partial
from typing import Any, Callable, Optional

import lightning as L
import torch
from einops import rearrange
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from walt.autoencoder.config import AutoencoderConfig
from walt.autoencoder.discriminator import Discriminator3d
from walt.autoencoder.losses import AutoencoderLoss, PerceptualLoss, VGG16_WEIGHTS, perceptual_weights_path
from walt.autoencoder.model import CausalAutoencoder
from walt.data.video import to_model_range
from walt.modules.ema import EMA
from walt.modules.schedules import set_base_lrs
from walt.runs import load_weights

log = logging.getLogger(__name__)


def _warmup(steps: int, step: int) -> float:
    return 1.0 if steps <= 0 else min(1.0, (step + 1) / steps)


class AutoencoderModule(L.LightningModule):
    """Causal video autoencoder + discriminator + losses + latent normalisation.

    config: an AutoencoderConfig, or its (partial) dict / DictConfig; only the plain-dict form is
    stored in the checkpoint's hyper_parameters, so checkpoints load with weights_only=True.
    Buffers `latent_mean`, `latent_std` (c,) hold the per-channel latent statistics, always estimated at
    the end of fit; `normalize_latents` (set by stage 2 through load_autoencoder, Table 3e) says whether
    normalize()/denormalize() apply them.
    `rfvd_fn`: optional callable(module) -> {name: value} run at the end of each validation epoch.
    """

    hp_metrics = ("val/mse", "val/psnr", "val/ssim")

    def __init__(self, config: dict | AutoencoderConfig | None = None):
        super().__init__()
        cfg = AutoencoderConfig.from_dict(config)
        self.save_hyperparameters({"config": cfg.to_dict()}, logger=False)
        self.cfg = cfg
        self.automatic_optimization = False
        self.autoencoder = CausalAutoencoder(cfg)
        self.ema = EMA(self.autoencoder, cfg.optim.ema_decay, cfg.optim.ema_warmup) if cfg.optim.ema_decay > 0 else None
        self.discriminator = Discriminator3d(cfg.discriminator, cfg.in_channels) if cfg.loss.adversarial_weight > 0 else None
        self.loss = AutoencoderLoss(cfg.loss)
        c = cfg.latent_channels
        self.register_buffer("latent_mean", torch.zeros(c))
        self.register_buffer("latent_std", torch.ones(c))
        self.register_buffer("latent_stats_ready", torch.tensor(False))
        self.rfvd_fn: Optional[Callable[["AutoencoderModule"], dict]] = None
        self.normalize_latents = True

    # ------------------------------------------------------------------ inference API
    @property
    def inference_model(self) -> CausalAutoencoder:
        """The EMA generator when there is one (validation, encoding), else the trained one."""
        return self.ema.module if self.ema is not None else self.autoencoder

    def _stat(self, z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return v.to(z.dtype).view(1, -1, *([1] * (z.ndim - 2)))

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """(B, c, t, h, w) raw latents -> zero-mean unit-std per channel (identity when normalize_latents is off)."""
        if not self.normalize_latents:
            return z
        return (z - self._stat(z, self.latent_mean)) / self._stat(z, self.latent_std)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        if not self.normalize_latents:
            return z
        return z * self._stat(z, self.latent_std) + self._stat(z, self.latent_mean)

    @torch.no_grad()
    def encode(self, video: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """(B, C, T, H, W) in [-1, 1] -> raw latents (B, c, t, h, w); `normalize` applies `normalize()`."""
        z = self.inference_model.encode(video)
        return self.normalize(z) if normalize else z

    @torch.no_grad()
    def decode(self, z: torch.Tensor, denormalize: bool = False) -> torch.Tensor:
        """Raw latents (normalised ones with `denormalize`) -> video in [-1, 1] (clamped)."""
        z = self.denormalize(z) if denormalize else z
        return self.inference_model.decode(z).clamp(-1, 1)

    @torch.no_grad()
    def reconstruct(self, video: torch.Tensor) -> torch.Tensor:
        """Encode and decode with the inference (EMA) weights; the rFVD hook of the metrics."""
        return self.inference_model.decode(self.inference_model.encode(video)).clamp(-1, 1)

    @torch.no_grad()
    def compute_latent_stats(self, dataloader, max_batches: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean/std of the inference model's latents over up to `max_batches` batches
        of `dataloader` (dicts with 'video'), summed across ranks; stored in the buffers."""
        max_batches = max_batches or self.cfg.latent_stats_batches
        c = self.cfg.latent_channels
        acc = torch.zeros(3, c, dtype=torch.float64, device=self.device)  # count, sum, sum of squares
        model = self.inference_model
        for i, batch in enumerate(dataloader):
            if i >= max_batches:
                break
            z = model.encode(to_model_range(batch["video"].to(self.device, non_blocking=True))).double()
            z = rearrange(z, "b c t h w -> c (b t h w)")
            acc += torch.stack([torch.full((c,), z.shape[1], dtype=z.dtype, device=z.device), z.sum(1), z.pow(2).sum(1)])
        if self._trainer is not None:
            acc = self.trainer.strategy.reduce(acc, reduce_op="sum")
        if acc[0, 0] == 0:
            raise ValueError("compute_latent_stats: the dataloader yielded no batches")
        mean = acc[1] / acc[0]
        std = (acc[2] / acc[0] - mean.pow(2)).clamp_min(1e-12).sqrt()
        self.latent_mean.copy_(mean.float())
        self.latent_std.copy_(std.float().clamp_min(1e-6))
        self.latent_stats_ready.fill_(True)
        log.info("latent stats over %d values/channel: mean %s std %s", int(acc[0, 0]),
                 [round(v, 3) for v in mean.tolist()], [round(v, 3) for v in std.tolist()])
        return self.latent_mean, self.latent_std

    # ------------------------------------------------------------------ training
    def configure_optimizers(self):
        o = self.cfg.optim
        warm = partial(_warmup, o.warmup_steps)
        opt_g = torch.optim.AdamW(self.autoencoder.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        optimizers, schedulers = [opt_g], [torch.optim.lr_scheduler.LambdaLR(opt_g, warm)]
        if self.discriminator is not None:
            opt_d = torch.optim.AdamW(self.discriminator.parameters(), lr=o.disc_lr, betas=tuple(o.betas),
                                      weight_decay=o.weight_decay)
            optimizers.append(opt_d)
            schedulers.append(torch.optim.lr_scheduler.LambdaLR(opt_d, warm))
        return optimizers, schedulers

    def on_train_start(self) -> None:
        """A resumed run trains with this config's learning rates (generator and discriminator)."""
        schedulers = self.lr_schedulers()
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        for scheduler, lr in zip(schedulers, (self.cfg.optim.lr, self.cfg.optim.disc_lr)):
            for old, new in set_base_lrs(scheduler, [lr] * len(scheduler.base_lrs)):
                if old != new:
                    log.info("resume: learning rate %g -> %g applied from step %d", old, new, self.global_step)

    def on_fit_start(self) -> None:
        """Attach the VGG16 perceptual network if a weights file is given; say so when it is not."""
        if self.cfg.loss.perceptual_weight <= 0:
            return
        path = perceptual_weights_path(self.cfg.loss)
        if path is None:
            log.info("perceptual loss is OFF: no VGG16 weights given (set autoencoder.loss.perceptual_weights "
                     "or $%s to %s, from %s)", VGG16_WEIGHTS.env_var, "vgg16-397923af.pth", VGG16_WEIGHTS.source)
            self.loss.set_perceptual(None)
        elif self.loss.perceptual is None:
            self.loss.set_perceptual(PerceptualLoss.from_file(path).to(self.device))
            log.info("perceptual loss on (weight %g) with %s", self.cfg.loss.perceptual_weight, path)

    def gan_active(self) -> bool:
        return self.discriminator is not None and self.global_step >= self.cfg.loss.disc_start

    def _clip(self, optimizer) -> None:
        if self.cfg.optim.grad_clip > 0:
            self.clip_gradients(optimizer, gradient_clip_val=self.cfg.optim.grad_clip, gradient_clip_algorithm="norm")

    def training_step(self, batch: dict, batch_idx: int):
        x = batch["video"]  # (B, C, T, H, W) in [-1, 1]
        optimizers = self.optimizers()
        opt_g = optimizers[0] if isinstance(optimizers, list) else optimizers
        schedulers = self.lr_schedulers()
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        gan = self.gan_active()

        self.toggle_optimizer(opt_g)  # D params frozen while the generator loss flows through D
        recon, mean, logvar = self.autoencoder(x, sample=True)
        logits_fake = self.discriminator(recon) if gan else None
        g_loss, logs = self.loss.generator(x, recon, mean, logvar, logits_fake)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        self._clip(opt_g)
        opt_g.step()  # counted: global_step += 1
        self.untoggle_optimizer(opt_g)
        if self.ema is not None:
            self.ema.update(self.autoencoder)

        if gan:
            opt_d = optimizers[1]
            self.toggle_optimizer(opt_d)
            d_loss, d_logs = self.loss.discriminator(self.discriminator(x), self.discriminator(recon.detach()))
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            self._clip(opt_d)
            # through the strategy (precision plugin, grad scaler) but not LightningOptimizer.step,
            # which would count a second global step per batch
            self.trainer.strategy.optimizer_step(opt_d.optimizer, closure=lambda: None)
            self.untoggle_optimizer(opt_d)
            schedulers[1].step()  # the discriminator's warm-up counts its own steps, from disc_start
            logs.update(d_logs)
            logs["d_loss"] = d_loss.detach()
        schedulers[0].step()

        bs = x.shape[0]
        self.log("train/loss", g_loss.detach(), prog_bar=True, batch_size=bs)
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=bs)
        self.log("train/gan_active", float(gan), batch_size=bs)
        return {"loss": g_loss.detach()}

    def on_train_end(self) -> None:
        """Estimate latent statistics on the train loader and re-save last.ckpt so they are in it."""
        loader = self.trainer.train_dataloader
        if loader is None:
            return
        was_training = self.training
        self.eval()
        self.compute_latent_stats(loader, self.cfg.latent_stats_batches)
        self.train(was_training)
        for cb in self.trainer.checkpoint_callbacks:
            path = getattr(cb, "last_model_path", "")
            if path:
                self.trainer.save_checkpoint(path, weights_only=False)  # full state: resumable

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        x = batch["video"]
        recon = self.reconstruct(x)
        bs = x.shape[0]
        frames = lambda v: rearrange((v.float() + 1) / 2, "b c t h w -> (b t) c h w").clamp(0, 1)
        pred, target = frames(recon), frames(x)
        side = min(pred.shape[-2:])
        kernel = min(11, side - 1 + side % 2)  # SSIM's Gaussian window must fit the frame
        metrics = {
            "val/mse": torch.mean((recon.float() - x.float()) ** 2),  # in the model's [-1, 1] range
            "val/psnr": peak_signal_noise_ratio(pred, target, data_range=1.0, dim=(1, 2, 3)),
            "val/ssim": structural_similarity_index_measure(pred, target, data_range=1.0, kernel_size=kernel),
        }
        self.log_dict(metrics, on_epoch=True, sync_dist=True, batch_size=bs, prog_bar=False)
        if batch_idx == 0 and self.cfg.log_videos > 0:
            self.log_reconstructions(x[: self.cfg.log_videos], recon[: self.cfg.log_videos])

    def log_reconstructions(self, x: torch.Tensor, recon: torch.Tensor) -> None:
        """Input | reconstruction side by side to TensorBoard (video, or a frame strip without moviepy)."""
        from lightning.pytorch.loggers import TensorBoardLogger

        logger = self.logger
        if not isinstance(logger, TensorBoardLogger) or self.global_rank != 0:
            return
        pair = (torch.cat([x, recon], dim=-1).float().clamp(-1, 1) + 1) / 2  # (N, C, T, H, 2W) in [0, 1]
        try:
            import moviepy  # noqa: F401  (TensorBoard encodes videos with it)

            logger.experiment.add_video("val/reconstruction", rearrange(pair, "n c t h w -> n t c h w").cpu(),
                                        self.global_step, fps=4)
        except ImportError:
            strip = rearrange(pair, "n c t h w -> c (n h) (t w)").cpu()
            logger.experiment.add_image("val/reconstruction_frames", strip, self.global_step)

    def on_validation_epoch_end(self) -> None:
        """rFVD or other reconstruction metrics from `self.rfvd_fn(self)` when set (metrics stage)."""
        if self.rfvd_fn is not None:
            for name, value in self.rfvd_fn(self).items():
                self.log(name, value, sync_dist=True)


def build_from_config(cfg: Any) -> AutoencoderModule:
    """walt-train's stage-1 builder: the `autoencoder` config group (magvit2 defaults when absent)."""
    group = cfg.get("autoencoder") if hasattr(cfg, "get") else getattr(cfg, "autoencoder", None)
    if group is None:
        log.info("no autoencoder config group selected; using the magvit2 defaults (choose with autoencoder=<preset>)")
    return AutoencoderModule(config=group)


def load_autoencoder(ckpt_path: str, map_location: str | torch.device = "cpu",
                     normalize_latents: bool = True) -> AutoencoderModule:
    """A trained stage-1 module for encoding/decoding: EMA weights swapped in, discriminator and EMA
    copy dropped, frozen, in eval mode. Loads with weights_only=True.

    normalize_latents: whether encode(normalize=True)/normalize() apply the checkpoint's latent statistics
    (stage 2's diffusion.normalize_latents; Table 3e ablates it).
    """
    ckpt = load_weights(ckpt_path)
    module = AutoencoderModule(**ckpt["hyper_parameters"])
    module.load_state_dict(ckpt["state_dict"])
    module.normalize_latents = bool(normalize_latents)
    if module.ema is not None:
        module.ema.copy_to(module.autoencoder)
        module.ema = None
    module.discriminator = None
    if module.normalize_latents and not bool(module.latent_stats_ready):
        log.warning("%s holds no latent statistics; call compute_latent_stats(loader) before encoding "
                    "(encode_dataset does this)", ckpt_path)
    return module.to(map_location).eval().requires_grad_(False)
