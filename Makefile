# `make train` and `make test` each create .venv if missing and install the pinned set.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: train test lint install install-gpu bench notebook clean

# uv installs the locked set in about 47 s on a fresh 2-core machine (pip: about 90 s); where uv
# cannot be installed, pip installs the same pins. --compile-bytecode: where PYTHONDONTWRITEBYTECODE
# is set, nothing writes .pyc files later and every process would compile jax from source.
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	( $(PY) -m pip install -q -c requirements.lock uv && $(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -c requirements.lock -e ".[test]" ) \
	  || ( $(PY) -m pip install -q --upgrade pip && $(PY) -m pip install -q -c requirements.lock -e ".[test]" )
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(PY) -m rmix_jax.train $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

# pyflakes rules and import order ([tool.ruff] in pyproject.toml); .ci/run runs it before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check rmix_jax tests benchmarks

# The CUDA build of the pinned jax on top of the CPU set: make install-gpu CUDA=12 (or CUDA=13).
CUDA ?= 12
install-gpu: $(STAMP)
	$(PY) -m pip install -q -c requirements.lock -e ".[test,cuda$(CUDA)]"
	$(PY) -c "import jax; print(jax.devices())"

bench: $(STAMP)
	$(PY) benchmarks/throughput.py

# Execute the alpha-analysis notebook in place on the newest make-train run (RMIX_RUN=... for another).
notebook: $(STAMP)
	$(PY) -c "import nbformat, nbclient; nb = nbformat.read('notebooks/alpha_analysis.ipynb', 4); \
	nbclient.NotebookClient(nb, timeout=900, resources={'metadata': {'path': 'notebooks'}}).execute(); \
	nbformat.write(nb, 'notebooks/alpha_analysis.ipynb')"

clean:
	rm -rf $(VENV) results
