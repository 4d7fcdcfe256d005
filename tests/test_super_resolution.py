"""Cascade stages: the tiny super-resolution stage learns on CPU and its low-res path is live;
temporal interpolation repeats low-rate frames; both build from a RunConfig by `stage=`."""
import pytest
import torch
import torch.nn.functional as F

from walt.modules.interpolation import InterpolationModule, nearest_frames
from walt.modules.super_resolution import SuperResolutionModule

from conftest import randomize, single_thread

pytestmark = pytest.mark.usefixtures("one_thread")
SR_MODEL = dict(in_channels=3, input_size=[5, 8, 8], st_window=[5, 4, 4], depth=2, hidden_size=32, num_heads=4,
                self_cond_prob=0.0, cond_channels=3, noise_cond=True)
DIFFUSION = {"sampling_steps": 4}
# Loss drop over 200 steps (first-20 minus last-20 mean training loss) with the default learned depth-to-space
# upsampling: 0.487-0.507 on seeds 0-3 (0.86-0.90 -> 0.37-0.40; bilinear upsampling gave 0.566-0.573); the
# own-vs-other low-res error ratio below was 0.015-0.018 (bound 0.5), the mean |output(low a) - output(low b)|
# 1.21-1.27 (bound 0.1); one thread.
MIN_DROP = 0.4


