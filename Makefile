# The project's commands. `make run` is the offline demo, `make test` the test command CI runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
MOTO_VERSION := 5.2.5
# DuckDB: the engine the lake test (crates/evs-replay/tests/lake.rs) runs docs/lake/duckdb.sql with.
DUCKDB_VERSION := 1.4.4
MOTO_STAMP := $(VENV)/.moto-$(MOTO_VERSION)-duckdb-$(DUCKDB_VERSION)
CARGO_LAMBDA_VERSION := 1.9.2
LAMBDA_STAMP := $(VENV)/.cargo-lambda-$(CARGO_LAMBDA_VERSION)
CFN_LINT_VERSION := 1.58.0
CFN_LINT_STAMP := $(VENV)/.cfn-lint-$(CFN_LINT_VERSION)
# checkov in a venv of its own (inside .venv): it pins boto3/botocore/networkx to versions older than
# moto's, and sharing .venv would downgrade the emulator's dependencies under the tests.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV := $(VENV)/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.checkov-$(CHECKOV_VERSION)
CARGO_FUZZ_VERSION := 0.13.2
# The SAM CLI in a venv of its own too (its pins differ from moto's and checkov's); `sam validate --lint`
# needs no AWS account.
SAM_VERSION := 1.170.0
SAM_VENV := $(VENV)/sam
SAM_STAMP := $(SAM_VENV)/.sam-$(SAM_VERSION)

.PHONY: all run test postgres lint lint-template fmt check venv clean-venv invoke invoke-test bench build build-ArchiverFunction package deploy lambda-tools soak fuzz

all: test

## venv: a git-ignored Python venv with the emulator (moto server) and DuckDB used by the tests
venv: $(MOTO_STAMP)

