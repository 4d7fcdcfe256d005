"""Stage-1 autoencoder: config/presets, paper shapes, causality, losses, training, checkpoints."""
from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import OmegaConf

from walt.autoencoder.config import AUTOENCODER_PRESETS, AutoencoderConfig, preset
from walt.autoencoder.discriminator import Discriminator3d
from walt.autoencoder.losses import AutoencoderLoss, LeCam, PerceptualLoss
from walt.autoencoder.model import CausalAutoencoder
from walt.data.datamodule import VideoDataModule
from walt.modules.autoencoder import AutoencoderModule, build_from_config, load_autoencoder
from walt.config import CONFIG_DIR
from walt.modules.ema import EMA
from walt.weights import WeightsError

from conftest import SMALL_SPEC



@pytest.fixture
def one_thread():
    """2 shared cores: one intra-op thread avoids OpenMP spin-waiting against other processes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(**overrides) -> AutoencoderConfig:
    cfg = preset("tiny").to_dict()
    for key, value in overrides.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    return AutoencoderConfig.from_dict(cfg)


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """All weights random (zero-initialised residual convs would hide non-causal branches)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.05 if p.ndim > 1 else 0.01))
    return model.eval()


def datamodule(root, frames=5, resolution=16, batch_size=4) -> VideoDataModule:
    return VideoDataModule(dataset="synthetic", root=str(root), num_classes=SMALL_SPEC.num_classes, num_frames=frames,
                           resolution=resolution, batch_size=batch_size, num_workers=0, pin_memory=False,
                           synthetic=SMALL_SPEC.__dict__)


def trainer(tmp_path, max_steps, **kw) -> L.Trainer:
    kw.setdefault("logger", False)
    kw.setdefault("enable_checkpointing", False)
    return L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, default_root_dir=str(tmp_path),
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kw)


# ---------------------------------------------------------------- config
def test_yaml_presets_match_registry_and_validation_names_valid_values():
    for name in AUTOENCODER_PRESETS:
        data = yaml.safe_load((Path(CONFIG_DIR) / "autoencoder" / f"{name}.yaml").read_text())
        assert AutoencoderConfig.from_dict(data) == preset(name)
    assert preset("tiny") is not AUTOENCODER_PRESETS["tiny"]  # callers get copies
    with pytest.raises(ValueError, match="replicate"):
        AutoencoderConfig.from_dict({"temporal_padding": "reflect"})
    with pytest.raises(ValueError, match="needs 3 entries"):
        AutoencoderConfig.from_dict({"temporal_downsample": [True, True]})
    with pytest.raises(ValueError, match="valid keys"):
        AutoencoderConfig.from_dict({"latent_chanels": 4})
    with pytest.raises(ValueError, match="hinge"):
        AutoencoderConfig.from_dict({"loss": {"gan_loss": "wgan"}})
    with pytest.raises(ValueError, match="unknown autoencoder preset"):
        preset("huge")
    # a Hydra-style group (DictConfig with an override) builds the module
    module = build_from_config(OmegaConf.create({"autoencoder": {**preset("tiny").to_dict(), "latent_channels": 4}}))
    assert module.cfg.latent_channels == 4 and module.latent_mean.shape == (4,)


# ---------------------------------------------------------------- shapes
def test_magvit2_preset_matches_paper_shapes_on_meta():
    cfg = preset("magvit2")
    assert (cfg.base_channels, tuple(cfg.channel_multipliers), cfg.latent_channels) == (128, (1, 2, 2, 4), 8)
    with torch.device("meta"):
        model = CausalAutoencoder(cfg)
        z = model.encode(torch.empty(2, 3, 17, 128, 128))
        assert z.shape == (2, 8, 5, 16, 16)
        assert model.decode(z).shape == (2, 3, 17, 128, 128)
        img = model.encode(torch.empty(1, 3, 1, 256, 256))
        assert img.shape == (1, 8, 1, 32, 32)
        assert model.decode(img).shape == (1, 3, 1, 256, 256)
        wide = CausalAutoencoder(AutoencoderConfig(latent_channels=16))
        assert wide.encode(torch.empty(1, 3, 17, 128, 128)).shape == (1, 16, 5, 16, 16)
    assert cfg.latent_shape(17, 128, 128) == (8, 5, 16, 16)


