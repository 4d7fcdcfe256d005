"""Image-video joint training in the model: appended image frames stay out of temporal mixing,
image frames are encoded alone, padding latent frames carry no loss, tiny joint trainings run."""
import functools

import pytest
import torch
from conftest import SMALL_SPEC
from conftest import randomize as shared_randomize

from walt.diffusion import DiffusionConfig, diffusion_loss
from walt.modules.latent_diffusion import LatentDiffusionModule
from walt.transformer import WALT, preset_config

randomize = functools.partial(shared_randomize, std=0.1)


def tiny(**overrides):
    base = dict(in_channels=3, input_size=(4, 4, 4), st_window=(4, 2, 2), depth=2, hidden_size=32, num_heads=4,
                num_classes=4, self_cond_prob=0.0)
    return preset_config("walt_tiny", **{**base, **overrides})


LAYOUTS = [dict(layout=["T"]), dict(layout=["ST"]), dict(layout=["ST"], st_window=(2, 2, 2)), dict(layout=["full"]),
           dict(layout=["S", "T"]), dict(layout="s_plus_t", temporal_pos="rope"), dict(layout=["split"])]
IDS = ["T", "ST", "ST-t2", "full", "S/T", "lavie-s_plus_t-rope", "split"]
OPTIONS = [{}, dict(image_st_mask="frame"), dict(conditioning="tokens", temporal_pos="rope", pos_embed="sincos"),
           dict(cross_attention_dim=8, text_layers="all")]


