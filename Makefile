# Kefu's one task runner. `make help` lists the verbs.
# Every target is idempotent: stamps under .stamps/ skip work whose inputs did not change.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMPS := .stamps
CARGO  ?= cargo
KERNELS := --manifest-path native/Cargo.toml --workspace --exclude kefu-native
PYTEST_ARGS ?=

NATIVE_SRC := $(shell find native -path native/target -prune -o -path native/fuzz -prune -o \( -name '*.rs' -o -name Cargo.toml -o -name Cargo.lock \) -print) pyproject.toml
ENGINE_SRC := $(shell find engine/src -name '*.pyx' -o -name '*.pxd') engine/setup.py engine/pyproject.toml

.DEFAULT_GOAL := help

.PHONY: help  ## List the verbs
help:
	@grep -E '^\.PHONY: [a-z0-9-]+ +## ' $(MAKEFILE_LIST) | sed -E 's/^\.PHONY: ([a-z0-9-]+) +## (.*)/  make \1\t\2/' | expand -t 24

.PHONY: install  ## Build everything from source into .venv (Rust kernels, Cython engine, Python package)
install: $(STAMPS)/native

$(STAMPS)/system:
	@mkdir -p $(STAMPS)
	@scripts/ensure-system-packages.sh
	@touch $@

$(STAMPS)/venv: requirements/dev.txt $(STAMPS)/system
	@mkdir -p $(STAMPS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements/dev.txt
	@touch $@

$(STAMPS)/engine: $(STAMPS)/venv $(ENGINE_SRC)
	$(BIN)/pip install --disable-pip-version-check -q --no-build-isolation --no-deps -e ./engine
	@touch $@

$(STAMPS)/native: $(STAMPS)/engine $(NATIVE_SRC)
	rm -f python/kefu/_native*.so
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/maturin develop --release --quiet
	@touch $@

.PHONY: run  ## Build, then start `kefu serve` on embedded defaults (SQLite under ./data, in-process bus)
run: install
	$(BIN)/kefu --data-dir data serve

.PHONY: test  ## Build, then run every test: cargo test (kernels), loom model checks, pytest
test: install
	$(CARGO) test $(KERNELS) -q
	scripts/loom.sh
	scripts/pytest-or-fail.sh $(BIN)/python -m pytest $(PYTEST_ARGS)

.PHONY: bench  ## Quick benchmark set; writes bench/results/*.md (bench/run.py --full for the long set)
bench: install
	$(BIN)/python -m bench.run --quick

.PHONY: lint  ## Static checks: cargo clippy, ruff, stub drift (mypy.stubtest), generated-code drift
lint: install
	$(CARGO) clippy --manifest-path native/Cargo.toml --workspace -q -- -D warnings
	$(BIN)/python -m ruff check python tests bench
	$(BIN)/python -m mypy.stubtest kefu._native kefu_engine.gateway --allowlist .mypy-stubtest-allowlist
	$(MAKE) proto-check

.PHONY: proto  ## Regenerate the gRPC plugin stubs from proto/ into python/kefu/plugins/_proto
proto: $(STAMPS)/venv
	scripts/gen-proto.sh $(BIN)/python

.PHONY: proto-check  ## Fail if the committed gRPC stubs differ from what `make proto` generates
proto-check: proto
	git diff --exit-code -- python/kefu/plugins/_proto

.PHONY: model  ## Retrain the bundled sentiment model reproducibly (byte-identical ONNX) from PyPI-shipped data
model: install
	$(BIN)/python -m kefu.sentiment.train --out python/kefu/sentiment/model

.PHONY: fuzz  ## Run the cargo-fuzz target on the frame decoder for FUZZ_SECONDS (default 60)
fuzz:
	scripts/fuzz.sh $${FUZZ_SECONDS:-60}

.PHONY: image  ## Build the linux/amd64 container image kefu:amd64 (podman offline here, docker elsewhere)
image:
	scripts/build-image.sh amd64

.PHONY: image-arm64  ## Build the linux/arm64 image kefu:arm64 (under QEMU here: slow, see docs/deployment.md)
image-arm64:
	scripts/build-image.sh arm64

.PHONY: image-smoke  ## Run kefu:amd64 with PostgreSQL + TLS from /app/certs; visitor and agent chat through it
image-smoke: install
	scripts/image-smoke.sh amd64

.PHONY: image-smoke-arm64  ## The same smoke on kefu:arm64 under emulation
image-smoke-arm64: install
	scripts/image-smoke.sh arm64

.PHONY: arm64-test  ## cargo test of the native kernels built and run for aarch64 (QEMU, arm64 build image)
arm64-test:
	scripts/arm64-cargo-test.sh

.PHONY: clean  ## Remove build outputs (keeps .venv)
clean:
	rm -rf $(STAMPS) engine/build native/target python/kefu/_native*.so engine/src/kefu_engine/*.so engine/src/kefu_engine/*.c
