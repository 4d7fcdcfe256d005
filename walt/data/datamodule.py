"""One LightningDataModule for every clip dataset; `dataset` picks the on-disk layout."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from walt.data.datasets import UCF101, ClipDataset
from walt.data.health import BadDatasetError, SplitHealth, decode_failures, first_bad, reason_counts
from walt.data.imagenet import ImageNet, imagenet_classes
from walt.data.joint import AppendedImages, MixedImages, video_frames
from walt.data.kinetics import kinetics, kinetics_classes
from walt.data.latents import LatentDataset
from walt.data.sampling import ResumableSampler
from walt.data.synthetic import SyntheticSpec, generate, is_generated
from walt.data.video import ClipSpec, Reason, Sampling, frame_size, to_model_range

log = logging.getLogger(__name__)
DATASETS = ("ucf101", "kinetics600", "imagenet", "synthetic")
IMAGE_SOURCES = ("frames", "imagenet")


class VideoDataModule(L.LightningDataModule):
    """Train/val clip loaders. Validation is deterministic: centred clips and crops, fixed order.
    Batches leave the workers with uint8 'video' and reach the LightningModule as float in [-1, 1]
    (on_after_batch_transfer, on the device); loops that read a loader directly call to_model_range.

    dataset: one of DATASETS. `synthetic` is the UCF-101 layout, generated under `root` on first use.
    root: dataset directory. split: UCF-101 split 1..3. train_dir/val_dir: split folders of
    kinetics600/imagenet (and the names of their annotation CSVs). num_classes: expected classes,
    checked for every split against what its list / CSV / folders name.
    num_frames, frame_stride, temporal_sampling: clip sampling (images ignore them: T = 1).
    resolution, crop: output frame size, one int (square) or [H, W] (resized to cover it, aspect kept, then
        cropped; e.g. W.A.L.T's 128x224 text-to-video clips), and the train crop (validation always centres).
    synthetic: generator settings (a SyntheticSpec's fields) when dataset == synthetic.
    latent_cache: a directory holding train/ and val/ latent caches (walt-data encode); when set,
        batches carry normalised 'latents' instead of 'video' and stage 2 skips the encoder.
    max_bad_fraction: setup fails (BadDatasetError listing the first bad files) when more than this
        fraction of a split's present files are unreadable; training fails the same way when files
        that passed the probe fail to decode. Missing files are dropped and never count as bad.
    probe: check every file's header at setup (about 1 ms per video file) so bad files leave the
        index before training and the fraction check happens before the first step.
    image_ratio: > 0 mixes image samples into training batches at this fraction (W.A.L.T joint
        training); images_per_sample images of one class fill frames 0..k-1 of an image sample.
    append_images: > 0 appends this many images as extra frames of every training clip (Latte / LaVie).
    image_source: where joint-training images come from: "frames" (random frames of the training
        videos) or "imagenet" (the train split of an ImageNet tree at image_root).
    The joint-training batch contract is in walt.data.joint.
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
        resolution: int | Sequence[int] = 64,
        temporal_sampling: Sampling | str = Sampling.random,
        crop: Sampling | str = Sampling.random,
        batch_size: int = 8,
        num_workers: int = 2,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        synthetic: dict | None = None,
        latent_cache: str | None = None,
        max_bad_fraction: float = 0.01,
        probe: bool = True,
        image_ratio: float = 0.0,
        images_per_sample: int = 1,
        append_images: int = 0,
        image_source: str = "frames",
        image_root: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"data.dataset must be one of {DATASETS}, got {dataset!r}")
        if image_source not in IMAGE_SOURCES:
            raise ValueError(f"data.image_source must be one of {IMAGE_SOURCES}, got {image_source!r}")
        if image_ratio > 0 and append_images > 0:
            raise ValueError("data.image_ratio (image samples, W.A.L.T) and data.append_images (images appended "
                             "to clips, Latte/LaVie) are two ways of joint training; set one of them")
        if image_source == "imagenet" and (image_ratio > 0 or append_images > 0) and not image_root:
            raise ValueError("data.image_source=imagenet needs data.image_root (an ImageNet tree with train/<wnid>/)")
        if not 0 <= max_bad_fraction <= 1:
            raise ValueError(f"data.max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        self.dataset, self.root, self.num_classes = dataset, str(root), num_classes
        self.split, self.train_dir, self.val_dir = split, train_dir, val_dir
        self.resolution = resolution if isinstance(resolution, int) else frame_size(resolution)
        self.crop = Sampling(crop)
        self.train_clip = ClipSpec(num_frames, frame_stride, Sampling(temporal_sampling))
        self.val_clip = ClipSpec(num_frames, frame_stride, Sampling.center)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers and num_workers > 0
        self.synthetic_spec = SyntheticSpec(**(synthetic or {})) if dataset == "synthetic" else None
        self.latent_cache = latent_cache
        self.max_bad_fraction, self.probe = max_bad_fraction, probe
        self.image_ratio, self.images_per_sample, self.append_images = image_ratio, images_per_sample, append_images
        self.image_source, self.image_root = image_source, image_root
        self.train_set: Dataset | None = None
        self.val_set: ClipDataset | LatentDataset | None = None
        self.image_set: ClipDataset | None = None
        self.splits: dict[str, SplitHealth] = {}  # what data_health() reports, by split
        self.runtime_bad = SplitHealth("files that failed to decode during loading")
        self._classes: list[str] | None = None

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

    # ----------------------------------------------------------------------------- building
    def class_index(self) -> list[str] | None:
        """The class index shared by train and val (None: each dataset reads its own, e.g. UCF classInd)."""
        if self._classes is None and self.dataset == "kinetics600":
            self._classes = kinetics_classes(self.root, [self.train_dir, self.val_dir])
        if self._classes is None and self.dataset == "imagenet":
            self._classes = imagenet_classes(self.root, [self.train_dir, self.val_dir])
        return self._classes

    def build(self, train: bool) -> ClipDataset | LatentDataset:
        if self.latent_cache:
            return LatentDataset(Path(self.latent_cache) / ("train" if train else "val"))
        clip = self.train_clip if train else self.val_clip
        common = dict(clip=clip, resolution=self.resolution, crop=self.crop if train else Sampling.center)
        split_dir = self.train_dir if train else self.val_dir
        if self.dataset in ("ucf101", "synthetic"):
            ds = UCF101(self.root, split=self.split, train=train, **common)
            split_name = f"{'train' if train else 'test'} split {self.split}"
        elif self.dataset == "kinetics600":
            ds, split_name = kinetics(self.root, split_dir, self.class_index(), **common), f"'{split_dir}' split"
        else:
            ds, split_name = ImageNet(self.root, split_dir, self.class_index(), **common), f"'{split_dir}' split"
        self.check_classes(ds, split_name)
        self.admit(ds, "train" if train else "val")
        return ds

    def check_classes(self, ds: ClipDataset, split_name: str) -> None:
        """The class index has num_classes classes and this split names every one of them."""
        where = f"{self.dataset} {split_name} ({ds.source})"
        if len(ds.classes) != self.num_classes:
            raise ValueError(f"{where} has {len(ds.classes)} classes but data.num_classes={self.num_classes}")
        lacking = sorted(set(ds.classes) - (ds.split_classes or set(ds.classes)))
        if lacking:
            raise ValueError(f"{where} names {len(ds.classes) - len(lacking)} of the {len(ds.classes)} classes; "
                             f"missing: {', '.join(lacking[:10])}{' ...' if len(lacking) > 10 else ''}")

    def admit(self, ds: ClipDataset, key: str) -> None:
        """Probe a split's files, record its health and fail early when too many are bad."""
        if self.probe:
            ds.probe()
        self.splits[key] = ds.health
        ds.health.check(self.max_bad_fraction)

    def build_images(self, videos: ClipDataset) -> ClipDataset:
        if self.image_source == "frames":
            return video_frames(videos)
        images = ImageNet(self.image_root, "train", clip=ClipSpec(1, 1, Sampling.center), resolution=self.resolution, crop=self.crop)
        self.admit(images, "images")
        return images

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None and stage in (None, "fit"):
            videos = self.build(train=True)
            if not self.latent_cache and (self.image_ratio > 0 or self.append_images > 0):
                self.image_set = self.build_images(videos)
                self.train_set = (MixedImages(videos, self.image_set, self.image_ratio, self.images_per_sample)
                                  if self.image_ratio > 0 else AppendedImages(videos, self.image_set, self.append_images))
            else:
                self.train_set = videos
        if self.val_set is None:
            self.val_set = self.build(train=False)
        train_classes = getattr(self.train_set, "classes", None)
        if train_classes is not None and getattr(self.val_set, "classes", train_classes) != train_classes:
            raise ValueError(f"{self.dataset}: the train and val splits number their classes differently")

    # ----------------------------------------------------------------------------- health
    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Record the files that failed while producing this batch (met in any worker) once per file,
        in the main process, and fail once they exceed max_bad_fraction of the files."""
        if isinstance(batch, dict) and "bad_files" in batch:
            new = [e for text in batch.pop("bad_files") for e in decode_failures(text) if self.runtime_bad.add_bad(e)]
            if new:
                health = self.data_health()
                log.warning("%d file(s) failed to decode (%d so far, %s): %s", len(new), health["bad_total"],
                            health["bad"], "; ".join(str(e) for e in new))
                if health["bad_total"] > self.max_bad_fraction * max(health["files"], 1):
                    raise BadDatasetError(
                        f"{health['bad_total']} of {health['files']} files of {self.root} are unreadable "
                        f"({health['bad']}; > data.max_bad_fraction={self.max_bad_fraction:.1%}). First bad files:\n  "
                        + "\n  ".join(health["bad_files"]))
        return batch

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """uint8 clips -> float in [-1, 1], on the device: workers and the host-to-device copy move 4x fewer bytes."""
        if isinstance(batch, dict) and "video" in batch:
            batch["video"] = to_model_range(batch["video"])
        return batch

    def state_dict(self) -> dict:
        """Decode failures met so far, kept in checkpoints so a resumed run keeps counting them (plain
        strings: loads with weights_only=True). Empty, so absent from checkpoints, while nothing failed."""
        if not self.runtime_bad.bad:
            return {}
        return {"runtime_bad": {path: [reason.value, message] for path, (reason, message) in self.runtime_bad.bad.items()}}

    def load_state_dict(self, state_dict: dict) -> None:
        self.runtime_bad.bad = {path: (Reason(reason), message)
                                for path, (reason, message) in state_dict.get("runtime_bad", {}).items()}

    def data_health(self) -> dict:
        """What results.json should carry: files present, listed, missing, and unreadable files by
        reason, each file counted once (probe at setup + decode failures seen so far), per split too."""
        bad = {path: v for h in (*self.splits.values(), self.runtime_bad) for path, v in h.bad.items()}

        def entry(h: SplitHealth, files_bad: dict) -> dict:
            return {"files": h.present, "listed": h.listed, "missing": len(h.missing), "bad_total": len(files_bad),
                    "bad": reason_counts(files_bad), "bad_files": first_bad(files_bad)}

        totals = SplitHealth("all", listed=sum(h.listed for h in self.splits.values()),
                             missing=[p for h in self.splits.values() for p in h.missing])
        return {**entry(totals, bad), "splits": {k: entry(h, h.bad) for k, h in self.splits.items()}}

    # ----------------------------------------------------------------------------- loaders
    def loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        """Batches of `dataset`; the order (shuffled per epoch by seed and epoch) and the workers' seeds never
        draw from the global RNG, and a resumed fit continues the interrupted epoch (walt.data.sampling)."""
        generator = torch.Generator()
        # under DDP / FSDP every rank reads its share of the same order (the ranks' batches of a step = one
        # batch of world_size x batch_size)
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        trainer = self.trainer if shuffle else None
        per_epoch = len(dataset) // world // self.batch_size  # batches of this rank's share (drop_last)

        def position() -> tuple[int, int]:  # (epoch, items of it done) from the steps taken, resumed or not
            epoch, done = divmod(trainer.global_step * trainer.accumulate_grad_batches, max(per_epoch, 1))
            return epoch, done * self.batch_size

        sampler = ResumableSampler(len(dataset), self.seed, shuffle=shuffle, generator=generator, rank=rank,
                                   num_replicas=world, position=position if trainer is not None else None)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            generator=generator,
        )

    def train_dataloader(self) -> DataLoader:
        world = self.trainer.world_size if self.trainer is not None else 1
        if len(self.train_set) < self.batch_size * world:  # drop_last would leave a process no batch at all
            share = f", {len(self.train_set) // world} for each of the {world} processes" if world > 1 else ""
            raise ValueError(f"the train split of {self.root} has {len(self.train_set)} clips{share}, fewer than "
                             f"data.batch_size={self.batch_size}; lower the batch size or add data")
        return self.loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
