"""Data health: which listed files are missing, which present files are unreadable and why, and the
early failure when too many are.

Counting is per FILE, never per read: a file is recorded once with its first reason however many
items, epochs or worker processes meet it. The header probe (`probe_split`) finds most bad files
before training, in the main process, so every worker starts from the same cleaned index; files
that pass the probe but fail to decode are reported by the items that met them (see
ClipDataset.__getitem__) and recorded by the DataModule in the main process.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable

from walt.data.video import Reason, VideoDecodeError
from walt.utils import Refused

log = logging.getLogger(__name__)
SHOWN = 10  # bad / missing files named in messages and data_health()
PROBE_THREADS = 4  # PyAV drops the GIL while it reads headers: a few threads hide file-system latency


class BadDatasetError(Refused):
    """More than data.max_bad_fraction of a dataset's files are unreadable."""


@dataclass
class SplitHealth:
    """Tallies of one split. name says what and where, e.g. "ucf101 train (.../trainlist01.txt)"."""

    name: str
    listed: int = 0  # files the split's list / annotation names (or found on disk when there is no list)
    missing: list[str] = field(default_factory=list)
    bad: dict[str, tuple[Reason, str]] = field(default_factory=dict)  # path -> (reason, message)

    @property
    def present(self) -> int:
        return self.listed - len(self.missing)

    def add_bad(self, err: VideoDecodeError) -> bool:
        """Record a file once; False when it was already known."""
        if err.path in self.bad:
            return False
        self.bad[err.path] = (err.reason, str(err))
        return True

    def summary_line(self) -> str:
        return f"{self.name}: {self.listed} listed, {self.present} present, {len(self.missing)} missing"

    def log_missing(self) -> None:
        """One line per split; a warning naming the first missing files when any are missing."""
        if not self.missing:
            log.info(self.summary_line())
            return
        if not self.present:
            raise FileNotFoundError(f"{self.summary_line()}: no file of the list is on disk; first missing: "
                                    f"{', '.join(self.missing[:3])}. Check data.root and the split folders.")
        log.warning("%s (first missing: %s)", self.summary_line(), ", ".join(self.missing[:3]))

    def check(self, max_bad_fraction: float) -> None:
        """Raise BadDatasetError when more than max_bad_fraction of the present files are bad."""
        if self.bad and len(self.bad) > max_bad_fraction * max(self.present, 1):
            raise BadDatasetError(
                f"{self.name}: {len(self.bad)} of {self.present} files are unreadable "
                f"({len(self.bad) / max(self.present, 1):.1%} > data.max_bad_fraction={max_bad_fraction:.1%}; "
                f"{format_counts(self.bad)}). First bad files:\n  " + "\n  ".join(first_bad(self.bad))
                + "\nRe-download or remove them, or raise data.max_bad_fraction."
            )


def format_counts(bad: dict[str, tuple[Reason, str]]) -> str:
    counts = reason_counts(bad)
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def reason_counts(bad: dict[str, tuple[Reason, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for reason, _ in bad.values():
        counts[reason.value] = counts.get(reason.value, 0) + 1
    return dict(sorted(counts.items()))


def first_bad(bad: dict[str, tuple[Reason, str]], n: int = SHOWN) -> list[str]:
    return [message for _, message in list(bad.values())[:n]]


def probe_split(entries: Iterable, check: Callable[[object], None], health: SplitHealth) -> set[str]:
    """Run `check(entry)` (raises VideoDecodeError) once per distinct `entry.path`; records and returns
    the bad paths."""
    unique = list({e.path: e for e in entries}.values())

    def one(entry) -> VideoDecodeError | None:
        try:
            check(entry)
        except VideoDecodeError as err:
            return err
        return None

    with ThreadPoolExecutor(min(PROBE_THREADS, os.cpu_count() or 1)) as pool:
        errors = [e for e in pool.map(one, unique) if e is not None]
    for err in errors:
        health.add_bad(err)
    if errors:
        log.warning("%s: %d of %d files unreadable at the header probe (%s); first: %s", health.name, len(errors),
                    len(unique), format_counts(health.bad), errors[0])
    return {e.path for e in errors}


def encode_failures(errors: list[VideoDecodeError]) -> str:
    """Failures met while producing one item, as one string (collates into a list like captions do)."""
    return "\n".join(f"{e.reason.value}\t{e.path}\t{e}" for e in errors)


def decode_failures(text: str) -> list[VideoDecodeError]:
    out = []
    for line in filter(None, text.split("\n")):
        reason, path, message = line.split("\t", 2)
        err = VideoDecodeError(path, Reason(reason), "")
        err.args = (message,)
        out.append(err)
    return out
