#!/usr/bin/env bash
# Runs each fuzz target for a bounded time (default 60 s each). Not part of CI's default
# path. Needs cargo-fuzz (cargo install cargo-fuzz); the stable toolchain is enough with
# RUSTC_BOOTSTRAP=1 (cargo fuzz needs -Z flags for the sanitizer).
# A crash leaves its input in fuzz/artifacts/<target>/: turn it into a regression test (a
# unit test in the module that crashed) before fixing it.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
export RUSTC_BOOTSTRAP=1
for target in spec seccomp; do
    echo "== fuzzing $target for ${secs}s"
    cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -rss_limit_mb=2048
done
