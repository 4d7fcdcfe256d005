"""LatentDiffusionModule: it learns on CPU, samples, logs videos and checkpoints with weights_only."""
import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, Dataset

from walt.modules.latent_diffusion import LatentDiffusionModule
from walt.modules.schedules import lr_factor

MODEL = dict(in_channels=3, input_size=[5, 4, 4], st_window=[5, 2, 2], depth=4, hidden_size=64, num_heads=4)


pytestmark = pytest.mark.usefixtures("one_thread")


class FakeFirstStage(nn.Module):
    """Pixels -> latents: every 4th frame (1 + 4k -> 1 + k, causal style) and 4x4 average pooling."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))  # normalisation, so decode(encode) needs both

    def encode(self, video):
        return F.avg_pool3d(video[:, :, ::4], (1, 4, 4))

    def decode(self, z):
        up = F.interpolate(z, scale_factor=(1, 4, 4), mode="nearest")
        return torch.cat([up[:, :, :1], up[:, :, 1:].repeat_interleave(4, dim=2)], dim=2)

    def normalize(self, z):
        return z * self.scale

    def denormalize(self, z):
        return z / self.scale


class ClassVideos(Dataset):
    """4 classes, each a fixed smooth random 17x16x16 clip plus a little per-item noise."""

    def __init__(self, n=64, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.patterns = F.interpolate(torch.randn(4, 3, 5, 4, 4, generator=g), size=(17, 16, 16), mode="trilinear").tanh()
        self.noise = 0.05 * torch.randn(n, 3, 17, 16, 16, generator=g)

    def __len__(self):
        return len(self.noise)

    def __getitem__(self, i):
        return {"video": (self.patterns[i % 4] + self.noise[i]).clamp(-1, 1), "label": i % 4}


class LossHistory(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def make_module(model=None, optim=None, **kwargs):
    optim = {"lr": 2e-3, "warmup_steps": 10, "ema_decay": 0.99, **(optim or {})}
    args = dict(model={**MODEL, "num_classes": 4, **(model or {})}, diffusion={"sampling_steps": 10}, optim=optim,
                first_stage=FakeFirstStage())
    return LatentDiffusionModule(**{**args, **kwargs})


def trainer(tmp_path, steps, **kwargs):
    args = dict(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
                num_sanity_val_steps=0, limit_val_batches=1, gradient_clip_val=1.0,
                check_val_every_n_epoch=None)
    return L.Trainer(**{**args, **kwargs})


def test_training_lowers_the_loss_and_samples_decode(tmp_path):
    L.seed_everything(0)
    module = make_module(optim={"lr": 4e-3, "warmup_steps": 10})
    history = LossHistory()
    trainer(tmp_path, 300, callbacks=[history], val_check_interval=300).fit(
        module, DataLoader(ClassVideos(), batch_size=8, shuffle=True), DataLoader(ClassVideos(16, seed=1), batch_size=8))
    first, last = sum(history.losses[:20]) / 20, sum(history.losses[-40:]) / 40
    assert last < 0.4 * first, (first, last)
    labels = torch.tensor([0, 1, 2, 3])
    latents = module.sample(labels, num_steps=10, generator=torch.Generator().manual_seed(0))
    assert latents.shape == (4, 3, 5, 4, 4) and torch.isfinite(latents).all()
    video = module.decode(latents)
    assert video.shape == (4, 3, 17, 16, 16) and video.min() >= -1 and video.max() <= 1
    guided = module.sample(labels, num_steps=5, guidance_scale=2.0, guidance_schedule="power_cosine")
    assert guided.shape == latents.shape
    # the EMA model was trained: its samples are closer to the class patterns than pure noise is
    target = FakeFirstStage().normalize(FakeFirstStage().encode(ClassVideos().patterns))
    err, ref = (latents - target).pow(2).mean(), (torch.randn_like(target) - target).pow(2).mean()
    assert err < 0.25 * ref, (err, ref)


def test_latent_batches_without_first_stage(tmp_path):
    L.seed_everything(0)
    module = make_module(first_stage=None, model={**MODEL, "context_frames": 2, "self_cond_prob": 0.5})
    latents = torch.randn(8, 3, 5, 4, 4)
    batches = [{"latents": latents, "label": torch.arange(8) % 4}] * 4
    fit = trainer(tmp_path, 4, limit_val_batches=1, val_check_interval=4)
    fit.fit(module, DataLoader(batches, batch_size=None), DataLoader(batches[:1], batch_size=None))
    assert {"train/loss", "val/loss", "val/loss_ema"} <= set(fit.callback_metrics)
    mask = torch.tensor([[True, True, False, False, False]] * 2)
    out = module.sample(torch.tensor([0, 1]), num_steps=3, context=latents[:2], context_mask=mask)
    torch.testing.assert_close(out[:, :, :2], latents[:2, :, :2])  # context frames are kept
    with pytest.raises(KeyError, match="latent cache"):
        module.training_step({"video": torch.zeros(1, 3, 17, 16, 16), "label": torch.zeros(1)}, 0)


def test_checkpoint_loads_weights_only_with_ema(tmp_path):
    L.seed_everything(0)
    module = make_module(optim={"lr": 1e-3, "warmup_steps": 2})
    fit = trainer(tmp_path, 3, limit_val_batches=0)
    fit.fit(module, DataLoader(ClassVideos(16), batch_size=4))
    path = tmp_path / "last.ckpt"
    fit.save_checkpoint(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert any(k.startswith("ema.module.") for k in ckpt["state_dict"]) and not any("first_stage" in k for k in ckpt["state_dict"])
    assert int(ckpt["state_dict"]["ema.n_averaged"]) == 3  # the EMA update of the last step is in the checkpoint
    assert ckpt["hyper_parameters"]["model"]["st_window"] == [5, 2, 2]
    restored = LatentDiffusionModule.load_from_checkpoint(path, first_stage=FakeFirstStage(), weights_only=True)
    for a, b in zip(restored.ema.module.parameters(), module.ema.module.parameters()):
        torch.testing.assert_close(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(module.ema.module.parameters(), module.model.parameters()))


def test_samples_are_logged_to_tensorboard_as_videos(tmp_path):
    L.seed_everything(0)
    module = make_module(optim={"sample_every_n_steps": 2, "num_log_samples": 2}, diffusion={"sampling_steps": 2})
    logger = TensorBoardLogger(tmp_path, name="tb")
    calls = []
    logger.experiment.add_video = lambda tag, video, global_step=None, fps=4: calls.append((tag, video, global_step))
    trainer(tmp_path, 2, logger=logger, limit_val_batches=0).fit(module, DataLoader(ClassVideos(8), batch_size=4))
    assert len(calls) == 1
    tag, video, step = calls[0]
    assert tag == "samples" and step == 2 and video.shape == (2, 17, 3, 16, 16)
    assert video.min() >= 0 and video.max() <= 1


def test_frame_prediction_samples_are_logged_from_the_batch_context(tmp_path):
    """A context model's logged samples continue the batch's first clips: their first latent frame (5 video
    frames through FakeFirstStage's decode) is the batch's own, not a sample from noise."""
    L.seed_everything(0)
    module = make_module(model={"context_frames": 1}, optim={"sample_every_n_steps": 1, "num_log_samples": 2},
                         diffusion={"sampling_steps": 2})
    logger = TensorBoardLogger(tmp_path, name="tb")
    calls, batches = [], []
    logger.experiment.add_video = lambda tag, video, global_step=None, fps=4: calls.append(video)
    module.on_train_batch_start = lambda batch, batch_idx: batches.append(batch)
    trainer(tmp_path, 1, logger=logger, limit_val_batches=0).fit(module, DataLoader(ClassVideos(8), batch_size=4))
    (video,), (batch,) = calls, batches
    real = module.decode(module.batch_latents(batch)[:2])[:, :, :1]  # (2, C, 1, H, W): decoded context frame
    expect = ((real + 1) / 2).clamp(0, 1).permute(0, 2, 1, 3, 4)
    torch.testing.assert_close(video[:, :1], expect, atol=1e-5, rtol=0)


def test_lr_schedule_warmup_then_cosine():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100) == pytest.approx(0.5)
    assert lr_factor(100, 10, 100, min_ratio=0.1) == pytest.approx(0.1)


def test_build_from_run_config_infers_latent_shape():
    from walt.config import RunConfig
    from walt.modules.build import build_module

    run = RunConfig.load(["stage=diffusion", "model=walt_tiny", "model.depth=2", "model.hidden_size=32",
                          "model.num_heads=2", "autoencoder=tiny", "autoencoder.latent_channels=4",
                          "data.synthetic.resolution=64", "optim.ema_decay=0.999", "first_stage_ckpt=null"])
    module = build_module(run)
    # 17x64x64 clips through the tiny autoencoder (/4 time, /8 space) with c=4
    assert module.model_cfg.input_size == (5, 8, 8) and module.model_cfg.in_channels == 4
    assert module.model_cfg.num_classes == 8 and module.ema.decay == 0.999
    with pytest.raises(ValueError, match="valid keys"):
        LatentDiffusionModule(MODEL, optim={"learning_rate": 1.0})
