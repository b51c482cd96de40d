#!/usr/bin/env bash
# Boots a Debian kernel under qemu (TCG: KVM does not work on these machines) with cgroup v2
# mounted, shares this machine's root read-only over 9p, and runs a test script inside it
# against the freshly built capsa. Prints the script's RESULT lines; exits non-zero on a FAIL,
# a missing result, or a VM that did not finish.
#   run.sh CAPSA_BINARY [SCRIPT]     (as root; installs qemu-system-x86 and linux-image-amd64)
# VM_SWITCH_ROOT=1 runs the script with the host's root as its mount namespace's root
# rather than chrooted into it (see init). $CAPSA_VM_ENV, "NAME=VALUE ..." (no spaces in a
# value), goes on the kernel command line, which puts it in the script's environment. The VM
# is stopped after $CAPSA_VM_TIMEOUT seconds (default 2400: software emulation on a busy
# machine is slow; at rest the whole suite takes a few minutes).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
capsa=$(realpath "${1:?usage: run.sh CAPSA_BINARY [SCRIPT]}")
script=$(realpath "${2:-$here/cgroup2-tests.sh}")
cache=$repo/target/vm
mkdir -p "$cache"
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v cpio >/dev/null || need+=(cpio)
ls /boot/vmlinuz-* >/dev/null 2>&1 || need+=(linux-image-amd64)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
bzimage=$(ls /boot/vmlinuz-* | sort -V | tail -1)
kver=${bzimage#/boot/vmlinuz-}
[ -f "$cache/vmlinux-$kver" ] || bash "$here/extract-vmlinux.sh" "$bzimage" "$cache/vmlinux-$kver"
if [ ! -f "$cache/initramfs-$kver.cpio.gz" ] || [ "$here/init" -nt "$cache/initramfs-$kver.cpio.gz" ] \
    || [ "$here/build-initramfs.sh" -nt "$cache/initramfs-$kver.cpio.gz" ]; then
    bash "$here/build-initramfs.sh" "$kver" "$cache/initramfs-$kver.cpio.gz"
fi
log=$cache/serial.log
rm -f "$log"
timeout "${CAPSA_VM_TIMEOUT:-2400}" qemu-system-x86_64 -accel tcg,thread=multi -cpu qemu64 -m 1024 -smp 2 \
    -nographic -no-reboot -monitor none -M pc -nic none \
    -kernel "$cache/vmlinux-$kver" -initrd "$cache/initramfs-$kver.cpio.gz" \
    -append "console=ttyS0 quiet panic=-1 capsa.script=$script CAPSA=$capsa capsa.switchroot=${VM_SWITCH_ROOT:-0} ${CAPSA_VM_ENV:-}" \
    -fsdev local,id=fs1,path=/,security_model=none,readonly=on,multidevs=remap \
    -device virtio-9p-pci,fsdev=fs1,mount_tag=hostroot \
    -serial "file:$log" >/dev/null 2>&1 || true
grep -a -E '^(RESULT|VMTEST)' "$log" | tr -d '\r' || true
grep -aq '^VMTEST DONE' "$log" || { echo "the VM did not finish (see $log)"; exit 1; }
grep -aq '^RESULT ' "$log" || { echo "no results from the VM (see $log)"; exit 1; }
! grep -aq '^RESULT [^ ]* FAIL' "$log"
