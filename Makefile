# beft: `make demo` runs the default job, `make test` runs the tests. Both install into .venv first if needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
# Local GLUE / SuperGLUE files if they sit beside the checkout (as in CI); otherwise the hub is used.
export BEFT_DATA_DIR ?= $(abspath $(wildcard ../shared/data))
export TOKENIZERS_PARALLELISM ?= false

.PHONY: help install demo test tables smoke bench clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: otherwise pip may resolve a multi-GB CUDA build on a CPU machine
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed  ## create .venv with torch (CPU build) and beft (idempotent)

demo: install  ## run the default job: minilm, SST-2, low-data regime
	$(PY) run.py

test: install  ## run the test suite (offline: packaged MiniLM, local data, tiny models)
	HF_HUB_OFFLINE=1 WANDB_MODE=disabled $(PY) -m pytest

bench: install  ## step time and peak memory of full FT, LoRA, BitFit and b_v-only (ratios, one run)
	HF_HUB_OFFLINE=1 $(PY) scripts/bench.py

tables: install  ## rebuild results/tables and results/figures from the records in results/runs
	$(PY) scripts/make_tables.py

smoke: install  ## a seconds-per-job sweep on tiny models, then its tables (plumbing check)
	HF_HUB_OFFLINE=1 $(PY) run.py -m experiment=smoke && $(PY) scripts/make_tables.py

clean:  ## remove outputs (not results/)
	rm -rf outputs multirun
