#!/usr/bin/env bash
# Builds capsa and runs a busybox container with it, installing what it needs (Debian 12, root).
#   bash rootfs-fixtures/demo.sh [COMMAND...]     default: sh -c 'echo hello from $(hostname); id; ls /'
set -euo pipefail
cd "$(dirname "$0")/.."
# busybox-static: the container's root filesystem; libseccomp-dev and libc6-dev: the static
# archives capsa links.
need=()
for p in busybox-static libseccomp-dev libc6-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
# .cargo/config.toml builds for an explicit target (static), hence the triple in the path.
cargo build --release
capsa=$PWD/target/$(rustc -vV | sed -n "s/^host: //p")/release/capsa
bundle=${CAPSA_DEMO_BUNDLE:-/tmp/capsa-demo}
rm -rf "$bundle" && mkdir -p "$bundle"
bash rootfs-fixtures/busybox-rootfs.sh "$bundle/rootfs"
"$capsa" spec --bundle "$bundle"
if [ $# -eq 0 ]; then set -- sh -c 'echo hello from $(hostname); id; ls /'; fi
python3 - "$bundle/config.json" "$@" <<'PY'
import json, sys
path, args = sys.argv[1], sys.argv[2:]
c = json.load(open(path))
c["process"]["terminal"] = False
c["process"]["args"] = args
json.dump(c, open(path, "w"), indent=2)
PY
exec "$capsa" run --bundle "$bundle" "demo-$$"
