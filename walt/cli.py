"""Command-line entry points. All of them read the same config tree (experiments/), so a data
or model override means the same thing to every command.

    walt-train [overrides]            train one run (Hydra app: -m for sweeps, launchers, --help)
    walt-data synthetic [overrides]   write the synthetic moving-shapes dataset
    walt-data encode [overrides]      write the latent cache of data.* for stage 2
    walt-info [overrides]             one JSON line: parameter counts and shapes, no data touched
    walt-eval <run dir> [overrides]   generate samples, compute FVD/FID/IS-style metrics, store them
    walt-sample <run dir> [options]   write sample grids (mp4, gif)
    walt-tables <runs dir>            the papers' tables from finished runs (analysis package)

A bad config (unknown key, wrong value, missing weights file) prints one line naming the key and the
valid choices and exits with status 2; WALT_DEBUG=1 shows the traceback.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Callable

import hydra
from hydra.errors import CompactHydraException
from omegaconf import DictConfig

from walt.config import CONFIG_DIR, RunConfig, register
from walt.config.sweep import MULTIRUN_FLAGS
from walt.utils import Refused, first_line

register()
log = logging.getLogger("walt")
EXIT_CONFIG = 2
EXIT_REFUSED = 3


def config_error_types() -> tuple[type, ...]:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from walt.runs import UnsafeFile
    from walt.weights import WeightsError

    return (ValueError, KeyError, FileNotFoundError, WeightsError, HydraException, OmegaConfBaseException, Refused,
            UnsafeFile)


def one_line_errors(prog: str, kinds: tuple[type, ...] | None = None) -> Callable:
    """Decorator: a config error becomes one line on stderr and exit status 2, a refusal (walt.utils.Refused:
    run directory in use, started with another config, too many bad files) one line and status 3
    (WALT_DEBUG=1: the traceback). kinds: the error types handled (default: config_error_types())."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except kinds or config_error_types() as err:
                if os.environ.get("WALT_DEBUG"):
                    raise
                refused = isinstance(err, Refused)
                print(f"{prog}: {'refused' if refused else 'error'}: {error_line(err)}", file=sys.stderr)
                sys.exit(EXIT_REFUSED if refused else EXIT_CONFIG)
        return run
    return wrap


def error_line(err: BaseException) -> str:
    """One line: the error's first line, plus the first line of its cause (Hydra wraps the real reason)."""
    first = first_line(err)
    reason = first_line(err.__cause__, default="") if err.__cause__ is not None else ""
    return f"{first} ({reason})" if reason and reason not in first else first


def setup_logging() -> None:
    """One handler on the root logger (walt.pipeline.fit keeps Lightning's messages to that one handler)."""
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s", force=True)


