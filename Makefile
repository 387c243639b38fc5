# The project's commands. `make run` is the offline demo, `make test` the test command CI runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
MOTO_VERSION := 5.2.5
MOTO_STAMP := $(VENV)/.moto-$(MOTO_VERSION)

.PHONY: all run test lint fmt check venv clean-venv

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

## lint: formatting and clippy, as CI runs them
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

check: lint test

clean-venv:
	rm -rf $(VENV)