$(MOTO_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'moto[server]==$(MOTO_VERSION)' 'duckdb==$(DUCKDB_VERSION)'
	touch $@

## postgres: PostgreSQL's server binaries, which the PostgreSQL read-model store's tests start a throwaway cluster of
## (crates/evs-testkit/src/postgres.rs): Debian's `postgresql` is installed (as root, or with sudo) only when no initdb
## is found where the tests look ($$EVS_PG_BIN, /usr/lib/postgresql/*/bin, `pg_config --bindir`)
postgres:
	@if [ -n "$$EVS_PG_BIN" ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	    || [ -x "$$(pg_config --bindir 2>/dev/null)/initdb" ]; then exit 0; fi; \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "== installing postgresql"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq postgresql

## run: the offline demos (no AWS, no emulator): writers -> change feed -> archiver -> local archive -> live replay -> verify;
## then the projection handoffs: a balances read model and the orders example's cross-stream read model, each rebuilt
## from the archive and kept live from the change feed; the orders read model is left in ./orders.db (SQLite), with a
## query to run against it
run:
	cargo run -q -p evs-replay --example demo
	cargo run -q -p evs-balances --example handoff
	cargo run -q -p evs-orders --example orders_handoff

## test: every test of the workspace; emulator-backed tests start their own moto server, the PostgreSQL store's tests
## their own cluster
test: venv postgres
	EVS_MOTO_SERVER=$(abspath $(VENV))/bin/moto_server EVS_PYTHON=$(abspath $(VENV))/bin/python \
	  cargo test --workspace --all-targets
	EVS_MOTO_SERVER=$(abspath $(VENV))/bin/moto_server cargo test --workspace --doc

## soak: the replay, archiver and projection property tests with many more cases (PROPTEST_CASES=N to change),
## then the fault and crash tests EVS_SOAK times larger (default 10)
soak: venv postgres
	PROPTEST_CASES=$${PROPTEST_CASES:-100000} cargo test --release -p evs-replay --test simulation
	PROPTEST_CASES=$${PROPTEST_CASES:-10000} cargo test --release -p evs-archiver -p evs-pump --lib
	PROPTEST_CASES=$${PROPTEST_CASES:-20000} cargo test --release -p evs-projection --test simulation
	EVS_SOAK=$${EVS_SOAK:-10} EVS_MOTO_SERVER=$(abspath $(VENV))/bin/moto_server \
	  cargo test --release -p evs-dynamodb --test suite exactly_once_under_lost_acknowledgements -- --nocapture
	EVS_SOAK=$${EVS_SOAK:-10} EVS_MOTO_SERVER=$(abspath $(VENV))/bin/moto_server \
	  cargo test --release -p evs --test it -- --nocapture under_s3_faults killed_at_random_moments
	EVS_SOAK=$${EVS_SOAK:-10} EVS_MOTO_SERVER=$(abspath $(VENV))/bin/moto_server \
	  cargo test --release -p evs-projection --test store exactly_once_under -- --nocapture
	EVS_SOAK=$${EVS_SOAK:-10} cargo test --release -p evs-projection --test store -- --nocapture \
	  connections_killed_mid_commit hot_row::Postgres appliers_on_their_own_connections

## lint: formatting, clippy and the SAM template, as CI runs them
lint: lint-template
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

## lint-template: cfn-lint, checkov's security scan and `sam validate --lint` on template.yaml and the balances and orders examples'; each must report nothing (a check that
## does not fit is skipped on its resource with the reason; the Events values are tested by tests/template.rs)
lint-template: $(CFN_LINT_STAMP) $(CHECKOV_STAMP) $(SAM_STAMP)
	$(VENV)/bin/cfn-lint template.yaml crates/evs-balances/template.yaml crates/evs-orders/template.yaml
	$(CHECKOV_VENV)/bin/checkov -f template.yaml -f crates/evs-balances/template.yaml -f crates/evs-orders/template.yaml --framework cloudformation --quiet --compact --skip-download
	SAM_CLI_TELEMETRY=0 AWS_REGION=us-east-1 $(SAM_VENV)/bin/sam validate --lint -t template.yaml
	SAM_CLI_TELEMETRY=0 AWS_REGION=us-east-1 $(SAM_VENV)/bin/sam validate --lint -t crates/evs-balances/template.yaml
	SAM_CLI_TELEMETRY=0 AWS_REGION=us-east-1 $(SAM_VENV)/bin/sam validate --lint -t crates/evs-orders/template.yaml

$(SAM_STAMP):
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check 'aws-sam-cli==$(SAM_VERSION)'
	touch $@

$(CFN_LINT_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'cfn-lint==$(CFN_LINT_VERSION)'
	touch $@

$(CHECKOV_STAMP):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check 'checkov==$(CHECKOV_VERSION)'
	touch $@

fmt:
	cargo fmt --all

check: lint test

clean-venv:
	rm -rf $(VENV)

## fuzz: every cargo-fuzz target in fuzz/fuzz_targets for FUZZ_SECONDS (default 60) seconds each, one after the
## other; needs nightly Rust (`rustup toolchain install nightly`) and installs cargo-fuzz if missing. Not part of
## `make test` or CI (no nightly there). A finding stops the run; its input is under fuzz/artifacts/<target>/.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := $(sort $(basename $(notdir $(wildcard fuzz/fuzz_targets/*.rs))))
fuzz:
	@cargo fuzz --version >/dev/null 2>&1 || cargo install --locked cargo-fuzz --version $(CARGO_FUZZ_VERSION)
	set -e; for target in $(FUZZ_TARGETS); do \
		echo "== fuzz $$target ($(FUZZ_SECONDS) s)"; \
		cargo +nightly fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS); \
	done

## invoke: run the archiver's handler on the sample events into ./archive (or $$EVS_ARCHIVE)
invoke:
	cargo run -q -p evs -- invoke events/inserts.json events/mixed.json events/empty.json

## invoke-test: the archiver binary under `cargo lambda watch` (a host build) on a free port, each events/*.json
## sent with `cargo lambda invoke`; the answers (no batchItemFailures) and the objects in a temporary local
## archive are checked (tests/lambda_invoke.sh); installs cargo-lambda into .venv first
invoke-test: $(LAMBDA_STAMP)
	bash tests/lambda_invoke.sh

## bench: archiver throughput (criterion) side by side with a Python handler, and peak memory;
## then replay throughput from a local archive of BENCH_EVENTS events side by side with zcat | jq;
## then the live projection driver on the emulator (records/s against a per-record UpdateItem loop, latency p50/p99),
## and the replay driver's rebuild into memory, whole and as --partition 0/2 + 1/2 in two processes;
## the orders example's rebuild against evs replay --quiet on the same archive (bench/orders.sh); the DynamoDB row
## store on the emulator (events a commit, commits/s, a hot row under 8 concurrent live batches);
## then what acknowledged delivery to a consumer process costs (bench/consumer.sh)
BENCH_EVENTS ?= 1000000
bench: venv
	bash bench/run.sh
	BENCH_EVENTS=$(BENCH_EVENTS) bash bench/replay.sh
	EVS_MOTO_SERVER=$(abspath $(VENV))/bin/moto_server cargo run -q --release -p evs-pump --example live_bench
	bash bench/rebuild.sh
	bash bench/orders.sh
	EVS_MOTO_SERVER=$(abspath $(VENV))/bin/moto_server cargo run -q --release -p evs-projection --example dynamo_bench
	bash bench/consumer.sh

## lambda-tools: cargo-lambda and zig in the venv (for `cargo lambda watch` and `make invoke-test`; `make build`
## does not use them)
lambda-tools: $(LAMBDA_STAMP)

$(LAMBDA_STAMP): $(MOTO_STAMP)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'cargo-lambda==$(CARGO_LAMBDA_VERSION)' ziglang
	touch $@

## build: the arm64 Lambdas (target/lambda/<bin>/bootstrap) with Debian's Rust and its aarch64 std, which
## build/arm64.sh installs when missing (apt, as root or with sudo); not part of CI
build:
	bash build/arm64.sh evs-archiver
	bash build/arm64.sh evs-balances
	bash build/arm64.sh evs-orders

# `sam build` of template.yaml (BuildMethod: makefile) runs this with ARTIFACTS_DIR set: the function's
# artifacts are its bootstrap alone. The paths are this Makefile's, so that it works from any directory.
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
build-ArchiverFunction:
	bash $(ROOT)/build/arm64.sh evs-archiver
	cp $(ROOT)/target/lambda/evs-archiver/bootstrap "$(ARTIFACTS_DIR)/bootstrap"

## package: `sam build` of the stacks (.aws-sam/build/ArchiverFunction/bootstrap here,
## the balances and the orders examples' two functions each in crates/evs-balances/.aws-sam/build and
## crates/evs-orders/.aws-sam/build), each through its Makefile's
## build-<LogicalId> target, in the source tree (--build-in-source: no copy of the repository and target/)
SAM := SAM_CLI_TELEMETRY=0 $(abspath $(SAM_VENV))/bin/sam
package: $(SAM_STAMP)
	$(SAM) build --build-in-source
	cd crates/evs-balances && $(SAM) build --build-in-source
	cd crates/evs-orders && $(SAM) build --build-in-source

## deploy: make package, then sam deploy --guided of the main stack (needs AWS credentials, see README
## "Deploying"; the balances stack: `sam deploy --guided` in crates/evs-balances); not part of CI
deploy: package
	$(SAM) deploy --guided
