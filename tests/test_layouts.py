"""Layouts of the one backbone: images through every block kind, Latte V1-V4 attention patterns,
RoPE temporal attention, tubelets, condition tokens, learned sigma, Latte / LaVie presets."""
import functools

import pytest
import torch
from conftest import randomize as shared_randomize

from walt.transformer import BLOCK_KINDS, WALT, WindowAttention, count_params, preset_config

KINDS = list(BLOCK_KINDS)


def tiny(**overrides):
    base = dict(in_channels=3, input_size=(4, 4, 4), st_window=(2, 2, 2), depth=2, hidden_size=32, num_heads=4,
                num_classes=4, self_cond_prob=0.0)
    return preset_config("walt_tiny", **{**base, **overrides})


randomize = functools.partial(shared_randomize, std=0.1)


# ----------------------------------------------------------------------------- images
@pytest.mark.parametrize("options", [{}, dict(image_st_mask="frame"),
                                     dict(conditioning="tokens", temporal_pos="rope", pos_embed="sincos")],
                         ids=["identity", "frame", "tokens-rope"])
@pytest.mark.parametrize("kind", KINDS)
def test_image_alone_equals_image_in_any_mixed_batch(kind, options, one_thread):
    """An image (1-frame input, or a frame of an is_image sample) gives the same output alone and in
    any batch mixing images and videos, through every block kind."""
    model = randomize(WALT(tiny(layout=[kind], **options))).eval()
    torch.manual_seed(1)
    images = torch.randn(3, 3, 1, 4, 4)
    t, y = torch.tensor([10, 500, 990]), torch.tensor([0, 1, 2])
    alone = model(images, t, y)
    # the 3 images (and one more) as the frames of one is_image sample, mixed with two videos
    packed = torch.cat([images.transpose(0, 2), torch.randn(1, 3, 1, 4, 4)], dim=2)  # (1, 3, 4, 4, 4)
    batch = torch.cat([packed, torch.randn(2, 3, 4, 4, 4)])
    for order in ([0, 1, 2], [1, 0, 2], [2, 1, 0]):  # the image sample first, between or after the videos
        is_image = torch.tensor([True, False, False])[order]
        for f in range(3):
            out = model(batch[order], t[f].repeat(3), y[f].repeat(3), is_image=is_image)
            torch.testing.assert_close(out[order.index(0), :, f], alone[f, :, 0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model(images[1:2], t[1:2], y[1:2]), alone[1:2], atol=1e-5, rtol=1e-4)


def test_identity_mask_is_the_default_also_for_a_1_frame_batch():
    """Before, an image batch (T = 1) got 1 x h x w spatial attention in ST blocks; now its tokens pass unmixed."""
    assert preset_config("walt_l").image_st_mask == "identity"
    attn = WindowAttention(16, 2, (2, 2, 2), temporal=(True,))
    x = torch.randn(2, 1, 2, 2, 16)
    torch.testing.assert_close(attn(x), attn.proj(attn.qkv(x)[..., 32:]))
    spatial = WindowAttention(16, 2, (1, 2, 2), temporal=(False,))  # S blocks: ordinary spatial attention
    assert not torch.allclose(spatial(x), spatial.proj(spatial.qkv(x)[..., 32:]))


# ----------------------------------------------------------------------------- Latte V1-V4 patterns
def reach(block, h: torch.Tensor, cond: torch.Tensor, at=(1, 2, 3)) -> torch.Tensor:
    """(T, H, W) bool: the tokens one block's output changes when the input token `at` is perturbed."""
    h2 = h.clone()
    h2[0, at[0], at[1], at[2]] += torch.linspace(-1, 1, h.shape[-1])  # not a constant: LayerNorm would remove it
    with torch.no_grad():
        diff = (block(h2, cond) - block(h, cond)).abs().amax(-1)[0]
    return diff > 1e-5  # tokens outside the pattern differ by rounding (~1e-6) at most


def pattern(kind: str, T=4, H=4, W=4, at=(1, 2, 3)) -> torch.Tensor:
    t, y, x = torch.meshgrid(torch.arange(T), torch.arange(H), torch.arange(W), indexing="ij")
    frame, column = t == at[0], (y == at[1]) & (x == at[2])
    return {"S": frame, "T": column, "split": frame | column, "all": torch.ones_like(frame)}[kind]


LATTE = dict(adaln_lora_rank=0, qk_norm=False, rel_pos_bias=False, pos_embed="sincos", depth=4)


@pytest.mark.parametrize("layout, kinds", [("s_t", ["S", "T", "S", "T"]), ("s_then_t", ["S", "S", "T", "T"]),
                                           ("s_plus_t", ["S+T"] * 4), ("split", ["split"] * 4)],
                         ids=["V1", "V2", "V3", "V4"])
def test_latte_variants_attention_pattern(layout, kinds, one_thread):
    """A perturbed token reaches, after one block: its frame (S), its spatial position in every frame
    (T), everything (S+T: spatial then temporal attention), its frame and its column (split heads)."""
    model = randomize(WALT(tiny(layout=layout, **LATTE))).eval()
    assert list(model.cfg.blocks) == kinds
    torch.manual_seed(2)
    h, cond = torch.randn(1, 4, 4, 4, 32), torch.randn(1, 32)
    for block, kind in zip(model.blocks, kinds):
        expected = pattern("all" if kind == "S+T" else kind)
        assert torch.equal(reach(block, h, cond), expected), kind
    if layout == "s_plus_t":  # gate one of the two attentions of the block off: the other's pattern remains
        block, d = model.blocks[0], 32
        for gate, kind in ((8, "S"), (4, "T")):  # alpha3 (temporal attention), alpha1 (spatial attention)
            ablated = randomize(WALT(tiny(layout=layout, **LATTE))).eval().blocks[0]
            with torch.no_grad():
                ablated.adaln.linear.weight[gate * d:(gate + 1) * d] = 0
                ablated.adaln.linear.bias[gate * d:(gate + 1) * d] = 0
            assert torch.equal(reach(ablated, h, cond), pattern(kind)), kind


def test_split_heads_is_one_attention_with_half_the_heads_per_window():
    model = WALT(tiny(layout="split", **LATTE))
    attn = model.blocks[0].attn
    assert [g.heads for g in attn.groups] == [2, 2]
    assert [g.window for g in attn.groups] == [(1, 4, 4), (4, 1, 1)]
    assert model.cfg.window("split") == ((1, 4, 4), (4, 1, 1))  # walt-info shows both windows
    with pytest.raises(ValueError, match="must be even"):
        tiny(layout="split", num_heads=1, hidden_size=32)


# ----------------------------------------------------------------------------- RoPE, LaVie
def test_rope_temporal_attention_is_invariant_to_a_frame_shift_but_not_to_order():
    torch.manual_seed(0)
    attn = WindowAttention(16, 2, (6, 1, 1), temporal=(True,), qk_norm=True, rel_pos_bias=False, rope=True)
    x = torch.randn(2, 6, 2, 2, 16)
    base = attn(x)
    for offset in (1, 7, 100):
        torch.testing.assert_close(attn(x, frame_offset=offset), base, atol=1e-5, rtol=1e-4)
    # without RoPE (and no bias) temporal attention is blind to frame order; with it, it is not
    flip = lambda z: z.flip(1)  # noqa: E731
    plain = WindowAttention(16, 2, (6, 1, 1), temporal=(True,), rel_pos_bias=False)
    torch.testing.assert_close(plain(flip(x)), flip(plain(x)), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(attn(flip(x)), flip(base), atol=1e-4)


def test_lavie_preset_rope_zero_init_temporal_and_images_skip_temporal_mixing(one_thread):
    cfg = preset_config("lavie")
    assert cfg.blocks[0] == "S+T" and cfg.temporal_pos == "rope" and cfg.zero_init_temporal
    small = tiny(layout="s_plus_t", temporal_pos="rope", zero_init_temporal=True, **LATTE)
    model = WALT(small)
    assert model.pos_embed.temporal is None  # the frame index enters through RoPE only
    for block in model.blocks:
        assert block.attn_t.rope is not None and block.attn.rope is None
        assert (block.attn_t.proj.weight == 0).all() and (block.attn.proj.weight != 0).any()
    model = randomize(model).eval()
    torch.manual_seed(3)
    x, t = torch.randn(2, 3, 4, 4, 4), torch.tensor([5, 600])
    is_image = torch.tensor([True, False])
    x2 = x.clone()
    x2[0, :, 1:] = torch.randn_like(x2[0, :, 1:])  # the image sample's other frames
    x2[1] = torch.randn_like(x2[1])
    out, out2 = model(x, t, is_image=is_image), model(x2, t, is_image=is_image)
    torch.testing.assert_close(out[0, :, 0], out2[0, :, 0])
    assert not torch.allclose(model(x, t)[0, :, 0], model(x2, t)[0, :, 0], atol=1e-4)  # videos do mix


# ----------------------------------------------------------------------------- embeddings, conditioning
def test_tubelet_embedding_merges_frames_and_upsamples_time_at_the_output():
    cfg = tiny(temporal_patch_size=2, st_window=(4, 2, 2), **LATTE)
    assert cfg.grid == (2, 4, 4) and cfg.window("ST") == (2, 2, 2) and cfg.window("T") == (2, 1, 1)
    model = WALT(cfg)
    assert model.patch_embed.proj.in_features == 2 * 3 and model.final.linear.out_features == 2 * 3
    x = torch.randn(2, 3, 4, 4, 4)
    assert model(x, torch.tensor([1, 2]), torch.tensor([0, 1])).shape == x.shape
    from walt.transformer.embeddings import unpatchify
    tokens = torch.einsum("bcthw->bthwc", x).unflatten(1, (2, 2))  # (B, T/2, 2, H, W, c)
    tokens = tokens.permute(0, 1, 3, 4, 2, 5).flatten(-2)  # (B, T/2, H, W, 2c): (s c) per token
    torch.testing.assert_close(unpatchify(tokens, 1, 3, 2), x)
    with pytest.raises(ValueError, match="temporal_patch_size"):
        model(x[:, :, :1], torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="temporal_patch_size=3"):
        tiny(temporal_patch_size=3)


def test_sincos_positions_are_fixed_buffers():
    model = WALT(tiny(pos_embed="sincos"))
    names = {n for n, _ in model.named_parameters()}
    assert not any(n.startswith("pos_embed") for n in names)
    assert model.pos_embed.spatial.shape == (1, 1, 4, 4, 32) and model.pos_embed.temporal.shape == (1, 4, 1, 1, 32)
    assert "pos_embed.spatial" not in model.state_dict()  # recomputed, not stored


def test_condition_tokens_replace_adaln(one_thread):
    model = randomize(WALT(tiny(conditioning="tokens"))).eval()
    assert model.shared_adaln is None and all(b.adaln is None for b in model.blocks) and model.final.adaln is None
    assert model.token_type.shape == (1, 2, 32)
    x, t, y = torch.randn(2, 3, 4, 4, 4), torch.tensor([5, 900]), torch.tensor([0, 3])
    base = model(x, t, y)
    assert not torch.allclose(base, model(x, t + 100, y)) and not torch.allclose(base, model(x, t, 3 - y))


# ----------------------------------------------------------------------------- learned sigma
def test_learned_sigma_doubles_the_output_and_trains_the_variance_by_the_vlb(one_thread):
    from walt.diffusion import ClassifierFreeGuidance, NoiseSchedule, ddpm_sample, diffusion_loss
    from walt.diffusion.objectives import vlb_term

    model = randomize(WALT(tiny(learn_sigma=True, **LATTE)))
    assert model.final.linear.out_features == 2 * 3
    schedule = NoiseSchedule()
    x0, t = torch.randn(4, 3, 4, 4, 4), torch.tensor([0, 1, 500, 999])
    fn = lambda x, t, sc: model(x, t, self_cond=sc)  # noqa: E731
    assert fn(x0, t, None).shape == (4, 6, 4, 4, 4)
    loss = diffusion_loss(fn, schedule, x0, "v", t=t)
    loss.backward()
    grad = model.final.linear.bias.grad.view(2, 3)  # (prediction, variance) values per token
    assert torch.isfinite(loss) and (grad[1].abs() > 0).all()
    # the VLB is zero for the true posterior (v = -1: beta~) with a perfect mean, positive otherwise
    x_t = schedule.add_noise(x0, torch.randn_like(x0), t)
    exact = vlb_term(schedule, x0, x_t, t, x0, -torch.ones_like(x0))
    assert (exact[1:].abs() < 1e-5).all() and (vlb_term(schedule, x0, x_t, t, x0 + 0.1, torch.zeros_like(x0)) > 0).all()
    with torch.no_grad():
        assert ddpm_sample(fn, schedule, torch.randn(1, 3, 4, 4, 4), steps=3).shape == (1, 3, 4, 4, 4)
        guided = ClassifierFreeGuidance(model, {"y": torch.tensor([1])}, {"y": torch.tensor([4])}, 3.0)
        out = guided(x0[:1], t[2:3], None)
        torch.testing.assert_close(out[:, 3:], model(x0[:1], t[2:3], torch.tensor([1]))[:, 3:])  # conditional variance


# ----------------------------------------------------------------------------- presets
LATTE_PAPER = {"latte_s": 32.48, "latte_b": 129.55, "latte_l": 456.82, "latte_xl": 673.68}


@pytest.mark.parametrize("name", sorted(LATTE_PAPER))
def test_latte_presets_match_paper_sizes(name):
    """4 latent channels, 16 x 32 x 32 latents (256 px / 8), patch 2, learned sigma: within 1% (built on meta)."""
    cfg = preset_config(name)
    assert (cfg.in_channels, cfg.input_size, cfg.patch_size, cfg.learn_sigma) == (4, (16, 32, 32), 2, True)
    n = count_params(cfg) / 1e6
    assert abs(n - LATTE_PAPER[name]) / LATTE_PAPER[name] < 0.01, n
    assert cfg.window("S") == (1, 16, 16) and cfg.window("T") == (16, 1, 1)


@pytest.mark.parametrize("kind", ["S+T", "split"])
def test_new_kinds_have_no_graph_breaks(kind):
    model = randomize(WALT(tiny(layout=[kind], temporal_pos="rope")))
    block = model.blocks[0]
    h, cond = torch.randn(2, 4, 4, 4, 32), torch.randn(2, 32)
    shared = model.shared_adaln(cond)
    explain = torch._dynamo.explain(block)(h, cond, shared, torch.tensor([True, False]))
    assert explain.graph_break_count == 0, explain.break_reasons
