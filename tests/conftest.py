import contextlib
import os
import subprocess
from pathlib import Path

import pytest
import torch

from walt.data.synthetic import SyntheticSpec, generate

# Under pytest-xdist (`make test` runs one worker per core) every worker and the processes it starts get one
# intra-op thread: two workers of two threads each on two cores spin in OpenMP barriers (3.5x slower measured).
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, os.cpu_count() or 1) // WORKERS)
if WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
torch.set_num_threads(THREADS)

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


def require(reason: str) -> None:
    """Skip with a visible reason where a real component (Slurm, a browser) cannot start here; under CI=true the
    same reason is a failure: CI's machine can start them."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A local two-node Slurm cluster for the session (tests/slurm/cluster.sh): {'SLURM_CONF': ...} for the
    processes that talk to it. Started here only when it is not already up, and then stopped here."""
    script = Path(__file__).parent / "slurm" / "cluster.sh"
    conf = subprocess.run([script, "env"], capture_output=True, text=True, check=True).stdout.split("=", 1)[1].strip()
    started = subprocess.run([script, "status"], capture_output=True).returncode != 0
    if started:
        up = subprocess.run([script, "up"], capture_output=True, text=True, timeout=900)
        if up.returncode != 0:
            subprocess.run([script, "down"], capture_output=True, timeout=120)
            require(f"no local Slurm cluster: {(up.stderr.strip().splitlines() or ['cluster.sh up failed'])[-1]}")
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf  # squeue / scontrol from the tests, and the jobs (sbatch exports the env)
    yield {"SLURM_CONF": conf}
    os.environ.pop("SLURM_CONF") if before is None else os.environ.update(SLURM_CONF=before)
    if started:
        subprocess.run([script, "down"], capture_output=True, timeout=120)
