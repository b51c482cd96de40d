#!/usr/bin/env bash
# The test command of the README, and what .ci/run calls: on a fresh Debian 12 machine (as
# root) it installs the packages the build and the tests need, checks formatting and lints,
# then runs every test of the workspace. Extra arguments go to `cargo test` (a filter, say).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
# busybox-static: test root filesystems. qemu, cpio, xz and a Debian kernel: the cgroup v2 VM
# (runtime-tests/vm), since this machine's host runs the v1 hybrid layout. criu: checkpoint
# and restore (its scenarios run in that VM: criu 3.17 fails on the host's kernel).
# zstd: compressed layers in the overlay tests. containerd and podman (with conmon and
# catatonit, its --init and pod pause): the real-client tests, installed with their
# recommends, as a user would have them.
# libseccomp-dev and libc6-dev: the static archives capsa links (.cargo/config.toml).
# protobuf-compiler: protoc for k8s-cri's generated CRI services (capsa-cri). The CNI
# plugins, iptables and iproute2: capsa-cri's pod networking tests. docker-registry, skopeo,
# apache2-utils (htpasswd) and openssl: the CRI tests' private registry, the pushes into it,
# its basic auth, and the benchmark image's pseudo-random layers.
packages="busybox-static qemu-system-x86 cpio xz-utils linux-image-amd64 criu zstd libseccomp-dev libc6-dev
  protobuf-compiler containernetworking-plugins iptables iproute2 pkg-config
  docker-registry skopeo apache2-utils openssl"
clients="containerd podman conmon catatonit runc"
missing() {
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"
    done
}
need=$(missing $packages)
need_clients=$(missing $clients)
if [ -n "$need$need_clients" ]; then
    apt-get update -qq
fi
if [ -n "$need" ]; then
    apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
if [ -n "$need_clients" ]; then
    apt-get install -y -qq $need_clients >/dev/null
fi
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast "$@"
