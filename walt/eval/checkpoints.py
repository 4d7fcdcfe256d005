"""Which checkpoints `ckpt=` names: last (default), all, or global steps (`ckpt=2000,4000`).

A run keeps checkpoints/last.ckpt and step checkpoints checkpoints/step{step:07d}.ckpt (how many:
callbacks.model_checkpoint.save_top_k, -1 keeps all). Each file is identified by the global step
stored inside it; last.ckpt and the step file of the same step hold the same weights, so that step is
measured once, as last.ckpt (whose numbers are also the run's top-level metrics).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from walt.runs import LAST_CKPT, checkpoint_step

CKPT_KEY = "ckpt"
STEP_FILE = re.compile(r"step(\d+)\.ckpt$")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int  # global step stored in the file
    last: bool  # the run's last.ckpt


def split_ckpt_override(args: Sequence[str], default: str = "last") -> tuple[str, list[str]]:
    """(the ckpt=... value, the other arguments): ckpt= is walt-eval's / walt-sample's, not the config's."""
    spec, rest = default, []
    for a in args:
        if a.startswith(f"{CKPT_KEY}="):
            spec = a.split("=", 1)[1]
        else:
            rest.append(a)
    return spec, rest


def run_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """Every checkpoint of a run, one per global step (last.ckpt for its step), sorted by step."""
    run_dir = Path(run_dir)
    by_step: dict[int, Checkpoint] = {}
    for path in sorted((run_dir / LAST_CKPT).parent.glob("step*.ckpt")):
        if STEP_FILE.search(path.name):
            step = checkpoint_step(path)
            by_step[step] = Checkpoint(path, step, False)
    last = run_dir / LAST_CKPT
    if last.exists():
        step = checkpoint_step(last)
        by_step[step] = Checkpoint(last, step, True)
    return [by_step[s] for s in sorted(by_step)]


def select_checkpoints(run_dir: str | Path, spec: str = "last") -> list[Checkpoint]:
    """The checkpoints `spec` names: "last", "all" or comma-separated global steps. A name that matches
    no checkpoint fails listing the run's steps."""
    found = run_checkpoints(run_dir)
    if not found:
        raise FileNotFoundError(f"no checkpoint under {Path(run_dir) / LAST_CKPT.parent}: "
                                "train the run first (walt-train)")
    spec = str(spec).strip()
    if spec == "all":
        return found
    if spec == "last":
        last = [c for c in found if c.last]
        if not last:
            raise FileNotFoundError(f"{Path(run_dir) / LAST_CKPT} does not exist; steps available: "
                                    f"{[c.step for c in found]} (ckpt=<step> or ckpt=all)")
        return last
    try:
        steps = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"ckpt={spec!r}: use last, all or comma-separated global steps, e.g. ckpt=2000,4000") from None
    by_step = {c.step: c for c in found}
    missing = [s for s in steps if s not in by_step]
    if missing or not steps:
        raise ValueError(f"ckpt={spec!r}: {Path(run_dir).name} has no checkpoint at step(s) {missing}; "
                         f"its steps: {sorted(by_step)} (or ckpt=all / ckpt=last)")
    return [by_step[s] for s in dict.fromkeys(steps)]
