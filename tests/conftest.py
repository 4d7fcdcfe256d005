import contextlib
import os

import pytest
import torch

from walt.data.synthetic import SyntheticSpec, generate

torch.set_num_threads(min(2, os.cpu_count() or 1))

SMALL_SPEC = SyntheticSpec(num_classes=4, num_groups=5, clips_per_group=1, num_frames=17, resolution=32)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A small synthetic dataset in the UCF-101 layout, shared by the session (read-only)."""
    return generate(tmp_path_factory.mktemp("synthetic"), SMALL_SPEC)


@contextlib.contextmanager
def single_thread():
    """One intra-op thread: tiny ops gain nothing from more, and OpenMP barriers stall on a busy CI box
    (module-scoped fixtures use this directly: they are set up before any function-scoped `one_thread`)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    with single_thread():
        yield


def randomize(model: torch.nn.Module, std: float) -> torch.nn.Module:
    """Perturb every weight (seeded) so zero-initialised gates / output layers do not hide the computation."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model
