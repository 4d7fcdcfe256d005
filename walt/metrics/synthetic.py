"""Default metrics for the embedded moving-shapes dataset: `fvd_synth` and `is_synth`.

The pretrained I3D / C3D files are not available to every user, and on 32-64 px moving shapes they
measure little anyway. Instead a small 3D-CNN is trained on the dataset's own (shape, direction)
labels, which forces it to see both appearance and motion; its pooled penultimate features give a
Frechet distance and its class probabilities an Inception-style score. The names carry "_synth" so
no table mistakes them for I3D FVD / C3D IS. The classifier is trained once per dataset and cached
at <dataset_root>/.classifier/<key>.pt, key = hash of spec.json + classifier config.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import nn

from walt.data.datasets import UCF101, ClipDataset
from walt.data.video import ClipSpec, Sampling
from walt.metrics.frechet import FeatureStats, accumulate, inception_score
from walt.metrics.protocol import register_extractor
from walt.weights import file_checksum
from walt.runs import atomic_write

log = logging.getLogger(__name__)
ARCH_VERSION = 1  # bump when SynthClassifier changes, so stale cached classifiers are not reused
CACHE_DIR = ".classifier"
FVD_SYNTH, IS_SYNTH = "fvd_synth", "is_synth"


@dataclass(frozen=True)
class SynthClassifierConfig:
    """num_frames, resolution: clip the classifier trains on (inputs of another size are resized
    spatially; T should match for comparable numbers). width: channels of the first block (x2, x4 after).
    epochs, batch_size, lr, weight_decay, seed: training. split: UCF-style split whose train list is used."""

    num_frames: int = 16
    resolution: int = 32
    width: int = 16
    epochs: int = 40  # 12 epochs left it at chance on the demo set (train 0.24, val 0.13); 40: val 0.95
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    split: int = 1

    @property
    def feature_dim(self) -> int:
        return 4 * self.width


def _conv(c_in: int, c_out: int, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> nn.Sequential:
    pad = tuple((k - 1) // 2 for k in kernel)
    return nn.Sequential(nn.Conv3d(c_in, c_out, kernel, stride, pad), nn.GroupNorm(4, c_out), nn.SiLU())


class SynthClassifier(nn.Module):
    """Strided 3D convs (space /8, time /4; strides rather than pools keep CPU training to seconds),
    global mean pool -> features (4 * width), linear -> logits."""

    def __init__(self, num_classes: int, config: SynthClassifierConfig = SynthClassifierConfig()):
        super().__init__()
        w, self.config = config.width, config
        self.body = nn.Sequential(
            _conv(3, w, (3, 4, 4), (1, 2, 2)),  # (w, T, H/2, W/2)
            _conv(w, 2 * w, (3, 4, 4), (2, 2, 2)),  # (2w, T/2, H/4, W/4)
            _conv(2 * w, 4 * w, (3, 4, 4), (2, 2, 2)),  # (4w, T/4, H/8, W/8)
            nn.Conv3d(4 * w, 4 * w, 3, padding=1), nn.SiLU(),
        )
        self.head = nn.Linear(4 * w, num_classes)

    def features(self, videos: torch.Tensor) -> torch.Tensor:
        """(N, 3, T, H, W) in [-1, 1] -> pooled penultimate features (N, 4 * width)."""
        r = self.config.resolution
        if videos.shape[-2:] != (r, r):
            n = videos.shape[0]
            frames = rearrange(videos, "n c t h w -> (n t) c h w")
            frames = F.interpolate(frames, size=(r, r), mode="bilinear", antialias=True, align_corners=False)
            videos = rearrange(frames, "(n t) c h w -> n c t h w", n=n)
        return reduce(self.body(videos.clamp(-1, 1)), "n c t h w -> n c", "mean")

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(videos))


def _spec_text(root: Path) -> str | None:
    spec = root / "spec.json"
    return spec.read_text() if spec.exists() else None


def cache_path(root: str | os.PathLike, config: SynthClassifierConfig) -> Path | None:
    """Where the classifier for this dataset and config lives; None when root has no spec.json."""
    spec = _spec_text(Path(root))
    if spec is None:
        return None
    key = json.dumps({"spec": json.loads(spec), "config": dataclasses.asdict(config), "arch": ARCH_VERSION},
                     sort_keys=True)
    return Path(root) / CACHE_DIR / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def _load_clips(dataset: ClipDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Every clip once, as uint8 (N, 3, T, H, W) (small: the synthetic set) and labels (N,)."""
    videos, labels = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        videos.append(item["video"])
        labels.append(item["label"])
    return torch.stack(videos), torch.tensor(labels)


def _fit(model: SynthClassifier, videos: torch.Tensor, labels: torch.Tensor, device: torch.device) -> float:
    """Train in place; returns the final-epoch training accuracy."""
    cfg = model.config
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * -(-len(videos) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.2)
    model.train()
    for _ in range(cfg.epochs):
        correct = 0
        for idx in torch.randperm(len(videos), generator=gen).split(cfg.batch_size):
            x = videos[idx].to(device).float() / 127.5 - 1  # (B, 3, T, H, W)
            y = labels[idx].to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            correct += (logits.argmax(-1) == y).sum().item()
    model.eval()
    return correct / len(videos)


