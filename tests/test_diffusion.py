"""Diffusion process: schedules, prediction conversions, samplers with an oracle denoiser, guidance."""
import itertools

import pytest
import torch

from walt.diffusion import (
    PREDICTIONS, ClassifierFreeGuidance, DiffusionConfig, NoiseSchedule, convert, ddim_sample, ddpm_sample,
    diffusion_loss, guidance_weight, sample, sampling_timesteps, target, to_x0_eps,
)


def oracle(schedule: NoiseSchedule, x0: torch.Tensor, kind: str):
    """A perfect denoiser for a single known x0: returns the true v / eps / x0 at any x_t."""
    def model_fn(x, t, self_cond):
        alpha, sigma = schedule.alpha_sigma(t, x.ndim)
        eps = (x - alpha * x0) / sigma
        return target(kind, x0, eps, alpha, sigma)
    return model_fn


# ----------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_zero_terminal_snr_schedule(name):
    plain = NoiseSchedule(name, zero_terminal_snr=False).alphas_cumprod
    zero = NoiseSchedule(name, zero_terminal_snr=True).alphas_cumprod
    assert zero[-1].item() == 0.0 and plain[-1].item() > 0
    assert torch.isclose(zero[0], plain[0])  # the clean end is kept
    assert (zero[1:] < zero[:-1]).all()
    t = torch.tensor([999, -1])
    assert NoiseSchedule(name).alpha_bar(t).tolist() == [0.0, 1.0]  # also exactly 0 in the float32 lookup


def test_linear_schedule_values():
    s = NoiseSchedule("linear", zero_terminal_snr=False)
    assert abs(s.alphas_cumprod[0].item() - (1 - 1e-4)) < 1e-12
    assert abs(s.alphas_cumprod[-1].item() - torch.prod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)).item()) < 1e-15


def test_sampling_timesteps():
    ts = sampling_timesteps(1000, 50, "trailing")
    assert len(ts) == 50 and ts[0] == 999 and ts[-1] == 19 and ts == sorted(ts, reverse=True)
    assert sampling_timesteps(1000, 50, "leading")[-1] == 0
    assert len(sampling_timesteps(1000, 1000)) == 1000


# ----------------------------------------------------------------------------- objectives
@pytest.mark.parametrize("src,dst", list(itertools.permutations(PREDICTIONS, 2)))
def test_prediction_conversions_round_trip(src, dst):
    torch.manual_seed(0)
    s = NoiseSchedule()
    t = torch.tensor([0, 10, 500, 990])
    x0, eps = torch.randn(4, 3, 2, 2, 2), torch.randn(4, 3, 2, 2, 2)
    alpha, sigma = s.alpha_sigma(t)
    x_t = alpha * x0 + sigma * eps
    pred = target(src, x0, eps, alpha, sigma)
    torch.testing.assert_close(convert(pred, src, dst, x_t, alpha, sigma), target(dst, x0, eps, alpha, sigma), atol=2e-4, rtol=1e-4)
    there = convert(pred, src, dst, x_t, alpha, sigma)
    torch.testing.assert_close(convert(there, dst, src, x_t, alpha, sigma), pred, atol=2e-4, rtol=1e-4)


def test_eps_at_zero_snr_is_finite_and_v_is_exact():
    s = NoiseSchedule()
    t = torch.tensor([999])
    alpha, sigma = s.alpha_sigma(t)
    x0, eps = torch.randn(1, 3, 1, 2, 2), torch.randn(1, 3, 1, 2, 2)
    x_t = alpha * x0 + sigma * eps  # pure noise
    x0_hat, eps_hat = to_x0_eps("eps", eps, x_t, alpha, sigma)
    assert torch.isfinite(x0_hat).all() and (x0_hat == 0).all()  # E[x0] of normalised latents
    x0_v, _ = to_x0_eps("v", target("v", x0, eps, alpha, sigma), x_t, alpha, sigma)
    torch.testing.assert_close(x0_v, x0)  # v still carries x0 at zero SNR


