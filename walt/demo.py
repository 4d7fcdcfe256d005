"""walt-demo: the embedded-default job on a CPU laptop (the README's run command).

Stages run in order and each one is skipped when its output already exists, so an interrupted
demo resumes where it stopped. Overrides are walt-train's (e.g. `walt-demo paths.output_dir=/tmp/o`).
"""
from __future__ import annotations

import logging
import sys
import time

from hydra.utils import instantiate

from walt.cli import compose_config

log = logging.getLogger("walt.demo")


def stage_data(overrides: list[str]) -> dict:
    """Generate the synthetic dataset (UCF-101 layout) and read one batch through the DataModule."""
    cfg = compose_config(overrides)
    dm = instantiate(cfg.data, _convert_="all")
    start = time.perf_counter()
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    return {
        "root": dm.root,
        "train_clips": len(dm.train_set),
        "val_clips": len(dm.val_set),
        "classes": dm.train_set.classes,
        "batch_video_shape": list(batch["video"].shape),
        "example_caption": batch["caption"][0],
        "seconds": round(time.perf_counter() - start, 1),
    }


STAGES = {"data": stage_data}


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    overrides = sys.argv[1:] if argv is None else argv
    for name, stage in STAGES.items():
        log.info("stage %s: %s", name, stage.__doc__.strip().splitlines()[0])
        summary = stage(overrides)
        for key, value in summary.items():
            print(f"  {name}.{key}: {value}")
