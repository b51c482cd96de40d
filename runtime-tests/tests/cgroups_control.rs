//! update, pause/resume, ps, events --stats, and bad resource values.

mod common;
use common::*;
use serde_json::json;
use std::io::Write;
use std::process::Stdio;

fn running(w: &mut World, prefix: &str) -> (String, i32) {
    let mut b = w.bundle(&["sh", "-c", "sleep 100 & sleep 100 & wait"]);
    b.set(|c| c["linux"]["resources"] = json!({"memory": {"limit": 64 << 20}, "pids": {"limit": 50}, "devices": [{"allow": false, "access": "rwm"}]}));
    let (id, pid) = w.started(prefix, &b);
    // Started is not yet forked: the tests count sh and its two sleeps.
    wait_until("sh and its two sleeps", || {
        read_cgroup("pids", &id, "cgroup.procs").lines().count() == 3
    });
    (id, pid)
}

#[test]
fn update_changes_the_limits_of_a_running_container() {
    let mut w = World::new();
    let (id, pid) = running(&mut w, "update");
    w.ok(&[
        "update",
        "--memory",
        "128m",
        "--cpu-quota",
        "50000",
        "--cpu-period",
        "100000",
        "--pids-limit",
        "20",
        &id,
    ]);
    assert_eq!(
        read_cgroup("memory", &id, "memory.limit_in_bytes"),
        (128u64 << 20).to_string()
    );
    if cgroup_v2() {
        assert_eq!(read_cgroup("cpu", &id, "cpu.max"), "50000 100000");
    } else {
        assert_eq!(read_cgroup("cpu", &id, "cpu.cfs_quota_us"), "50000");
    }
    assert_eq!(read_cgroup("pids", &id, "pids.max"), "20");
    // containerd's in-place resize: LinuxResources JSON on stdin.
    let mut child = w
        .cmd()
        .args(["update", "--resources", "-", &id])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"memory":{"limit":100663296},"cpu":{"shares":256}}"#)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        read_cgroup("memory", &id, "memory.limit_in_bytes"),
        "100663296"
    );
    if cgroup_v2() {
        // shares 256 on runc's curve from cpu.shares to cpu.weight.
        assert_eq!(read_cgroup("cpu", &id, "cpu.weight"), "35");
    } else {
        assert_eq!(read_cgroup("cpu", &id, "cpu.shares"), "256");
    }
    // A limit below what the container already uses is refused, naming file and value.
    let err = w.fails(&["update", "--memory", "4096", &id]);
    let limit = cgroup_file("memory", &id, "memory.limit_in_bytes");
    let limit = limit.file_name().unwrap().to_str().unwrap();
    assert!(
        err.contains("writing \\\"4096\\\" to") && err.contains(limit),
        "{err}"
    );
    assert!(w
        .fails(&["update", "--cpu-quota", "-5", &id])
        .contains("cpu.quota"));
    w.ok(&["delete", "--force", &id]);
    wait_exit(pid);
}

#[test]
fn pause_freezes_and_resume_thaws() {
    let mut w = World::new();
    let (id, pid) = running(&mut w, "pause");
    w.ok(&["pause", &id]);
    assert_eq!(w.status(&id), "paused");
    if cgroup_v2() {
        assert_eq!(read_cgroup("freezer", &id, "cgroup.freeze"), "1");
        // pause returns once every task is frozen, which cgroup.events then says.
        assert_eq!(cgroup_key("freezer", &id, "cgroup.events", "frozen"), 1);
    } else {
        assert_eq!(read_cgroup("freezer", &id, "freezer.state"), "FROZEN");
        // Every task sits in the freezer, making no progress.
        for p in read_cgroup("freezer", &id, "cgroup.procs").lines() {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap();
            let state = stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap();
            assert_eq!(state, 'D', "task {p} is {state}, not frozen");
        }
    }
    assert!(w.fails(&["pause", &id]).contains("container not running"));
    w.ok(&["resume", &id]);
    assert_eq!(w.status(&id), "running");
    if cgroup_v2() {
        assert_eq!(read_cgroup("freezer", &id, "cgroup.freeze"), "0");
    } else {
        assert_eq!(read_cgroup("freezer", &id, "freezer.state"), "THAWED");
    }
    assert!(w.fails(&["resume", &id]).contains("container not paused"));
    // A paused container is thawed by delete --force (SIGKILL cannot act on frozen tasks).
    w.ok(&["pause", &id]);
    w.ok(&["delete", "--force", &id]);
    wait_exit(pid);
}

