#!/usr/bin/env bash
# Pulls the uncompressed ELF kernel out of a bzImage: booted directly (PVH), it skips the
# slow in-guest decompression under software emulation. Usage: extract-vmlinux.sh BZIMAGE OUT
set -euo pipefail
img=$1 out=$2
try() {
    local magic=$1 cmd=$2
    for pos in $(LC_ALL=C grep -obUaP "$magic" "$img" | cut -d: -f1); do
        if tail -c +$((pos + 1)) "$img" | $cmd > "$out.tmp" 2>/dev/null || [ -s "$out.tmp" ]; then
            if head -c 4 "$out.tmp" | grep -q ELF; then mv "$out.tmp" "$out"; return 0; fi
        fi
    done
    return 1
}
try '\xfd7zXZ\x00' 'xz -dc' || try '\x1f\x8b\x08' 'gzip -dc' || try '\x28\xb5\x2f\xfd' 'zstd -dcq' || {
    rm -f "$out.tmp"; echo "extract-vmlinux.sh: no compressed kernel found in $img" >&2; exit 1; }
