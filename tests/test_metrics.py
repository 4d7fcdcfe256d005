"""Metrics package: Frechet math against a scipy reference, streaming statistics, the I3D layout of the
public `i3d_pretrained_400.pt` conversion, weights errors and no-download guarantees, torch-fidelity
wiring, the embedded synthetic-set metrics, reconstruction metrics and the protocol record."""
from __future__ import annotations

import json
import logging
import socket
import urllib.request

import numpy as np
import pytest
import scipy.linalg
import torch

import walt.metrics as M
from walt.data.datasets import UCF101
from walt.data.synthetic import SyntheticSpec, generate
from walt.data.video import ClipSpec, Sampling, to_model_range
from walt.metrics import synthetic as S
from walt.metrics.frechet import FeatureStats, frechet_distance, inception_score
from walt.metrics.i3d import InceptionI3d, preprocess_i3d, same_pad
from walt.weights import WeightsError

ENV_VARS = ("WALT_I3D_WEIGHTS", "WALT_I3D_TORCHSCRIPT", "WALT_INCEPTION_WEIGHTS", "WALT_C3D_WEIGHTS")


@pytest.fixture(autouse=True)
def hermetic(monkeypatch):
    """No weights from the environment, and any attempt to reach the network fails the test."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    import torch_fidelity.feature_extractor_inceptionv3 as fe

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(fe, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    real_connect = socket.socket.connect

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            refuse(address)
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


# ---------------------------------------------------------------- Frechet distance and statistics

def reference_fd(mu1, s1, mu2, s2):
    """The classic formulation, written independently: scipy sqrtm of the product, real part."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


@pytest.mark.parametrize("n, d", [(400, 16), (20, 64)], ids=["full-rank", "rank-deficient"])
@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_matches_scipy_reference(n, d, method):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    b = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.7 + 0.3
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    assert np.linalg.matrix_rank(s1) == min(n - 1, d)
    ref = reference_fd(mu1, s1, mu2, s2)
    got = frechet_distance(mu1, s1, mu2, s2, method=method)
    assert got == pytest.approx(ref, rel=1e-6)


def test_frechet_closed_form_for_diagonal_gaussians():
    # commuting covariances: d^2 = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = np.array([1.0, 4.0, 9.0, 0.0]), np.array([4.0, 1.0, 9.0, 2.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    want = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-12)
    assert frechet_distance(mu1, np.diag(a), mu1, np.diag(a)) == pytest.approx(0.0, abs=1e-12)


