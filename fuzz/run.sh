#!/usr/bin/env bash
# Runs every fuzz target for N seconds each (default 60): fuzz/run.sh [SECONDS] [TARGET...]
#
# Installs cargo-fuzz if missing; needs the nightly toolchain (`cargo +nightly`). Targets are
# built without a sanitizer: the code under test is safe Rust, where ASan finds nothing that
# overflow checks and debug assertions (on here) do not, and it costs a large slowdown.
# New corpus entries go to fuzz/work/<target>/ (git-ignored), seeded from fuzz/corpus/<target>/.
# Crashes land in fuzz/artifacts/<target>/ and make the script fail.
set -euo pipefail

cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(ltx_decode ltx_roundtrip wal config replica_url)
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
