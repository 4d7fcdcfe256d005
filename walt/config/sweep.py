"""The jobs of a `walt-train -m` sweep, composed before any is launched.

Hydra's basic sweeper launches the cartesian product of the sweep overrides on the command line and the
preset's `hydra.sweeper.params` (a command-line value replaces the preset's for the same key), and checks
each job only when it starts: on a cluster a typo in the last value surfaces hours in. `check_sweep`
composes every distinct job first (the replicate axes seed / first_stage_seed aside: they change no
setting that can be invalid) and raises on the first bad one.
"""
from __future__ import annotations

import itertools
from typing import Callable, Optional, Sequence

REPLICATE_KEYS = ("seed", "first_stage_seed")
MULTIRUN_FLAGS = ("-m", "--multirun")


def _parse(overrides: Sequence[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(overrides))


def sweep_points(args: Sequence[str]) -> list[list[str]]:
    """The overrides of every job `walt-train -m <args>` launches (launcher keys hydra/... and hydra.* left out)."""
    from walt.config.run import compose

    args = [a for a in args if a not in MULTIRUN_FLAGS]
    plain = [o.input_line for o in _parse(args) if not o.is_sweep_override()]
    cfg = compose(plain, hydra_config=True)
    given = {o.get_key_element(): o for o in _parse(args) if o.is_sweep_override()}
    preset = _parse([f"{k}={v}" for k, v in (cfg.hydra.sweeper.params or {}).items()])
    axes = []
    for override in [*(p for p in preset if p.get_key_element() not in given), *given.values()]:
        key = override.get_key_element()
        axes.append([f"{key}={v}" for v in override.sweep_string_iterator()] if override.is_sweep_override()
                    else [override.input_line])
    fixed = [a for a in plain if not a.startswith(("hydra/", "hydra."))]
    return [[*fixed, *point] for point in itertools.product(*axes)]


def check_sweep(args: Sequence[str], check: Optional[Callable] = None) -> int:
    """Compose (RunConfig.load) and `check` every distinct job of the sweep; returns how many were checked.
    Raises the first job's error, naming its overrides."""
    from walt.config.run import RunConfig, override_key
    from walt.utils import first_line

    seen, count = set(), 0
    for point in sweep_points(args):
        key = tuple(o for o in point if override_key(o) not in REPLICATE_KEYS)
        if key in seen:
            continue
        seen.add(key)
        try:
            run = RunConfig.load(point)
            if check is not None:
                check(run)
        except Exception as err:  # one line naming the job (WALT_DEBUG=1 shows the cause's traceback)
            job = " ".join(o for o in key if o not in args) or "(the only one)"
            raise ValueError(f"sweep job {job}: {first_line(err)}; no job was launched") from err
        count += 1
    return count
