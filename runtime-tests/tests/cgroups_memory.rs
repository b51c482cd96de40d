//! memory limits: a hog over the limit is OOM-killed, the counters and `events` show it.

mod common;
use common::*;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

#[test]
fn a_memory_hog_is_oom_killed_at_the_limit_and_events_reports_it() {
    let mut w = World::new();
    // Doubles a string until the kernel says no.
    let mut b = w.bundle(&["awk", "BEGIN { s = \"x\"; while (1) s = s s }"]);
    b.set(|c| c["linux"]["resources"]["memory"] = json!({"limit": 64 << 20, "swap": 64 << 20}));
    let id = w.id("oom");
    let pid = w.create(&id, &b);
    assert_eq!(
        read_cgroup("memory", &id, "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    if cgroup_v2() {
        // v2 limits swap alone: memory+swap 64 MiB over memory 64 MiB is no swap.
        assert_eq!(read_cgroup("memory", &id, "memory.swap.max"), "0");
    } else if cgroup_file("memory", &id, "memory.memsw.limit_in_bytes").exists() {
        assert_eq!(
            read_cgroup("memory", &id, "memory.memsw.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
    }
    // The event stream runs until the container stops.
    let mut events = w
        .cmd()
        .args(["events", "--interval", "10s", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(events.stdout.take().unwrap()).lines();
    // The first line is a stats event: the watcher is in place before the hog starts.
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["type"], "stats");
    w.ok(&["start", &id]);
    wait_exit(pid);
    let status = reap_status(pid);
    assert_eq!(
        status,
        nix::sys::wait::WaitStatus::Signaled(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
            false
        ),
        "exit 137 expected"
    );
    // memory.oom_control on v1, memory.events on v2.
    assert!(cgroup_key("memory", &id, "memory.oom_control", "oom_kill") >= 1);
    if !cgroup_v2() {
        // Usage reached the limit (this kernel no longer counts v1 failcnt for it).
        let peak: u64 = read_cgroup("memory", &id, "memory.max_usage_in_bytes")
            .parse()
            .unwrap();
        assert_eq!(peak, 64 << 20);
    }
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(events.wait().unwrap().success());
    let oom = rest
        .iter()
        .filter(|l| l.contains("\"type\":\"oom\""))
        .count();
    assert!(oom >= 1, "no oom event in {rest:?}");
    assert!(
        rest.iter()
            .any(|l| l == &format!("{{\"type\":\"oom\",\"id\":\"{id}\"}}")),
        "{rest:?}"
    );
    w.ok(&["delete", &id]);
}

#[test]
fn a_container_within_its_limit_runs_normally() {
    let mut w = World::new();
    let mut b = w.bundle(&[
        "awk",
        "BEGIN { s = \"x\"; for (i = 0; i < 20; i++) s = s s; print length(s) }",
    ]);
    b.set(|c| c["linux"]["resources"]["memory"] = json!({"limit": 64 << 20}));
    assert_eq!(w.run_ok(&b), "1048576\n");
}
