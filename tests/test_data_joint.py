"""Image-video joint training batches: W.A.L.T image samples and Latte/LaVie appended image frames."""
import random

import pytest
import torch

from walt.data.datamodule import VideoDataModule
from walt.data.datasets import UCF101
from walt.data.joint import AppendedImages, MixedImages, _Images, video_frames
from walt.data.video import ClipSpec, Sampling

from conftest import SMALL_SPEC
from test_data_layouts import imagenet_tree

T = 9


def datamodule(root, **kw):
    args = dict(dataset="ucf101", root=str(root), num_classes=SMALL_SPEC.num_classes, num_frames=T, resolution=16,
                batch_size=4, num_workers=0, pin_memory=False)
    return VideoDataModule(**{**args, **kw})


def test_mixed_batches_carry_image_samples_at_the_ratio(synthetic_root):
    dm = datamodule(synthetic_root, image_ratio=0.25)
    dm.setup("fit")
    videos = dm.train_set.videos
    assert len(dm.train_set) == len(videos) + round(len(videos) / 3) == 16
    batches = list(dm.loader(dm.train_set, shuffle=False))
    is_image = torch.cat([b["is_image"] for b in batches])
    assert is_image.dtype == torch.bool and int(is_image.sum()) == 4  # one image sample in every 4 positions
    for batch in batches:
        B = batch["video"].shape[0]
        assert batch["video"].shape == (B, 3, T, 16, 16) and batch["frame_is_image"].shape == (B, T)
        for b in range(B):
            flags, video = batch["frame_is_image"][b], batch["video"][b]
            if batch["is_image"][b]:  # the image in frame 0, zero padding after
                assert flags.tolist() == [True] + [False] * (T - 1)
                assert video[:, 0].abs().sum() > 0 and video[:, 1:].abs().sum() == 0
                assert 0 <= batch["label"][b] < SMALL_SPEC.num_classes and batch["caption"][b]
            else:
                assert not flags.any() and video[:, 1:].abs().sum() > 0
    val = next(iter(dm.val_dataloader()))
    assert "is_image" not in val and val["video"].shape[2] == T  # evaluation stays on videos


def test_image_samples_pack_images_of_one_class(synthetic_root):
    clip = ClipSpec(T, 1, Sampling.random)
    videos = UCF101(str(synthetic_root), split=1, train=True, clip=clip, resolution=16)
    mixed = MixedImages(videos, video_frames(videos), image_ratio=0.5, images_per_sample=3)
    random.seed(0)
    item = next(mixed[i] for i in range(len(mixed)) if mixed.is_image[i])
    assert item["frame_is_image"].tolist() == [True] * 3 + [False] * (T - 3)
    assert all(item["video"][:, k].abs().sum() > 0 for k in range(3)) and item["video"][:, 3:].abs().sum() == 0
    draws = [_Images(video_frames(videos)).draw(3)[1] for _ in range(5)]
    assert all(len({it["label"] for it in items}) == 1 for items in draws)  # one class per sample
    with pytest.raises(ValueError, match="images_per_sample must be in 1..num_frames=9"):
        MixedImages(videos, video_frames(videos), image_ratio=0.5, images_per_sample=10)


def test_appended_images_are_flagged_frames_of_the_clips_class(synthetic_root):
    dm = datamodule(synthetic_root, append_images=2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (4, 3, T + 2, 16, 16)
    assert not batch["is_image"].any()
    assert batch["frame_is_image"].tolist() == [[False] * T + [True] * 2] * 4
    ds = dm.train_set
    assert isinstance(ds, AppendedImages) and ds.same_class
    random.seed(1)
    drawn = ds.images.draw(2, label=3)[1]
    assert [it["label"] for it in drawn] == [3, 3]


def test_images_from_an_imagenet_tree(synthetic_root, tmp_path):
    imagenet_tree(tmp_path / "imagenet", truth="kaggle", mapping=True)
    dm = datamodule(synthetic_root, image_ratio=0.5, image_source="imagenet", image_root=str(tmp_path / "imagenet"))
    dm.setup("fit")
    batches = list(dm.loader(dm.train_set, shuffle=False))
    image_captions = {c for b in batches for c, img in zip(b["caption"], b["is_image"]) if img}
    assert image_captions <= {"tench, Tinca tinca", "crane"} and image_captions
    assert "images" in dm.data_health()["splits"]


def test_joint_settings_are_checked(synthetic_root):
    with pytest.raises(ValueError, match="set one of them"):
        datamodule(synthetic_root, image_ratio=0.2, append_images=1)
    with pytest.raises(ValueError, match="needs data.image_root"):
        datamodule(synthetic_root, image_ratio=0.2, image_source="imagenet")
    with pytest.raises(ValueError, match="image_source must be one of"):
        datamodule(synthetic_root, image_source="laion")


class _PoolingFirstStage(torch.nn.Module):
    """Pixels -> latents like a causal /4 time, /4 space encoder (frames 0, 4, 8, ...; 4x4 average pooling)."""

    def encode(self, video):
        return torch.nn.functional.avg_pool3d(video[:, :, ::4], (1, 4, 4))

    def normalize(self, z):
        return z

    def denormalize(self, z):
        return z

    def decode(self, z):
        return z


def test_tiny_joint_training_on_cpu_sees_is_image(synthetic_root, tmp_path, one_thread):
    import lightning as L

    from walt.modules.latent_diffusion import LatentDiffusionModule

    seen = []

    class Flags(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(batch["is_image"].clone())

    L.seed_everything(0)
    dm = VideoDataModule(dataset="ucf101", root=str(synthetic_root), num_classes=SMALL_SPEC.num_classes,
                         num_frames=17, resolution=16, batch_size=4, num_workers=0, pin_memory=False,
                         image_ratio=0.5)
    model = dict(in_channels=3, input_size=[5, 4, 4], st_window=[5, 2, 2], depth=2, hidden_size=32, num_heads=2,
                 num_classes=SMALL_SPEC.num_classes)
    module = LatentDiffusionModule(model=model, diffusion={"sampling_steps": 2}, optim={"warmup_steps": 1},
                                   first_stage=_PoolingFirstStage())
    trainer = L.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=tmp_path, callbacks=[Flags()])
    trainer.fit(module, datamodule=dm)
    flags = torch.cat(seen)
    assert trainer.global_step == 4 and flags.dtype == torch.bool and flags.any() and not flags.all()
