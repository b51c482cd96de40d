#!/usr/bin/env python3
"""Side-by-side benchmark of capsa, crun and runc on the same busybox bundle.

The whole benchmark runs in one private mount namespace in which
/sys/fs/cgroup/unified/cgroup.controllers is covered by an empty file (crun 1.8 refuses this
host's hybrid cgroup layout otherwise; the host's mounts are never changed), so every runtime
is called directly, under the same conditions. Runs alternate between runtimes; medians are reported with the
capsa/crun and capsa/runc ratios, as a markdown table and as JSON.

Usage: bench.py --capsa PATH [--runs N] [--json OUT] [--quick]
"""
import argparse, concurrent.futures, json, os, shutil, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
WORK = "/tmp/capsa-bench"
EMPTY = f"{WORK}/empty-controllers"
BUNDLE = f"{WORK}/bundle"
WRAP = []


def runtimes(capsa):
    return {"capsa": [capsa, "--root", f"{WORK}/state-capsa"],
            "crun": ["crun", "--root", f"{WORK}/state-crun"],
            "runc": ["runc", "--root", f"{WORK}/state-runc"]}


def sh(cmd, check=True):
    """Runs a runtime command. Its stderr goes to a file, not a pipe: a container it starts
    inherits the descriptor and would hold a pipe open for as long as it lives."""
    with tempfile.TemporaryFile() as err:
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=err)
        if check and r.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd[-4:])}: exit {r.returncode}: {err.read().decode().strip()}")
        return r


def timed(cmd):
    """Wall time (ms) and peak RSS (KiB) of one command, via wait4."""
    with tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, rusage = os.wait4(p.pid, 0)
        ms = (time.perf_counter() - t) * 1000
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd[-4:])}: exit {p.returncode}: {err.read().decode().strip()}")
    return ms, rusage.ru_maxrss


