"""Image-video joint training: single images inside video batches, the two ways of the papers.

Batch contract (every training item has the same keys and the same T, so the default collate stacks them):
    video           (C, T, H, W) uint8 pixels (walt.data.video.to_model_range converts on the device)
    is_image        bool: the sample is made of independent images, no video frames (W.A.L.T)
    frame_is_image  (T,) bool: frames that are independent images; each must be encoded on its own
                    (a 1-frame clip -> 1 latent frame) and must not mix with other frames in time
    label, caption, index, skipped, bad_files as for video items

mix (W.A.L.T): a fraction `image_ratio` of the samples are image samples. An image sample holds
    `images_per_sample` = k images of one class in frames 0..k-1, the remaining T - k frames are
    black (uint8 zeros) padding (is_image True, frame_is_image False). With k = 1 frame 0 is the image:
    the causal encoder's latent frame 0 of the padded clip is exactly the image's latent, the later latent
    frames are padding whose loss must be masked. With k = the latent frame count of a clip (5 for
    17 frames and the /4 causal encoder) and every image encoded alone, an image sample has exactly
    the latent shape of a video sample and no padding.
append (Latte, LaVie): every video sample gets `append_images` = n images of its class appended as
    frames T..T+n-1 (frame_is_image True there); T grows to num_frames + n for every sample.
Images come from an image dataset (ImageNet: its own class index) or are single random frames of
the training videos (`VideoFrames`: same classes, works on the synthetic set).
"""
from __future__ import annotations

import copy
import random

import numpy as np
import torch
from torch.utils.data import Dataset

from walt.data.datasets import ClipDataset
from walt.data.video import ClipSpec, Sampling


def video_frames(videos: ClipDataset) -> ClipDataset:
    """The video set read as images: one random frame per item (same files, index, labels, health)."""
    frames = copy.copy(videos)
    frames.clip = ClipSpec(1, 1, Sampling.random)
    return frames


def _by_class(dataset: ClipDataset) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, entry in enumerate(dataset.items):
        groups.setdefault(entry.label, []).append(i)
    return groups


class _Images:
    """Draws images, k at a time from one class (class-conditioning is per sample, not per frame)."""

    def __init__(self, images: ClipDataset):
        self.images, self.groups = images, _by_class(images)

    def draw(self, k: int, label: int | None = None) -> tuple[torch.Tensor, list[dict]]:
        """(C, k, H, W) and the k items; `label` picks the class (None: the class of a random image)."""
        pool = self.groups.get(label) if label is not None else None
        items = []
        for _ in range(k):
            index = random.choice(pool) if pool else random.randrange(len(self.images))
            items.append(self.images[index])
            if pool is None:  # the first image picks the class of the rest
                pool = self.groups.get(items[0]["label"])
        return torch.cat([it["video"] for it in items], dim=1), items


def _merge_failures(items: list[dict]) -> tuple[int, str]:
    return sum(int(it["skipped"]) for it in items), "\n".join(filter(None, (it["bad_files"] for it in items)))


class MixedImages(Dataset):
    """W.A.L.T joint training: video samples and image samples (module docstring), interleaved at a
    fixed ratio over the index so any sampler (shuffled, distributed) keeps the ratio per epoch.

    Every video appears once per epoch; there are round(len(videos) * r / (1 - r)) image samples,
    each drawing fresh random images (so a large image set is covered across epochs).
    """

    def __init__(self, videos: ClipDataset, images: ClipDataset, image_ratio: float, images_per_sample: int = 1):
        if not 0 < image_ratio < 1:
            raise ValueError(f"data.image_ratio must be in (0, 1) for mixed image-video batches, got {image_ratio}")
        if not 1 <= images_per_sample <= videos.clip.num_frames:
            raise ValueError(f"data.images_per_sample must be in 1..num_frames={videos.clip.num_frames}, "
                             f"got {images_per_sample}")
        self.videos, self.images, self.k = videos, _Images(images), images_per_sample
        n_v = len(videos)
        n_i = round(n_v * image_ratio / (1 - image_ratio))
        before = np.arange(n_v + n_i + 1) * n_i // (n_v + n_i)  # image samples before position i
        self.image_before = before[:-1]
        self.is_image = before[1:] > before[:-1]
        self.classes = videos.classes

    def __len__(self) -> int:
        return len(self.is_image)

    def __getitem__(self, i: int) -> dict:
        T = self.videos.clip.num_frames
        flags = torch.zeros(T, dtype=torch.bool)
        if not self.is_image[i]:
            item = self.videos[i - int(self.image_before[i])]
            return {**item, "is_image": False, "frame_is_image": flags}
        images, items = self.images.draw(self.k)
        video = images.new_zeros(images.shape[0], T, *images.shape[2:])
        video[:, : self.k] = images
        flags[: self.k] = True
        skipped, bad = _merge_failures(items)
        return {"video": video, "label": items[0]["label"], "caption": items[0]["caption"],
                "index": items[0]["index"], "skipped": skipped, "bad_files": bad,
                "is_image": True, "frame_is_image": flags}


class AppendedImages(Dataset):
    """Latte / LaVie joint training: n images appended after each clip's frames (module docstring).

    Images share the clip's class when the image set has the video set's class index (video frames),
    else they are drawn at random (ImageNet next to a video set: separate class spaces).
    """

    def __init__(self, videos: ClipDataset, images: ClipDataset, append_images: int):
        if append_images < 1:
            raise ValueError(f"data.append_images must be >= 1, got {append_images}")
        self.videos, self.images, self.n = videos, _Images(images), append_images
        self.same_class = images.classes == videos.classes
        self.classes = videos.classes

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> dict:
        item = self.videos[i]
        images, items = self.images.draw(self.n, item["label"] if self.same_class else None)
        T = item["video"].shape[1]
        flags = torch.arange(T + self.n) >= T
        skipped, bad = _merge_failures([item, *items])
        return {**item, "video": torch.cat([item["video"], images], dim=1), "skipped": skipped, "bad_files": bad,
                "is_image": False, "frame_is_image": flags}
