"""Stage-2 transformer: paper parameter counts, window attention semantics, conditioning, layouts."""
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import randomize as shared_randomize

from walt.transformer import (
    WALT, ModelConfig, WindowAttention, build_model, count_params, preset_config, tokens_per_sample,
)

PAPER_L = {2: 313, 4: 314, 16: 316, 64: 324, 256: 357, 0: 458}  # Table 3d / Table 4 (r = 0: separate AdaLN)


def tiny(**overrides) -> ModelConfig:
    base = dict(in_channels=3, input_size=(5, 4, 4), st_window=(5, 2, 2), num_classes=4)
    return preset_config("walt_tiny", **{**base, **overrides})


randomize = functools.partial(shared_randomize, std=0.05)


# ----------------------------------------------------------------------------- parameter counts
@pytest.mark.parametrize("rank", sorted(PAPER_L))
def test_walt_l_params_match_paper(rank):
    n = count_params(preset_config("walt_l", adaln_lora_rank=rank, num_classes=101))
    assert abs(n / 1e6 - PAPER_L[rank]) / PAPER_L[rank] < 0.02, (rank, n)


def test_walt_xl_params_match_paper():
    n = count_params(preset_config("walt_xl", num_classes=101))
    assert abs(n / 1e6 - 460) / 460 < 0.02, n


def test_count_params_is_built_on_meta_and_tokens_per_sample():
    cfg = preset_config("walt_l")
    assert tokens_per_sample(cfg) == 5 * 16 * 16
    assert tokens_per_sample(preset_config("walt_l", patch_size=2)) == 5 * 8 * 8
    assert tokens_per_sample(cfg, (1, 32, 32)) == 1024


