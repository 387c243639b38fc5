# The project's commands. `make run` is the offline demo, `make test` the test command CI runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
MOTO_VERSION := 5.2.5
MOTO_STAMP := $(VENV)/.moto-$(MOTO_VERSION)
CFN_LINT_VERSION := 1.58.0
CFN_LINT_STAMP := $(VENV)/.cfn-lint-$(CFN_LINT_VERSION)

.PHONY: all run test lint lint-template fmt check venv clean-venv

all: test

## venv: a git-ignored Python venv with the emulator (moto server) used by the tests
venv: $(MOTO_STAMP)

$(MOTO_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'moto[server]==$(MOTO_VERSION)'
	touch $@

## run: the offline demo (no AWS, no emulator)
run:
	cargo run -q -p evs-core --example demo

## test: every test of the workspace; emulator-backed tests start their own moto server
test: venv
	EVS_MOTO_SERVER=$(abspath $(VENV))/bin/moto_server cargo test --workspace --all-targets
	EVS_MOTO_SERVER=$(abspath $(VENV))/bin/moto_server cargo test --workspace --doc

## lint: formatting, clippy and the SAM template, as CI runs them
lint: lint-template
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

## lint-template: cfn-lint on template.yaml (the Events values it does not check are tested by tests/it/template.rs)
lint-template: $(CFN_LINT_STAMP)
	$(VENV)/bin/cfn-lint template.yaml

$(CFN_LINT_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'cfn-lint==$(CFN_LINT_VERSION)'
	touch $@

fmt:
	cargo fmt --all

check: lint test

clean-venv:
	rm -rf $(VENV)
