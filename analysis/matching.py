"""Which runs belong to a table row: a row is a spec {config key: expected value}.

Values on disk come in several spellings (an ST window is [5, 8, 8] in YAML, (5, 8, 8) after
collection, "5x8x8" in the paper; numbers may be ints or floats), so matching normalises both
sides instead of comparing with `==`; a list of names (tags) matches any name it holds. A key a run lacks (older config, other stage) never matches
unless the spec says what the absent key means with `DefaultsTo`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence, Union

MISSING = object()
_WINDOW = re.compile(r"^[\[(]?\s*\d+(\s*[,x×]\s*\d+)*\s*[\])]?$")


@dataclass(frozen=True)
class DefaultsTo:
    """Expected `value`, and a run whose config lacks the key counts as having `value`."""

    value: Any


# a row spec: all keys must match (dict), or any of several such dicts (list)
Spec = Union[Mapping[str, Any], Sequence[Mapping[str, Any]]]


def lookup(run: Mapping[str, Any], key: str) -> Any:
    """run[key], or MISSING when absent, None or NaN (pandas fills absent columns with NaN)."""
    value = run.get(key, MISSING)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return value


def window_label(value: Any) -> str:
    """An ST window as the paper writes it: [5, 8, 8] / (5, 8, 8) / "[5, 8, 8]" -> "5x8x8"."""
    if isinstance(value, (list, tuple)):
        return "x".join(str(int(v)) if isinstance(v, (int, float)) and not isinstance(v, bool)
                        else str(v).lower() for v in value)
    text = str(value).strip().lower()
    if _WINDOW.match(text):
        return "x".join(re.findall(r"\d+", text))
    return text


def value_matches(actual: Any, expected: Any) -> bool:
    """Loose equality across the spellings a config value can take (see module docstring)."""
    if isinstance(expected, DefaultsTo):
        return actual is MISSING or value_matches(actual, expected.value)
    if actual is MISSING:
        return False
    if callable(expected):
        return bool(expected(actual))
    if isinstance(actual, tuple) and actual and all(isinstance(a, str) for a in actual) and isinstance(expected, str):
        return expected in actual  # a list of names (tags): --where tags=ablation
    if isinstance(expected, bool):
        if isinstance(actual, str):
            return actual.strip().lower() == str(expected).lower()
        is_bool = isinstance(actual, bool) or type(actual).__name__ == "bool_"
        return is_bool and bool(actual) == expected
    if isinstance(expected, (int, float)):
        if isinstance(actual, bool):
            return False
        try:
            return math.isclose(float(actual), float(expected), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return window_label(actual) == window_label(expected)


def matches(run: Mapping[str, Any], spec: Spec, *, absent_ok: bool = False) -> bool:
    """Whether `run` satisfies `spec`; with absent_ok, keys the run lacks are not held against it."""
    if not isinstance(spec, Mapping):
        return any(matches(run, s, absent_ok=absent_ok) for s in spec)
    for key, expected in spec.items():
        actual = lookup(run, key)
        if actual is MISSING and absent_ok:
            continue
        if not value_matches(actual, expected):
            return False
    return True


def spec_keys(spec: Spec) -> set[str]:
    """Config keys a spec reads."""
    if isinstance(spec, Mapping):
        return set(spec)
    return set().union(*(spec_keys(s) for s in spec)) if spec else set()


def filter_runs(runs: Iterable[Mapping[str, Any]], where: Mapping[str, Any] | None) -> list:
    """Runs matching `where` (all keys), or all of them when `where` is empty."""
    return [r for r in runs if not where or matches(r, where)]