class SweepJobFailed(CompactHydraException):
    """A -m job's error; Hydra prints the message alone (exit status 1), the job's log keeps the traceback."""


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _train(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from walt.pipeline import preflight
    from walt.pipeline.train import train as train_run

    run = one_line_errors("walt-train")(RunConfig.from_hydra)(cfg, list(HydraConfig.get().overrides.task))
    if cfg.dry_run:
        print(json.dumps({"run_dir": str(run.run_dir), "stage": run.stage, "seed": run.seed,
                          "overrides": [o for o in run.overrides if not o.startswith("dry_run")]}))
        return
    one_line_errors("walt-train")(preflight.check)(run)
    try:
        one_line_errors("walt-train", kinds=(Refused,))(train_run)(run)  # a crash keeps its traceback (exit 1)
    except Exception as err:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        # a sweep job: the traceback into the job's log (on Slurm, far from the console), one line to the sweep
        log_file = Path(HydraConfig.get().runtime.output_dir) / f"{HydraConfig.get().job.name}.log"
        log.exception("sweep job %s failed", run.run_dir)
        raise SweepJobFailed(f"walt-train: error: sweep job {run.run_dir} failed: {error_line(err)} "
                             f"(traceback: {log_file})") from None


def train() -> None:
    """walt-train: Hydra app; `walt-train --help` lists config groups and the composed config.

    A single run (no flags such as -m or --help) is composed and checked first (RunConfig.validate, then
    walt.pipeline.preflight: this machine and the files the config names), before Hydra creates its run
    directory, so a bad override gets one line and exit status 2; a -m sweep composes and checks every distinct
    job (walt.config.sweep) before the first is launched."""
    args = sys.argv[1:]
    if not any(a.startswith("-") for a in args):
        one_line_errors("walt-train")(_check_single_run)(args)
    elif any(a in MULTIRUN_FLAGS for a in args) and not any(a in ("-h", "--help", "--cfg", "-c", "--info") for a in args):
        one_line_errors("walt-train")(_check_sweep)(args)
        os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # a sweep's job errors reach sweep_error, not Hydra's printer
        try:
            _train()
        except Exception as err:
            print(sweep_error(err), file=sys.stderr)
            sys.exit(1)
        return
    _train()


def sweep_error(err: Exception) -> str:
    """One line for a sweep that ended on a job's error (SweepJobFailed, raised in the job) or on a Slurm job that
    ended without a result (submitit's UncompletedJobError: cancelled, killed, node failure); others re-raised."""
    from submitit.core.utils import UncompletedJobError  # a dependency (hydra-submitit-launcher); imported late

    if isinstance(err, SweepJobFailed):
        return str(err)
    if not isinstance(err, UncompletedJobError):
        raise err
    text = str(err)
    job, state = re.search(r"^Job (\S+)", text), re.search(r"\(state: ([^)]*)\)", text)
    path = re.search(r"with path (\S+)_result\.pkl", text)
    return (f"walt-train: error: Slurm job {job.group(1) if job else '?'} ended without a result (state "
            f"{state.group(1) if state else 'unknown'}; its log: {path.group(1) + '_log.err' if path else '?'}); the "
            f"sweep's other jobs keep running (squeue). re-run the same command to finish the sweep: finished runs "
            f"are skipped, interrupted ones resume from their last checkpoint")


def _check_sweep(args: list[str]) -> None:
    """Every distinct job of a `-m` sweep composed and pre-flight checked before Hydra launches the first."""
    from walt.config.sweep import check_sweep
    from walt.pipeline import preflight

    dry = any(a.split("=", 1)[0] == "dry_run" and a.split("=", 1)[1].lower() == "true" for a in args)
    check_sweep(args, None if dry else functools.partial(preflight.check, run_dir=False))  # job dirs: per job


def _check_single_run(args: list[str]) -> None:
    """Compose and type a single run's config, then the pre-flight checks (unless dry_run=true)."""
    from walt.config import compose
    from walt.pipeline import preflight

    cfg = compose(args)
    run = RunConfig.from_hydra(cfg, args)
    if not cfg.dry_run:
        preflight.check(run)


def compose_run(overrides: list[str]) -> RunConfig:
    """The typed walt-train config for `overrides`, composed without starting a Hydra run."""
    return RunConfig.load(overrides)


def config_groups() -> dict[str, list[str]]:
    """Config groups of the tree and their options, for --help texts."""
    root = Path(CONFIG_DIR)
    return {d.name: sorted(f.stem for f in d.glob("*.yaml")) for d in sorted(root.iterdir()) if d.is_dir()}


def _subcommand_cli(prog: str, commands: dict, argv: list[str] | None) -> None:
    """`prog <command> [overrides]`: commands take the typed run config."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        lines = [f"usage: {prog} <command> [key=value ...]", "", "commands:"]
        lines += [f"  {name:<10} {fn.__doc__.strip().splitlines()[0]}" for name, fn in commands.items()]
        lines += ["", "Overrides are walt-train's; config groups (group=option):"]
        lines += [f"  {group}: {', '.join(options)}" for group, options in config_groups().items()]
        print("\n".join(lines))
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else EXIT_CONFIG)
    setup_logging()
    one_line_errors(prog)(lambda: commands[argv[0]](compose_run(argv[1:])))()


def _data_synthetic(run: RunConfig) -> None:
    """Write the synthetic moving-shapes dataset configured by data.synthetic under data.root."""
    if run.data.dataset != "synthetic":
        raise ValueError(f"walt-data synthetic needs data=synthetic, got data.dataset={run.data.dataset.value}")
    dm = run.data.datamodule()
    dm.prepare_data()
    print(json.dumps({"root": dm.root, "spec": dm.synthetic_spec.__dict__}))


def _data_encode(run: RunConfig) -> None:
    """Encode data.* (train and val) with the first stage into a latent cache for stage 2.

    first_stage_ckpt=auto (default) finds or trains the autoencoder for this config. Train stage 2
    from the cache with data.latent_cache=<printed root> (or data.latent_cache=auto).
    """
    from walt.pipeline import first_stage

    ckpt = first_stage.resolve(run)
    if not ckpt:
        raise ValueError("walt-data encode needs a first stage: first_stage_ckpt=auto or a checkpoint path")
    root = first_stage.encode_latents(run, ckpt)
    print(json.dumps({"latent_cache": str(root), "first_stage_ckpt": ckpt}))


DATA_COMMANDS = {"synthetic": _data_synthetic, "encode": _data_encode}


def data(argv: list[str] | None = None) -> None:
    """walt-data: dataset preparation."""
    _subcommand_cli("walt-data", DATA_COMMANDS, argv)


def tables(argv: list[str] | None = None) -> None:
    """walt-tables: collect finished runs into the papers' tables (Markdown, LaTeX, PNG)."""
    from analysis.cli import main

    sys.exit(main(argv))


def info(argv: list[str] | None = None) -> None:
    """walt-info [overrides]: one JSON line describing the configured models, built on the meta device.

    autoencoder_params, input_shape and latent_shape ([T, H, W, C]; latent from a meta forward
    pass, so it is what the encoder really produces), params (stage-2 trainable), tokens (per
    sample), blocks and the token windows of each block kind.
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(info.__doc__)
        return
    print(json.dumps(one_line_errors("walt-info")(lambda: describe(compose_run(argv)))()))


def describe(run: RunConfig) -> dict:
    """The walt-info record of a run config (no data read, no weights allocated)."""
    import torch

    from walt.autoencoder import CausalAutoencoder
    from walt.transformer.backbone import count_params, tokens_per_sample

    ae_cfg, model = run.autoencoder, run.model
    frames, (height, width) = run.clip_frames, run.data.frame_size
    with torch.device("meta"):
        ae = CausalAutoencoder(ae_cfg)
        latent = ae.encode(torch.empty(1, ae_cfg.in_channels, frames, height, width))
    _, c, t, h, w = latent.shape
    return {
        "stage": run.stage,
        "autoencoder_params": sum(p.numel() for p in ae.parameters()),
        "input_shape": [frames, height, width, ae_cfg.in_channels],
        "latent_shape": [t, h, w, c],
        "params": count_params(model),
        "tokens": tokens_per_sample(model),
        "blocks": list(model.blocks),
        "windows": {kind: list(model.window(kind)) for kind in dict.fromkeys(model.blocks)},
    }


def evaluate(argv: list[str] | None = None) -> None:
    """walt-eval <run_dir> [--untrained OUT_DIR] [ckpt=...] [overrides]: metrics of a run into its results.json."""
    from walt.eval.cli import main

    setup_logging()
    one_line_errors("walt-eval")(main)(argv)


def sample(argv: list[str] | None = None) -> None:
    """walt-sample <run_dir> [-n N] [--out DIR] [ckpt=...] ...: mp4/gif sample grids from a checkpoint."""
    from walt.sample import main

    setup_logging()
    one_line_errors("walt-sample")(main)(argv)
