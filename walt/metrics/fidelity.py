"""Image FID / IS / KID through torch-fidelity's TF-compatible InceptionV3, from a local weights file.

torch-fidelity downloads its Inception weights when no path is given; here the path is always given
(resolved by `resolve_weights`), and while it runs its URL loader is replaced by one that raises, so
no code path can reach the network. No checksum is pinned: the hex in torch-fidelity's file name is
not documented as a content hash, so the file's sha256 is recorded in the protocol instead.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from einops import rearrange
from torch.utils.data import Dataset

from walt.utils import to_uint8
from walt.metrics.protocol import MetricProtocol
from walt.weights import WeightsError, WeightsSpec, file_checksum, resolve_weights


INCEPTION_SPEC = WeightsSpec(
    name="InceptionV3 TF-compatible FID weights (weights-inception-2015-12-05-6726825d.pth)",
    env_var="WALT_INCEPTION_WEIGHTS",
    checksum=None,
    source="the torch-fidelity v0.2.0 GitHub release assets (weights-inception-2015-12-05-6726825d.pth)",
)
FEATURE_EXTRACTOR = "inception-v3-compat"
METRICS = ("fid", "isc", "kid")
RNG_SEED = 2020  # torch-fidelity's default: IS row shuffle and KID subsets


class _Uint8Images(Dataset):
    """In-memory (N, 3, H, W) uint8 images as torch-fidelity wants them: one (3, H, W) uint8 per item."""

    def __init__(self, images: torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images = images.cpu()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


@contextlib.contextmanager
def no_downloads() -> Iterator[None]:
    """Make torch-fidelity's weight download raise instead of touching the network."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    def refuse(url, *args, **kwargs):
        raise WeightsError(f"refusing to download {url}: {INCEPTION_SPEC.name} must be a local file "
                           f"(pass its path or set ${INCEPTION_SPEC.env_var}); it comes from {INCEPTION_SPEC.source}")

    saved = fe.load_state_dict_from_url
    fe.load_state_dict_from_url = refuse
    try:
        yield
    finally:
        fe.load_state_dict_from_url = saved


def inception_weights(path: str | Path | None = None) -> Path:
    """The resolved weights file, first opened with weights_only=True because torch-fidelity itself
    unpickles it unrestricted."""
    file = resolve_weights(INCEPTION_SPEC, path)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(f"{file} is not a plain state dict ({INCEPTION_SPEC.name}): {err}") from err
    if not isinstance(state, dict) or "fc.weight" not in state:
        raise WeightsError(f"{file} does not look like {INCEPTION_SPEC.name} (no fc.weight)")
    return file


def fidelity_protocol(metric: str, weights_path: str | Path | None = None, weights_checksum: str | None = None,
                      **fields) -> MetricProtocol:
    """Protocol record for an image metric ("fid", "kid", "is" or torch-fidelity's "isc"); records the
    weights file's sha256 (none is pinned), hashed here unless `weights_checksum` is given."""
    if weights_checksum is None:
        weights_checksum = "sha256:" + file_checksum(resolve_weights(INCEPTION_SPEC, weights_path), "sha256")
    output = "logits_unbiased" if metric in ("is", "isc") else "pool3 (2048-d)"
    extractor = f"torch-fidelity inception-v3-compat {output}"
    return MetricProtocol(metric=metric, extractor=extractor, weights_checksum=weights_checksum, resolution=299,
                          **fields)


