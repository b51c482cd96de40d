#!/bin/bash
# checkpoint/restore scenarios, run inside the test VM (see run.sh) with the capsa binary in
# $CAPSA: Debian's criu 3.17 cannot run on the host's kernel (its vDSO layout), but can on
# Debian's own. Each scenario prints "RESULT <name> PASS|FAIL <detail>".
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
S=/run/capsa-ck
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# criu needs a writable /tmp (it makes its probe directories there, whatever TMPDIR says),
# and the host's /tmp is shared read-only, perhaps with the repository under test: first run
# from copies (capsa is static), then put a tmpfs on /tmp.
if [ -z "$CK_COPIED" ]; then
    mkdir -p "$S"
    cp "$0" $S/checkpoint-tests.sh && cp "$CAPSA" $S/capsa || { echo "RESULT fixture FAIL copies"; exit 1; }
    bash "$repo/rootfs-fixtures/busybox-rootfs.sh" $S/rootfs >/dev/null || { echo "RESULT fixture FAIL busybox-rootfs.sh"; exit 1; }
    CK_COPIED=1 CAPSA=$S/capsa exec bash $S/checkpoint-tests.sh
fi
mount -t tmpfs -o mode=1777 tmpfs /tmp
export TMPDIR=$S
root=$S/state
capsa() { "$CAPSA" --root "$root" "$@"; }
result() { echo "RESULT $1 $2 ${*:3}"; }
status() { capsa state "$1" 2>/dev/null | sed -n 's/.*"status": "\([a-z]*\)".*/\1/p'; }
cg=/sys/fs/cgroup/capsa
mkdir -p $S/data $S/rootfs/data

# What criu needs of the VM's kernel beyond what it boots with: the sock_diag modules (it
# reads sockets through them), nf_tables, veth and tun (its feature probes), nf_conntrack's
# netlink (a network namespace's dump), and a loopback that is up (the TCP repair probe
# connects to it). The host's root, where this runs, has
# the kernel's modules.
for m in unix_diag inet_diag tcp_diag udp_diag raw_diag netlink_diag af_packet_diag nf_tables veth tun nf_conntrack nf_conntrack_netlink; do
    modprobe "$m" 2>/dev/null
done
ip link set lo up
# ... and /dev/pts, which it looks at even for containers without a terminal.
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
# `criu check` also probes features no container here uses (and says "Does not look good"
# when one is missing): what counts is that it gets past its kernel feature detection,
# where it fails on the host.
out=$(criu check 2>&1)
if echo "$out" | grep -q "Could not initialize kernel features detection"; then
    result criu_check FAIL "$(echo "$out" | grep Error | tr '\n' ' ')"
else
    result criu_check PASS "$(criu --version | head -1 | tr -d '\n'); missing: $(echo "$out" | grep -o 'Error.*' | tr '\n' ' ')"
fi

# bundle NAME SCRIPT [NET]: capsa's default spec (its namespaces, mounts, masked paths)
# running `sh -c SCRIPT`, writable root, with $S/data bound at /data; without a network
# namespace of its own unless NET is given (criu dumps one with iptables-save and the like,
# slow under emulation: one scenario below has it).
bundle() {
    local b=$S/bundles/$1
    mkdir -p "$b"
    rm -f "$b/config.json"
    capsa spec --bundle "$b"
    python3 - "$b/config.json" "$2" "$S" "$3" <<'PY'
import json, sys
path, script, s, net = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
c = json.load(open(path))
c["root"] = {"path": s + "/rootfs", "readonly": False}
c["process"]["terminal"] = False
c["process"]["args"] = ["sh", "-c", script]
c["mounts"].append({"destination": "/data", "type": "bind", "source": s + "/data", "options": ["rbind", "rw"]})
if not net:
    c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
json.dump(c, open(path, "w"))
PY
    echo "$b"
}
# until_count FILE N: waits until FILE holds a number >= N (the container's counter), for at
# most a minute (a container that does not run must not hang the VM).
until_count() {
    local tries=600
    until [ "$(cat "$1" 2>/dev/null || echo 0)" -ge "$2" ] 2>/dev/null || [ $tries = 0 ]; do sleep 0.1; tries=$((tries - 1)); done
}