def test_tiny_preset_shapes_on_real_tensors():
    model = CausalAutoencoder(preset("tiny")).eval()
    with torch.no_grad():
        for shape, latent in [((2, 3, 9, 32, 32), (2, 8, 3, 4, 4)), ((1, 3, 1, 16, 16), (1, 8, 1, 2, 2))]:
            z = model.encode(torch.randn(shape))
            assert z.shape == latent
            assert model.decode(z).shape == shape
        with pytest.raises(ValueError, match="1 \\+ 4k"):
            model.encode(torch.randn(1, 3, 8, 16, 16))


# ---------------------------------------------------------------- causality
@pytest.mark.parametrize("padding", ["replicate", "zeros"])
def test_encoder_is_causal(padding):
    model = randomized(CausalAutoencoder(tiny(temporal_padding=padding)))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 9, 16, 16, generator=g)
    with torch.no_grad():
        z = model.encode(x)  # latent frame j sees frames <= 4j
        for first_changed, unchanged in [(5, 2), (1, 1)]:
            y = x.clone()
            y[:, :, first_changed:] = torch.randn(y[:, :, first_changed:].shape, generator=g)
            zy = model.encode(y)
            assert torch.equal(zy[:, :, :unchanged], z[:, :, :unchanged])
            assert not torch.allclose(zy[:, :, unchanged:], z[:, :, unchanged:])  # the test can see a change
        # An image is the first frame of the video that starts with it. A shorter input makes the
        # CPU conv backend pick another algorithm, so equality holds up to rounding only; float64
        # makes that ~1e-17, far below any leak from later frames (~1e-2 here).
        model, x = model.double(), x.double()
        assert torch.allclose(model.encode(x[:, :, :1]), model.encode(x)[:, :, :1], rtol=0, atol=1e-12)


def test_decoder_is_causal():
    model = randomized(CausalAutoencoder(preset("tiny")))
    z = torch.randn(1, 8, 3, 2, 2)
    with torch.no_grad():
        out = model.decode(z)  # output frames 1 + 4(j-1) .. 4j come from latent frame j
        z2 = z.clone()
        z2[:, :, 2] = torch.randn(1, 8, 2, 2)
        out2 = model.decode(z2)
        assert torch.equal(out2[:, :, :5], out[:, :, :5])
        assert not torch.allclose(out2[:, :, 5:], out[:, :, 5:])
        model, z = model.double(), z.double()  # different lengths: equal up to rounding (see above)
        assert torch.allclose(model.decode(z[:, :, :1]), model.decode(z)[:, :, :1], rtol=0, atol=1e-12)


# ---------------------------------------------------------------- losses, discriminator, EMA
def _fake_vgg_file(path: Path) -> Path:
    from torchvision.models import vgg16

    with torch.device("meta"):
        keys = {k: v.shape for k, v in vgg16(weights=None).features[:30].state_dict().items()}
    g = torch.Generator().manual_seed(0)
    torch.save({f"features.{k}": torch.randn(s, generator=g) * 0.05 for k, s in keys.items()}, path)
    return path


def test_perceptual_loss_from_user_file(tmp_path, monkeypatch):
    monkeypatch.delenv("WALT_VGG16_WEIGHTS", raising=False)
    path = _fake_vgg_file(tmp_path / "vgg16-397923af.pth")
    with pytest.raises(WeightsError, match="397923af"):  # the fake file fails torchvision's hash prefix
        PerceptualLoss.from_file(path)
    with pytest.raises(WeightsError, match="vgg16-397923af.pth"):
        PerceptualLoss.from_file(tmp_path / "missing.pth")
    net = PerceptualLoss.from_file(path, verify_prefix=False)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).requires_grad_(True)
    assert net(x, x).item() == 0.0
    d = net(x, y)
    d.backward()
    assert d.item() > 0 and y.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in net.parameters())
    # attached to the loss it never shows up in a state dict (checkpoints stay VGG-free)
    loss = AutoencoderLoss(preset("magvit2").loss)
    loss.set_perceptual(net)
    assert set(loss.state_dict()) == {"lecam.real_ema", "lecam.fake_ema"}
    video = torch.rand(1, 3, 3, 32, 32) * 2 - 1
    total, logs = loss.generator(video, video.flip(-1), torch.zeros(1), None)
    assert logs["perceptual"] > 0 and torch.isclose(total, logs["recon"] + 0.1 * logs["perceptual"])


