"""The real on-disk layouts of Kinetics-600 and ImageNet, on tiny generated trees."""
import csv
import logging

import numpy as np
import pytest
from PIL import Image

from walt.data.datamodule import VideoDataModule
from walt.data.imagenet import ImageNet, imagenet_classes
from walt.data.kinetics import KineticsCSV, kinetics, kinetics_classes
from walt.data.video import ClipSpec, Sampling, write_video

LABELS = ["juggling balls", "abseiling", "zumba"]  # sorted index: abseiling 0, juggling balls 1, zumba 2
FPS = 8


def ramp(path, frames=32):
    """Frame t has grey level 5*t (full videos: 4 s at 8 fps)."""
    write_video(str(path), np.stack([np.full((16, 24, 3), 5 * t, np.uint8) for t in range(frames)]), fps=FPS, gop=4)


def write_csv(path, rows, split_column="train"):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        w.writerows([[label, yid, start, end, split_column] for label, yid, start, end in rows])


def kinetics_tree(root, class_folders: bool, trimmed: bool, val_labels=LABELS):
    """train: two clips per class (one absent from disk for 'zumba'), val: one per class."""
    train = [(label, f"yt{i}-{j}_x", 1, 3) for i, label in enumerate(LABELS) for j in range(2)]
    val = [(label, f"val{i}", 1, 3) for i, label in enumerate(val_labels)]
    write_csv(root / "annotations" / "train.csv", train, "train")
    write_csv(root / "annotations" / "validate.csv", val, "validate")
    for split, rows in (("train", train[:-1]), ("val", val)):  # the last train row is not downloaded
        for label, yid, start, end in rows:
            folder = root / split / (label.replace(" ", "_") if class_folders else "")
            folder.mkdir(parents=True, exist_ok=True)
            if trimmed:
                write_video(str(folder / f"{yid}_{start:06d}_{end:06d}.mp4"),
                            np.full((16, 16, 24, 3), 128, np.uint8), fps=FPS)
            else:
                ramp(folder / f"{yid}.mp4")
    return train


@pytest.mark.parametrize("class_folders,trimmed", [(False, True), (True, False)])
def test_kinetics_from_annotation_csvs(tmp_path, caplog, class_folders, trimmed):
    rows = kinetics_tree(tmp_path, class_folders, trimmed)
    classes = kinetics_classes(str(tmp_path), ["train", "val"])
    assert classes == sorted(LABELS)
    clip = ClipSpec(5, 1, Sampling.center)
    with caplog.at_level(logging.INFO):
        train = kinetics(str(tmp_path), "train", classes, clip=clip, resolution=16)
    assert isinstance(train, KineticsCSV)
    assert "6 listed, 5 present, 1 missing" in caplog.text and rows[-1][1] in caplog.text
    assert [e.label for e in train.items] == [1, 1, 0, 0, 2]
    assert train.items[0].caption == "juggling balls"
    item = train[0]
    assert item["video"].shape == (3, 5, 16, 16) and item["label"] == 1
    if not trimmed:  # full videos: the clip is cut inside [1 s, 3 s) = frames 8..23, centred -> 13..17
        assert all(e.segment == (1.0, 3.0) for e in train.items)
        levels = item["video"][0].float().mean(dim=(1, 2))  # grey level per frame
        np.testing.assert_allclose(levels.numpy(), [65, 70, 75, 80, 85], atol=3)
    val = kinetics(str(tmp_path), "val", classes, clip=clip, resolution=16)
    assert len(val) == 3 and sorted(e.label for e in val.items) == [0, 1, 2]


def test_kinetics_datamodule_names_the_split_missing_a_class(tmp_path):
    kinetics_tree(tmp_path, class_folders=False, trimmed=True, val_labels=LABELS[:2])
    dm = VideoDataModule(dataset="kinetics600", root=str(tmp_path), num_classes=3, num_frames=5, resolution=16,
                         batch_size=2, num_workers=0)
    with pytest.raises(ValueError, match=r"kinetics600 'val' split \(.*validate.csv\) names 2 of the 3 classes; "
                                         r"missing: zumba"):
        dm.setup("fit")
    dm = VideoDataModule(dataset="kinetics600", root=str(tmp_path), num_classes=600, num_frames=5, resolution=16,
                         num_workers=0)
    with pytest.raises(ValueError, match=r"kinetics600 'train' split \(.*train.csv\) has 3 classes but "
                                         r"data.num_classes=600"):
        dm.setup("fit")


