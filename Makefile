# The README's commands: `make demo` runs the main job, `make test` runs every test.
# Everything they need is installed from here: the virtualenv from PyPI (pinned in
# requirements-dev.txt), and the cargo tools if the machine lacks them.

SHELL := /bin/bash
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NPM_DIR := $(CURDIR)/tools/npm
NPM_STAMP := $(NPM_DIR)/node_modules/.installed
export WALSHIP_TEST_VENV := $(VENV)
export WALSHIP_TEST_NPM_BIN := $(NPM_DIR)/node_modules/.bin

.PHONY: all demo test lint rust-test py-test bench venv npm tools lock clean

all: test

$(STAMP): requirements-dev.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(STAMP)

# Test servers from npm (Azurite, the Azure Blob emulator), pinned by tools/npm/package-lock.json.
$(NPM_STAMP): $(NPM_DIR)/package-lock.json
	cd $(NPM_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

npm: $(NPM_STAMP)

# rustfmt, clippy and nextest come with this kind of machine; install nextest if it is missing.
tools:
	@cargo fmt --version >/dev/null && cargo clippy --version >/dev/null
	@cargo nextest --version >/dev/null 2>&1 || cargo install --locked cargo-nextest

demo: venv
	cargo build --release -p walship
	$(PY) scripts/demo.py

lint: tools
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

rust-test: tools venv npm
	cargo nextest run --workspace --no-fail-fast

py-test: venv
	@if ls tests/test_*.py >/dev/null 2>&1; then $(VENV)/bin/pytest -q tests; \
	else echo "no Python tests yet"; fi

test: lint rust-test py-test

bench: venv
	cargo bench -p ltx --bench codec
	cargo build --release -p walship
	$(PY) bench/writer_speed.py

# Re-pin the Python test dependencies after editing requirements-dev.in.
lock:
	rm -rf $(VENV).lock && python3 -m venv $(VENV).lock
	$(VENV).lock/bin/pip install --quiet -r requirements-dev.in
	{ echo "# Pinned by \`make lock\` from requirements-dev.in; do not edit by hand."; \
	  $(VENV).lock/bin/pip freeze --all | grep -v '^pip=\|^setuptools='; } > requirements-dev.txt
	rm -rf $(VENV).lock

clean:
	rm -rf target $(VENV) .demo $(NPM_DIR)/node_modules
