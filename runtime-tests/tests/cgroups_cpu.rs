//! cpu quota: a busy loop under 20000/100000 gets about 20% of one CPU and is throttled.

mod common;
use common::*;
use serde_json::json;
use std::time::Instant;

#[test]
fn a_busy_loop_under_a_20_percent_quota_is_throttled() {
    let mut w = World::new();
    // Spins for 2 seconds of wall time (systime has 1 s resolution: 2-3 s).
    // Then it says so and idles, so that its statistics can be read while it still runs
    // (events --stats of a stopped container is an error, as in runc).
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
    assert_eq!(read_cgroup("cpu", &id, "cpu.cfs_quota_us"), "20000");
    assert_eq!(read_cgroup("cpu", &id, "cpu.cfs_period_us"), "100000");
    assert_eq!(read_cgroup("cpu", &id, "cpu.shares"), "512");
    let started = Instant::now();
    w.ok(&["start", &id]);
    let done = b.rootfs().join("done");
    wait_until("the busy loop's end", || done.exists());
    let wall = started.elapsed().as_nanos() as f64;
    // Frozen, its counters hold still while the files and events are compared.
    w.ok(&["pause", &id]);
    let used = read_cgroup("cpuacct", &id, "cpuacct.usage")
        .parse::<f64>()
        .unwrap();
    let throttled = cgroup_key("cpu", &id, "cpu.stat", "nr_throttled");
    assert!(throttled > 0, "not throttled");
    let share = used / wall;
    assert!(
        (0.10..=0.30).contains(&share),
        "used {:.0}% of a CPU",
        share * 100.0
    );
    // events --stats reports the same figures the files hold.
    let ev: serde_json::Value = serde_json::from_str(&w.ok(&["events", "--stats", &id])).unwrap();
    assert_eq!(ev["data"]["cpu"]["usage"]["total"].as_f64().unwrap(), used);
    assert_eq!(
        ev["data"]["cpu"]["throttling"]["throttledPeriods"],
        throttled
    );
    w.ok(&["delete", "--force", &id]);
    wait_exit(pid);
    reap(pid);
}
