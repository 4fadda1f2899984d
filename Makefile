# deidflow: two commands on a fresh machine — `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.deidflow-installed
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export PREFECT_LOGGING_LEVEL ?= WARNING
export OMP_THREAD_LIMIT := 1
DEMO ?= demo
PATIENTS ?= 4

.PHONY: setup demo test test-deps lint system-deps server clean

setup: system-deps $(STAMP)
	@mkdir -p $(PREFECT_HOME)
	@$(BIN)/prefect config set PREFECT_SERVER_ANALYTICS_ENABLED=false \
	    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=90 >/dev/null
	@test -x $(BIN)/deidflow && echo "setup ok: $(BIN)/deidflow"

# Tesseract (with English data) and OpenCV's shared libraries, installed only when missing.
system-deps:
	@missing=""; \
	command -v tesseract >/dev/null || missing="$$missing tesseract-ocr tesseract-ocr-eng"; \
	ldconfig -p | grep -q 'libGL.so.1' || missing="$$missing libgl1"; \
	ldconfig -p | grep -q 'libglib-2.0.so.0' || missing="$$missing libglib2.0-0"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: setup
	$(BIN)/deidflow demo --dir $(DEMO) --patients $(PATIENTS)

test: setup test-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider

# Headless Chromium renders the QA report in its test; dciodvfy (dicom3tools) checks conformance.
test-deps:
	@missing=""; command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v dciodvfy >/dev/null || missing="$$missing dicom3tools"; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

lint: setup
	$(BIN)/ruff check deid_core flows tasks tests bench data
	$(BIN)/mypy deid_core flows tasks

# A local Prefect server on loopback and a process worker (see README, "Operating deidflow").
server: setup
	bash deployments/server.sh

clean:
	rm -rf $(DEMO) .prefect .pytest_cache