def test_feature_stats_streaming_and_merge_equal_batch_statistics(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(257, 12)) * rng.uniform(0.1, 3, size=12) + 1e3  # large mean: cancellation-prone
    one, two = FeatureStats(), FeatureStats()
    for chunk in np.split(x[:150], [1, 2, 40, 40, 97]):  # sizes 1, 1, 38, 0, 57, 53
        one.update(torch.from_numpy(chunk))  # tensors and arrays both accepted
    for chunk in np.array_split(x[150:], 4):
        two.update(chunk)
    merged = FeatureStats().merge(one).merge(two)
    assert merged.n == 257
    np.testing.assert_allclose(merged.mean, x.mean(0), rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(merged.cov, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-10)
    merged.save(tmp_path / "stats.npz")
    loaded = FeatureStats.load(tmp_path / "stats.npz")
    assert loaded.n == merged.n and np.array_equal(loaded.cov, merged.cov) and np.array_equal(loaded.mean, merged.mean)
    assert loaded.update(x[:3]).n == 260  # resumable
    with pytest.raises(ValueError, match="dim"):
        loaded.update(np.zeros((2, 5)))


def test_inception_score_formula():
    k = 5
    assert inception_score(np.full((40, k), 1 / k))[0] == pytest.approx(1.0)
    one_hot = np.eye(k)[np.arange(40) % k]
    mean, std = inception_score(one_hot, splits=4)
    assert mean == pytest.approx(k) and std == pytest.approx(0.0, abs=1e-12)
    # all samples confidently the same class: no diversity -> 1
    assert inception_score(np.eye(k)[np.zeros(10, dtype=int)])[0] == pytest.approx(1.0)
    # half confident on class 0, half uniform over 2 classes: exp(0.5 * KL terms), by hand
    p = np.array([[1.0, 0.0]] * 2 + [[0.5, 0.5]] * 2)
    py = p.mean(0)
    kl = [(row[row > 0] * np.log(row[row > 0] / py[row > 0])).sum() for row in p]
    assert inception_score(p)[0] == pytest.approx(np.exp(np.mean(kl)))


# ---------------------------------------------------------------- I3D layout and weights


def expected_i3d_layout() -> dict[str, tuple[int, ...]]:
    """Keys / shapes of the piergiaj-layout `i3d_pretrained_400.pt`, from the I3D paper (Inception-v1
    inflated): stem 7x7x7/2 -> 64, 1x1 64, 3x3 192; mixed blocks as (in, b0, b1a, b1b, b2a, b2b, b3b)."""
    units = {"Conv3d_1a_7x7": (64, 3, 7, 7, 7), "Conv3d_2b_1x1": (64, 64, 1, 1, 1), "Conv3d_2c_3x3": (192, 64, 3, 3, 3)}
    mixed = {
        "Mixed_3b": (192, 64, 96, 128, 16, 32, 32),
        "Mixed_3c": (256, 128, 128, 192, 32, 96, 64),
        "Mixed_4b": (480, 192, 96, 208, 16, 48, 64),
        "Mixed_4c": (512, 160, 112, 224, 24, 64, 64),
        "Mixed_4d": (512, 128, 128, 256, 24, 64, 64),
        "Mixed_4e": (512, 112, 144, 288, 32, 64, 64),
        "Mixed_4f": (528, 256, 160, 320, 32, 128, 128),
        "Mixed_5b": (832, 256, 160, 320, 32, 128, 128),
        "Mixed_5c": (832, 384, 192, 384, 48, 128, 128),
    }
    for name, (c, b0, b1a, b1b, b2a, b2b, b3b) in mixed.items():
        units[f"{name}.b0"] = (b0, c, 1, 1, 1)
        units[f"{name}.b1a"] = (b1a, c, 1, 1, 1)
        units[f"{name}.b1b"] = (b1b, b1a, 3, 3, 3)
        units[f"{name}.b2a"] = (b2a, c, 1, 1, 1)
        units[f"{name}.b2b"] = (b2b, b2a, 3, 3, 3)
        units[f"{name}.b3b"] = (b3b, c, 1, 1, 1)
    layout = {}
    for unit, shape in units.items():
        layout[f"{unit}.conv3d.weight"] = shape
        for buf in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{unit}.bn.{buf}"] = (shape[0],)
        layout[f"{unit}.bn.num_batches_tracked"] = ()
    layout["logits.conv3d.weight"] = (400, 1024, 1, 1, 1)
    layout["logits.conv3d.bias"] = (400,)
    return layout


@pytest.fixture(scope="module")
def i3d():
    torch.manual_seed(0)
    return InceptionI3d().eval()


def test_i3d_state_dict_matches_conversion_layout(i3d):
    state = i3d.state_dict()
    want = expected_i3d_layout()
    assert set(state) == set(want)
    assert {k: tuple(v.shape) for k, v in state.items()} == want
    assert len(want) == 57 * 6 + 2  # 57 conv+bn units, plus the logits conv weight and bias
    assert tuple(state["Mixed_5c.b3b.bn.running_mean"].shape) == (128,)
    assert i3d.Conv3d_1a_7x7.bn.eps == pytest.approx(1e-3) and i3d.Mixed_5c.b2b.bn.eps == pytest.approx(1e-3)


def test_tf_same_padding_and_small_forward(i3d):
    for size, k, s in [(32, 7, 2), (31, 7, 2), (8, 3, 1), (5, 2, 2), (1, 3, 2)]:
        x = torch.zeros(1, 1, size, size, size)
        padded = same_pad(x, (k,) * 3, (s,) * 3)
        out = (padded.shape[-1] - k) // s + 1
        assert out == -(-size // s)  # TF SAME: ceil(size / stride)
    with torch.no_grad():
        y = i3d(torch.rand(2, 3, 8, 32, 32) * 2 - 1)
    assert y.shape == (2, 400) and torch.isfinite(y).all()


def test_preprocess_resizes_frames_and_keeps_range():
    v = torch.rand(2, 3, 4, 20, 30) * 3 - 1.5  # out of range on purpose
    x = preprocess_i3d(v)
    assert x.shape == (2, 3, 4, 224, 224) and x.min() >= -1 and x.max() <= 1
    # frame t of video n is resized independently of the other frames
    ref = torch.nn.functional.interpolate(v[1, :, 2][None].clamp(-1, 1), size=(224, 224), mode="bilinear",
                                          align_corners=False)[0]
    torch.testing.assert_close(x[1, :, 2], ref)


def test_load_i3d_from_file_and_extractor(i3d, tmp_path):
    state = {k: v for k, v in i3d.state_dict().items() if not k.endswith("num_batches_tracked")}  # old export
    path = tmp_path / "i3d_random.pt"
    torch.save(state, path)
    ext = M.build_extractor("i3d", weights=str(path), verify=False, resolution=32, batch_size=2)
    assert ext.model is not i3d and not ext.model.training
    videos = torch.rand(3, 3, 8, 32, 32) * 2 - 1
    with torch.no_grad():
        direct = i3d(videos)
    torch.testing.assert_close(ext.features(videos), direct, rtol=1e-4, atol=1e-4)  # batched by 2
    torch.save({"not": torch.zeros(1)}, tmp_path / "wrong.pt")
    with pytest.raises(WeightsError, match="does not match the I3D layout"):
        M.load_i3d(tmp_path / "wrong.pt", verify=False)


def test_missing_or_wrong_weights_give_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(WeightsError) as err:
        M.load_i3d(tmp_path / "i3d_pretrained_400.pt")
    msg = str(err.value)
    assert "i3d_pretrained_400.pt" in msg and "TATS" in msg
    assert "gitsha1:a867b87ac3a9097d200598b1d48a1b890d8ec744" in msg
    with pytest.raises(WeightsError, match="WALT_I3D_WEIGHTS"):  # nothing given, env var unset
        M.build_extractor("i3d")
    dummy = tmp_path / "dummy.pt"
    torch.save({"x": torch.zeros(3)}, dummy)
    monkeypatch.setenv("WALT_I3D_WEIGHTS", str(dummy))
    with pytest.raises(WeightsError, match="not the expected one") as err:
        M.load_i3d()
    assert "a867b87ac3a9" in str(err.value) and str(dummy) in str(err.value)
    with pytest.raises(WeightsError, match="WALT_I3D_TORCHSCRIPT"):
        M.build_extractor("i3d_torchscript")
    with pytest.raises(WeightsError, match="weights-inception-2015-12-05-6726825d.pth"):
        M.image_fidelity(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(WeightsError, match="not a plain state dict|fc.weight"):
        M.image_fidelity(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), None, weights_path=dummy, metrics=("isc",))


# ---------------------------------------------------------------- TorchScript detectors and C3D


class _ProbeI3D(torch.nn.Module):
    """Stands in for i3d_torchscript.pt: reports what it was given in its first three outputs."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 400)
        out[:, 0] = float(x.shape[-1])
        out[:, 1] = 1.0 if rescale and resize and return_features else 0.0
        out[:, 2] = x.float().amax(dim=(1, 2, 3, 4))
        return out


class _ProbeC3D(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = x.float().mean(dim=(1, 2, 3, 4), keepdim=False)[:, None] * torch.linspace(-1, 1, 101)
        return (logits / 20).softmax(-1)


def test_torchscript_i3d_conventions(tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(_ProbeI3D()).save(str(path))
    videos = torch.rand(2, 3, 4, 32, 32) * 2 - 1
    ours = M.build_extractor("i3d_torchscript", weights=str(path)).features(videos)
    assert ours.shape == (2, 400) and (ours[:, 0] == 224).all() and (ours[:, 1] == 0).all() and (ours[:, 2] <= 1).all()
    native = M.build_extractor("i3d_torchscript", weights=str(path), stylegan_v_preprocessing=True)
    out = native.features(videos)
    assert (out[:, 0] == 32).all() and (out[:, 1] == 1).all() and (out[:, 2] > 200).all()  # uint8 range, resized inside
    assert native.weights_checksum.startswith("sha256:")


def test_c3d_inception_score_and_skip(tmp_path, caplog):
    videos = [torch.rand(4, 3, 16, 16, 16) * 2 - 1 for _ in range(3)]
    with caplog.at_level(logging.WARNING):
        skipped = M.c3d_inception_score(videos)
    assert skipped.mean is None and "WALT_C3D_WEIGHTS" in skipped.protocol.skipped
    assert "skipping is_c3d" in caplog.text
    path = tmp_path / "c3d_ucf101.pt"
    torch.jit.script(_ProbeC3D()).save(str(path))
    res = M.c3d_inception_score(videos, weights=path, splits=3)
    assert res.mean >= 1.0 and res.protocol.n_fake == 12 and res.protocol.frames == 16
    assert res.protocol.weights_checksum.startswith("sha256:") and res.protocol.skipped is None


# ---------------------------------------------------------------- torch-fidelity image metrics


def test_image_fidelity_with_local_weights_never_downloads(tmp_path, monkeypatch):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    empty = tmp_path / "empty.pth"
    torch.save({}, empty)
    with monkeypatch.context() as m:  # build random weights in torch-fidelity's own layout
        m.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        torch.manual_seed(0)
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    for mod in net.modules():  # variance-preserving init, so random features still differ between images
        if isinstance(mod, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
    torch.nn.init.normal_(net.fc.weight, std=2.0)  # random features differ little; spread the logits
    weights = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(net.state_dict(), weights)
    g = torch.Generator().manual_seed(0)
    fake = torch.randint(0, 256, (5, 3, 32, 32), generator=g, dtype=torch.uint8)
    real = torch.randint(0, 256, (5, 3, 32, 32), generator=g, dtype=torch.uint8)
    monkeypatch.setenv("WALT_INCEPTION_WEIGHTS", str(weights))
    # FID left out only for time (torch-fidelity's 2048-d sqrtm); it shares this wiring
    out = M.image_fidelity(fake, real, metrics=("isc", "kid"), batch_size=5, isc_splits=1)
    assert set(out) == {"inception_score_mean", "inception_score_std", "kernel_inception_distance_mean",
                        "kernel_inception_distance_std"}
    assert out["inception_score_mean"] > 1.0 and out["kernel_inception_distance_mean"] != 0
    record = M.fidelity_protocol("isc", n_fake=5)
    assert record.weights_checksum.startswith("sha256:") and record.resolution == 299
    # the guard itself: torch-fidelity without a path fails clearly instead of downloading
    with M.fidelity.no_downloads(), pytest.raises(WeightsError, match="refusing to download"):
        FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])


# ---------------------------------------------------------------- embedded synthetic-set metrics

SYNTH_SPEC = SyntheticSpec(num_classes=4, num_groups=8, clips_per_group=4, num_frames=9, resolution=32)
SYNTH_CFG = S.SynthClassifierConfig(num_frames=8, resolution=32, width=8, epochs=20, batch_size=16, lr=6e-3)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    generate(root, SYNTH_SPEC)
    ext = M.build_extractor("synthetic", root=str(root), **SYNTH_CFG.__dict__)
    clips = []
    for train in (True, False):
        ds = UCF101(str(root), split=1, train=train, clip=ClipSpec(8, 1, Sampling.center), resolution=32)
        clips += [ds[i]["video"] for i in range(len(ds))]
    return root, ext, to_model_range(torch.stack(clips))  # (128, 3, 8, 32, 32) in [-1, 1]


def test_fvd_synth_discriminates(synth):
    _, ext, videos = synth
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(videos), generator=g)
    a, b = videos[perm[::2]], videos[perm[1::2]]  # two disjoint halves of real clips
    shuffled = b[:, :, torch.randperm(b.shape[2], generator=g)]  # same frames, motion destroyed
    noise = torch.rand(b.shape, generator=g) * 2 - 1
    real = M.fvd_synth(ext, [a], [b])
    assert 3 * real < M.fvd_synth(ext, [a], [shuffled])
    assert 3 * real < M.fvd_synth(ext, [a[:32], a[32:]], [noise])  # batched stream
    assert M.is_synth(ext, [a])[0] > M.is_synth(ext, [noise])[0]


def test_synthetic_classifier_is_cached_and_reloaded(synth, monkeypatch):
    root, ext, videos = synth
    path = S.cache_path(root, SYNTH_CFG)
    assert path.parent == root / ".classifier" and path.exists()
    assert not list(path.parent.glob(".*"))  # no temporary leftovers
    state = torch.load(path, weights_only=True)
    assert state["config"]["width"] == 8 and len(state["classes"]) == 4
    monkeypatch.setattr(S, "_fit", lambda *a, **k: pytest.fail("retrained although cached"))
    again = M.build_extractor("synthetic", root=str(root), **SYNTH_CFG.__dict__)
    torch.testing.assert_close(again.features(videos[:4]), ext.features(videos[:4]))
    assert again.weights_checksum == ext.weights_checksum and again.weights_checksum.startswith("sha256:")
    assert S.cache_path(root, S.SynthClassifierConfig(epochs=1)) != path  # other config, other file
    from walt.data.datamodule import VideoDataModule

    dm = VideoDataModule(dataset="synthetic", root=str(root), num_classes=4, num_frames=8, resolution=32,
                         synthetic=SYNTH_SPEC.__dict__)
    from_dm = M.train_synthetic_classifier(dm, SYNTH_CFG)  # same dataset, split 1: the cached classifier
    torch.testing.assert_close(from_dm.features(videos[:4]), ext.features(videos[:4]))



def test_synthetic_classifier_weights_do_not_depend_on_the_thread_count(synth):
    """The metric's classifier is trained single-threaded: fitting under 1 and 2 threads gave different weights
    (max 1.5e-3 apart on the demo set, so another fvd_synth scale) when it used the caller's thread count."""
    root, _, _ = synth
    cfg = S.SynthClassifierConfig(num_frames=8, resolution=32, width=8, epochs=2, batch_size=16, lr=6e-3)
    before = torch.get_num_threads()
    states = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            states.append(M.train_synthetic_classifier(str(root), cfg, cache=False).state_dict())
            assert torch.get_num_threads() == n  # restored after the fit
    finally:
        torch.set_num_threads(before)
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k

# ---------------------------------------------------------------- reconstruction metrics and protocol


def test_reconstruction_meter(i3d):
    ext = M.I3DExtractor(i3d, None, resolution=16)  # frames resized 32 -> 16 to keep the test quick
    real = torch.rand(3, 3, 8, 32, 32) * 2 - 1
    recon = (real + 0.05 * torch.randn_like(real)).clamp(-1, 1)
    meter = M.ReconstructionMeter(ext)
    meter.update(real[:1], recon[:1])
    meter.update(real[1:], recon[1:])
    out = meter.compute()
    mse = (((real + 1) / 2 - (recon + 1) / 2) ** 2).mean(dim=(1, 3, 4))  # per frame (N, T)
    assert out["psnr"] == pytest.approx((-10 * torch.log10(mse)).mean().item(), rel=1e-5)
    assert 0 < out["ssim"] < 1 and out["rfvd"] > 0
    assert M.rfvd(ext, [(real[:1], recon[:1]), (real[1:], recon[1:])]) == pytest.approx(out["rfvd"], rel=1e-6)
    same = M.ReconstructionMeter(ext)
    same.update(real, real)
    same_out = same.compute()
    assert same_out["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert abs(same_out["rfvd"]) < 1e-6 * np.trace(same.real_stats.cov)
    protocols = meter.protocols(reference_split="synthetic test split 1")
    assert protocols["rfvd"].n_real == 3 and protocols["rfvd"].frames == 8 and protocols["rfvd"].resolution == 16


def test_protocol_record_and_registry():
    p = M.MetricProtocol("fvd", "InceptionI3d Kinetics-400 logits", "gitsha1:abc", frames=16, resolution=224,
                         n_real=2048, n_fake=2048, reference_split="ucf101 train split 1", notes="16 of 17 frames")
    d = json.loads(json.dumps(p.to_dict()))
    assert M.MetricProtocol.from_dict(d) == p
    with pytest.raises(ValueError, match="unknown MetricProtocol fields"):
        M.MetricProtocol.from_dict({**d, "value": 1.0})
    assert {"i3d", "i3d_torchscript", "synthetic"} <= set(M.EXTRACTORS)
    with pytest.raises(ValueError, match="valid: .*i3d"):
        M.build_extractor("inception3d")