def image_fidelity(fake_images_uint8: torch.Tensor, real_images_uint8: torch.Tensor | None,
                   weights_path: str | Path | None = None, metrics: Sequence[str] = METRICS,
                   batch_size: int = 64, device: str = "cpu", isc_splits: int = 10,
                   kid_subset_size: int = 1000) -> dict[str, float]:
    """torch-fidelity metrics of fake vs real images (each uint8 (N, 3, H, W)), resized inside to 299.

    Returns torch-fidelity's keys: inception_score_mean/std, frechet_inception_distance,
    kernel_inception_distance_mean/std. IS needs no real images. isc_splits and kid_subset_size are
    capped by the sample counts so small runs still work (record that in the protocol).
    """
    import torch_fidelity

    unknown = set(metrics) - set(METRICS)
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of {METRICS}, got {tuple(metrics)}")
    needs_real = bool({"fid", "kid"} & set(metrics))
    if needs_real and real_images_uint8 is None:
        raise ValueError("fid / kid need real images")
    file = inception_weights(weights_path)
    fake = _Uint8Images(fake_images_uint8)
    real = _Uint8Images(real_images_uint8) if needs_real else None
    n_min = min(len(fake), len(real)) if real is not None else len(fake)
    kwargs = dict(
        input1=fake, input2=real, isc="isc" in metrics, fid="fid" in metrics, kid="kid" in metrics,
        feature_extractor=FEATURE_EXTRACTOR, feature_extractor_weights_path=str(file),
        cuda=torch.device(device).type == "cuda", batch_size=batch_size, cache=False, verbose=False,
        datasets_download=False, isc_splits=min(isc_splits, len(fake)), kid_subset_size=min(kid_subset_size, n_min),
        save_cpu_ram=True,  # also means DataLoader num_workers=0: the images are already in memory
    )
    with no_downloads():
        result = torch_fidelity.calculate_metrics(**kwargs)
    return {k: float(v) for k, v in result.items()}


class InceptionExtractor:
    """torch-fidelity's InceptionV3 on every frame of a clip, streamed in batches (what `image_fidelity`
    computes all at once): pool3 features for FID / KID and logits_unbiased for IS. Frames are turned
    into uint8 images first, as saved samples would be, and resized to 299 inside (TF-compatible)."""

    name = "torch-fidelity inception-v3-compat pool3 (2048-d) / logits_unbiased"
    dim, resolution = 2048, 299

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu", batch_size: int = 64):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        file = inception_weights(weights)
        with no_downloads():
            net = FeatureExtractorInceptionV3(FEATURE_EXTRACTOR, ["2048", "logits_unbiased"],
                                              feature_extractor_weights_path=str(file))
        self.net, self.device, self.batch_size = net.to(device), torch.device(device), batch_size
        self.weights_checksum = "sha256:" + file_checksum(file, "sha256")

    @torch.no_grad()
    def outputs(self, videos: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3, T, H, W) in [-1, 1] -> features (N, T, 2048) and logits (N, T, 1008), float32."""
        n = videos.shape[0]
        images = rearrange(to_uint8(videos), "n c t h w -> (n t) c h w")
        feats, logits = [], []
        for chunk in images.split(self.batch_size):
            f, l = self.net(chunk.to(self.device))
            feats.append(f.float().cpu())
            logits.append(l.float().cpu())
        per_clip = lambda x: rearrange(torch.cat(x), "(n t) d -> n t d", n=n).numpy()  # noqa: E731
        return per_clip(feats), per_clip(logits)


def inception_score_of_logits(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """(mean, std) IS of (N, 1008) logits_unbiased, torch-fidelity's computation (rows shuffled with
    its seed 2020, then `splits` parts); splits is capped at N."""
    from torch_fidelity.metric_isc import isc_features_to_metric

    out = isc_features_to_metric(torch.from_numpy(np.asarray(logits)), splits=min(splits, len(logits)),
                                 shuffle=True, rng_seed=RNG_SEED)
    return out["inception_score_mean"], out["inception_score_std"]


def kernel_inception_distance(fake: np.ndarray, real: np.ndarray, subset_size: int = 1000) -> tuple[float, float]:
    """(mean, std) KID of (N, 2048) pool3 features, torch-fidelity's computation (100 subsets, cubic
    polynomial kernel, seed 2020); subset_size is capped by the smaller sample count."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    size = min(subset_size, len(fake), len(real))
    out = kid_features_to_metric(torch.from_numpy(np.asarray(fake)), torch.from_numpy(np.asarray(real)),
                                 kid_subset_size=size, rng_seed=RNG_SEED, verbose=False)
    return out["kernel_inception_distance_mean"], out["kernel_inception_distance_std"]