def test_kinetics_class_folders_without_csv_name_the_split(tmp_path):
    for split, labels in (("train", ["a", "b"]), ("val", ["a"])):
        for label in labels:
            (tmp_path / split / label).mkdir(parents=True)
            write_video(str(tmp_path / split / label / "x.mp4"), np.zeros((8, 16, 16, 3), np.uint8))
    dm = VideoDataModule(dataset="kinetics600", root=str(tmp_path), num_classes=2, num_frames=5, resolution=16,
                         batch_size=1, num_workers=0)
    with pytest.raises(ValueError, match=r"'val' split \(.*val\) names 1 of the 2 classes; missing: b"):
        dm.setup("fit")


WNIDS = ["n01000001", "n02000002"]
NAMES = {"n01000001": "tench, Tinca tinca", "n02000002": "crane"}


def jpeg(path, seed, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def imagenet_tree(root, truth: str, mapping: bool):
    """train/<wnid>/ with 2 images each; flat val of 4 images labelled n02, n01, n01, n02 (image 4 missing)."""
    for w in WNIDS:
        for k in range(2):
            jpeg(root / "train" / w / f"{w}_{k}.JPEG", k)
    val_wnids = ["n02000002", "n01000001", "n01000001", "n02000002"]
    for n in range(1, 4):
        jpeg(root / "val" / f"ILSVRC2012_val_{n:08d}.JPEG", 10 + n, size=(64, 48))
    if truth == "kaggle":
        with open(root / "LOC_val_solution.csv", "w") as f:
            f.write("ImageId,PredictionString\n")
            f.writelines(f"ILSVRC2012_val_{n:08d},{w} 1 2 30 40 {w} 3 4 10 20\n" for n, w in enumerate(val_wnids, 1))
    else:  # devkit: ids in the devkit's own order (1 = n02..., 2 = n01...), mapped by meta.mat
        from scipy.io import savemat

        data = root / "ILSVRC2012_devkit_t12" / "data"
        data.mkdir(parents=True)
        ids = {"n02000002": 1, "n01000001": 2}
        (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{ids[w]}\n" for w in val_wnids))
        dt = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O")]
        synsets = np.array([(1, "n02000002", "crane", "", 0), (2, "n01000001", "tench, Tinca tinca", "", 0),
                            (1001, "n00000000", "entity", "", 2)], dtype=dt)
        savemat(str(data / "meta.mat"), {"synsets": synsets.reshape(-1, 1)})
    if mapping:
        (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} {NAMES[w]}\n" for w in WNIDS))


@pytest.mark.parametrize("truth,mapping", [("kaggle", True), ("kaggle", False), ("devkit", False)])
def test_imagenet_flat_val_with_ground_truth(tmp_path, caplog, truth, mapping):
    imagenet_tree(tmp_path, truth, mapping)
    classes = imagenet_classes(str(tmp_path), ["train", "val"])
    assert classes == WNIDS
    with caplog.at_level(logging.INFO):
        val = ImageNet(str(tmp_path), "val", classes, clip=ClipSpec(1), resolution=16)
    assert "4 listed, 3 present, 1 missing" in caplog.text and "ILSVRC2012_val_00000004" in caplog.text
    assert [e.label for e in val.items] == [1, 0, 0]
    named = mapping or truth == "devkit"  # the devkit's meta.mat carries the names too
    assert [e.caption for e in val.items] == ([NAMES[w] for w in ("n02000002", "n01000001", "n01000001")] if named
                                              else ["n02000002", "n01000001", "n01000001"])
    item = val[0]
    assert item["video"].shape == (3, 1, 16, 16) and item["label"] == 1
    train = ImageNet(str(tmp_path), "train", classes, clip=ClipSpec(1), resolution=16)
    assert [e.label for e in train.items] == [0, 0, 1, 1] and train[3]["video"].shape == (3, 1, 16, 16)
    dm = VideoDataModule(dataset="imagenet", root=str(tmp_path), num_classes=2, num_frames=1, resolution=16,
                         batch_size=2, num_workers=0, pin_memory=False)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["video"].shape == (2, 3, 1, 16, 16) and batch["label"].tolist() == [1, 0]


def test_imagenet_flat_val_without_ground_truth_says_what_to_add(tmp_path):
    jpeg(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG", 0)
    with pytest.raises(FileNotFoundError, match="LOC_val_solution.csv.*ILSVRC2012_validation_ground_truth.txt"):
        ImageNet(str(tmp_path), "val", clip=ClipSpec(1), resolution=16)