def _save_atomic(obj: dict, path: Path) -> None:
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def _resolve_source(source, config: SynthClassifierConfig):
    """(training dataset, dataset root for caching or None, config with the split actually used) from a
    dataset root, a VideoDataModule or a ClipDataset."""
    if isinstance(source, ClipDataset):
        return source, None, config
    if hasattr(source, "prepare_data") and hasattr(source, "root"):  # VideoDataModule: its root and split
        source.prepare_data()
        root, config = Path(source.root), dataclasses.replace(config, split=source.split)
    else:
        root = Path(source)
    clip = ClipSpec(config.num_frames, 1, Sampling.center)
    dataset = UCF101(str(root), split=config.split, train=True, clip=clip, resolution=config.resolution,
                     crop=Sampling.center)
    return dataset, root, config


def train_synthetic_classifier(source, config: SynthClassifierConfig = SynthClassifierConfig(), cache: bool = True,
                               device: str | torch.device = "cpu") -> SynthClassifier:
    """The dataset's classifier: loaded from <root>/.classifier/<key>.pt when cached, else trained on the
    train split (centred clips) and cached. source: dataset root, VideoDataModule or ClipDataset (the
    last is never cached: it has no spec.json to key on)."""
    device = torch.device(device)
    dataset, root, config = _resolve_source(source, config)
    path = cache_path(root, config) if (cache and root is not None) else None
    if path is not None and path.exists():
        model = SynthClassifier(len(dataset.classes), config)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
        log.info("loaded synthetic-metric classifier %s", path)
        return model.eval().to(device)
    torch.manual_seed(config.seed)
    model = SynthClassifier(len(dataset.classes), config).to(device)
    videos, labels = _load_clips(dataset)
    start = time.perf_counter()
    threads = torch.get_num_threads()
    if device.type == "cpu":  # one thread: the same weights whatever the caller's thread count (2 threads
        torch.set_num_threads(1)  # gave another file, so another fvd_synth scale, than 1); ~1.5x the time
    try:
        accuracy = _fit(model, videos, labels, device)
    finally:
        torch.set_num_threads(threads)
    log.info("trained synthetic-metric classifier on %d clips in %.1fs (train accuracy %.3f)",
             len(videos), time.perf_counter() - start, accuracy)
    if path is not None:
        _save_atomic({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                      "config": dataclasses.asdict(config), "classes": list(dataset.classes),
                      "train_accuracy": accuracy, "arch": ARCH_VERSION}, path)
    return model


class SyntheticExtractor:
    """Features (pooled penultimate, 4*width-d) and class probabilities of the synthetic-set classifier."""

    def __init__(self, model: SynthClassifier, weights_checksum: str | None = None, batch_size: int = 32):
        self.model, self.weights_checksum, self.batch_size = model.eval(), weights_checksum, batch_size
        self.dim, self.resolution = model.config.feature_dim, model.config.resolution
        self.name = f"synthetic moving-shapes 3D-CNN classifier penultimate features ({self.dim}-d)"

    def _run(self, videos: torch.Tensor, fn) -> torch.Tensor:
        device = next(self.model.parameters()).device
        with torch.no_grad():
            return torch.cat([fn(chunk.to(device).float()).float().cpu() for chunk in videos.split(self.batch_size)])

    def features(self, videos: torch.Tensor) -> torch.Tensor:
        return self._run(videos, self.model.features)

    def probs(self, videos: torch.Tensor) -> torch.Tensor:
        return self._run(videos, lambda x: self.model(x).softmax(-1))


@register_extractor("synthetic")
def synthetic_extractor(root: str, device: str = "cpu", batch_size: int = 32, cache: bool = True,
                        **config) -> SyntheticExtractor:
    """Extractor for the synthetic set at `root`; config: SynthClassifierConfig fields."""
    cfg = SynthClassifierConfig(**config)
    model = train_synthetic_classifier(root, cfg, cache=cache, device=device)
    path = cache_path(root, cfg) if cache else None
    checksum = "sha256:" + file_checksum(path, "sha256") if path is not None and path.exists() else None
    return SyntheticExtractor(model, checksum, batch_size)


def fvd_synth(extractor: SyntheticExtractor, real: Iterable[torch.Tensor], fake: Iterable[torch.Tensor],
              max_items: int | None = None) -> float:
    """Frechet distance of classifier features, real vs generated video batches (N, 3, T, H, W) in [-1, 1]."""
    real_stats = accumulate(extractor.features, real, FeatureStats(extractor.dim), max_items)
    fake_stats = accumulate(extractor.features, fake, FeatureStats(extractor.dim), max_items)
    return real_stats.frechet_distance(fake_stats)


def is_synth(extractor: SyntheticExtractor, videos: Iterable[torch.Tensor], splits: int = 1,
             max_items: int | None = None) -> tuple[float, float]:
    """Inception-style score (mean, std) from the classifier's class probabilities."""
    probs, n = [], 0
    for batch in videos:
        if max_items is not None:
            batch = batch[: max_items - n]
        if not len(batch):
            break
        probs.append(extractor.probs(batch))
        n += len(batch)
    return inception_score(torch.cat(probs), splits=splits)