def test_diffusion_loss_is_zero_for_the_oracle_and_runs_self_conditioning():
    torch.manual_seed(0)
    s = NoiseSchedule()
    x0 = torch.randn(4, 3, 2, 4, 4)
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 100, 600, 999])
    seen = []

    def model_fn(x, t_, self_cond):
        seen.append(self_cond)
        return oracle(s, x0, "v")(x, t_, self_cond)

    loss = diffusion_loss(model_fn, s, x0, "v", self_condition=True, t=t, noise=noise)
    assert loss.item() < 1e-8
    assert seen[0] is None and torch.allclose(seen[1], x0, atol=1e-4)  # second pass sees the x0 estimate
    zero = diffusion_loss(lambda x, t_, sc: torch.zeros_like(x), s, x0, "v", t=t, noise=noise)
    alpha, sigma = s.alpha_sigma(t)
    torch.testing.assert_close(zero, (alpha * noise - sigma * x0).pow(2).mean())


# ----------------------------------------------------------------------------- samplers
@pytest.mark.parametrize("kind,zero_snr", [("v", True), ("x0", True), ("eps", True), ("eps", False), ("v", False)])
def test_ddim_with_oracle_recovers_x0(kind, zero_snr):
    torch.manual_seed(0)
    s = NoiseSchedule(zero_terminal_snr=zero_snr)
    x0 = torch.randn(2, 3, 2, 4, 4)
    out = ddim_sample(oracle(s, x0, kind), s, torch.randn_like(x0), steps=50, prediction=kind)
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=1e-4)


def test_ddim_eta_and_ddpm_with_oracle_recover_x0():
    torch.manual_seed(0)
    s = NoiseSchedule()
    x0 = torch.randn(2, 3, 2, 4, 4)
    g = torch.Generator().manual_seed(0)
    out = ddim_sample(oracle(s, x0, "v"), s, torch.randn_like(x0), steps=20, eta=1.0, generator=g)
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=1e-4)
    out = ddpm_sample(oracle(s, x0, "v"), s, torch.randn_like(x0), steps=100, generator=g)
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=1e-4)


def test_ddim_is_deterministic_and_feeds_self_conditioning():
    s = NoiseSchedule()
    x0 = torch.randn(1, 3, 1, 2, 2)
    received = []

    def model_fn(x, t, self_cond):
        received.append(None if self_cond is None else self_cond.clone())
        return oracle(s, x0, "v")(x, t, self_cond)

    noise = torch.randn_like(x0)
    cfg = DiffusionConfig(sampling_steps=5)
    a = sample(model_fn, s, noise, cfg, self_condition=True)
    assert received[0] is None and all(torch.allclose(r, x0, atol=1e-4) for r in received[1:]) and len(received) == 5
    torch.testing.assert_close(a, sample(model_fn, s, noise, cfg, self_condition=True))


def class_model(x, t, self_cond=None, y=None):
    """A toy conditional model whose output depends on the label (null label = 9)."""
    return x * 0.5 + y.float().view(-1, 1, 1, 1, 1) + t.float().view(-1, 1, 1, 1, 1) / 1000


def test_cfg_scale_one_equals_conditional_model_and_scale_extrapolates():
    x, t = torch.randn(3, 2, 1, 2, 2), torch.tensor([5, 50, 500])
    y, null = torch.tensor([0, 1, 2]), torch.full((3,), 9)
    cond = class_model(x, t, y=y)
    uncond = class_model(x, t, y=null)
    torch.testing.assert_close(ClassifierFreeGuidance(class_model, {"y": y}, {"y": null}, 1.0)(x, t, None), cond)
    torch.testing.assert_close(ClassifierFreeGuidance(class_model, {"y": y}, {"y": null}, 3.0)(x, t, None),
                               uncond + 3.0 * (cond - uncond))


def test_power_cosine_guidance_schedule():
    t = torch.tensor([999, 500, 0])
    w = guidance_weight(t, 4.0, "power_cosine", power=1.0, num_timesteps=1000)
    assert abs(w[0].item() - 1.0) < 1e-3 and abs(w[2].item() - 4.0) < 1e-6 and 1 < w[1].item() < 4
    assert guidance_weight(t, 4.0).tolist() == [4.0, 4.0, 4.0]


def test_diffusion_config_validation():
    with pytest.raises(ValueError, match=r"\('v', 'eps', 'x0'\)"):
        DiffusionConfig(prediction="score")
    with pytest.raises(ValueError, match="valid keys"):
        DiffusionConfig.from_dict({"zero_snr": True})
    cfg = DiffusionConfig.from_dict({"zero_terminal_snr": False, "prediction": "eps"})
    assert cfg.make_schedule().alphas_cumprod[-1] > 0
