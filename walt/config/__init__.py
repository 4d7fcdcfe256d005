"""The config layer: Hydra's schema (schema.py), the eval group (eval.py) and the one raw -> typed
conversion (run.py: RunConfig.from_hydra)."""
from walt.config.eval import EvalConfig
from walt.config.run import RunConfig, compose
from walt.config.schema import CONFIG_DIR, SWEEPS_DIR, OptimConfig, register

__all__ = ["CONFIG_DIR", "EvalConfig", "OptimConfig", "RunConfig", "SWEEPS_DIR", "compose", "register"]