# A counter loop: the count lives in the shell's memory; each value is written to a file and
# appended through a descriptor held open in the bound /data.
b=$(bundle counter 'exec 3>>/data/counter.log; i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; echo $i >&3; sleep 0.2; done')
capsa run -d --bundle "$b" ck </dev/null >/dev/null 2>&1
old=$(capsa state ck | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
until_count $S/rootfs/tmp/counter 5
echo keep > $S/rootfs/tmp/marker
err=$(capsa checkpoint --image-path $S/img ck 2>&1); rc=$?
at=$(cat $S/rootfs/tmp/counter)
sleep 0.6
if [ $rc = 0 ] && [ "$(status ck)" = stopped ] && [ ! -e /proc/$old ] && [ "$(cat $S/rootfs/tmp/counter)" = "$at" ] && [ -s $S/img/inventory.img ]; then
    result checkpoint_stops PASS "counter=$at"
else
    result checkpoint_stops FAIL "rc=$rc status=$(status ck) counter=$at/$(cat $S/rootfs/tmp/counter) err=$err $(grep -m3 Error $S/img/dump.log)"
fi
capsa delete ck
err=$(capsa restore -d --bundle "$b" --image-path $S/img --pid-file $S/ck.pid ck </dev/null 2>&1 >/dev/null); rc=$?
pid=$(cat $S/ck.pid 2>/dev/null)
state_pid=$(capsa state ck 2>/dev/null | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
if [ $rc = 0 ] && [ "$(status ck)" = running ] && [ -n "$pid" ] && [ "$pid" = "$state_pid" ] && grep -qx "$pid" $cg/ck/cgroup.procs; then
    result restore_runs PASS "pid $old -> $pid, in $cg/ck"
else
    result restore_runs FAIL "rc=$rc status=$(status ck) pid=$pid state=$state_pid err=$err $(grep -m3 Error $S/img/restore.log)"
fi
until_count $S/rootfs/tmp/counter $((at + 3))
# The log has every number once, in order: the restored loop went on from $at, not from 1.
# (A copy: the loop goes on writing.)
cp $S/data/counter.log $S/counter.snapshot
n=$(wc -l < $S/counter.snapshot)
if [ "$(seq 1 "$n" | md5sum)" = "$(md5sum < $S/counter.snapshot)" ] && [ "$n" -gt "$at" ] && [ "$(cat $S/rootfs/tmp/marker)" = keep ]; then
    result counter_continues PASS "$at at the checkpoint, $n now, log 1..$n without a gap or restart"
else
    result counter_continues FAIL "at=$at n=$n log=$(tr '\n' ' ' < $S/counter.snapshot | tail -c 200)"
fi
capsa kill ck KILL
tries=600; while [ "$(status ck)" = running ] && [ $tries != 0 ]; do sleep 0.1; tries=$((tries - 1)); done
capsa delete ck
[ ! -e $cg/ck ] && [ ! -e "$root/ck" ] && ! kill -0 "$pid" 2>/dev/null && result restored_deletes PASS "" || result restored_deletes FAIL "$(ls $cg $root)"

# A criu failure at restore leaves nothing: the file the process held open is gone.
rm $S/data/counter.log
err=$(capsa restore -d --bundle "$b" --image-path $S/img ck 2>&1 </dev/null); rc=$?
if [ $rc != 0 ] && echo "$err" | grep -q "criu restore failed.*log: $S/img/restore.log" && [ ! -e $cg/ck ] && [ ! -e "$root/ck" ] && ! grep -q criu-root /proc/self/mountinfo; then
    result restore_failure_clean PASS "$err"
else
    result restore_failure_clean FAIL "rc=$rc err=$err $(ls $cg $root)"
fi

# pre-dump, then a dump on top of it that leaves the container running; the images restore
# under another id.
b=$(bundle lr 'i=0; while :; do i=$((i+1)); echo $i > /tmp/lr; sleep 0.2; done')
capsa run -d --bundle "$b" lr </dev/null >/dev/null 2>&1
pid=$(capsa state lr | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
until_count $S/rootfs/tmp/lr 3
err1=$(capsa checkpoint --pre-dump --image-path $S/pre lr 2>&1); rc1=$?
err2=$(capsa checkpoint --leave-running --parent-path ../pre --image-path $S/img2 lr 2>&1); rc2=$?
at=$(cat $S/rootfs/tmp/lr)
until_count $S/rootfs/tmp/lr $((at + 2))
if [ $rc1 = 0 ] && [ $rc2 = 0 ] && [ "$(status lr)" = running ] && [ -e /proc/$pid ] && [ -e $S/img2/parent ]; then
    result leave_running PASS "counter $at -> $(cat $S/rootfs/tmp/lr) after the checkpoint"
else
    result leave_running FAIL "rc=$rc1/$rc2 status=$(status lr) err=$err1 $err2"
fi
capsa delete --force lr
err=$(capsa restore -d --bundle "$b" --image-path $S/img2 lr2 </dev/null 2>&1 >/dev/null); rc=$?
before=$(cat $S/rootfs/tmp/lr)
until_count $S/rootfs/tmp/lr $((before + 2))
if [ $rc = 0 ] && [ "$(status lr2)" = running ] && [ -d $cg/lr2 ] && [ "$before" -ge 3 ]; then
    result restore_other_id PASS "lr2 counts on: $before -> $(cat $S/rootfs/tmp/lr)"
else
    result restore_other_id FAIL "rc=$rc status=$(status lr2) err=$err"
fi
capsa delete --force lr2
# Without -d, restore waits for the container, exits with its status and deletes it.
capsa restore --bundle "$b" --image-path $S/img2 lr3 </dev/null >/dev/null 2>&1 &
fg=$!
tries=600; until [ "$(status lr3)" = running ] || [ $tries = 0 ]; do sleep 0.1; tries=$((tries - 1)); done
capsa kill lr3 KILL
wait $fg; rc=$?
[ $rc = 137 ] && [ ! -e "$root/lr3" ] && [ ! -e $cg/lr3 ] && result restore_foreground PASS "exit $rc" || result restore_foreground FAIL "rc=$rc $(ls $root)"

# Bad input: an image path that cannot be made, a restore from a directory that holds no
# checkpoint. A clear error, nothing made, the container untouched.
b=$(bundle bad 'sleep 1000')
capsa run -d --bundle "$b" bad </dev/null >/dev/null 2>&1
err=$(capsa checkpoint --image-path /proc/no/such/dir bad 2>&1); rc=$?
if [ $rc != 0 ] && echo "$err" | grep -q -- "--image-path /proc/no/such/dir" && [ "$(status bad)" = running ]; then
    result bad_image_path PASS "$err"
else
    result bad_image_path FAIL "rc=$rc status=$(status bad) err=$err"
fi
capsa delete --force bad
mkdir -p $S/empty
err=$(capsa restore -d --bundle "$b" --image-path $S/empty bad 2>&1); rc=$?
if [ $rc != 0 ] && echo "$err" | grep -q "is not a checkpoint" && [ ! -e "$root/bad" ] && [ ! -e $cg/bad ]; then
    result restore_not_a_checkpoint PASS "$err"
else
    result restore_not_a_checkpoint FAIL "rc=$rc err=$err"
fi

# A container with a network namespace of its own (capsa's default spec as it is): criu
# dumps the namespace and makes it anew (with nf_conntrack's netlink loaded, see above).
b=$(bundle net 'sleep 1000' net)
capsa run -d --bundle "$b" net </dev/null >/dev/null 2>&1
err=$(capsa checkpoint --image-path $S/img-net net 2>&1) && capsa delete net &&
    err=$(capsa restore -d --bundle "$b" --image-path $S/img-net net 2>&1 </dev/null >/dev/null)
rc=$?
pid=$(capsa state net 2>/dev/null | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
if [ $rc = 0 ] && [ "$(status net)" = running ] && [ "$(readlink /proc/$pid/ns/net)" != "$(readlink /proc/self/ns/net)" ]; then
    result netns PASS "restored into $(readlink /proc/$pid/ns/net)"
else
    result netns FAIL "rc=$rc $err $(grep -B8 -m1 Error $S/img-net/dump.log $S/img-net/restore.log 2>/dev/null | tr '\n' ' ')"
fi
capsa delete --force net

left=$(ls $root 2>/dev/null | tr '\n' ' ')
cgs=$(ls -d $cg/*/ 2>/dev/null | tr '\n' ' ')
mnts=$(grep -c "$S" /proc/self/mountinfo)
[ -z "$left$cgs" ] && [ "$mnts" = 0 ] && result nothing_left PASS "" || result nothing_left FAIL "state: $left cgroups: $cgs mounts: $mnts"
