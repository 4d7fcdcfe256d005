import json
import logging
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from walt.data.datamodule import VideoDataModule
from walt.data.datasets import UCF101, VideoFolder
from walt.data.imagenet import ImageNet
from walt.data.synthetic import class_names, held_out_groups, render_clip
from walt.data.video import (ClipSpec, Reason, Sampling, VideoDecodeError, channels_first, read_clip, resize_crop,
                             to_model_range, write_video)

from conftest import SMALL_SPEC


def test_render_is_deterministic_and_moves():
    a, cap_a = render_clip(3, np.random.default_rng([0, 3, 1, 1]), 17, 32)
    b, cap_b = render_clip(3, np.random.default_rng([0, 3, 1, 1]), 17, 32)
    assert np.array_equal(a, b) and cap_a == cap_b
    assert a.shape == (17, 32, 32, 3) and a.dtype == np.uint8
    assert not np.array_equal(a[0], a[-1]), "the shape must move between first and last frame"
    shape, direction = cap_a.split(" moving ")[0].split()[-1], cap_a.split(" moving ")[1].split()[0]
    assert class_names(4)[3].lower() == f"{shape}{direction}"


def test_writing_the_same_frames_twice_gives_the_same_file(tmp_path):
    # x264's crf rate control writes other bytes for the same frames in most writes, so two generations
    # of the synthetic set would differ; write_video's fixed qp must not
    frames, _ = render_clip(0, np.random.default_rng([0, 0, 8, 1]), 17, 32)
    files = []
    for i in range(6):
        write_video(str(tmp_path / f"{i}.mp4"), frames, fps=8)
        files.append((tmp_path / f"{i}.mp4").read_bytes())
    assert all(f == files[0] for f in files)


def test_ucf_splits_partition_groups():
    for split in (1, 2, 3):
        assert held_out_groups(split, 25) == set(range(7 * split - 6, 7 * split + 1))
    held = [held_out_groups(s, 5) for s in (1, 2, 3)]
    assert all(held) and not (held[0] & held[1]) and 5 not in set().union(*held[:2])


def test_ucf_layout_reads_shapes_labels_and_splits(synthetic_root):
    clip = ClipSpec(num_frames=9, frame_stride=2, sampling=Sampling.center)
    train = UCF101(str(synthetic_root), split=1, train=True, clip=clip, resolution=16)
    test = UCF101(str(synthetic_root), split=1, train=False, clip=clip, resolution=16)
    names = class_names(SMALL_SPEC.num_classes)
    assert train.classes == names
    # split 1 holds out groups 1-2 of 5 (ceil(5*7/25) = 2 per split)
    assert len(test) == 2 * SMALL_SPEC.num_classes and len(train) == 3 * SMALL_SPEC.num_classes
    assert all("_g01_" in e.path or "_g02_" in e.path for e in test.items)
    assert not {e.path for e in train.items} & {e.path for e in test.items}
    item = train[5]
    assert item["video"].shape == (3, 9, 16, 16) and item["video"].dtype == torch.uint8  # pixels, as decoded
    path, label, caption, _ = train.items[5]
    assert names[item["label"]] in path and label == item["label"]
    captions = json.loads((synthetic_root / "captions.json").read_text())
    assert item["caption"] == captions[path.split(str(synthetic_root) + "/")[1]]
    assert item["skipped"] == 0


def test_clip_sampling_offsets():
    spec = ClipSpec(num_frames=5, frame_stride=3, sampling=Sampling.center)
    assert spec.span == 13 and spec.start(21) == 4
    rnd = ClipSpec(num_frames=5, frame_stride=3, sampling=Sampling.random)
    assert {rnd.start(14) for _ in range(50)} == {0, 1}


def test_decoded_frames_follow_the_requested_offset_and_stride(tmp_path):
    # frame t is filled with grey level 10*t, so the decoded values reveal which frames were taken
    frames = np.stack([np.full((16, 16, 3), 10 * t, np.uint8) for t in range(20)])
    path = str(tmp_path / "ramp.mp4")
    write_video(path, frames)
    clip = read_clip(path, ClipSpec(num_frames=4, frame_stride=3, sampling=Sampling.center))
    # span 10 of 20 frames, centred -> start 5: frames 5, 8, 11, 14
    np.testing.assert_allclose(clip[..., 0].mean(axis=(1, 2)), [50, 80, 110, 140], atol=3)


