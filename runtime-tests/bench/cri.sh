#!/usr/bin/env bash
# The pod and container benchmark: capsa-cri (release build) against containerd 1.6's CRI
# plugin in one run, each in a network namespace of its own on the same bridge network and
# busybox image: Run+Create+Start latency, 100 pods 8 at a time, ExecSync of /bin/true,
# memory per running pod, ListContainers with 500 containers (cri/tests/bench_pods.rs says
# how each is measured). Prints a table with the ratios.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
need=()
for p in containerd docker-registry skopeo busybox-static protobuf-compiler containernetworking-plugins; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -p capsa --bin capsa-pause --bin capsa
exec cargo test --release -p capsa-cri --test bench_pods -- --ignored --nocapture --test-threads 1
