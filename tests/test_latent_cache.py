"""Latent cache: keyed directory, atomic writes, round trip through LatentDataset."""
from __future__ import annotations

import pytest
import torch

from walt.autoencoder.config import preset
from walt.data.latents import LatentDataset, cache_dir_for, encode_dataset, is_complete
from walt.modules.autoencoder import AutoencoderModule


def batches(n_batches=3, batch_size=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in range(n_batches):
        idx = list(range(b * batch_size, (b + 1) * batch_size))
        out.append({
            "video": torch.rand(batch_size, 3, 5, 16, 16, generator=g) * 2 - 1,
            "label": torch.tensor([i % 3 for i in idx]),
            "caption": [f"clip {i}" for i in idx],
            "index": torch.tensor([100 + i for i in idx]),
        })
    return out


class Exploding:
    """A loader that fails after `ok` batches, like an interrupted encode."""

    def __init__(self, data, ok):
        self.data, self.ok = data, ok

    def __iter__(self):
        for i, b in enumerate(self.data):
            if i == self.ok:
                raise KeyboardInterrupt("interrupted")
            yield b


@pytest.fixture
def module():
    torch.manual_seed(0)
    return AutoencoderModule(preset("tiny")).eval()


def test_cache_dir_is_keyed_by_checkpoint_content(tmp_path):
    a, b = tmp_path / "a.ckpt", tmp_path / "b.ckpt"
    torch.save({"w": torch.zeros(3)}, a)
    torch.save({"w": torch.ones(3)}, b)
    root = tmp_path / "latents"
    da = cache_dir_for(a, "ucf101 split1/train 17x128", root)
    assert da.parent == root and da.name.startswith("ucf101-split1-train-17x128__ae-")
    assert da == cache_dir_for(a, "ucf101 split1/train 17x128", root)
    assert da != cache_dir_for(b, "ucf101 split1/train 17x128", root)
    assert da != cache_dir_for(a, "ucf101 split1/test 17x128", root)


def test_encode_round_trip(module, tmp_path):
    data = batches()
    out = tmp_path / "cache"
    assert not bool(module.latent_stats_ready)
    encode_dataset(module, data, out, shard_size=3)
    assert bool(module.latent_stats_ready)  # stats computed on the fly when missing
    assert is_complete(out) and len(list(out.glob("shard_*.pt"))) == 2
    ds = LatentDataset(out)
    assert len(ds) == 6 and ds.normalized
    assert torch.equal(ds.latent_mean, module.latent_mean) and torch.equal(ds.latent_std, module.latent_std)
    expected = torch.cat([module.normalize(module.encode(b["video"])) for b in data])
    for i in range(6):
        item = ds[i]
        assert set(item) == {"latents", "label", "caption", "index"}
        assert item["latents"].shape == (8, 2, 2, 2)
        assert torch.equal(item["latents"], expected[i])
        assert (item["label"], item["caption"], item["index"]) == (i % 3, f"clip {i}", 100 + i)
    assert torch.allclose(module.decode(ds[0]["latents"][None], denormalize=True),
                          module.reconstruct(data[0]["video"][:1]), atol=1e-5)
    # a complete cache is reused without touching the loader
    assert encode_dataset(module, Exploding(data, ok=0), out) == out


def test_interrupted_encode_leaves_no_cache(module, tmp_path):
    module.compute_latent_stats(batches(), max_batches=1)
    out = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        encode_dataset(module, Exploding(batches(), ok=2), out, shard_size=2)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="not a complete latent cache"):
        LatentDataset(out)
    # overwriting a complete cache swaps it in whole
    encode_dataset(module, batches(n_batches=1), out)
    encode_dataset(module, batches(n_batches=2), out, overwrite=True)
    assert len(LatentDataset(out)) == 4 and [p.name for p in tmp_path.iterdir()] == ["cache"]
