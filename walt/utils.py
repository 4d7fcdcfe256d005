"""Small helpers shared across layers: plain containers and checked dataclass construction for the typed
configs, the launch rank, the one float-video -> uint8 conversion, the one seed-mixing formula and the
Refused error kind."""
from __future__ import annotations

import dataclasses
import enum
import typing
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import torch


def first_line(err: BaseException, default: str | None = None) -> str:
    """The first line of an error's message (its type's name, or `default`, when the message is empty)."""
    return (str(err).strip().splitlines() or [type(err).__name__ if default is None else default])[0]


class Refused(RuntimeError):
    """A run the suite will not start or continue as asked, with nothing changed: its directory is in use, it
    was started with another config, too many of its files are bad. walt-train prints one line and exits
    with status 3 (a bad config: 2; a crash: 1; interrupted and saved: 128 + signal)."""


class ConfigChanged(Refused, ValueError):
    """A run directory resumed with a config it cannot take (a Refused that is also a ValueError)."""


def plain(value: Any) -> Any:
    """OmegaConf containers, dataclasses, tuples and enums -> plain dicts, lists and primitives (hparams-safe)."""
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(value, "_metadata"):  # an OmegaConf container
        from omegaconf import OmegaConf

        value = OmegaConf.to_container(value, resolve=True, enum_to_str=True)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
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


def _matches(value: Any, hint: Any) -> bool:
    """Whether `value` (a plain container value) fits the type hint `hint` (loosely: ints pass as floats,
    lists as tuples/sequences; nested dataclasses are checked when they are built)."""
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, (Mapping, hint))
    seq = (list, tuple, typing.Sequence, typing.List, typing.Tuple, typing.collections.abc.Sequence)
    if origin in seq or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        inner = [a for a in args if a is not Ellipsis]
        return not inner or all(_matches(v, inner[0] if len(inner) == 1 or Ellipsis in args else inner[min(i, len(inner) - 1)])
                                for i, v in enumerate(value))
    if origin in (dict, typing.Mapping, typing.collections.abc.Mapping) or hint in (dict,):
        return isinstance(value, Mapping)
    return True  # anything else is checked by the dataclass itself


def check_types(cls, values: Mapping[str, Any], where: str) -> None:
    """ValueError naming the key, the value and the expected type when a value does not fit its field."""
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        hint = hints.get(name, Any)
        if not _matches(value, hint):
            expected = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
            raise ValueError(f"{where}.{name}={value!r} is not a valid {expected}")


def from_dict(cls, values: Any, where: str):
    """Dataclass `cls` from a (possibly OmegaConf) mapping; unknown keys and values of the wrong type fail
    naming the key and what is valid."""
    if isinstance(values, cls):
        return values
    values = plain(values or {})
    check_keys(cls, values, where)
    check_types(cls, values, where)
    return cls(**values)


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes in bf16 natively (x86 flags avx512_bf16 or amx_bf16 in /proc/cpuinfo).

    Without them torch emulates bf16 matmuls and convolutions: a bf16-autocast training step of the
    transformer was 27x slower than fp32 on a 2-core AMD EPYC without avx512_bf16 (49 s vs 1.8 s).
    False where the file is missing (not Linux, or not x86: no claim is made there)."""
    try:
        with open(cpuinfo) as f:
            flags = {w for line in f if line.startswith("flags") for w in line.split(":", 1)[1].split()}
    except OSError:
        return False
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def launch_rank() -> int:
    """This process's global rank as its launcher set it, before any Trainer or process group exists:
    torchrun's RANK, Slurm's SLURM_PROCID (srun / submitit with tasks_per_node > 1), or Lightning's
    LOCAL_RANK / NODE_RANK of the processes its `ddp` launcher starts (the first process has none of them
    set until it launches the others; then LOCAL_RANK + NODE_RANK, zero only on the first process).
    0 = the process that owns the run directory; any other value = a process that follows it."""
    import os

    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    local, node = os.environ.get("LOCAL_RANK", "0"), os.environ.get("NODE_RANK", "0")
    return int(local) + int(node) if local.isdigit() and node.isdigit() else 0


def to_uint8(videos: torch.Tensor) -> torch.Tensor:
    """Pixels in [-1, 1] -> uint8 0..255 (same shape), clamped and rounded, as a saved video holds them: the
    one conversion, so metric inputs (C3D, Inception, StyleGAN-V I3D), grids and written files agree."""
    import torch

    return ((videos.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def mix_seed(*parts: int, base: int = 1_000_003) -> int:
    """The one seed of a random stream named by several integers (run seed, epoch, sample index, stage, ...),
    so that every stream is a function of its coordinates alone, whatever ran before it.

    The parts are 32-bit words (a negative one in two's complement) read as digits in `base`, reduced to the
    64 bits torch and Python generators take. The prime default keeps small coordinates apart (the train
    order of (seed, epoch), the replacement of a bad file (index, attempt), the cascade's streams);
    base=2**32 packs two words exactly (walt-eval's (seed, sample index))."""
    seed = 0
    for part in parts:
        seed = seed * base + (int(part) & 0xFFFFFFFF)
    return seed & 0xFFFFFFFFFFFFFFFF