def patterns(n: int, seed: int) -> torch.Tensor:
    """High-res latent clips (n, 3, 5, 8, 8): smooth random fields, so their 2x pooled versions say a lot."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.randn(n, 3, 5, 3, 3, generator=g), size=(5, 8, 8), mode="trilinear") * 1.5


def train_sr(seed: int, steps: int = 200) -> tuple[SuperResolutionModule, list[float]]:
    torch.manual_seed(seed)
    module = SuperResolutionModule(SR_MODEL, DIFFUSION, {"ema_decay": 0.0}, {"aug_max": 0.2, "aug_sample": 0.05})
    opt = torch.optim.AdamW(module.model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed + 100)
    losses = []
    for _ in range(steps):
        loss = module._loss(module.model, {"latents": patterns(8, int(torch.randint(1 << 30, (1,), generator=g)))},
                            train=True, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    module.ema.module.load_state_dict(module.model.state_dict())
    return module, losses


@pytest.fixture(scope="module")
def trained():
    with single_thread():
        return train_sr(0)


def test_sr_training_lowers_the_loss(trained):
    _, losses = trained
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert first - last > MIN_DROP, (first, last)


def test_low_res_input_is_live_and_followed(trained):
    module, _ = trained
    x = patterns(4, seed=123)
    low_a, low_b = F.avg_pool3d(x, (1, 2, 2)), F.avg_pool3d(x.flip(0), (1, 2, 2))
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    noise = torch.randn(4, 3, 5, 8, 8, generator=g())
    out_a = module.sample(low_a, noise=noise, generator=g())
    out_b = module.sample(low_b, noise=noise, generator=g())
    assert out_a.shape == (4, 3, 5, 8, 8)
    torch.testing.assert_close(out_a, module.sample(low_a, noise=noise, generator=g()))  # seeded: deterministic
    assert (out_a - out_b).abs().mean() > 0.1
    # the sample follows its own low-res input: pooled back it is closer to it than to the other one
    err_own = (F.avg_pool3d(out_a, (1, 2, 2)) - low_a).pow(2).mean()
    err_other = (F.avg_pool3d(out_a, (1, 2, 2)) - low_b).pow(2).mean()
    assert err_own < 0.5 * err_other, (err_own, err_other)


def test_depth_to_space_upsampling_is_learned_inside_the_model():
    """Default lowres.upsample=depth_to_space: `cond` stays low-res, the model maps every low-res latent pixel to
    4c channels (a learned linear map that starts as nearest-neighbour) and pixel-shuffles them per frame."""
    module = SuperResolutionModule(SR_MODEL, DIFFUSION)
    assert module.model_cfg.cond_upsample == 2 and module.lowres_cfg.upsample == "depth_to_space"
    low = torch.randn(2, 3, 5, 4, 4)
    cond = module.lowres_condition(low, aug_level=0.0)["cond"]
    assert cond.shape == (2, 3, 5, 4, 4)  # the model upsamples it
    net = module.model
    up = net.upsample_cond(cond)
    assert up.shape == (2, 3, 5, 8, 8)
    torch.testing.assert_close(up, F.interpolate(cond, size=(5, 8, 8), mode="nearest"))  # the init
    # depth-to-space layout: sub-pixel (i, j) of low-res pixel (h, w) is output channel block c*4 + 2i + j
    with torch.no_grad():
        net.cond_proj.weight.normal_()
        net.cond_proj.bias.normal_()
    z = net.cond_proj(cond.permute(0, 2, 3, 4, 1))  # (B, T, h, w, 4c)
    up = net.upsample_cond(cond)
    for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
        torch.testing.assert_close(up[:, :, :, i::2, j::2], z[..., i * 2 + j::4].permute(0, 4, 1, 2, 3))
    # the low-res path is live through the whole model, and the loss's gradient reaches the projection
    net = randomize(net, 0.05)
    x, t, aug_t = torch.randn(2, 3, 5, 8, 8), torch.tensor([500, 500]), torch.tensor([0, 0])
    out_a, out_b = net(x, t, cond=cond, aug_t=aug_t), net(x, t, cond=cond + torch.randn_like(cond), aug_t=aug_t)
    assert (out_a - out_b).abs().mean() > 1e-3
    net.zero_grad()
    module._loss(net, {"latents": patterns(2, seed=1)}, train=True, generator=torch.Generator().manual_seed(0)).backward()
    assert net.cond_proj.weight.grad is not None and net.cond_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="cond input of shape"):
        net(x, t, cond=F.interpolate(cond, size=(5, 8, 8)), aug_t=aug_t)  # already upsampled: the wrong grid
    with pytest.raises(ValueError, match="needs model.cond_upsample=1"):
        SuperResolutionModule({**SR_MODEL, "cond_upsample": 2}, DIFFUSION, None, {"upsample": "bilinear"})


def test_noise_augmentation_level_reaches_adaln():
    module = SuperResolutionModule(SR_MODEL, DIFFUSION, None, {"upsample": "bilinear"})  # the interpolation option
    assert module.model_cfg.cond_upsample == 1 and module.model.cond_proj is None
    low = torch.randn(2, 3, 5, 4, 4)
    train = module.lowres_condition(low, train=True, generator=torch.Generator().manual_seed(0))
    assert train["cond"].shape == (2, 3, 5, 8, 8) and (train["aug_t"] < 300).all()
    fixed = module.lowres_condition(low, aug_level=0.0)
    assert (fixed["aug_t"] == 0).all()
    torch.testing.assert_close(fixed["cond"], F.interpolate(low, size=(5, 8, 8), mode="trilinear"), atol=0.05, rtol=0)  # t=0: sigma = 0.01
    net, t = randomize(module.model, 0.05), torch.tensor([500, 500])
    x = torch.randn(2, 3, 5, 8, 8)
    out0, out1 = net(x, t, cond=fixed["cond"], aug_t=torch.tensor([0, 0])), net(x, t, cond=fixed["cond"], aug_t=torch.tensor([0, 250]))
    torch.testing.assert_close(out0[0], out1[0])
    assert not torch.allclose(out0[1], out1[1])


def test_sr_module_requires_the_conditioning_channels():
    with pytest.raises(ValueError, match="cond_channels"):
        SuperResolutionModule({**SR_MODEL, "cond_channels": 0})


def test_interpolation_repeats_low_rate_frames_and_is_conditioned():
    assert nearest_frames(3, 5).tolist() == [0, 0, 1, 2, 2] or nearest_frames(3, 5).tolist() == [0, 1, 1, 2, 2]
    assert nearest_frames(3, 5)[[0, -1]].tolist() == [0, 2]
    model = {**SR_MODEL, "input_size": [5, 4, 4], "st_window": [5, 2, 2]}
    module = InterpolationModule(model, DIFFUSION, None, {"factor": 2, "aug_sample": 0.0})
    torch.nn.init.normal_(module.ema.module.final.linear.weight, std=0.1)
    x0 = torch.randn(2, 3, 5, 4, 4)
    low = module.low_from_latents(x0)
    assert low.shape == (2, 3, 3, 4, 4)
    up = module.upsample(low)
    assert up.shape == x0.shape and torch.equal(up[:, :, 0], low[:, :, 0]) and torch.equal(up[:, :, -1], low[:, :, -1])
    noise = torch.randn(2, 3, 5, 4, 4)
    a, b = module.sample(low, noise=noise), module.sample(torch.randn_like(low), noise=noise)
    assert a.shape == (2, 3, 5, 4, 4) and not torch.allclose(a, b)
    assert torch.isfinite(module._loss(module.model, {"latents": x0}, train=True))
