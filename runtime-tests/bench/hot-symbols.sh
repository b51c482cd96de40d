#!/usr/bin/env bash
# Regenerates runtime-tests/bench/hot-symbols.txt: the functions of capsa that the benchmark's
# commands run (create, start, state, delete, run, exec, list, kill), hottest first. The
# release link (build.rs) lays them out together, so a command maps few 64 KiB windows of the
# binary: the kernel maps a whole window around each page a process touches (fault-around),
# and with the hot code scattered over 4 MB of text that alone was 2.5 MiB of peak RSS.
#
# Sampled with perf (cpu-clock, 50 kHz) over 150 rounds of those commands; the binary is
# static and not position-independent, so a sampled address is a symbol's address. Symbols
# no longer in the binary are ignored by the linker, so a stale list costs only memory.
# Usage: hot-symbols.sh   (root, Debian: installs linux-perf and busybox-static if missing)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
need=()
for p in linux-perf busybox-static; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release
capsa=$PWD/target/$(rustc -vV | sed -n "s/^host: //p")/release/capsa
work=$(mktemp -d /tmp/capsa-hot.XXXXXX)
root=$work/state
cleanup() {
    "$capsa" --root "$root" delete --force hot-ex >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

bash rootfs-fixtures/busybox-rootfs.sh "$work/rootfs"
for b in true sleep; do
    mkdir -p "$work/$b"
    "$capsa" spec --bundle "$work/$b"
    python3 - "$work/$b/config.json" "$work/rootfs" "$b" <<'PY'
import json, sys
path, rootfs, what = sys.argv[1:]
c = json.load(open(path))
c["root"]["path"] = rootfs
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"] if what == "true" else ["sleep", "1000"]
c["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
json.dump(c, open(path, "w"))
PY
done

cat >"$work/workload.sh" <<EOF
set -e
c() { "$capsa" --root "$root" "\$@"; }
c run --detach --bundle "$work/sleep" hot-ex
for i in \$(seq 1 150); do
    c create --bundle "$work/true" l\$i; c start l\$i; c state l\$i >/dev/null; c delete --force l\$i
    c run --bundle "$work/true" r\$i; c exec hot-ex /bin/true; c list >/dev/null; c kill hot-ex SIGCONT
done
c delete --force hot-ex
EOF
perf record -q -F 50000 -o "$work/perf.data" -- bash "$work/workload.sh"
perf script -i "$work/perf.data" -F comm,ip 2>/dev/null | awk '$1 == "capsa" { print $2 }' >"$work/ips"
nm -n --defined-only "$capsa" >"$work/symbols"
python3 - "$work/ips" "$work/symbols" >"$here/hot-symbols.txt" <<'PY'
import bisect, collections, sys
ips, symbols = sys.argv[1:]
text = [l.split() for l in open(symbols)]
text = [(int(a, 16), n) for a, t, n in (s for s in text if len(s) == 3) if t in "tTwW"]
addrs = [a for a, _ in text]
hits = collections.Counter()
for line in open(ips):
    ip = int(line, 16)
    i = bisect.bisect_right(addrs, ip) - 1
    if i >= 0 and ip < 0x7fff_0000_0000:
        hits[text[i][1]] += 1
print("\n".join(name for name, _ in hits.most_common()))
PY
echo "$(wc -l <"$here/hot-symbols.txt") symbols in $here/hot-symbols.txt"
