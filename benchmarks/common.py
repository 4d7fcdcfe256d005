"""Helpers shared by the benchmarks: interleaved timing, peak memory, machine and library facts.

Machines running these benchmarks are often shared and noisy, so every comparison is measured
*side by side in one process*: all variants are built first, then timed round-robin (A, B, C, A,
B, C, ...) and the median of each is kept; a busy neighbour slows every variant alike and the
ratios stay meaningful even when the absolute times do not.
"""
from __future__ import annotations

import ctypes
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved(steps: Mapping[str, Callable[[], None]], repeats: int, warmup: int = 1, device="cpu",
                setup: Optional[Mapping[str, Callable[[], None]]] = None) -> Dict[str, dict]:
    """Time every callable round-robin; returns {name: {"median_s", "min_s", "times_s"}}.

    setup[name] (optional) runs untimed before each of name's calls (e.g. torch.set_num_threads), so
    variants that differ in a process-wide setting can still be interleaved.
    """
    setup = setup or {}
    for _ in range(warmup):
        for name, fn in steps.items():
            setup.get(name, lambda: None)()
            fn()
    sync(device)
    times: Dict[str, list] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            setup.get(name, lambda: None)()
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: {"median_s": statistics.median(t), "min_s": min(t), "times_s": [round(x, 4) for x in t]}
            for name, t in times.items()}


# ---------------------------------------------------------------------------------------- memory
def _status_kib(field: str) -> Optional[int]:
    try:
        match = re.search(rf"^{field}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _trim_heap() -> None:
    gc.collect()
    try:  # give freed heap pages back to the OS so the next peak is not hidden by cached memory
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory_mib(fn: Callable[[], None], device="cpu") -> Optional[float]:
    """Peak memory one call of fn adds on top of what is resident before it (MiB).

    CUDA: torch.cuda.max_memory_allocated over the call minus the memory allocated before it.
    CPU: peak resident set size (Linux VmHWM, reset through /proc/self/clear_refs) minus the resident
    size before the call, after returning freed heap pages to the OS; None where that is unavailable.
    Run it after a warm-up step so optimizer state is already allocated (then this is activations,
    gradients and temporaries).
    """
    if torch.device(device).type == "cuda":
        sync(device)
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        sync(device)
        return round((torch.cuda.max_memory_allocated() - before) / 2**20, 1)
    _trim_heap()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    before = _status_kib("VmRSS")
    fn()
    peak = _status_kib("VmHWM")
    if before is None or peak is None:
        return None
    return round((peak - before) / 1024, 1)


def param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------- machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))
    except OSError:
        pass
    return []


def load_average() -> Optional[list]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine(device="cpu") -> dict:
    info = {
        "cpu": cpu_model(), "cpu_flags": cpu_flags(), "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1_5_15": load_average(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "platform": platform.platform(),
    }
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def library_versions() -> dict:
    versions = {"torch": torch.__version__}
    for name in ("lightning", "diffusers", "numpy", "av", "einops"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", "?")
        except Exception:  # noqa: BLE001 - absent or broken: say so, do not fail the report
            versions[name] = None
    if torch.cuda.is_available():
        versions["cuda"] = torch.version.cuda
        versions["cudnn"] = torch.backends.cudnn.version()
    return versions


def git_commit() -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(status),
            "dirty_files": [line[3:] for line in status.splitlines()][:50]}


def jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))
