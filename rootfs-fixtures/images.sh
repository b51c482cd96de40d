#!/usr/bin/env bash
# Builds the test images as OCI archives (oci-archive: for skopeo, importable by ctr), offline
# from Debian's busybox-static. OUT.tar.id gets the image id (its config digest).
# Usage: images.sh FIXTURE OUT.tar NAME [ARG...]
#        images.sh all DIR PAUSE    every fixture but bench, as DIR/FIXTURE.tar named
#                                   docker.io/library/FIXTURE:latest (one busybox tree for all)
#   busybox          busybox-static's rootfs (busybox-rootfs.sh), Cmd ["sh"]
#   pause PAUSE      the pause program PAUSE alone as /pause, Entrypoint ["/pause"]
#   web              busybox + /www (index.html, a link to it, private/ of www-data), a
#                    volume, served by httpd on port 80; OUT.tar.view gets /www's view
#   user-1002        busybox with User "1002"
#   user-www-data    busybox + /etc/passwd and /etc/group with www-data (33:33), User "www-data"
#   layered          busybox + three layers under /data (gzip, zstd, plain tar) with whiteouts,
#                    an opaque directory, a file replaced by a directory and the reverse;
#                    OUT.tar.view gets the merged /data expected (see layered_view below)
#   multiarch        an index: busybox for this machine's platform and a bogus image for
#                    another (linux/arm64, or linux/amd64 on arm64), whose /ARCH says so
#   bench [LAYERS [MIB [SEED]]]
#                    busybox + LAYERS-1 layers (default 50) of MIB MiB in all (default 200),
#                    gzip: pseudo-random data (AES-CTR of zeros keyed by SEED, so the same for
#                    the same SEED), half raw and half as hex text (gzip shrinks it by a
#                    quarter in all)
set -euo pipefail
here=$(dirname "$0")
. "$here/oci-lib.sh"
usage="usage: images.sh busybox|pause PAUSE|web|user-1002|user-www-data|layered|multiarch|bench OUT.tar NAME
       images.sh all DIR PAUSE"
arch=$(dpkg --print-architecture)
path_env='"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]'

# A directory for one layer's tree (a layer's root entry is the image's /: 0755).
layer_dir() {
    local d
    d=$(mktemp -d -p "$OCI")
    chmod 0755 "$d"
    echo "$d"
}

# put FILE MODE CONTENT: a one-line file (parents 0755).
put() {
    mkdir -p "$(dirname "$1")"
    chmod 0755 "$(dirname "$1")"
    printf '%s\n' "$3" >"$1"
    chmod "$2" "$1"
}

# The busybox layer, from the tree in $busybox (made here if there is none yet), which the
# layers above it may read.
busybox_layer() {
    if [ -z "${busybox:-}" ]; then
        busybox=$(layer_dir)
        bash "$here/busybox-rootfs.sh" "$busybox"
    fi
    oci_layer "$busybox" gzip
}

# The view layered_view writes is what a correct unpacker shows under /data: one line per
# entry, sorted by path (bytewise): PATH TYPE UID:GID MODE [CONTENT|TARGET], TYPE one of dir,
# file (CONTENT its one line) and link (TARGET; MODE 0777).
layered_view() {
    cat <<'VIEW'
/data dir 0:0 0755
/data/added.txt file 0:0 0644 added
/data/becomes-dir dir 0:0 0700
/data/becomes-dir/inside.txt file 0:0 0644 inside
/data/becomes-file file 0:0 0644 now a file
/data/hard file 0:0 0644 keep
/data/keep.txt file 0:0 0644 keep
/data/link link 0:0 0777 overwritten.txt
/data/opaque dir 0:0 0755
/data/opaque/new.txt file 0:0 0644 new
/data/overwritten.txt file 0:0 0644 v2
/data/owned.txt file 1002:1002 0600 owned
/data/revived.txt file 0:0 0644 revived
VIEW
}

# What a container of the web image sees under its volume /www (layered_view's format).
web_view() {
    cat <<'VIEW'
/www dir 0:0 0755
/www/index.html file 0:0 0644 capsa web fixture
/www/latest link 0:0 0777 index.html
/www/private dir 33:33 0750
/www/private/note.txt file 33:33 0640 for www-data
VIEW
}

layered_layers() {
    local d
    # 2 (gzip): the tree the upper layers change.
    d=$(layer_dir)
    put "$d/data/keep.txt" 0644 keep
    ln "$d/data/keep.txt" "$d/data/hard"
    put "$d/data/overwritten.txt" 0644 v1
    put "$d/data/gone.txt" 0644 gone
    put "$d/data/revived.txt" 0644 old
    put "$d/data/gonedir/a.txt" 0644 a
    put "$d/data/gonedir/sub/b.txt" 0644 b
    put "$d/data/opaque/old.txt" 0644 old
    put "$d/data/opaque/sub/deep.txt" 0644 deep
    put "$d/data/becomes-dir" 0644 "a file"
    put "$d/data/becomes-file/child.txt" 0644 child
    put "$d/data/owned.txt" 0600 owned
    chown 1002:1002 "$d/data/owned.txt"
    ln -s keep.txt "$d/data/link"
    oci_layer "$d" gzip
    # 3 (zstd): whiteouts of a file and of a directory, a file and a symlink replaced.
    d=$(layer_dir)
    mkdir -m 0755 "$d/data"
    : >"$d/data/.wh.gone.txt"
    : >"$d/data/.wh.gonedir"
    : >"$d/data/.wh.revived.txt"
    put "$d/data/overwritten.txt" 0644 v2
    put "$d/data/added.txt" 0644 added
    ln -s overwritten.txt "$d/data/link"
    oci_layer "$d" zstd
    # 4 (plain tar): an opaque directory, a file become a directory and a directory become a
    # file, a whited-out file back again.
    d=$(layer_dir)
    mkdir -m 0755 "$d/data"
    put "$d/data/opaque/new.txt" 0644 new
    : >"$d/data/opaque/.wh..wh..opq"
    put "$d/data/becomes-dir/inside.txt" 0644 inside
    chmod 0700 "$d/data/becomes-dir"
    put "$d/data/becomes-file" 0644 "now a file"
    put "$d/data/revived.txt" 0644 revived
    oci_layer "$d" tar
}

