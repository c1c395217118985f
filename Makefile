# Development targets. The virtualenv lives in .venv; tools/find_python.sh picks the Python
# (>= 3.12) that creates it: set PYTHON=/path/to/python3.12 to choose one yourself.

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CPU    := JAX_PLATFORMS=cpu
CPU8   := JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=8

.DEFAULT_GOAL := help
.PHONY: help venv quickstart test test-slow bench clean

help:
	@echo "make venv        create $(VENV) (Python >= 3.12) and install -e .[test]"
	@echo "make quickstart  data, an SoS and an optimal-path model, and their evaluation, on CPU (workdir/quickstart)"
	@echo "make test        fast tests on 8 fake CPU devices (pytest-xdist, 2 workers)"
	@echo "make test-slow   the tests marked slow"
	@echo "make bench       the benchmark report (configs/bench.py) in workdir/bench; BENCH_PRESET=default on a GPU or TPU"
	@echo "make clean       remove $(VENV) and workdir"

venv: $(STAMP)

# Re-installs only when pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml
	@set -e; \
	if [ -x "$(PY)" ]; then \
	  if ! "$(PY)" -c 'import sys; sys.exit(sys.version_info < (3,12))' 2>/dev/null; then \
	    echo "$(VENV) exists but its Python is older than 3.12 (or broken); run 'make clean' and retry" >&2; \
	    exit 1; \
	  fi; \
	else \
	  python="$$(tools/find_python.sh)"; \
	  echo "creating $(VENV) with $$python ($$("$$python" -V 2>&1))"; \
	  "$$python" -m venv "$(VENV)"; \
	fi
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test]'
	@touch $(STAMP)

quickstart: venv
	$(CPU) $(PY) -m sos_jax.main --config=configs/quickstart.py --workdir=workdir/quickstart

test: venv
	$(CPU8) $(PY) -m pytest -q -m "not slow" -n 2 tests

# pytest exits 5 when no test is selected; that is not a failure here.
test-slow: venv
	$(CPU8) $(PY) -m pytest -q -m slow -n 2 tests || [ $$? -eq 5 ]

# Every benchmark, one table; the cpu preset is sized for a small CPU (about 5-10 minutes).
BENCH_PRESET ?= cpu
bench: venv
	$(PY) -m sos_jax.main --config=configs/bench.py:$(BENCH_PRESET) --workdir=workdir/bench --config.overwrite=True

clean:
	rm -rf $(VENV) workdir