@pytest.mark.parametrize("options", OPTIONS, ids=["identity", "frame", "tokens-rope", "text"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_appended_image_frames_do_not_mix_with_the_clip(layout, options, one_thread):
    """Two images appended after a 4-frame clip: each image frame's output equals the image alone (and
    so does not change when the clip changes), and the clip's output equals the clip alone."""
    if "temporal_pos" in layout and "temporal_pos" in options:
        options = {k: v for k, v in options.items() if k != "temporal_pos"}
    model = randomize(WALT(tiny(**{**layout, **options}))).eval()
    torch.manual_seed(0)
    B, n = 2, 2
    clip, images = torch.randn(B, 3, 4, 4, 4), torch.randn(B, 3, n, 4, 4)
    t, y = torch.tensor([30, 700]), torch.tensor([1, 3])
    kw = {}
    if "cross_attention_dim" in options:
        kw = dict(text=torch.randn(B, 5, 8), text_mask=torch.tensor([[True] * 5, [True] * 3 + [False] * 2]))
    flags = (torch.arange(4 + n) >= 4)[None].expand(B, -1)
    out = model(torch.cat([clip, images], 2), t, y, frame_is_image=flags, **kw)
    assert out.shape == (B, 3, 4 + n, 4, 4)
    other = model(torch.cat([torch.randn_like(clip), images], 2), t, y, frame_is_image=flags, **kw)
    torch.testing.assert_close(other[:, :, 4:], out[:, :, 4:], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(other[:, :, :4], out[:, :, :4], atol=1e-3)  # the clip itself did change
    for i in range(n):  # each image alone, as a 1-frame input with the same conditions
        alone = model(images[:, :, i:i + 1], t, y, **kw)
        torch.testing.assert_close(out[:, :, 4 + i:5 + i], alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[:, :, :4], model(clip, t, y, **kw), atol=1e-5, rtol=1e-4)


def test_per_frame_flags_in_a_clip_of_the_models_length(one_thread):
    """Flags inside a T = input_size clip (no extension): the flagged frame is the image alone, the
    others never read it; per-sample is_image of another sample still works beside it."""
    model = randomize(WALT(tiny(layout=["S", "ST"]))).eval()
    torch.manual_seed(2)
    x, t, y = torch.randn(3, 3, 4, 4, 4), torch.tensor([5, 500, 900]), torch.tensor([0, 1, 2])
    flags = torch.zeros(3, 4, dtype=torch.bool)
    flags[0, 3] = True
    is_image = torch.tensor([False, True, False])
    out = model(x, t, y, is_image=is_image, frame_is_image=flags)
    torch.testing.assert_close(out[0, :, 3:], model(x[:1, :, 3:], t[:1], y[:1])[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[1:], model(x[1:], t[1:], y[1:], is_image=is_image[1:]), atol=1e-5, rtol=1e-4)
    x2 = x.clone()
    x2[0, :, 3] = torch.randn_like(x2[0, :, 3])
    torch.testing.assert_close(model(x2, t, y, is_image=is_image, frame_is_image=flags)[0, :, :3], out[0, :, :3],
                               atol=1e-5, rtol=1e-4)


def test_frame_flags_need_frame_patches_and_the_right_shape():
    model = WALT(tiny(layout=["T"]))
    with pytest.raises(ValueError, match=r"frame_is_image must be \(B, T\)"):
        model(torch.randn(1, 3, 6, 4, 4), torch.tensor([1]), frame_is_image=torch.zeros(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="does not match the model's latents"):
        model(torch.randn(1, 3, 6, 4, 4), torch.tensor([1]))  # a longer input without image frames


# ----------------------------------------------------------------------------- loss mask
def test_weighted_loss_is_the_mean_over_kept_elements_and_masked_elements_get_no_gradient(one_thread):
    schedule = DiffusionConfig().make_schedule()
    x0 = torch.randn(2, 3, 4, 2, 2, requires_grad=True)
    t, noise = torch.tensor([100, 800]), torch.randn(2, 3, 4, 2, 2)
    weight = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.float)[:, None, :, None, None]
    loss = diffusion_loss(lambda x, tt, sc: x * 0.5, schedule, x0, "v", t=t, noise=noise, weight=weight)
    full = diffusion_loss(lambda x, tt, sc: x * 0.5, schedule, x0, "v", t=t, noise=noise)
    # by hand: the mean over the 5 kept frames
    alpha, sigma = schedule.alpha_sigma(t, 5, x0.dtype)
    x_t = alpha * x0 + sigma * noise
    sq = (0.5 * x_t - (alpha * noise - sigma * x0)).pow(2)
    torch.testing.assert_close(loss, (sq[0].sum() + sq[1, :, :1].sum()) / (5 * 3 * 4))
    torch.testing.assert_close(full, sq.mean())
    loss.backward()
    assert x0.grad[1, :, 1:].abs().sum() == 0 and x0.grad[1, :, 0].abs().sum() > 0


class _CausalPool(torch.nn.Module):
    """A causal /4 time, /4 space encoder: latent frame 0 = frame 0, latent frame j = mean of frames 4j-3..4j."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def encode(self, video):
        first = video[:, :, :1]
        rest = video[:, :, 1:]
        if rest.shape[2]:
            rest = rest.unflatten(2, (-1, 4)).mean(3)
        z = torch.cat([first, rest], 2) * self.scale
        return torch.nn.functional.avg_pool3d(z, (1, 4, 4))

    def normalize(self, z):
        return z * 2

    def denormalize(self, z):
        return z / 2

    def decode(self, z):
        return z


def module(first_stage=None, **model):
    cfg = dict(in_channels=3, input_size=[3, 4, 4], st_window=[3, 2, 2], depth=2, hidden_size=32, num_heads=2,
               num_classes=SMALL_SPEC.num_classes, **model)
    return LatentDiffusionModule(model=cfg, diffusion={"sampling_steps": 2}, optim={"warmup_steps": 1},
                                 first_stage=first_stage)


def test_appended_images_are_encoded_alone_after_the_clips_latents(one_thread):
    fs = _CausalPool()
    m = module(fs)
    torch.manual_seed(3)
    video = torch.randn(2, 3, 9 + 2, 16, 16)
    flags = (torch.arange(11) >= 9)[None].expand(2, -1)
    batch = {"video": video, "is_image": torch.tensor([False, False]), "frame_is_image": flags}
    z = m.batch_latents(batch)
    assert z.shape == (2, 3, 3 + 2, 4, 4)
    torch.testing.assert_close(z[:, :, :3], fs.normalize(fs.encode(video[:, :, :9])))
    for i in range(2):
        torch.testing.assert_close(z[:, :, 3 + i:4 + i], fs.normalize(fs.encode(video[:, :, 9 + i:10 + i])))
    image_frames, keep = m.latent_frame_flags(batch, z)
    assert image_frames.tolist() == [[False] * 3 + [True] * 2] * 2 and keep is None
    bad = {**batch, "frame_is_image": torch.roll(flags, 1, dims=1)}  # an image before the clip's frames
    with pytest.raises(ValueError, match="must follow the clip's frames"):
        m.batch_latents(bad)


def test_image_samples_encode_each_image_alone_and_mask_their_padding(one_thread):
    fs = _CausalPool()
    m = module(fs)
    torch.manual_seed(4)
    video = torch.randn(3, 3, 9, 16, 16)
    video[1, :, 2:] = 0  # image sample with k = 2 images and padding
    video[2, :, 1:] = 0  # image sample with k = 1
    flags = torch.zeros(3, 9, dtype=torch.bool)
    flags[1, :2] = True
    flags[2, :1] = True
    batch = {"video": video, "is_image": torch.tensor([False, True, True]), "frame_is_image": flags,
             "label": torch.tensor([0, 1, 2])}
    z = m.batch_latents(batch)
    assert z.shape == (3, 3, 3, 4, 4)
    torch.testing.assert_close(z[0], fs.normalize(fs.encode(video[:1]))[0])
    for k in range(2):
        torch.testing.assert_close(z[1, :, k], fs.normalize(fs.encode(video[1:2, :, k:k + 1]))[0, :, 0])
    torch.testing.assert_close(z[2], fs.normalize(fs.encode(video[2:3]))[0])  # k = 1: the padded clip's latents
    torch.testing.assert_close(z[2, :, 0], fs.normalize(fs.encode(video[2:3, :, :1]))[0, :, 0])
    image_frames, keep = m.latent_frame_flags(batch, z)
    assert image_frames is None  # image samples pass the transformer by is_image
    assert keep.tolist() == [[True] * 3, [True, True, False], [True, False, False]]

    # the loss ignores the padding latents: change them, same loss; padding gets no gradient
    def loss(latents):
        b = {"latents": latents, "is_image": batch["is_image"], "frame_is_image": keep & batch["is_image"][:, None],
             "label": batch["label"]}
        return m._loss(m.model, b, train=False, generator=torch.Generator().manual_seed(0))

    base = loss(z)
    z2 = z.clone()
    z2[1, :, 2] += 5.0
    z2[2, :, 1:] = torch.randn_like(z2[2, :, 1:])
    torch.testing.assert_close(loss(z2), base)
    z3 = z.clone()
    z3[1, :, 1] += 5.0  # a kept image latent: the loss changes
    assert not torch.allclose(loss(z3), base)


@pytest.mark.parametrize("mode", ["mix", "append"])
def test_tiny_joint_training_through_the_module(mode, synthetic_root, tmp_path, one_thread):
    import lightning as L

    from walt.data.datamodule import VideoDataModule

    seen = []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            x0 = pl_module.batch_latents(batch)
            seen.append((x0.shape, batch["is_image"].clone(), pl_module.latent_frame_flags(batch, x0)))

    L.seed_everything(0)
    joint = dict(image_ratio=0.5, images_per_sample=2) if mode == "mix" else dict(append_images=2)
    dm = VideoDataModule(dataset="ucf101", root=str(synthetic_root), num_classes=SMALL_SPEC.num_classes,
                         num_frames=9, resolution=16, batch_size=4, num_workers=0, pin_memory=False, **joint)
    layout = dict(layout="s_plus_t", temporal_pos="rope") if mode == "append" else {}
    m = module(_CausalPool(), **layout)
    before = [p.detach().clone() for p in m.model.parameters()]
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=tmp_path, callbacks=[Spy()])
    trainer.fit(m, datamodule=dm)
    assert trainer.global_step == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, m.model.parameters()))
    assert all(torch.isfinite(p).all() for p in m.model.parameters())
    if mode == "append":
        assert all(shape[2] == 3 + 2 and frames[0] is not None and frames[0][:, 3:].all() for shape, _, frames in seen)
    else:
        assert any(flags.any() for _, flags, _ in seen)
        assert any(frames[1] is not None for _, _, frames in seen)  # image samples' padding masked


def test_appended_frames_with_gradient_checkpointing_give_the_same_gradients(one_thread):
    torch.manual_seed(5)
    x, t, y = torch.randn(2, 3, 6, 4, 4), torch.tensor([3, 600]), torch.tensor([0, 2])
    flags = (torch.arange(6) >= 4)[None].expand(2, -1)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(6)
        model = randomize(WALT(tiny(layout="s_plus_t", temporal_pos="rope", grad_checkpointing=ckpt))).train()
        model(x, t, y, frame_is_image=flags).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[1], grads[0])
    assert grads[0].abs().sum() > 0
