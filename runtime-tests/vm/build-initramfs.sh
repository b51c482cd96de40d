#!/usr/bin/env bash
# Builds the test VM's initramfs once: busybox-static, the kernel's virtio/9p (and tun, loop)
# modules in dependency order, and ./init. Usage: build-initramfs.sh KERNEL_VERSION OUT.cpio.gz
set -euo pipefail
kver=$1 out=$2
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,sbin,proc,sys,dev,host,modules,tmp}
cp /bin/busybox "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"; done
moddir=/lib/modules/$kver
# tun and loop: the devices the cgroups_devices tests open (their drivers loaded, as on the
# host, so that an open fails only when the device filter denies it).
wanted="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci netfs fscache 9pnet 9p 9pnet_virtio
  tun loop"
: > "$root/modules.order"
for m in $wanted; do
    f=$(find "$moddir/kernel" -name "$m.ko*" | head -1)
    [ -n "$f" ] || continue   # built in
    case "$f" in
        *.ko.xz) xz -dc "$f" > "$root/modules/$m.ko" ;;
        *.ko.zst) zstd -dcq "$f" > "$root/modules/$m.ko" ;;
        *) cp "$f" "$root/modules/$m.ko" ;;
    esac
    echo "$m" >> "$root/modules.order"
done
install -m 755 "$here/init" "$root/init"
(cd "$root" && find . -print0 | cpio --null -o -H newc --owner=0:0 --quiet | gzip -1) > "$out"