# ----------------------------------------------------------------------------- window attention
def reference_attention(attn: WindowAttention, x: torch.Tensor, window) -> torch.Tensor:
    """Full attention over all T*H*W tokens with an explicit same-window mask and (dt, dy, dx) bias."""
    B, T, H, W, d = x.shape
    heads = attn.num_heads
    coords = torch.stack(torch.meshgrid(torch.arange(T), torch.arange(H), torch.arange(W), indexing="ij"), -1).view(-1, 3)
    win = torch.tensor(window)
    same = ((coords[:, None] // win) == (coords[None] // win)).all(-1)  # (N, N)
    rel = coords[:, None] - coords[None] + (win - 1)  # offsets inside a window, shifted to >= 0
    sizes = 2 * win - 1
    index = (rel[..., 0] * sizes[1] + rel[..., 1]) * sizes[2] + rel[..., 2]
    table = attn.groups[0].rel_bias
    bias = table[index.clamp(0, table.shape[0] - 1)].permute(2, 0, 1)  # (heads, N, N)
    qkv = attn.qkv(x.view(B, -1, d)).view(B, -1, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    q, k, v = attn.q_norm(qkv[0]), attn.k_norm(qkv[1]), qkv[2]
    logits = q @ k.transpose(-1, -2) / math.sqrt(d // heads) + bias
    logits = logits.masked_fill(~same, float("-inf"))
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, -1, d)
    return attn.proj(out).view(B, T, H, W, d)


@pytest.mark.parametrize("window", [(1, 4, 4), (2, 2, 2), (4, 1, 1), (4, 4, 4), (2, 4, 2)], ids=["S", "ST", "T", "full", "ST2"])
def test_window_attention_equals_masked_full_attention(window):
    torch.manual_seed(0)
    attn = WindowAttention(16, 2, window, qk_norm=True, rel_pos_bias=True)
    x = torch.randn(2, 4, 4, 4, 16)
    torch.testing.assert_close(attn(x), reference_attention(attn, x, window), atol=1e-5, rtol=1e-4)


def test_window_does_not_mix_across_windows_but_does_within():
    torch.manual_seed(0)
    attn = WindowAttention(16, 2, (2, 2, 2))
    x = torch.randn(1, 4, 4, 4, 16)
    y = x.clone()
    y[:, 2:, 2:, 2:] += 1.0  # another window
    torch.testing.assert_close(attn(x)[:, :2, :2, :2], attn(y)[:, :2, :2, :2])
    y = x.clone()
    y[:, 1, 1, 1] += 1.0  # same window, another token
    assert not torch.allclose(attn(x)[:, 0, 0, 0], attn(y)[:, 0, 0, 0])


def test_identity_image_mask_passes_tokens_through_unmixed():
    torch.manual_seed(0)
    attn = WindowAttention(16, 2, (2, 2, 2), image_mask="identity")
    x = torch.randn(2, 2, 2, 2, 16)
    out = attn(x, is_image=torch.tensor([True, False]))
    v = attn.qkv(x)[..., 32:]
    torch.testing.assert_close(out[0], attn.proj(v[0]))
    assert not torch.allclose(out[1], attn.proj(v[1]))


def test_image_in_video_batch_is_unaffected_by_other_frames_and_samples():
    model = randomize(WALT(tiny())).eval()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 5, 4, 4)
    t, y = torch.tensor([10, 700]), torch.tensor([1, 2])
    is_image = torch.tensor([True, False])
    out = model(x, t, y, is_image=is_image)
    x2 = x.clone()
    x2[0, :, 1:] = torch.randn_like(x2[0, :, 1:])  # the image sample's other frames (packed images)
    x2[1] = torch.randn_like(x2[1])  # the other sample
    out2 = model(x2, t, y, is_image=is_image)
    torch.testing.assert_close(out[0, :, 0], out2[0, :, 0])
    # the same image alone, as a 1-frame input, gives the same result
    alone = model(x[:1, :, :1], t[:1], y[:1])
    torch.testing.assert_close(out[0, :, :1], alone[0], atol=1e-5, rtol=1e-4)
    # control: without the flag the ST blocks do mix frames
    assert not torch.allclose(model(x, t, y)[0, :, 0], model(x2, t, y)[0, :, 0], atol=1e-4)


# ----------------------------------------------------------------------------- config errors
def test_non_tiling_window_names_valid_sizes():
    with pytest.raises(ValueError, match=r"valid h sizes: \[1, 2, 4, 8, 16\]"):
        preset_config("walt_l", st_window=[5, 6, 8])
    with pytest.raises(ValueError, match=r"valid t sizes: \[1, 5\]"):
        preset_config("walt_l", st_window=[2, 8, 8])
    with pytest.raises(ValueError, match="valid sizes"):
        preset_config("walt_l", patch_size=3)
    with pytest.raises(ValueError, match="valid keys"):
        preset_config("walt_l", st_windw=[5, 8, 8])
    with pytest.raises(ValueError, match="ST"):
        preset_config("walt_l", layout=["S", "X"])


@pytest.mark.parametrize("p, st, s", [(1, (5, 8, 8), (1, 16, 16)), (2, (5, 4, 4), (1, 8, 8)), (4, (5, 2, 2), (1, 4, 4))])
def test_windows_are_latent_units_divided_by_the_patch_size(p, st, s):
    """Table 3a: W.A.L.T-L at latent 5x16x16 keeps the paper's latent windows, so only p changes."""
    cfg = preset_config("walt_l", patch_size=p)
    assert cfg.window("ST") == st and cfg.window("S") == s and cfg.window("T") == (5, 1, 1)
    assert preset_config("walt_l", patch_size=p, st_window=[5, 16, 16]).window("ST") == (5, 16 // p, 16 // p)


def test_token_windows_are_explicit_and_exclusive():
    cfg = preset_config("walt_l", patch_size=2, st_window=None, st_window_tokens=[5, 8, 8])
    assert cfg.window("ST") == (5, 8, 8)
    assert preset_config("walt_l", patch_size=2, s_window=None, s_window_tokens=[4, 4]).window("S") == (1, 4, 4)
    with pytest.raises(ValueError, match="mutually exclusive"):
        preset_config("walt_l", st_window_tokens=[5, 4, 4])
    with pytest.raises(ValueError, match="mutually exclusive"):
        preset_config("walt_l", s_window=None)
    with pytest.raises(ValueError, match=r"valid h sizes: \[1, 2, 4, 8\]"):
        preset_config("walt_l", patch_size=2, st_window=None, st_window_tokens=[5, 3, 4])
    # latent windows must be whole tokens: at p = 4 an h of 2 latent pixels is half a token
    with pytest.raises(ValueError, match=r"valid h sizes: \[4, 8, 16\]"):
        preset_config("walt_l", patch_size=4, st_window=[5, 2, 2])
    # larger than the grid covers the axis
    assert preset_config("walt_l", st_window=[8, 32, 32]).window("ST") == (5, 16, 16)


def test_window_config_values():
    cfg = preset_config("walt_l", patch_size=2, st_window="full")
    assert cfg.grid == (5, 8, 8)
    assert cfg.window("S") == (1, 8, 8) and cfg.window("ST") == (5, 8, 8) and cfg.window("T") == (5, 1, 1)
    assert preset_config("walt_l", s_window=[8, 8]).window("S") == (1, 8, 8)
    assert preset_config("walt_l").blocks[:4] == ("S", "ST", "S", "ST")
    assert preset_config("walt_l", layout="s_then_t").blocks == ("S",) * 12 + ("T",) * 12
    assert preset_config("walt_l", layout=["full"]).blocks == ("full",) * 24
    cfg = preset_config("walt_l", adaln_lora_rank=4)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


# ----------------------------------------------------------------------------- conditioning
def test_adaln_lora_and_separate_parameter_shapes():
    d, r = 64, 4
    lora = WALT(tiny(adaln_lora_rank=r))
    assert lora.shared_adaln.linear.weight.shape == (6 * d, d)
    for block in lora.blocks:
        assert block.adaln.down.weight.shape == (r, d) and block.adaln.up.weight.shape == (6 * d, r)
        assert block.adaln.down.bias is None and not hasattr(block.adaln, "linear")
    separate = WALT(tiny(adaln_lora_rank=0))
    assert separate.shared_adaln is None
    for block in separate.blocks:
        assert block.adaln.linear.weight.shape == (6 * d, d) and block.adaln.linear.bias.shape == (6 * d,)
    extra = sum(p.numel() for p in separate.parameters()) - sum(p.numel() for p in lora.parameters())
    depth = len(lora.blocks)
    assert extra == depth * (6 * d * d + 6 * d) - (6 * d * d + 6 * d) - depth * 7 * d * r


def test_adaln_lora_is_shared_plus_low_rank_update():
    model = randomize(WALT(tiny(adaln_lora_rank=4)))
    cond = torch.randn(3, 64)
    shared = model.shared_adaln(cond)
    block = model.blocks[1].adaln
    expected = shared + cond @ block.down.weight.T @ block.up.weight.T
    torch.testing.assert_close(block(cond, shared).flatten(1), expected)


def test_conditioning_inputs_change_the_output_and_have_the_right_channels():
    cfg = tiny(context_frames=2, cross_attention_dim=12, self_cond_prob=0.5)
    assert cfg.model_in_channels == 3 + 3 + 3 + 1
    model = randomize(WALT(cfg)).eval()
    assert model.patch_embed.proj.in_features == cfg.model_in_channels
    x, t, y = torch.randn(2, 3, 5, 4, 4), torch.tensor([5, 900]), torch.tensor([0, 3])
    base = model(x, t, y)
    text = torch.randn(2, 7, 12)
    with_text = model(x, t, y, text=text, text_mask=torch.ones(2, 7, dtype=torch.bool))
    assert with_text.shape == x.shape and not torch.allclose(base, with_text)
    mask = torch.tensor([[True, True, False, False, False]] * 2)
    assert not torch.allclose(base, model(x, t, y, context=torch.randn_like(x), context_mask=mask))
    assert not torch.allclose(base, model(x, t, y, self_cond=torch.randn_like(x)))
    assert not torch.allclose(base, model(x, t, torch.full_like(y, model.null_class)))
    assert not torch.allclose(base, model(x, t + 1, y))


def test_label_dropout_uses_the_null_class():
    model = WALT(tiny(class_dropout_prob=1.0))
    assert (model.drop_labels(torch.tensor([0, 1, 2])) == model.null_class).all()
    model = WALT(tiny(class_dropout_prob=0.0))
    assert model.drop_labels(torch.tensor([0, 1, 2])).tolist() == [0, 1, 2]


@pytest.mark.parametrize("overrides", [dict(patch_size=2, st_window=(5, 2, 2)), dict(layout="s_t"), dict(layout=["full"]),
                                        dict(qk_norm=False, rel_pos_bias=False, adaln_lora_rank=0)])
def test_layouts_and_variants_run(overrides):
    model = WALT(tiny(**overrides))
    x = torch.randn(2, 3, 5, 4, 4)
    assert model(x, torch.tensor([1, 2]), torch.tensor([0, 1])).shape == x.shape
    assert model(x[:, :, :1], torch.tensor([1, 2])).shape == (2, 3, 1, 4, 4)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    x, t, y = torch.randn(2, 3, 5, 4, 4), torch.tensor([3, 300]), torch.tensor([0, 1])
    grads = []
    for flag in (False, True):
        torch.manual_seed(0)
        model = randomize(WALT(tiny(grad_checkpointing=flag))).train()
        model(x, t, y).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1])


def test_block_has_no_graph_breaks():
    model = randomize(WALT(tiny()))
    block = model.blocks[1]  # an ST block, with the image mask
    h, cond = torch.randn(2, 5, 4, 4, 64), torch.randn(2, 64)
    explain = torch._dynamo.explain(block)(h, cond, torch.randn(2, 384), torch.tensor([True, False]))
    assert explain.graph_break_count == 0, explain.break_reasons


def test_bf16_autocast_forward():
    model = WALT(tiny())
    x = torch.randn(2, 3, 5, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, torch.tensor([1, 2]), torch.tensor([0, 1]), is_image=torch.tensor([True, False]))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_presets_build():
    assert isinstance(build_model("walt_tiny_video"), WALT)
    with pytest.raises(ValueError, match="walt_l"):
        preset_config("walt_m")


def test_sdpa_reference_helper_is_consistent():
    """Guard the reference: with a window covering everything and no bias it is plain attention."""
    torch.manual_seed(0)
    attn = WindowAttention(8, 2, (2, 2, 2), qk_norm=False, rel_pos_bias=True)
    torch.nn.init.zeros_(attn.groups[0].rel_bias)
    x = torch.randn(1, 2, 2, 2, 8)
    q, k, v = attn.qkv(x.view(1, 8, 8)).view(1, 8, 3, 2, 4).permute(2, 0, 3, 1, 4)
    plain = attn.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(1, 8, 8)).view(x.shape)
    torch.testing.assert_close(reference_attention(attn, x, (2, 2, 2)), plain)
