# The two Quickstart commands and what they stand on.
#   make up    install the gateway and the torch-free node (.[node]) into .venv and run the
#              product on its embedded defaults (asrgw up)
#   make test  add torch, FunASR and the dev tools (and the speech tools and Prometheus the tests
#              use) and run the whole test suite

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# One stamp per install step: `make up` on a fresh clone installs only what the default node
# needs; `make test` (or `make setup`) adds the rest to the same .venv.
NODE_STAMP := $(VENV)/.installed-node
STAMP      := $(VENV)/.installed

.PHONY: up test lint setup system-deps console-screenshots clean

up: $(NODE_STAMP)
	$(BIN)/asrgw up

test: setup system-deps
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

setup: $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(NODE_STAMP): pyproject.toml $(VENV)/bin/python
	$(BIN)/pip install --quiet -e '.[node]'
	touch $(NODE_STAMP)

# torch 2.13.0 goes in first, on its own, so the `funasr` extra's torch range is already met by
# the CPU build rather than fetched as the multi-gigabyte CUDA one.
$(STAMP): pyproject.toml $(VENV)/bin/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[node,funasr,dev]'
	touch $(NODE_STAMP) $(STAMP)

# espeak-ng speaks the test sentences, sox and ffmpeg make audio fixtures, prometheus (with
# promtool) checks the dashboards and alert rules, chromium runs the web console's browser tests
# (driven by Playwright, never a downloaded browser) and pdftotext (poppler-utils) reads its
# invoice PDFs; apt-get installs them when missing. Each entry is COMMAND or COMMAND:PACKAGE.
TEST_TOOLS := espeak-ng sox ffmpeg prometheus chromium pdftotext:poppler-utils
system-deps:
	@missing=""; for entry in $(TEST_TOOLS); do tool=$${entry%%:*}; package=$${entry#*:}; \
	  command -v $$tool >/dev/null || missing="$$missing $$package"; done; \
	if [ -n "$$missing" ]; then \
	  command -v apt-get >/dev/null || { echo "please install:$$missing" >&2; exit 1; }; \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  echo "installing$$missing ..." >&2; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null; \
	fi

# The screenshots in docs/console.md: the console's browser test, writing them into docs/console/
# (a plain `make test` writes them under pytest's temporary directory and leaves the tree clean).
console-screenshots: setup system-deps
	ASRGW_CONSOLE_SCREENSHOTS=$(CURDIR)/docs/console $(BIN)/pytest -q -p no:cacheprovider \
	  tests/gateway/console/test_console_browser.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
