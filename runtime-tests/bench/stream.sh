#!/usr/bin/env bash
# The streaming benchmark: capsa-cri's streaming server against containerd 1.6's, in one run
# (release build): 256 MiB port-forwarded out of a pod, and the exec round trip (a URL, then
# `true` streamed to its exit status), both through the project's client
# (cri/tests/spdy_containerd.rs, bench_streaming_against_containerd, says what each side runs).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
# The harness takes containerd's sandbox image, capsa-pause, from beside capsa-cri.
cargo build --release -p capsa --bin capsa-pause
exec cargo test --release -p capsa-cri --test spdy_containerd -- --ignored --nocapture --test-threads 1
