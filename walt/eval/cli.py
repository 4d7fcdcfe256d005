"""walt-eval <run_dir> [--untrained OUT_DIR] [ckpt=last|all|<step>,<step>] [overrides]."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from walt.config.run import RunConfig
from walt.eval.checkpoints import split_ckpt_override
from walt.eval.evaluate import evaluate_run, evaluate_untrained


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """walt-eval <run_dir> [--untrained OUT_DIR] [ckpt=...] [overrides]: metrics into <run_dir>/results.json.

    ckpt=last (default) | all | 2000,4000: the checkpoints to measure, each logged to the run's
    TensorBoard at its global step (results.json: checkpoints.<step>). Overrides (eval=i3d,
    eval.num_samples=2048, eval.weights=<file>, ...) re-compose the run's stored config; only eval,
    trainer, logger, callbacks and paths may change. --untrained OUT_DIR measures a freshly initialised
    model of the same config into OUT_DIR (the baseline a trained model must beat). Prints the metrics as
    one JSON line ({step: metrics} when several checkpoints are measured).
    """
    parser = argparse.ArgumentParser(prog="walt-eval", description=main.__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--untrained", metavar="OUT_DIR", default=None,
                        help="evaluate an untrained model of the same config into OUT_DIR")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    ckpt, overrides = split_ckpt_override(rest)
    run = RunConfig.stored(args.run_dir, overrides)
    if args.untrained:
        out = evaluate_untrained(run, args.untrained)
    else:
        out = evaluate_run(run, ckpt=ckpt)
    if "metrics" in out and len(out["checkpoints"]) == 1:
        print(json.dumps(out["metrics"]))
    else:
        print(json.dumps({step: e["metrics"] for step, e in out["checkpoints"].items()}))
    return out