def test_resize_crop_and_range():
    pixels = channels_first(np.random.randint(0, 256, (3, 40, 60, 3), np.uint8))
    video = to_model_range(pixels)
    assert pixels.shape == video.shape == (3, 3, 40, 60) and video.dtype == torch.float32
    assert to_model_range(torch.tensor([0, 255], dtype=torch.uint8)).tolist() == [-1.0, 1.0]
    assert to_model_range(video) is video  # float input: already in the model's range
    out = resize_crop(video, 32, Sampling.center)
    assert out.shape == (3, 3, 32, 32) and out.min() >= -1 and out.max() <= 1
    same = resize_crop(video[:, :, :32, :32], 32, Sampling.random)
    assert torch.equal(same, video[:, :, :32, :32])
    # uint8 resizes in uint8, within one grey level of the float path
    small = resize_crop(pixels, 32, Sampling.center)
    assert small.dtype == torch.uint8 and (to_model_range(small) - out).abs().max() <= 2 / 255 + 1e-6


def ramp_video(path, frames=40, fps=10, gop=4, size=(16, 16), codec="libx264"):
    """Frame t is grey level 5*t: decoded values reveal which frames were taken."""
    write_video(str(path), np.stack([np.full((*size, 3), 5 * t, np.uint8) for t in range(frames)]), fps=fps,
                codec=codec, gop=gop)
    return str(path)


class FixedStart:
    """An rng whose randint returns a chosen offset (clamped to the allowed range)."""

    def __init__(self, start):
        self.start = start

    def randint(self, a, b):
        return min(max(self.start, a), b)


@pytest.mark.parametrize("name,codec", [("ramp.mp4", "libx264"), ("ramp.avi", "mpeg4")])
def test_seek_decoding_returns_the_frames_of_full_decoding(tmp_path, name, codec):
    path = ramp_video(tmp_path / name, codec=codec)  # keyframes every 4 frames: most starts need a seek
    spec = ClipSpec(num_frames=5, frame_stride=3, sampling=Sampling.random)
    for start in range(0, 40 - spec.span + 1):
        seek = read_clip(path, spec, FixedStart(start), seek=True)
        full = read_clip(path, spec, FixedStart(start), seek=False)
        assert np.array_equal(seek, full), f"start {start}"
        np.testing.assert_allclose(seek[..., 0].mean(axis=(1, 2)), [5 * (start + 3 * k) for k in range(5)], atol=3)


def test_decoding_at_the_target_size_matches_resizing_after(tmp_path):
    yy, xx = np.mgrid[0:96, 0:128]
    waves = np.stack([np.stack([127 + 100 * np.sin(xx / (5 + c + t) + yy / (7 + c)) for c in range(3)], -1)
                      for t in range(6)]).astype(np.uint8)
    path = str(tmp_path / "waves.mp4")
    write_video(path, waves, gop=4)
    spec = ClipSpec(6, 1, Sampling.center)
    small = read_clip(path, spec, short_side=40)
    assert small.shape == (6, 40, 53, 3)
    reference = resize_crop(to_model_range(channels_first(read_clip(path, spec))), 40, Sampling.center)
    ours = resize_crop(to_model_range(channels_first(small)), 40, Sampling.center)
    assert ours.shape == reference.shape == (3, 6, 40, 40)
    diff = (ours - reference).abs()
    assert diff.mean() < 0.01  # swscale bilinear vs torch antialiased bilinear: about one grey level


def test_clips_are_cut_inside_an_annotated_segment(tmp_path):
    path = ramp_video(tmp_path / "full.mp4", frames=40, fps=10)
    clip = read_clip(path, ClipSpec(5, 1, Sampling.center), segment=(2.0, 3.0))  # frames 20..29, centred: 22..26
    np.testing.assert_allclose(clip[..., 0].mean(axis=(1, 2)), [110, 115, 120, 125, 130], atol=3)
    with pytest.raises(VideoDecodeError, match="full.mp4: too_short"):
        read_clip(path, ClipSpec(17, 1, Sampling.center), segment=(2.0, 3.0))


