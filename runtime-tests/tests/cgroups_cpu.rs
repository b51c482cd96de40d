//! cpu quota: a busy loop under 20000/100000 is throttled, and `events --stats` says so.

mod common;
use common::*;
use serde_json::json;

#[test]
fn a_busy_loop_under_a_20_percent_quota_is_throttled() {
    let mut w = World::new();
    // Spins for 2 seconds of wall time (systime has 1 s resolution: 2-3 s), far more than one
    // 20 ms quota, so it is throttled however busy the machine is (a share of the CPU would
    // depend on what else runs). Then it says so and idles, so that its statistics can be
    // read while it still runs (events --stats of a stopped container is an error, as in runc).
    let mut b = w.bundle(&[
        "sh",
        "-c",
        "awk 'BEGIN { end = systime() + 2; while (systime() < end) n++ }'; touch /done; exec sleep 1000",
    ]);
    b.set(|c| {
        c["linux"]["resources"]["cpu"] = json!({"quota": 20000, "period": 100000, "shares": 512});
        c["root"]["readonly"] = json!(false);
    });
    let id = w.id("cpu");
    let pid = w.create(&id, &b);
    if cgroup_v2() {
        assert_eq!(read_cgroup("cpu", &id, "cpu.max"), "20000 100000");
        // shares 512 on runc's curve from cpu.shares to cpu.weight.
        assert_eq!(read_cgroup("cpu", &id, "cpu.weight"), "59");
    } else {
        assert_eq!(read_cgroup("cpu", &id, "cpu.cfs_quota_us"), "20000");
        assert_eq!(read_cgroup("cpu", &id, "cpu.cfs_period_us"), "100000");
        assert_eq!(read_cgroup("cpu", &id, "cpu.shares"), "512");
    }
    w.ok(&["start", &id]);
    let done = b.rootfs().join("done");
    wait_until("the busy loop's end", || done.exists());
    // Frozen, its counters hold still while the files and events are compared.
    w.ok(&["pause", &id]);
    // (usage, throttled periods, throttled time), in nanoseconds as events reports them.
    let (used, throttled, throttled_ns) = if cgroup_v2() {
        (
            cgroup_key("cpu", &id, "cpu.stat", "usage_usec") * 1000,
            cgroup_key("cpu", &id, "cpu.stat", "nr_throttled"),
            cgroup_key("cpu", &id, "cpu.stat", "throttled_usec") * 1000,
        )
    } else {
        (
            read_cgroup("cpuacct", &id, "cpuacct.usage")
                .parse()
                .unwrap(),
            cgroup_key("cpu", &id, "cpu.stat", "nr_throttled"),
            cgroup_key("cpu", &id, "cpu.stat", "throttled_time"),
        )
    };
    assert!(throttled > 0, "not throttled");
    assert!(throttled_ns > 0, "throttled for no time");
    assert!(used > 0, "no cpu time used");
    // events --stats reports the same figures the files hold.
    let ev: serde_json::Value = serde_json::from_str(&w.ok(&["events", "--stats", &id])).unwrap();
    let cpu = &ev["data"]["cpu"];
    assert_eq!(cpu["usage"]["total"].as_u64().unwrap(), used);
    assert_eq!(cpu["throttling"]["throttledPeriods"], throttled);
    assert_eq!(cpu["throttling"]["throttledTime"], throttled_ns);
    w.ok(&["delete", "--force", &id]);
    wait_exit(pid);
    reap(pid);
}
