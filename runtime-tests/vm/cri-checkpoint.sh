#!/bin/bash
# CheckpointContainer through capsa-cri, inside the test VM (see run.sh), whose Debian kernel
# Debian's criu works on: runs the ignored test of the capsa-cri test binary $CRI_TEST
# (cri/tests/vm_checkpoint.rs) and prints "RESULT cri_checkpoint PASS|FAIL", with the test's
# output as VMTEST lines.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# What criu and the pod network need of the VM's kernel (the host's root has its modules).
for m in unix_diag inet_diag tcp_diag udp_diag raw_diag netlink_diag af_packet_diag nf_tables \
    veth tun bridge nf_conntrack nf_conntrack_netlink overlay; do
    modprobe "$m" 2>/dev/null
done
ip link set lo up
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
# criu makes probe directories in /tmp, and the fixture images are there: the host's /tmp
# (read-only here, perhaps holding the repository under test) gets a writable overlay on
# tmpfs. The test's own directories go to /run (tmpfs): an overlay's upper directory cannot
# be on overlayfs, and the container roots are overlays.
mkdir -p /run/ck/upper /run/ck/work /run/ck/tmp
if ! mount -t overlay overlay -o lowerdir=/tmp,upperdir=/run/ck/upper,workdir=/run/ck/work /tmp; then
    echo "RESULT cri_checkpoint FAIL no writable /tmp"
    exit 1
fi
# skopeo's temporary files go to /var/tmp whatever TMPDIR says.
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
export CAPSA_CRI_TEST_DIR=/run/cri-tests TMPDIR=/run/ck/tmp HOME=/run/ck
"$CRI_TEST" --ignored --exact checkpoint_container_in_the_vm --nocapture --test-threads 1 \
    >/run/ck/out 2>&1
rc=$?
grep -v 'level=debug\|frame=' /run/ck/out | tail -60 | sed 's/^/VMTEST | /'
if [ $rc = 0 ]; then
    echo "RESULT cri_checkpoint PASS"
else
    echo "RESULT cri_checkpoint FAIL exit $rc"
fi
