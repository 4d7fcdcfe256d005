"""Layouts of the one backbone: images through every block kind, Latte V1-V4 attention patterns,
RoPE temporal attention, tubelets, condition tokens, learned sigma, Latte / LaVie presets."""
import pytest
import torch

from walt.transformer import BLOCK_KINDS, WALT, WindowAttention, count_params, preset_config

KINDS = [k for k in BLOCK_KINDS]


def tiny(**overrides):
    base = dict(in_channels=3, input_size=(4, 4, 4), st_window=(2, 2, 2), depth=2, hidden_size=32, num_heads=4,
                num_classes=4, self_cond_prob=0.0)
    return preset_config("walt_tiny", **{**base, **overrides})


def randomize(model: torch.nn.Module, std: float = 0.1) -> torch.nn.Module:
    """Perturb every weight so zero-initialised gates / output layers do not hide the computation."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model


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


def test_identity_mask_is_the_default_and_passes_images_through_temporal_attention():
    assert preset_config("walt_l").image_st_mask == "identity"
    attn = WindowAttention(16, 2, (2, 2, 2), temporal=(True,))
    x = torch.randn(2, 2, 2, 2, 16)
    v = attn.qkv(x)[..., 32:]
    torch.testing.assert_close(attn(x[:, :1]), attn.proj(v[:, :1]))  # an image batch (T = 1)
    out = attn(x, is_image=torch.tensor([True, False]))
    torch.testing.assert_close(out[0], attn.proj(v[0]))
    assert not torch.allclose(out[1], attn.proj(v[1]))