def break_files(train):
    """Corrupt, empty and too-short files at items 0, 3 and 6 of a split; returns their paths."""
    corrupt, empty, short = (train.items[i].path for i in (0, 3, 6))
    with open(corrupt, "r+b") as f:  # keep the size, destroy the content
        f.write(b"\x00garbage" * 200)
    open(empty, "wb").close()
    write_video(short, np.zeros((5, 32, 32, 3), np.uint8))
    return corrupt, empty, short


def test_probe_finds_bad_files_with_their_reason(synthetic_root, tmp_path):
    root = tmp_path / "ucf"
    shutil.copytree(synthetic_root, root)
    train = UCF101(str(root), split=1, train=True, clip=ClipSpec(17, 1, Sampling.center), resolution=32)
    corrupt, empty, short = break_files(train)
    n = len(train)
    train.probe()
    assert len(train) == n - 3 and not {corrupt, empty, short} & {e.path for e in train.items}
    reasons = {path: reason for path, (reason, _) in train.health.bad.items()}
    assert reasons == {corrupt: Reason.unreadable, empty: Reason.empty, short: Reason.too_short}
    assert all(path in message for path, (_, message) in train.health.bad.items())  # every message names its file


def test_unreadable_files_are_replaced_spread_out_and_reported_once(synthetic_root, tmp_path, caplog):
    root = tmp_path / "ucf"
    shutil.copytree(synthetic_root, root)
    train = UCF101(str(root), split=1, train=True, clip=ClipSpec(17, 1, Sampling.center), resolution=32)
    corrupt, empty, short = break_files(train)  # no probe: the loader meets them
    with caplog.at_level("WARNING"):
        items = [train[i] for i in range(len(train))]
    assert set(train.failed) == {corrupt, empty, short}
    assert {train.failed[short].reason, train.failed[empty].reason} == {Reason.too_short, Reason.empty}
    assert all(it["video"].shape == (3, 17, 32, 32) for it in items)
    assert all(train.items[it["index"]].path not in train.failed for it in items)
    replaced = [it["index"] for i, it in enumerate(items) if it["index"] != i]
    assert len(replaced) == 3 and not {1, 4, 7} >= set(replaced), "replacements must not be the neighbours"
    lines = [line for it in items for line in it["bad_files"].splitlines()]
    assert len(lines) == 3 and {line.split("\t")[1] for line in lines} == {corrupt, empty, short}  # once each
    assert any(line.startswith(f"too_short\t{short}") for line in lines)
    assert sum("skipping unreadable file" in r.message for r in caplog.records) == 3
    assert all(p in " ".join(r.message for r in caplog.records) for p in (corrupt, empty, short))
    again = train[0]  # known bad in this process: replaced at once, not decoded or reported again
    assert again["bad_files"] == "" and again["index"] == items[0]["index"]


def test_missing_dataset_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="UCF-101 root not found.*data.root"):
        UCF101(str(tmp_path / "nope"), clip=ClipSpec(), resolution=32)
    dm = VideoDataModule(dataset="ucf101", root=str(tmp_path / "nope"), num_classes=101, num_workers=0)
    with pytest.raises(FileNotFoundError, match="nope"):
        dm.setup("fit")


def test_video_and_image_folders(tmp_path):
    for split in ("train", "val"):
        for cls in ("abseiling", "juggling_balls"):
            (tmp_path / "k600" / split / cls).mkdir(parents=True)
            write_video(str(tmp_path / "k600" / split / cls / "x_000010_000020.mp4"),
                        np.random.randint(0, 255, (12, 24, 32, 3), np.uint8))
            (tmp_path / "imnet" / split / cls).mkdir(parents=True)
            from torchvision.io import write_png
            write_png(torch.randint(0, 255, (3, 40, 30), dtype=torch.uint8), str(tmp_path / "imnet" / split / cls / "a.png"))
    videos = VideoFolder(str(tmp_path / "k600"), split="val", clip=ClipSpec(8, 1, Sampling.random), resolution=16)
    assert videos.classes == ["abseiling", "juggling_balls"] and videos[1]["label"] == 1
    assert videos[1]["video"].shape == (3, 8, 16, 16) and videos[1]["caption"] == "juggling balls"
    images = ImageNet(str(tmp_path / "imnet"), split="train", clip=ClipSpec(1), resolution=16)
    assert images[0]["video"].shape == (3, 1, 16, 16)