def make_bundle(memory_limit=None, args=("/bin/true",), path=BUNDLE):
    if not os.path.exists(f"{WORK}/rootfs"):
        subprocess.run(["bash", f"{REPO}/rootfs-fixtures/busybox-rootfs.sh", f"{WORK}/rootfs"], check=True)
    os.makedirs(path, exist_ok=True)
    cfg_path = f"{path}/config.json"
    if os.path.exists(cfg_path):
        os.unlink(cfg_path)
    subprocess.run([ARGS.capsa, "spec", "--bundle", path], check=True)
    c = json.load(open(cfg_path))
    c["ociVersion"] = "1.0.2-dev"  # the newest crun 1.8 and runc 1.1 accept
    c["root"]["path"] = f"{WORK}/rootfs"  # one shared read-only rootfs, absolute (runc insists)
    c["process"]["terminal"] = False
    c["process"]["args"] = list(args)
    c["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
    if memory_limit:
        c["linux"]["resources"]["memory"] = {"limit": memory_limit}
    json.dump(c, open(cfg_path, "w"))
    return path


WARMUP = 3


def alternate(names, runs, fn):
    """fn(name, i) -> ms; runs interleaved name by name, after WARMUP unrecorded rounds.
    Returns {name: [ms...]}."""
    out = {n: [] for n in names}
    for i in range(-WARMUP, runs):
        for n in names:
            ms = fn(n, i + WARMUP if i < 0 else i + WARMUP)
            if i >= 0:
                out[n].append(ms)
    return out


def peak_rss(cmd):
    """Peak RSS (KiB) of a command measured by GNU time, whose own fork is small (a fork of
    this Python process would count its 16 MiB in ru_maxrss)."""
    with tempfile.NamedTemporaryFile(mode="r") as out:
        # -o: GNU time's report goes to a file; stderr stays a file too (see sh()).
        subprocess.run(["/usr/bin/time", "-o", out.name, "-f", "%M"] + cmd,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return int(out.read().strip().splitlines()[-1])


def bench_run(rts, runs):
    return alternate(list(rts), runs, lambda n, i: timed(WRAP + rts[n] + ["run", "--bundle", BUNDLE, f"r{i}"])[0])


def bench_lifecycle(rts, runs):
    steps = {n: {"create": [], "start": [], "state": [], "delete": [], "total": []} for n in rts}
    for i in range(-WARMUP, runs):
        for n, rt in rts.items():
            cid = f"l{i + WARMUP}"
            total = 0
            for step, cmd in [("create", ["create", "--bundle", BUNDLE, cid]), ("start", ["start", cid]),
                              ("state", ["state", cid]), ("delete", ["delete", "--force", cid])]:
                ms, _ = timed(WRAP + rt + cmd)
                if i >= 0:
                    steps[n][step].append(ms)
                total += ms
            if i >= 0:
                steps[n]["total"].append(total)
    # Peak RSS over the four commands of one more lifecycle.
    rss = {}
    for n, rt in rts.items():
        rss[n] = max(peak_rss(rt + cmd) for cmd in [["create", "--bundle", BUNDLE, "rss"], ["start", "rss"],
                                                    ["state", "rss"], ["delete", "--force", "rss"]])
    return steps, rss


def bench_exec(rts, runs):
    out = {}
    for n, rt in rts.items():
        make_bundle(args=("sleep", "1000"), path=f"{WORK}/bundle-sleep")
        sh(WRAP + rt + ["run", "--detach", "--bundle", f"{WORK}/bundle-sleep", "ex"])
    try:
        out = alternate(list(rts), runs, lambda n, i: timed(WRAP + rts[n] + ["exec", "ex", "/bin/true"])[0])
    finally:
        for n, rt in rts.items():
            sh(WRAP + rt + ["delete", "--force", "ex"], check=False)
    return out


def busy_jiffies():
    """CPU time in use on the whole machine so far (/proc/stat: all but idle, iowait and
    steal), in clock ticks."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4] - (v[7] if len(v) > 7 else 0)


def settle():
    """Waits (at most 3 s) until the machine is idle again: a 100 ms window with under 5% of
    one CPU busy, so work the kernel defers (network namespaces are torn down by a kworker)
    is counted for the runtime that caused it, not for the next one."""
    hz = os.sysconf("SC_CLK_TCK")
    for _ in range(30):
        b = busy_jiffies()
        time.sleep(0.1)
        if (busy_jiffies() - b) / hz < 0.005:
            return


def bench_parallel(rts, count, width=8):
    """Wall time and machine-wide CPU time per container (/proc/stat) of `count` containers
    created and started `width` at a time, then deleted."""
    out = {}
    hz = os.sysconf("SC_CLK_TCK")
    for n, rt in rts.items():
        failures = 0
        settle()
        busy = busy_jiffies()

        def one(i):
            try:
                sh(WRAP + rt + ["create", "--bundle", BUNDLE, f"p{i}"])
                sh(WRAP + rt + ["start", f"p{i}"])
                return 0
            except RuntimeError:
                return 1
        t = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(width) as pool:
            failures = sum(pool.map(one, range(count)))
            list(pool.map(lambda i: sh(WRAP + rt + ["delete", "--force", f"p{i}"], check=False), range(count)))
        seconds = time.perf_counter() - t
        settle()
        cpu_ms = (busy_jiffies() - busy) * 1000 / hz / count
        out[n] = {"seconds": seconds, "cpu_ms_per_container": cpu_ms, "failures": failures}
    return out


def floors(runs):
    """What bounds the runtimes from below, runtime-independent: `unshare` + `chroot` of
    /bin/true (the namespaces and one exec), three static-glibc execs with no work between
    them (the shape of `exec`: runtime, sealed copy, program; hop.c), and one static program
    that exits at once, with glibc's start-up and without libc."""
    hop = f"{WORK}/hop"
    subprocess.run(["gcc", "-O2", "-static", "-o", hop, f"{HERE}/hop.c"], check=True)
    subprocess.run(["gcc", "-O2", "-static", "-nostdlib", "-DNOLIBC", "-o", f"{hop}-nolibc",
                    f"{HERE}/hop.c"], check=True)
    cmds = {"run": ["unshare", "-fpmuin", "--mount-proc", "chroot", f"{WORK}/rootfs", "/bin/true"],
            "exec": [hop, "exec", hop, "fork", f"{WORK}/rootfs/bin/true"],
            "glibc_static_start": [hop],
            "no_libc_start": [f"{hop}-nolibc"]}
    times = alternate(list(cmds), runs, lambda n, i: timed(cmds[n])[0])
    return {n: median(v) for n, v in times.items()}


def smallest_memory_limit(rt):
    """Bisects the smallest memory limit (KiB, 64 KiB steps) under which `run` still works."""
    def ok(kib):
        make_bundle(memory_limit=kib * 1024, path=f"{WORK}/bundle-mem")
        r = sh(WRAP + rt + ["run", "--bundle", f"{WORK}/bundle-mem", "m"], check=False)
        sh(WRAP + rt + ["delete", "--force", "m"], check=False)
        return r.returncode == 0
    lo, hi = 0, 64 * 1024  # KiB; 64 MiB is surely enough
    if not ok(hi):
        return None
    while hi - lo > 64:
        mid = (lo + hi) // 2 // 64 * 64 or 64
        if mid <= lo:
            break
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--capsa", required=True)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--json", default=f"{WORK}/results.json")
    p.add_argument("--quick", action="store_true", help="fewer runs, 50 parallel containers only")
    ARGS = p.parse_args()
    ARGS.capsa = os.path.abspath(ARGS.capsa)
    if os.geteuid() != 0:
        sys.exit("bench.py runs as root")
    if os.environ.get("CAPSA_BENCH_NS") != "1":
        # Re-run inside a private mount namespace (see the module comment).
        os.environ["CAPSA_BENCH_NS"] = "1"
        os.execvp("unshare", ["unshare", "-m", "--propagation", "private", sys.executable] + sys.argv)
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    open(EMPTY, "w").close()
    controllers = "/sys/fs/cgroup/unified/cgroup.controllers"
    if os.path.exists(controllers):
        subprocess.run(["mount", "--bind", EMPTY, controllers], check=True)
    make_bundle()
    rts = runtimes(ARGS.capsa)
    runs = 10 if ARGS.quick else ARGS.runs
    load_before = os.getloadavg()
    res = {"machine": {"cpus": os.cpu_count(), "loadavg_before": load_before}}
    res["floor_ms"] = floors(runs)
    res["run_ms"] = {n: median(v) for n, v in bench_run(rts, runs).items()}
    steps, rss = bench_lifecycle(rts, runs)
    res["lifecycle_ms"] = {n: {k: median(v) for k, v in s.items()} for n, s in steps.items()}
    res["peak_rss_kib"] = rss
    res["exec_ms"] = {n: median(v) for n, v in bench_exec(rts, runs).items()}
    res["parallel"] = {str(c): bench_parallel(rts, c) for c in ([50] if ARGS.quick else [50, 200])}
    res["min_memory_kib"] = {n: smallest_memory_limit(rt) for n, rt in rts.items()}
    res["machine"]["loadavg_after"] = os.getloadavg()
    json.dump(res, open(ARGS.json, "w"), indent=2)

    def ratio(metric):
        return (f"{metric['capsa'] / metric['crun']:.2f}", f"{metric['capsa'] / metric['runc']:.2f}")
    rows = [("`run` /bin/true (ms)", res["run_ms"])]
    for step in ["create", "start", "state", "delete", "total"]:
        rows.append((f"lifecycle: {step} (ms)", {n: res["lifecycle_ms"][n][step] for n in rts}))
    rows.append(("`exec` /bin/true (ms)", res["exec_ms"]))
    for c, v in res["parallel"].items():
        rows.append((f"{c} containers, 8 at a time (s)", {n: v[n]["seconds"] for n in rts}))
        rows.append((f"{c} containers: CPU per container (ms)",
                     {n: v[n]["cpu_ms_per_container"] for n in rts}))
    rows.append(("peak RSS of a runtime process (KiB)", rss))
    rows.append(("smallest memory limit that starts (KiB)", {n: res["min_memory_kib"][n] or float("nan") for n in rts}))
    f = res["floor_ms"]
    print(f"load average {load_before[0]:.2f} before, {res['machine']['loadavg_after'][0]:.2f} after; "
          f"{os.cpu_count()} CPUs; {runs} runs each, alternating\n\n"
          f"floors: run (unshare+chroot /bin/true) {f['run']:.1f} ms; exec (three static-glibc "
          f"execs, no work) {f['exec']:.1f} ms; a static program's start-up {f['glibc_static_start']:.2f} ms "
          f"with glibc, {f['no_libc_start']:.2f} ms without libc\n")
    print("| | capsa | crun | runc | capsa/crun | capsa/runc |\n|---|---|---|---|---|---|")
    for name, m in rows:
        c, r = ratio(m)
        fmt = (lambda x: f"{x:.1f}") if isinstance(m["capsa"], float) else str
        print(f"| {name} | {fmt(m['capsa'])} | {fmt(m['crun'])} | {fmt(m['runc'])} | {c} | {r} |")
    fails = {c: {n: v[n]["failures"] for n in rts} for c, v in res["parallel"].items()}
    print(f"\nparallel failures: {fails}; JSON: {ARGS.json}")


if __name__ == "__main__":
    main()
