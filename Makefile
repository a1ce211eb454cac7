# Two commands do all the set-up: `make run` (the flagship study) and `make test`.
# Both create .venv, install the pinned torch pair first (so no resolver pulls another multi-GB
# torch), install hptune, and install Debian's Fashion-MNIST when apt-get is there.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.hptune-installed
ARCH := $(shell uname -m)
ifeq ($(ARCH),aarch64)
TORCH ?= torch==2.9.1 torchvision==0.24.1
else
TORCH ?= torch==2.14.1 torchvision==0.29.1
endif
DEBIAN_DATA := /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint floors setup data browser postgres
run: setup data
	$(BIN)/hptune optimize studies/fashion.yaml

test: setup data browser postgres
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check hptune tests examples
	$(BIN)/ruff format --check hptune tests examples
	$(BIN)/mypy

# Every lower bound in pyproject.toml, tested: a second environment with each dependency at its
# floor (.ci/floors.py) and the main environment's torch linked in, not installed again
# (.ci/link_torch.py), runs the tests that exercise those libraries (FLOORS_TESTS).
FLOORS_VENV ?= .venv-floors
FLOORS_TESTS ?= tests/test_config.py tests/test_space.py tests/test_grid.py tests/test_plots.py \
	tests/test_optuna_private.py tests/test_cli.py tests/test_tracking.py
SITE_PACKAGES := import sysconfig; print(sysconfig.get_path("purelib"))

floors: setup data
	test -x $(FLOORS_VENV)/bin/python || $(BIN)/python -m venv $(FLOORS_VENV)
	$(FLOORS_VENV)/bin/python -m pip install -q --upgrade pip
	$(FLOORS_VENV)/bin/python -m pip install -q pytest $$($(BIN)/python .ci/floors.py)
	$(FLOORS_VENV)/bin/python .ci/link_torch.py "$$($(BIN)/python -c '$(SITE_PACKAGES)')" \
		"$$($(FLOORS_VENV)/bin/python -c '$(SITE_PACKAGES)')"
	PYTHONPATH=$(CURDIR) MLFLOW_DISABLE_TELEMETRY=true \
		$(FLOORS_VENV)/bin/python -m pytest -p no:cacheprovider $(FLOORS_TESTS)

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

data:
	@if [ -d $(DEBIAN_DATA) ]; then :; \
	elif command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; \
	else echo "no apt-get: put Fashion-MNIST in \$$HPTUNE_DATA_DIR/fashion-mnist/ (see README)"; fi

# Headless Chromium renders the HTML report in a test (skipped without it, except under CI).
browser:
	@if command -v chromium >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; \
	else echo "no apt-get: install Chromium to run the report's browser test"; fi

# PostgreSQL's server for the scale-out test (skipped without it, except under CI).
postgres:
	@if command -v pg_ctl >/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	else echo "no apt-get: install PostgreSQL to run the scale-out test"; fi
