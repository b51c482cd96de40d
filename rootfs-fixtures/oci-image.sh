#!/usr/bin/env bash
# Packs a root filesystem as a one-layer OCI image layout in a tar (what `ctr image import`
# and `skopeo copy oci-archive:` read), offline, with nothing but tar, gzip and sha256sum.
# Usage: oci-image.sh ROOTFS OUT.tar IMAGE-NAME [CONFIG-JSON]
#   (e.g. docker.io/library/capsa-busybox:latest); CONFIG-JSON is the image config's "config"
#   object (default: a PATH and Cmd ["sh"]), e.g. '{"Entrypoint":["/pause"]}' for a pause image.
set -euo pipefail
rootfs=${1:?usage: oci-image.sh ROOTFS OUT.tar NAME}
out=${2:?usage: oci-image.sh ROOTFS OUT.tar NAME}
name=${3:?usage: oci-image.sh ROOTFS OUT.tar NAME}
image_config=${4:-'{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]}'}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/blobs/sha256"
digest() { sha256sum "$1" | cut -d' ' -f1; }
blob() { local d; d=$(digest "$1"); mv "$1" "$work/blobs/sha256/$d"; echo "$d"; }

tar --sort=name --numeric-owner -C "$rootfs" -cf "$work/layer.tar" .
diff_id=$(digest "$work/layer.tar")
gzip -n "$work/layer.tar"
layer_size=$(stat -c %s "$work/layer.tar.gz")
layer=$(blob "$work/layer.tar.gz")

arch=$(dpkg --print-architecture)
printf '{"architecture":"%s","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$arch" "$image_config" "$diff_id" > "$work/config.json"
config_size=$(stat -c %s "$work/config.json")
config=$(blob "$work/config.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$config" "$config_size" "$layer" "$layer_size" > "$work/manifest.json"
manifest_size=$(stat -c %s "$work/manifest.json")
manifest=$(blob "$work/manifest.json")

printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest" "$manifest_size" "$name" "${name##*:}" > "$work/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$work/oci-layout"
tar -C "$work" -cf "$out" oci-layout index.json blobs
