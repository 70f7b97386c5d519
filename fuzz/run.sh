#!/usr/bin/env bash
# Runs every fuzz target for N seconds each (default 60): fuzz/run.sh [SECONDS] [TARGET...]
#
# Installs cargo-fuzz if missing; needs the nightly toolchain (`cargo +nightly`). Targets are
# built without a sanitizer, with overflow checks and debug assertions on: ltx and walship have
# no unsafe code and lz4_flex is built safe, so ASan would mostly cost speed (the one unsafe
# dependency exercised is unsafe-libyaml, under serde_yaml_ng; `cargo +nightly fuzz run config`
# runs it with ASan when wanted).
# New corpus entries go to fuzz/work/<target>/ (git-ignored), seeded from fuzz/corpus/<target>/.
# Crashes land in fuzz/artifacts/<target>/ and make the script fail; reproduce one with
#   cargo +nightly fuzz run --sanitizer none TARGET fuzz/artifacts/TARGET/crash-...
# The first build compiles walship's whole dependency tree with coverage instrumentation: about
# 20 minutes on 2 cores; later builds take a minute or two.
set -euo pipefail

cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(ltx_decode ltx_roundtrip wal config replica_url)
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: needs the nightly toolchain (cargo +nightly), which cargo fuzz builds with" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi

# One cargo build for all targets: they share every dependency.
cargo +nightly fuzz build --sanitizer none

status=0
for target in "${targets[@]}"; do
    mkdir -p "work/$target" "corpus/$target"
    dict=()
    if [ -f "dict/$target.dict" ]; then
        dict=("-dict=dict/$target.dict")
    fi
    echo "== $target: ${seconds}s"
    if ! cargo +nightly fuzz run --sanitizer none "$target" "work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
        "${dict[@]}"; then
        echo "== $target FAILED: see fuzz/artifacts/$target/" >&2
        status=1
    fi
done
exit $status
