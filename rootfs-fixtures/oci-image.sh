#!/usr/bin/env bash
# Packs root filesystems as an OCI image layout in a tar (what `ctr image import` and
# `skopeo copy oci-archive:` read), offline, with nothing but tar, gzip, zstd and sha256sum.
# Usage:
#   oci-image.sh ROOTFS OUT.tar NAME [CONFIG-JSON]
#       one gzip layer from the directory ROOTFS;
#   oci-image.sh --layer SRC[:gzip|zstd|tar]... OUT.tar NAME [CONFIG-JSON]
#       one layer per --layer, bottom first: SRC a directory or an uncompressed layer tar,
#       compressed as said (default gzip).
# NAME is the image's name (e.g. docker.io/library/capsa-busybox:latest); CONFIG-JSON is the
# image config's "config" object (default: a PATH and Cmd ["sh"]), e.g.
# '{"Entrypoint":["/pause"]}' for a pause image. OUT.tar.id gets the image id.
set -euo pipefail
. "$(dirname "$0")/oci-lib.sh"
usage="usage: oci-image.sh [--layer SRC[:gzip|zstd|tar]]... [ROOTFS] OUT.tar NAME [CONFIG-JSON]"
layers=()
while [ "${1:-}" = --layer ]; do
    layers+=("${2:?$usage}")
    shift 2
done
if [ ${#layers[@]} -eq 0 ]; then
    layers=("${1:?$usage}")
    shift
fi
out=${1:?$usage}
name=${2:?$usage}
image_config=${3:-'{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]}'}
oci_init
for layer in "${layers[@]}"; do
    case $layer in
    *:gzip | *:zstd | *:tar) oci_layer "${layer%:*}" "${layer##*:}" ;;
    *) oci_layer "$layer" gzip ;;
    esac
done
oci_manifest "$(dpkg --print-architecture)" "$image_config"
oci_archive "$out" "$name"