def test_perceptual_off_without_weights_is_logged(caplog, monkeypatch):
    monkeypatch.delenv("WALT_VGG16_WEIGHTS", raising=False)
    module = AutoencoderModule(tiny(**{"loss.perceptual_weight": 0.1}))
    with caplog.at_level(logging.INFO, logger="walt.modules.autoencoder"):
        module.on_fit_start()
    assert "perceptual loss is OFF" in caplog.text and module.loss.perceptual is None


def test_discriminator_gan_losses_and_lecam():
    disc = Discriminator3d(preset("tiny").discriminator)
    assert disc(torch.randn(2, 3, 5, 16, 16)).shape == (2,)
    assert disc(torch.randn(3, 3, 1, 32, 32)).shape == (3,)  # images too
    cfg = tiny(**{"loss.lecam_weight": 1.0, "loss.lecam_decay": 0.5})
    loss = AutoencoderLoss(cfg.loss)
    real, fake = torch.full((4,), 2.0), torch.full((4,), -2.0)
    total, logs = loss.discriminator(real, fake)
    assert logs["gan_d"] == 0.0  # hinge margins met
    assert loss.lecam.real_ema.item() == 1.0 and loss.lecam.fake_ema.item() == -1.0  # EMA with decay 0.5
    assert logs["lecam"] == pytest.approx(2 * 3.0 ** 2 / 1)  # relu(2 - (-1))^2 + relu(1 - (-2))^2
    ns = AutoencoderLoss(tiny(**{"loss.gan_loss": "non_saturating", "loss.lecam_weight": 0.0}).loss)
    _, logs = ns.discriminator(real, fake)
    assert logs["gan_d"] == pytest.approx(2 * torch.nn.functional.softplus(torch.tensor(-2.0)).item())
    assert isinstance(loss.lecam, LeCam)


def test_ema_warmup_and_copy():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.9, warmup=True)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # update 0 copies the weights (AveragedModel's rule)
    assert torch.equal(ema.module.weight, model.weight) and int(ema.n_averaged) == 1
    start = ema.module.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert ema.decay_at(1) == pytest.approx(2 / 11)  # warm-up: (1 + n) / (10 + n) below the 0.9 cap
    ema.update(model)
    assert torch.allclose(ema.module.weight, start + 9 / 11)
    assert ema.decay_at(100) == pytest.approx(0.9)
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert set(ema.state_dict()) == {"module.weight", "module.bias", "n_averaged"}
    target = torch.nn.Linear(2, 2)
    ema.copy_to(target)
    assert torch.equal(target.weight, ema.module.weight)


# ---------------------------------------------------------------- latent statistics
def test_latent_stats_and_normalize_round_trip():
    torch.manual_seed(0)
    module = AutoencoderModule(preset("tiny")).eval()
    randomized(module.autoencoder)
    module.ema.module.load_state_dict(module.autoencoder.state_dict())
    batches = [{"video": torch.rand(2, 3, 5, 16, 16) * 2 - 1} for _ in range(3)]
    assert not bool(module.latent_stats_ready)
    mean, std = module.compute_latent_stats(batches, max_batches=2)
    assert bool(module.latent_stats_ready) and mean.shape == std.shape == (8,)
    z = torch.cat([module.encode(b["video"], normalize=True) for b in batches[:2]])
    assert torch.allclose(z.mean(dim=(0, 2, 3, 4)), torch.zeros(8), atol=1e-4)
    assert torch.allclose(z.std(dim=(0, 2, 3, 4), unbiased=False), torch.ones(8), atol=1e-3)
    raw = torch.randn(2, 8, 2, 2, 2)
    assert torch.allclose(module.denormalize(module.normalize(raw)), raw, atol=1e-6)
    assert not torch.allclose(module.normalize(raw), raw)
    off = AutoencoderModule(tiny())
    off.normalize_latents = False  # stage 2's choice (diffusion.normalize_latents), set by load_autoencoder
    off.latent_std.fill_(3.0)
    assert torch.equal(off.normalize(raw), raw) and torch.equal(off.denormalize(raw), raw)