#[test]
fn ps_lists_exactly_the_containers_processes_and_events_stats_match_the_files() {
    let mut w = World::new();
    let (id, pid) = running(&mut w, "ps");
    let json: Vec<i32> = serde_json::from_str(&w.ok(&["ps", "--format", "json", &id])).unwrap();
    let mut procs: Vec<i32> = read_cgroup("pids", &id, "cgroup.procs")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    procs.sort();
    let mut sorted = json.clone();
    sorted.sort();
    assert_eq!(sorted, procs);
    assert_eq!(json.len(), 3, "sh and two sleeps: {json:?}");
    assert!(json.contains(&pid));
    let table = w.ok(&["ps", &id]);
    assert!(table.lines().next().unwrap().contains("PID"));
    assert_eq!(table.lines().count(), 4, "{table}");

    let ev: serde_json::Value = serde_json::from_str(&w.ok(&["events", "--stats", &id])).unwrap();
    assert_eq!(ev["type"], "stats");
    assert_eq!(ev["id"], id.as_str());
    let data = &ev["data"];
    assert_eq!(data["pids"]["current"], 3);
    assert_eq!(data["pids"]["limit"], 50);
    assert_eq!(data["memory"]["usage"]["limit"], 64u64 << 20);
    assert!(data["memory"]["usage"]["usage"].as_u64().unwrap() > 0);
    assert!(data["cpu"]["usage"]["total"].as_u64().unwrap() > 0);
    w.ok(&["delete", "--force", &id]);
    wait_exit(pid);
}

/// The hierarchies a process is in, from /proc/PID/cgroup: `(controllers, path)`, the v1
/// ones on a v1 host (the hybrid host's empty cgroup2 line left out), the one unified
/// hierarchy (no controllers named) on v2.
fn hierarchies(pid: i32) -> Vec<(String, String)> {
    let v2 = cgroup_v2();
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            (v2 || !controllers.is_empty()).then(|| (controllers.to_string(), path.to_string()))
        })
        .collect()
}

#[test]
fn init_and_exec_processes_are_in_the_cgroup_of_every_hierarchy() {
    // On v1, init and an exec'd process move themselves in (a write of "0" to each `tasks`
    // file), not the runtime: none of the hierarchies may be missed.
    let mut w = World::new();
    let (id, pid) = running(&mut w, "everyh");
    let pid_file = scratch().join(unique("exec-pid"));
    w.ok(&[
        "exec",
        "--detach",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
        "sleep",
        "100",
    ]);
    let exec_pid = read_pid_file(&pid_file);
    w.pids.push(exec_pid);
    std::fs::remove_file(&pid_file).unwrap();
    let want = format!("/capsa/{id}");
    for p in [pid, exec_pid] {
        let groups = hierarchies(p);
        let least = if cgroup_v2() { 1 } else { 5 };
        assert!(groups.len() >= least, "{groups:?}");
        for (controllers, path) in groups {
            assert_eq!(path, want, "pid {p} in {controllers}");
        }
    }
    kill_and_reap(exec_pid);
    w.ok(&["delete", "--force", &id]);
    wait_exit(pid);
}

#[test]
fn bad_resource_values_fail_the_create_and_leave_nothing() {
    let mut w = World::new();
    for (resources, expected) in [
        (json!({"cpu": {"quota": -5}}), "cpu.quota: -5"),
        (json!({"memory": {"swappiness": 200}}), "memory.swappiness"),
        (
            json!({"devices": [{"allow": true, "type": "x"}]}),
            "linux.resources.devices[0].type",
        ),
        (
            json!({"memory": {"limit": 4096}}),
            "linux.resources.memory.limit (4096) is too low",
        ),
    ] {
        let mut b = w.bundle(&["true"]);
        b.set(|c| c["linux"]["resources"] = resources.clone());
        let id = w.id("badres");
        let err = w.fails(&["create", "--bundle", b.dir_str(), &id]);
        assert!(err.contains(expected), "{expected}: {err}");
        assert!(
            !cgroup_file("memory", &id, "").exists(),
            "cgroup left for {expected}"
        );
    }
}

#[test]
fn events_of_a_stopped_container_is_an_error_as_in_runc() {
    let mut w = World::new();
    let b = w.bundle(&["true"]);
    let id = w.id("evstop");
    let pid = w.create(&id, &b);
    // A created container has statistics already.
    let ev: serde_json::Value = serde_json::from_str(&w.ok(&["events", "--stats", &id])).unwrap();
    assert_eq!(ev["type"], "stats");
    w.ok(&["start", &id]);
    wait_exit(pid);
    reap(pid);
    assert_eq!(w.status(&id), "stopped");
    for args in [vec!["events", "--stats", &id], vec!["events", &id]] {
        let err = w.fails(&args);
        assert!(
            err.contains(&format!("container with id {id} is not running")),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    w.ok(&["delete", &id]);
}
