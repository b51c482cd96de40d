#!/usr/bin/env bash
# Builds capsa in release mode and benchmarks it against crun and runc (Debian's packages,
# installed when missing). Extra arguments go to bench.py (--runs N, --quick, --json FILE).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
need=()
for p in crun runc busybox-static time libseccomp-dev libc6-dev gcc; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# .cargo/config.toml builds for an explicit target (static), hence the triple in the path.
cargo build --release
exec python3 "$here/bench.py" --capsa target/$(rustc -vV | sed -n "s/^host: //p")/release/capsa "$@"
