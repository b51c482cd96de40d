#!/usr/bin/env bash
# The image pull benchmark: capsa-cri (release build) against containerd 1.6's CRI plugin,
# both pulling `rootfs-fixtures/images.sh bench` (50 layers, 200 MiB) from one local
# docker-registry in a network namespace of its own, rounds alternating, each on a fresh
# root. Prints the median PullImage wall time, the peak RSS of each daemon during the pull
# and the ratios (cri/tests/bench_pull.rs says how). BENCH_PULL_ROUNDS=N (default 5).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
need=()
for p in containerd docker-registry skopeo busybox-static openssl protobuf-compiler; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The test harness runs the capsa-cri binary of its own build (--release makes both release)
# and takes containerd's sandbox image, capsa-pause, from beside it.
cargo build --release -p capsa --bin capsa-pause
exec cargo test --release -p capsa-cri --test bench_pull -- --ignored --nocapture --test-threads 1
