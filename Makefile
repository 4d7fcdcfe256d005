# Two commands do all set-up: `make demo` (the embedded-default job) and `make test`.
# Both create .venv from the pinned lock file when it is missing or stale.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements/lock.txt pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup demo test test-fast bench bench-setup lock clean slurm-up slurm-down

setup: $(STAMP)

$(STAMP): requirements/lock.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements/lock.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(VENV)/bin/walt-demo

# One pytest-xdist worker per core; the Slurm tests share one worker (their cluster), each worker one thread
test: $(STAMP)
	$(PY) -m pytest -q -ra -n auto --dist loadgroup

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n auto --dist loadgroup

# A local two-node Slurm cluster (partition debug, accounting on) to try hydra/launcher=slurm on one machine;
# as root it installs Debian's slurm and munge packages when missing. Then: export SLURM_CONF=/tmp/walt-slurm/etc/slurm.conf
slurm-up:
	tests/slurm/cluster.sh up
	@tests/slurm/cluster.sh env

slurm-down:
	tests/slurm/cluster.sh down

# Benchmark report (outputs/bench/report.{json,md}); BENCH_ARGS=--quick for a short run. bench-setup installs
# the benchmark-only extra (diffusers, the peer model) from pyproject's optional-dependencies "bench".
bench-setup: $(STAMP)
	$(PY) -m pip install --disable-pip-version-check -q $$($(PY) -c "import tomllib; print(' '.join(r.replace(' ', '') for r in tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['bench']))")

bench: bench-setup
	$(PY) benchmarks/run.py $(BENCH_ARGS)

# Re-pin after editing requirements/direct.txt (top-level pins): rebuilds the lock from a clean venv.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q -r requirements/direct.txt
	(echo "# Exact versions CI and 'make' install (python 3.11, linux x86_64). Regenerate: make lock"; \
	 .venv-lock/bin/pip freeze | grep -v '^-e') > requirements/lock.txt
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) outputs multirun
