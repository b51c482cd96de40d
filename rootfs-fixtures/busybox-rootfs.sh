#!/usr/bin/env bash
# Builds a minimal root filesystem from Debian's busybox-static: /bin/busybox plus one symlink
# per applet, the usual top-level directories, and passwd/group files with root and a test
# user. Usage: busybox-rootfs.sh DIR
set -euo pipefail
out=${1:?usage: busybox-rootfs.sh DIR}
bb=/bin/busybox
# Debian's busybox (dynamic) and busybox-static both install /bin/busybox; only the static
# one runs inside a rootfs without libc.
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed"; then
    echo "busybox-rootfs.sh: the busybox-static package is required (apt-get install busybox-static)" >&2
    exit 1
fi
rm -rf "$out"
mkdir -p "$out"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,root,home,run,var,mnt}
chmod 1777 "$out/tmp"
cp "$bb" "$out/bin/busybox"
for applet in $("$out/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$out/bin/$applet"
done
cat > "$out/etc/passwd" <<'PW'
root:x:0:0:root:/root:/bin/sh
tester:x:1000:1000:tester:/home/tester:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PW
cat > "$out/etc/group" <<'GR'
root:x:0:
tty:x:5:
tester:x:1000:
nogroup:x:65534:
GR
mkdir -p "$out/home/tester" && chown 1000:1000 "$out/home/tester"
echo "capsa busybox fixture" > "$out/etc/motd"
