# The two Quickstart commands and what they stand on.
#   make up      set up .venv and run the product on its embedded defaults (asrgw up)
#   make test    set up .venv (and the speech tools, Prometheus, Docker and debootstrap the tests
#                use) and run the whole test suite
#   make images  build the asrgw-gateway and asrgw-node container images (docs/deploy.md)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test lint setup system-deps images image-gateway image-node image-node-gpu clean

up: setup
	$(BIN)/asrgw up

test: setup system-deps
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

setup: $(STAMP)

# torch 2.13.0 goes in first, on its own, so the `node` extra's torch range is already met.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[node,dev]'
	touch $(STAMP)

# espeak-ng speaks the test sentences, sox and ffmpeg make audio fixtures, prometheus (with
# promtool) checks the dashboards and alert rules, dockerd (docker.io) and debootstrap build the
# images and run the Compose stack offline; apt-get installs them when missing. Each entry is
# COMMAND or COMMAND:PACKAGE.
TEST_TOOLS := espeak-ng sox ffmpeg prometheus dockerd:docker.io debootstrap
system-deps:
	@missing=""; for tool in $(TEST_TOOLS); do command="$${tool%%:*}"; package="$${tool#*:}"; \
	  PATH="$$PATH:/usr/sbin:/sbin" command -v $$command >/dev/null || missing="$$missing $$package"; done; \
	if [ -n "$$missing" ]; then \
	  command -v apt-get >/dev/null || { echo "please install:$$missing" >&2; exit 1; }; \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  echo "installing$$missing ..." >&2; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null; \
	fi

# Container images, tagged with the version of pyproject.toml and `latest`. IMAGE_REGISTRY
# prefixes the names (registry.example.com/asrgw/); IMAGE_BUILD_ARGS adds `docker build` options
# (--build-arg BASE_IMAGE=…, a pip mirror or wheelhouse: deploy/docker/gateway.Dockerfile).
VERSION          := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
DOCKER           ?= docker
IMAGE_REGISTRY   ?=
IMAGE_BUILD_ARGS ?=
images: image-gateway image-node

image-gateway image-node image-node-gpu: image-%:
	$(DOCKER) build -f deploy/docker/$*.Dockerfile --build-arg VERSION=$(VERSION) $(IMAGE_BUILD_ARGS) \
	  -t $(IMAGE_REGISTRY)asrgw-$*:$(VERSION) -t $(IMAGE_REGISTRY)asrgw-$*:latest .

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
