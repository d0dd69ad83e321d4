# Two set-up commands (see README): `make demo` runs the main job, `make test` runs the suite.
# Both create/reuse .venv and install what they need. torch==2.13.0 is installed first so pip
# takes the local CPU build instead of a multi-GB CUDA wheel; pyproject keeps torch a range.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
export XMETA_DATA_DIR ?= ../shared/data

.PHONY: demo test lint venv browser

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml Makefile
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[models,tracking,serve,peers,llm-server,test,bench]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(BIN)/xmeta demo --data-dir "$(XMETA_DATA_DIR)"

lint: venv
	$(BIN)/ruff format --check xmeta recipes tests eval
	$(BIN)/ruff check xmeta recipes tests eval

# The serve page's browser test drives Debian's Chromium; `make test` installs it when missing
# and then requires it (the test fails instead of skipping).
browser:
	@command -v chromium >/dev/null || apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }

test: lint browser
	XMETA_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -q tests
