# Functions that build OCI image layouts offline, with nothing but tar, gzip, zstd, stat and
# sha256sum (no jq: the JSON is printf'd). Sourced by oci-image.sh and images.sh.
#
#   oci_init                          a fresh layout in $OCI (a temporary dir, removed on exit)
#   oci_layer SRC [gzip|zstd|tar]     SRC is a directory (packed) or an uncompressed layer tar
#   oci_manifest ARCH CONFIG          config + manifest of the layers added since the last
#                                     manifest; sets OCI_DESC (its descriptor, with platform)
#                                     and OCI_CONFIG (its config digest: the image id)
#   oci_index DESC...                 an image index of manifest descriptors; sets OCI_DESC
#   oci_archive OUT NAME              index.json naming OCI_DESC as NAME, packed as OUT (tar);
#                                     OUT.id gets the last manifest's image id
#
# Layers are reproducible: entries sorted, numeric owners, one fixed mtime, gzip without a
# name or time, so the same tree gives the same digest in every image that uses it (images
# share their base layer as real ones do).

OCI_MTIME=@946684800 # 2000-01-01T00:00:00Z

oci_init() {
    OCI=$(mktemp -d)
    trap 'rm -rf "$OCI"' EXIT
    mkdir -p "$OCI/blobs/sha256"
    OCI_LAYERS=()
    OCI_DIFF_IDS=()
}

oci_digest() { sha256sum "$1" | cut -d' ' -f1; }

# Moves FILE into the blob store; prints its digest (hex).
oci_blob() {
    local d
    d=$(oci_digest "$1")
    mv "$1" "$OCI/blobs/sha256/$d"
    echo "$d"
}

oci_layer() {
    local src=$1 compression=${2:-gzip} tmp=$OCI/layer.tar media=application/vnd.oci.image.layer.v1.tar
    if [ -d "$src" ]; then
        tar --sort=name --numeric-owner --mtime="$OCI_MTIME" -C "$src" -cf "$tmp" .
    else
        cp "$src" "$tmp"
    fi
    OCI_DIFF_IDS+=("\"sha256:$(oci_digest "$tmp")\"")
    case $compression in
    gzip) gzip -n "$tmp" && tmp=$tmp.gz && media=$media+gzip ;;
    zstd) zstd -q --rm "$tmp" && tmp=$tmp.zst && media=$media+zstd ;;
    tar) ;;
    *)
        echo "oci_layer: compression $compression: gzip, zstd or tar" >&2
        return 1
        ;;
    esac
    local size digest
    size=$(stat -c %s "$tmp")
    digest=$(oci_blob "$tmp")
    OCI_LAYERS+=("{\"mediaType\":\"$media\",\"digest\":\"sha256:$digest\",\"size\":$size}")
}

oci_join() {
    local IFS=,
    echo "$*"
}

oci_manifest() {
    local arch=$1 config=$2
    printf '{"architecture":"%s","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":[%s]}}' \
        "$arch" "$config" "$(oci_join "${OCI_DIFF_IDS[@]}")" >"$OCI/config.json"
    local config_size manifest_size manifest
    config_size=$(stat -c %s "$OCI/config.json")
    OCI_CONFIG=sha256:$(oci_blob "$OCI/config.json")
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[%s]}' \
        "$OCI_CONFIG" "$config_size" "$(oci_join "${OCI_LAYERS[@]}")" >"$OCI/manifest.json"
    manifest_size=$(stat -c %s "$OCI/manifest.json")
    manifest=$(oci_blob "$OCI/manifest.json")
    OCI_DESC="{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$manifest\",\"size\":$manifest_size,\"platform\":{\"architecture\":\"$arch\",\"os\":\"linux\"}}"
    OCI_LAYERS=()
    OCI_DIFF_IDS=()
}

oci_index() {
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s]}' \
        "$(oci_join "$@")" >"$OCI/index-blob.json"
    local size digest
    size=$(stat -c %s "$OCI/index-blob.json")
    digest=$(oci_blob "$OCI/index-blob.json")
    OCI_DESC="{\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"digest\":\"sha256:$digest\",\"size\":$size}"
}

oci_archive() {
    local out=$1 name=$2
    # The name annotations go inside the descriptor: containerd's import reads the first,
    # skopeo's oci-archive:PATH:REF the second.
    printf '{"schemaVersion":2,"manifests":[%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
        "${OCI_DESC%\}}" "$name" "${name##*:}" >"$OCI/index.json"
    echo '{"imageLayoutVersion":"1.0.0"}' >"$OCI/oci-layout"
    tar -C "$OCI" -cf "$out" oci-layout index.json blobs
    echo "$OCI_CONFIG" >"$out.id"
}
