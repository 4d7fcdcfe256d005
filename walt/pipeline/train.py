"""walt-train's entry: a RunConfig -> (first stage for stage 2) -> trained, evaluated run directory."""
from __future__ import annotations

import logging
from pathlib import Path

from walt import runs
from walt.config.run import RunConfig
from walt.pipeline import first_stage
from walt.pipeline.fit import train_stage

log = logging.getLogger(__name__)
FIRST_STAGE_PREFIX = "first_stage/"


def train(run: RunConfig) -> dict:
    """Train one run; returns the results written to <run_dir>/results.json."""
    if runs.is_complete(run.run_dir) and not run.force:  # the skip, with its message; `auto` compared resolved
        return train_stage(first_stage.resolved(run) if run.stage != "autoencoder" else run)
    if run.stage == "autoencoder":
        return train_stage(run)
    # stage 2 and the cascade stages; before config.yaml, so the run records the checkpoint it used
    run = first_stage.prepare(run)
    extra = {}
    if run.first_stage_ckpt:
        # the autoencoder's metrics travel with the stage-2 run, prefixed (Table 3f's rFVD column)
        ae = runs.read_results(Path(run.first_stage_ckpt).parents[1]).get("metrics", {})
        extra = {"first_stage": {"ckpt": run.first_stage_ckpt, "metrics": ae},
                 "metrics": {f"{FIRST_STAGE_PREFIX}{k}": v for k, v in ae.items()}}
    return train_stage(run, extra_results=extra)