def test_datamodule_generates_and_loads_deterministic_val(tmp_path):
    spec = dict(num_classes=3, num_groups=3, num_frames=9, resolution=16)
    dm = VideoDataModule(dataset="synthetic", root=str(tmp_path / "syn"), num_classes=3, num_frames=9, resolution=16,
                         batch_size=4, num_workers=0, pin_memory=False, synthetic=spec)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (4, 3, 9, 16, 16) and batch["label"].shape == (4,)
    pixels = batch["video"]
    assert pixels.dtype == torch.uint8  # workers ship pixels; the module receives [-1, 1] after the transfer hook
    moved = dm.on_after_batch_transfer(dict(batch), 0)["video"]
    assert moved.dtype == torch.float32 and torch.equal(moved, pixels.float() / 127.5 - 1)
    assert isinstance(batch["caption"], list) and batch["skipped"].sum() == 0
    v1 = torch.cat([b["video"] for b in dm.val_dataloader()])
    v2 = torch.cat([b["video"] for b in dm.val_dataloader()])
    assert torch.equal(v1, v2)
    with pytest.raises(FileExistsError, match="another spec"):
        VideoDataModule(dataset="synthetic", root=str(tmp_path / "syn"), num_classes=3,
                        synthetic={**spec, "seed": 1}).prepare_data()
    with pytest.raises(ValueError, match="fewer than data.batch_size=64"):
        small = VideoDataModule(dataset="synthetic", root=str(tmp_path / "syn"), num_classes=3, batch_size=64,
                                num_frames=9, resolution=16, synthetic=spec)
        small.setup("fit")
        small.train_dataloader()
    shared = VideoDataModule(dataset="synthetic", root=str(tmp_path / "syn"), num_classes=3, batch_size=4,
                             num_frames=9, resolution=16, synthetic=spec)
    shared.setup("fit")
    n = len(shared.train_set)
    shared.trainer = SimpleNamespace(world_size=n // 4 + 1, global_rank=0, global_step=0)  # DDP: each share < 4
    with pytest.raises(ValueError, match=rf"has {n} clips, \d+ for each of the {n // 4 + 1} processes, fewer than data.batch_size=4"):
        shared.train_dataloader()
    with pytest.raises(ValueError, match="has 3 classes but data.num_classes=5"):
        VideoDataModule(dataset="synthetic", root=str(tmp_path / "syn"), num_classes=5, synthetic=spec).setup("fit")


def test_datamodule_with_workers_counts_bad_files_once(synthetic_root, tmp_path):
    root = tmp_path / "ucf"
    shutil.copytree(synthetic_root, root)
    victim = sorted(root.glob("*/*.mp4"))[-1]  # group 5: in the train list of split 1
    victim.write_bytes(b"")
    dm = VideoDataModule(dataset="ucf101", root=str(root), num_classes=4, resolution=32, batch_size=3,
                         num_workers=2, pin_memory=False, persistent_workers=False, probe=False, max_bad_fraction=0.2)
    dm.setup("fit")
    skipped = 0
    for _ in range(2):  # fresh workers each epoch: the file fails again in whichever worker meets it
        for batch in dm.train_dataloader():
            skipped += int(batch["skipped"].sum())
            batch = dm.on_before_batch_transfer(batch, 0)  # what the Trainer calls in the main process
            assert "bad_files" not in batch
    health = dm.data_health()
    assert skipped == 2 and health["bad_total"] == 1 and health["bad"] == {"empty": 1}
    assert health["files"] == 20 and str(victim) in health["bad_files"][0]
    state = dm.state_dict()  # goes into checkpoints: a resumed run keeps the count
    torch.save(state, tmp_path / "state.pt")
    resumed = VideoDataModule(dataset="ucf101", root=str(root), num_classes=4, probe=False, max_bad_fraction=0.2)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    resumed.setup("fit")
    assert resumed.data_health()["bad_total"] == 1
    probed = VideoDataModule(dataset="ucf101", root=str(root), num_classes=4, resolution=32, batch_size=3,
                             num_workers=0, max_bad_fraction=0.2)
    probed.setup("fit")  # the probe drops it before training: no item ever meets it
    assert probed.data_health()["splits"]["train"]["bad"] == {"empty": 1} and len(probed.train_set) == 11