# ---------------------------------------------------------------- training
def test_training_tiny_preset_halves_validation_mse(synthetic_root, tmp_path, one_thread):
    L.seed_everything(0)
    dm = datamodule(synthetic_root)
    module = AutoencoderModule(preset("tiny"))
    logger = TensorBoardLogger(str(tmp_path), name="tb", version="")
    before = trainer(tmp_path, 1, logger=False).validate(module, datamodule=dm, verbose=False)[0]["val/mse"]
    t = trainer(tmp_path, 150, logger=logger, val_check_interval=None, check_val_every_n_epoch=None,
                limit_val_batches=1, log_every_n_steps=5)
    t.fit(module, datamodule=dm)
    assert t.global_step == 150
    after = trainer(tmp_path, 1).validate(module, datamodule=dm, verbose=False)[0]
    assert after["val/mse"] * 2 <= before, (before, after)
    assert after["val/psnr"] > 10 and 0 < after["val/ssim"] <= 1
    # latent statistics are estimated at the end of fit
    assert bool(module.latent_stats_ready) and not torch.allclose(module.latent_std, torch.ones(8))
    t.validate(module, datamodule=dm, verbose=False)  # logs reconstructions to TensorBoard
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events and any(b"val/reconstruction" in e.read_bytes() for e in events)


def _is_plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


class _StepAtStart(Callback):
    def on_train_start(self, trainer, pl_module):
        self.step = trainer.global_step
        self.lecam = pl_module.loss.lecam.real_ema.item()


def test_checkpoint_weights_only_resume_and_load(synthetic_root, tmp_path, one_thread):
    L.seed_everything(0)
    cfg = tiny(**{"loss.disc_start": 0, "loss.lecam_weight": 0.1})  # exercise the discriminator path
    dm = datamodule(synthetic_root, batch_size=2)
    ckpt_dir = tmp_path / "ckpt"
    module = AutoencoderModule(cfg.to_dict())
    t = trainer(tmp_path, 3, enable_checkpointing=True, limit_val_batches=0,
                callbacks=[ModelCheckpoint(dirpath=str(ckpt_dir), save_last=True, every_n_train_steps=3)])
    t.fit(module, datamodule=dm)
    assert t.global_step == 3  # batches, although two optimisers step each batch
    last = ckpt_dir / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3 and _is_plain(ckpt["hyper_parameters"])
    assert AutoencoderConfig.from_dict(ckpt["hyper_parameters"]["config"]) == cfg
    assert ckpt["state_dict"]["latent_stats_ready"].item()  # re-saved after the end-of-fit statistics
    assert any(k.startswith("discriminator.") for k in ckpt["state_dict"])
    lecam = ckpt["state_dict"]["loss.lecam.real_ema"].item()
    assert lecam != 0.0

    resumed, probe = AutoencoderModule(cfg.to_dict()), _StepAtStart()
    t2 = trainer(tmp_path, 5, limit_val_batches=0, callbacks=[probe])
    t2.fit(resumed, datamodule=dm, ckpt_path=str(last))
    assert probe.step == 3 and probe.lecam == lecam and t2.global_step == 5

    frozen = load_autoencoder(str(last))
    assert not frozen.training and frozen.ema is None and frozen.discriminator is None
    assert not any(p.requires_grad for p in frozen.parameters())
    ema = {k[len("ema.module."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("ema.module.")}
    assert all(torch.equal(v, ema[k]) for k, v in frozen.autoencoder.state_dict().items())
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    z = frozen.normalize(frozen.encode(video))  # how stage 2 encodes
    assert z.shape == (1, 8, 2, 2, 2) and torch.equal(z, frozen.encode(video, normalize=True))
    out = frozen.decode(frozen.denormalize(z))
    assert torch.allclose(out, frozen.reconstruct(video), atol=1e-5) and out.abs().max() <= 1
    assert load_autoencoder(str(last), normalize_latents=False).normalize(z) is z
