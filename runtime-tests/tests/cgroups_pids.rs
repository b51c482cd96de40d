//! pids limit: forks stop at pids.max.

mod common;
use common::*;
use serde_json::json;

#[test]
fn a_fork_bomb_stops_at_pids_max() {
    let mut w = World::new();
    let mut b = w.bundle(&[
        "sh",
        "-c",
        "i=0; while [ $i -lt 20 ]; do sleep 30 & i=$((i+1)); done; echo all-forked",
    ]);
    b.set(|c| c["linux"]["resources"]["pids"] = json!({"limit": 5}));
    let id = w.id("pids");
    let pid = w.create(&id, &b);
    assert_eq!(read_cgroup("pids", &id, "pids.max"), "5");
    w.ok(&["start", &id]);
    wait_exit(pid);
    assert!(
        cgroup_key("pids", &id, "pids.events", "max") > 0,
        "no fork was refused"
    );
    let current: u64 = read_cgroup("pids", &id, "pids.current").parse().unwrap();
    assert!(current <= 5, "pids.current {current}");
    // The pid namespace died with its init, taking the sleeps along.
    w.ok(&["delete", &id]);
}
