# Two commands on a fresh machine with only Python 3.11 and make: `make demo` and `make test`.
# The real interpreter, not a pyenv shim: uv treats a shim as a new interpreter on every call and would
# rebuild .venv each time (under a running server).
PYTHON ?= $(shell $$(command -v python3.11 2>/dev/null || command -v python3) -c 'import sys; print(sys.executable)')
TOOLS := .tools
UV := $(TOOLS)/bin/uv
UV_VERSION := 0.13.9
VENV := .venv
BIN := $(VENV)/bin
SHARED := ../shared
REALCHAT := $(SHARED)/realchat-dev/messages.csv
PORT ?= 3000
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
export BENTOML_HOME ?= $(CURDIR)/.bentoml
export BENTOML_DO_NOT_TRACK := true

.PHONY: install demo test test-fast test-reliability serve bento tracking-server notebook render-notebooks clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	mkdir -p $(TOOLS)/path && ln -sf ../bin/uv $(TOOLS)/path/uv

## --compile-bytecode: uv compiles every package once, in parallel, at install. Without it the first test session
## compiled them lazily in each worker and server subprocess (a clean clone's `make test`: 10 min 49 s -> 7 min 9 s).
install: $(UV)
	$(UV) sync --frozen --all-groups --compile-bytecode --python $(PYTHON)

## Train on the bundled corpus, evaluate, log to MLflow, register and promote, write the report;
## then flag the lost shoppers of the bundled conversations with the champion (reports/nudges.csv).
demo: install
	$(BIN)/buyer-intent train --model-dir models/latest --eval-data yardstick=data/chats/yardstick.csv $(if $(wildcard $(REALCHAT)),--eval-data $(REALCHAT))
	$(BIN)/buyer-intent flag --chats data/conversations.jsonl --orders data/orders.csv --out reports/nudges.csv
	@echo "Browse runs: $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db"

## Two xdist workers; the tests sharing a costly fixture run on one (tests/conftest.py). TEST_WORKERS=0: serial.
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup)

## The fault suite (issue #16): tests/reliability and the OpenAPI fuzzing of a live server, on two xdist workers.
test-reliability: install
	$(BIN)/python -m pytest -q -m reliability -n 2 --dist loadgroup

## The quick tier (under 2 minutes): no trained corpus model, no corpus tables, no server.
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

## Serve the champion on $(PORT) (PORT=... make serve); trains and promotes one first when the registry has none.
serve: install
	@$(BIN)/python -m serving.champion || { test $$? -eq 3 && $(MAKE) --no-print-directory demo; }
	$(BIN)/buyer-intent export-bento
	$(BIN)/bentoml serve serving.service:BuyerIntent --port $(PORT)

## A Bento with the service, the package and the champion (then: bentoml containerize buyer_intent:latest).
bento: install
	@test -e $(TOOLS)/path/uv || { mkdir -p $(TOOLS)/path && ln -sf ../bin/uv $(TOOLS)/path/uv; }
	$(BIN)/buyer-intent export-bento
	PATH="$(CURDIR)/$(TOOLS)/path:$$PATH" $(BIN)/bentoml build

## A shared MLflow tracking server on PostgreSQL (pipeline/tracking/server.py), in the foreground until Ctrl-C.
## TRACKING_DB_URI=postgresql://USER:PASSWORD@HOST:PORT/DB: the backend store (unset: a local PostgreSQL in
## TRACKING_PG_DIR, default .tracking/postgres, started and stopped with the server); TRACKING_ARTIFACTS: the
## artifact root, a directory or s3://... (default .tracking/artifacts); TRACKING_HOST (127.0.0.1),
## TRACKING_PORT (5000), TRACKING_WORKERS (2), TRACKING_ALLOWED_HOSTS. Clients: MLFLOW_TRACKING_URI=http://HOST:PORT.
tracking-server: install
	$(BIN)/python -m pipeline.tracking.server

## JupyterLab on notebooks/ (NOTEBOOK_ARGS=--no-browser on a machine without a browser).
notebook: install
	$(BIN)/jupyter lab notebooks/ $(NOTEBOOK_ARGS)

## Execute the notebooks and save them with their outputs (notebooks/render.py): error analysis on the bundled
## corpus's test split with models/latest (BUYER_INTENT_MODEL=...), never on the real-chat dev set.
render-notebooks: install
	$(BIN)/python notebooks/render.py

clean:
	rm -rf $(VENV) $(TOOLS) .bentoml mlflow.db mlartifacts reports/* models/*
