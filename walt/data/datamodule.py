"""One LightningDataModule for every clip dataset; `dataset` picks the on-disk layout."""
from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from walt.data.latents import LatentDataset
from walt.data.sampling import ResumableSampler
from walt.data.datasets import ClipDataset, ImageFolderClips, UCF101, VideoFolder
from walt.data.synthetic import SyntheticSpec, generate, is_generated
from walt.data.video import ClipSpec, Sampling

log = logging.getLogger(__name__)
DATASETS = ("ucf101", "kinetics600", "imagenet", "synthetic")


class VideoDataModule(L.LightningDataModule):
    """Train/val clip loaders. Validation is deterministic: centred clips and crops, fixed order.

    dataset: one of DATASETS. `synthetic` is the UCF-101 layout, generated under `root` on first use.
    root: dataset directory. split: UCF-101 split 1..3. train_dir/val_dir: split folders of
    kinetics600/imagenet. num_classes: expected classes, checked against what is on disk.
    num_frames, frame_stride, temporal_sampling: clip sampling (images ignore them: T = 1).
    resolution, crop: square output size, and the train crop (validation always centres).
    synthetic: generator settings (a SyntheticSpec's fields) when dataset == synthetic.
    latent_cache: a directory holding train/ and val/ latent caches (walt-data encode); when set,
        batches carry normalised 'latents' instead of 'video' and stage 2 skips the encoder.
    seed: the train order of epoch e is a function of (seed, e) (walt.data.sampling), so runs resume exactly.
    """

    def __init__(
        self,
        dataset: str = "synthetic",
        root: str = "data/synthetic",
        num_classes: int = 8,
        split: int = 1,
        train_dir: str = "train",
        val_dir: str = "val",
        num_frames: int = 17,
        frame_stride: int = 1,
        resolution: int = 64,
        temporal_sampling: Sampling | str = Sampling.random,
        crop: Sampling | str = Sampling.random,
        batch_size: int = 8,
        num_workers: int = 2,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        synthetic: dict | None = None,
        latent_cache: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"data.dataset must be one of {DATASETS}, got {dataset!r}")
        self.dataset, self.root, self.num_classes = dataset, str(root), num_classes
        self.split, self.train_dir, self.val_dir = split, train_dir, val_dir
        self.resolution, self.crop = resolution, Sampling(crop)
        self.train_clip = ClipSpec(num_frames, frame_stride, Sampling(temporal_sampling))
        self.val_clip = ClipSpec(num_frames, frame_stride, Sampling.center)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers and num_workers > 0
        self.synthetic_spec = SyntheticSpec(**(synthetic or {})) if dataset == "synthetic" else None
        self.latent_cache = latent_cache
        self.train_set: ClipDataset | LatentDataset | None = None
        self.val_set: ClipDataset | LatentDataset | None = None

    def prepare_data(self) -> None:
        """Generate the synthetic set once; a root holding a different spec is an error, never overwritten."""
        if self.synthetic_spec is None or is_generated(self.root, self.synthetic_spec):
            return
        if (Path(self.root) / "spec.json").exists():
            raise FileExistsError(
                f"{self.root} holds a synthetic dataset with another spec; choose another data.root "
                f"or delete it (wanted {self.synthetic_spec})"
            )
        log.info("generating synthetic dataset %s under %s", self.synthetic_spec, self.root)
        generate(self.root, self.synthetic_spec)

    def build(self, train: bool) -> ClipDataset | LatentDataset:
        if self.latent_cache:
            return LatentDataset(Path(self.latent_cache) / ("train" if train else "val"))
        clip = self.train_clip if train else self.val_clip
        common = dict(clip=clip, resolution=self.resolution, crop=self.crop if train else Sampling.center)
        if self.dataset in ("ucf101", "synthetic"):
            ds = UCF101(self.root, split=self.split, train=train, **common)
        elif self.dataset == "kinetics600":
            ds = VideoFolder(self.root, split=self.train_dir if train else self.val_dir, **common)
        else:
            ds = ImageFolderClips(self.root, split=self.train_dir if train else self.val_dir, **common)
        if len(ds.classes) != self.num_classes:
            raise ValueError(
                f"{self.dataset} at {self.root} has {len(ds.classes)} classes but data.num_classes={self.num_classes}"
            )
        return ds

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None and stage in (None, "fit"):
            self.train_set = self.build(train=True)
        if self.val_set is None:
            self.val_set = self.build(train=False)

    def loader(self, dataset: ClipDataset, shuffle: bool) -> DataLoader:
        """Batches of `dataset`; the order (shuffled per epoch by seed and epoch) and the workers' seeds never
        draw from the global RNG, and a resumed fit continues the interrupted epoch (walt.data.sampling)."""
        generator = torch.Generator()
        sampler = ResumableSampler(len(dataset), self.seed, shuffle=shuffle, generator=generator)
        trainer = self.trainer if shuffle else None
        if trainer is not None and trainer.global_step > 0:
            done = trainer.fit_loop.epoch_loop.batch_progress.current.completed  # restored from the checkpoint
            sampler.resume_at(trainer.current_epoch, done * self.batch_size)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            generator=generator,
        )

    def train_dataloader(self) -> DataLoader:
        if len(self.train_set) < self.batch_size:  # drop_last would leave no batch at all
            raise ValueError(f"the train split of {self.root} has {len(self.train_set)} clips, fewer than "
                             f"data.batch_size={self.batch_size}; lower the batch size or add data")
        return self.loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
