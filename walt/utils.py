"""Small helpers shared by the typed configs."""
from __future__ import annotations

import dataclasses
import enum
from typing import Any, Mapping


def plain(value: Any) -> Any:
    """OmegaConf containers, tuples and enums -> plain dicts, lists and primitives (hparams-safe)."""
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(value, "_metadata"):  # an OmegaConf container
        from omegaconf import OmegaConf

        value = OmegaConf.to_container(value, resolve=True, enum_to_str=True)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def check_keys(cls, values: Mapping[str, Any], where: str) -> None:
    """ValueError naming the valid keys when `values` has keys that are not fields of dataclass `cls`."""
    names = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown {where} key(s) {unknown}; valid keys: {names}")


def from_dict(cls, values: Any, where: str):
    """Dataclass `cls` from a (possibly OmegaConf) mapping; unknown keys fail naming the valid ones."""
    values = plain(values or {})
    check_keys(cls, values, where)
    return cls(**values)
