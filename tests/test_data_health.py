"""Partial and bad datasets: missing files dropped with one line, bad files counted once per file, early failure."""
import logging
import shutil

import lightning as L
import numpy as np
import pytest
import torch

from walt.data.datamodule import VideoDataModule
from walt.data.health import BadDatasetError
from walt.data.video import write_video


@pytest.fixture
def ucf(synthetic_root, tmp_path):
    root = tmp_path / "ucf"
    shutil.copytree(synthetic_root, root)
    return root


def datamodule(root, **kw):
    args = dict(dataset="ucf101", root=str(root), num_classes=4, num_frames=17, resolution=16, batch_size=2,
                num_workers=0, pin_memory=False)
    return VideoDataModule(**{**args, **kw})


def test_partial_ucf101_tree_builds_and_loads(ucf, caplog):
    listed = (ucf / "ucfTrainTestlist" / "trainlist01.txt").read_text().split()[::2]
    for rel in listed[4:]:  # a partial download: 4 of the 12 train files arrived
        (ucf / rel).unlink()
    dm = datamodule(ucf)
    with caplog.at_level(logging.INFO):
        dm.setup("fit")
    assert "trainlist01.txt" in caplog.text and "12 listed, 4 present, 8 missing" in caplog.text
    assert len(dm.train_set) == 4 and {e.path for e in dm.train_set.items} == {str(ucf / r) for r in listed[:4]}
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (2, 3, 17, 16, 16)
    health = dm.data_health()
    assert health["splits"]["train"] == {"files": 4, "listed": 12, "missing": 8, "bad_total": 0, "bad": {},
                                         "bad_files": []}
    assert health["missing"] == 8 and health["files"] == 4 + 8  # + the complete test list


def test_half_bad_dataset_fails_at_setup_listing_the_files(ucf):
    files = sorted(ucf.glob("*/*.mp4"))
    for i, path in enumerate(files[::2]):
        if i % 2:
            path.write_bytes(b"")
        else:
            write_video(str(path), np.zeros((5, 16, 16, 3), np.uint8))
    with pytest.raises(BadDatasetError) as err:
        datamodule(ucf).setup("fit")
    message = str(err.value)
    assert "ucf101 trainlist01.txt" in message and "data.max_bad_fraction=1.0%" in message
    assert "empty" in message and "too_short" in message
    bad_train = [p for p in files[::2] if "_g01_" not in p.name and "_g02_" not in p.name]
    assert str(bad_train[0]) in message
    lenient = datamodule(ucf, max_bad_fraction=0.6)
    lenient.setup("fit")
    health = lenient.data_health()
    assert health["bad_total"] == 10 and sum(health["bad"].values()) == 10 and len(health["bad_files"]) == 10


def test_class_missing_from_classind_names_both_files(ucf):
    ind = ucf / "ucfTrainTestlist" / "classInd.txt"
    ind.write_text("\n".join(ind.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(ValueError, match=r"trainlist01.txt line \d+ .* is not in .*classInd.txt"):
        datamodule(ucf).setup("fit")


class _Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def training_step(self, batch, batch_idx):
        assert "bad_files" not in batch  # the DataModule's hook took it out
        return (self.w - batch["video"].mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_files_failing_during_training_stop_the_run_once_too_many(ucf):
    files = sorted(ucf.glob("*/*.mp4"))
    for path in files[1::2]:
        path.write_bytes(b"\x00garbage" * 100)
    dm = datamodule(ucf, probe=False)  # nothing found at setup: the loader meets them
    trainer = L.Trainer(max_steps=20, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    with pytest.raises(BadDatasetError, match=r"unreadable.*First bad files:\n  .*\.mp4: unreadable"):
        trainer.fit(_Tiny(), datamodule=dm)
    health = dm.data_health()
    assert health["bad"] == {"unreadable": health["bad_total"]} and health["bad_total"] >= 1