bench_layers() {
    local layers=${1:-50} mib=${2:-200} seed=${3:-1} i d bytes
    if [ "$layers" -lt 2 ]; then
        echo "images.sh bench: LAYERS $layers: at least 2 (busybox and one of data)" >&2
        exit 2
    fi
    bytes=$((mib * 1024 * 1024 / (layers - 1)))
    for ((i = 1; i < layers; i++)); do
        d=$(layer_dir)
        mkdir -m 0755 "$d/bench"
        # Half raw, half as hex text: gzip stores the one and Huffman-codes the other to about
        # half, as image layers of binaries and text are.
        head -c "$bytes" /dev/zero |
            openssl enc -aes-256-ctr -nosalt -pbkdf2 -pass "pass:capsa-bench-$seed-$i" >"$d/random"
        head -c $((bytes / 2)) "$d/random" >"$d/bench/$i.bin"
        tail -c $((bytes / 4)) "$d/random" | basenc --base16 >"$d/bench/$i.txt"
        rm "$d/random"
        oci_layer "$d" gzip
        rm -rf "$d"
    done
}

# build FIXTURE OUT.tar NAME [ARG...]: one image, in a layout of its own.
build() {
    local fixture=$1 out=$2 name=$3
    shift 3
    oci_init
    case $fixture in
    busybox)
        busybox_layer
        oci_manifest "$arch" "{$path_env,\"Cmd\":[\"sh\"]}"
        ;;
    pause)
        pause=${1:?images.sh pause OUT.tar NAME PAUSE-BINARY}
        d=$(layer_dir)
        cp "$pause" "$d/pause"
        oci_layer "$d" gzip
        oci_manifest "$arch" '{"Entrypoint":["/pause"]}'
        ;;
    web)
        busybox_layer
        d=$(layer_dir)
        put "$d/www/index.html" 0644 "capsa web fixture"
        put "$d/www/private/note.txt" 0640 "for www-data"
        chown -R 33:33 "$d/www/private"
        chmod 0750 "$d/www/private"
        ln -s index.html "$d/www/latest"
        oci_layer "$d" gzip
        oci_manifest "$arch" "{$path_env,\"Cmd\":[\"httpd\",\"-f\",\"-p\",\"80\",\"-h\",\"/www\"],\"ExposedPorts\":{\"80/tcp\":{}},\"Volumes\":{\"/www\":{}}}"
        web_view >"$out.view"
        ;;
    user-1002)
        busybox_layer
        oci_manifest "$arch" "{$path_env,\"Cmd\":[\"sh\"],\"User\":\"1002\"}"
        ;;
    user-www-data)
        busybox_layer
        d=$(layer_dir)
        put "$d/etc/passwd" 0644 "$(cat "$busybox/etc/passwd")"$'\n'"www-data:x:33:33:www-data:/var/www:/bin/sh"
        put "$d/etc/group" 0644 "$(cat "$busybox/etc/group")"$'\n'"www-data:x:33:"
        oci_layer "$d" gzip
        oci_manifest "$arch" "{$path_env,\"Cmd\":[\"sh\"],\"User\":\"www-data\"}"
        ;;
    layered)
        busybox_layer
        layered_layers
        oci_manifest "$arch" "{$path_env,\"Cmd\":[\"sh\"]}"
        layered_view >"$out.view"
        ;;
    multiarch)
        other=arm64
        [ "$arch" != arm64 ] || other=amd64
        d=$(layer_dir)
        put "$d/ARCH" 0644 "$other"
        oci_layer "$d" gzip
        oci_manifest "$other" '{"Cmd":["/bogus"]}'
        bogus=$OCI_DESC
        busybox_layer
        oci_manifest "$arch" "{$path_env,\"Cmd\":[\"sh\"]}"
        native=$OCI_DESC
        oci_index "$bogus" "$native"
        ;;
    bench)
        busybox_layer
        bench_layers "$@"
        oci_manifest "$arch" "{$path_env,\"Cmd\":[\"sh\"]}"
        ;;
    *)
        echo "images.sh: unknown fixture $fixture; $usage" >&2
        exit 2
        ;;
    esac
    oci_archive "$out" "$name"
}

case ${1:?$usage} in
all)
    dir=${2:?$usage}
    pause=${3:?$usage}
    busybox=$(mktemp -d)
    trap 'rm -rf "$busybox"' EXIT
    chmod 0755 "$busybox"
    bash "$here/busybox-rootfs.sh" "$busybox"
    for f in busybox web user-1002 user-www-data layered multiarch; do
        (build "$f" "$dir/$f.tar" "docker.io/library/$f:latest")
    done
    (build pause "$dir/pause.tar" docker.io/library/pause:latest "$pause")
    ;;
*)
    build "$@"
    ;;
esac
