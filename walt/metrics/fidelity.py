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

import torch
from torch.utils.data import Dataset

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


def fidelity_protocol(metric: str, weights_path: str | Path | None = None, **fields) -> MetricProtocol:
    """Protocol record for an image metric; records the weights file's sha256 (none is pinned)."""
    file = resolve_weights(INCEPTION_SPEC, weights_path)
    extractor = "torch-fidelity inception-v3-compat " + ("logits_unbiased" if metric == "isc" else "pool3 (2048-d)")
    checksum = "sha256:" + file_checksum(file, "sha256")
    return MetricProtocol(metric=metric, extractor=extractor, weights_checksum=checksum, resolution=299, **fields)


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
