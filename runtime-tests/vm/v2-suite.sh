#!/bin/bash
# Everything the cgroup v2 VM runs in one boot (see run.sh): the scenarios of
# cgroup2-tests.sh, then the integration test binaries named in $CAPSA_TEST_BINS (comma-
# separated paths, built on the host: static, like capsa), so that v2 is held to the same
# assertions as the v1 host. Each binary reports "RESULT test:<name> PASS|FAIL <summary>";
# a failing one's output follows as VMTEST lines.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/cgroup2-tests.sh"
# The host's /tmp is read-only here: the tests' bundles and state go to /run (a tmpfs).
export CAPSA_TEST_SCRATCH=/run/capsa-tests
IFS=, read -ra bins <<< "${CAPSA_TEST_BINS:-}"
for bin in "${bins[@]}"; do
    name=$(basename "$bin")
    name=${name%-*}   # cargo's hash suffix
    out=$(timeout 1200 "$bin" --test-threads=1 2>&1)
    rc=$?
    summary=$(grep -a '^test result' <<< "$out" | tail -1)
    if [ "$rc" = 0 ]; then
        echo "RESULT test:$name PASS $summary"
    else
        echo "RESULT test:$name FAIL rc=$rc $summary"
        grep -av '^ \{3,\}[0-9]*: \|^ \{8,\}at ' <<< "$out" | tail -60 | sed 's/^/VMTEST   /'
    fi
done
