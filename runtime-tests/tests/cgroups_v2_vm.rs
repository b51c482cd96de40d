//! cgroup v2, proven in a VM: this host runs the v1 hybrid layout, so runtime-tests/vm/run.sh
//! boots Debian's kernel under qemu with cgroup2 mounted and runs the same scenarios there
//! (OOM kill, cpu.max throttling, pids.max, CLONE_INTO_CGROUP, update, pause/resume, ps,
//! events --stats, cgroup namespace, the BPF device filter, runc parity of cpu.max updates,
//! BFQ weights, pausing at full quota, nested cgroups, frozen cgroups, cleanup). Each scenario is one RESULT line.

use std::process::Command;

#[test]
fn cgroup_v2_scenarios_pass_in_a_vm() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{repo}/runtime-tests/vm/run.sh"))
        .arg(env!("CARGO_BIN_EXE_capsa"))
        .output()
        .expect("running runtime-tests/vm/run.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<&str> = text.lines().filter(|l| l.starts_with("RESULT ")).collect();
    let failed: Vec<&&str> = results
        .iter()
        .filter(|l| l.split(' ').nth(2) == Some("FAIL"))
        .collect();
    assert!(failed.is_empty(), "failed in the VM: {failed:#?}");
    for scenario in [
        "memory_oom_exit",
        "memory_oom_counter",
        "cpu_max",
        "pids_max",
        "clone_into_cgroup",
        "update",
        "update_below_usage",
        "pause_resume",
        "ps",
        "events_stats",
        "delete_removes_cgroup",
        "cgroupns_mount",
        "devices_denied",
        "devices_allowed",
        "cpu_max_merge",
        "io_weight",
        "pause_busy",
        "delete_nested",
        "frozen_refused",
        "devices_letters_fifo",
        "bad_quota",
        "nothing_left",
    ] {
        assert!(
            results
                .iter()
                .any(|l| l.starts_with(&format!("RESULT {scenario} PASS"))),
            "scenario {scenario} did not pass:\n{text}"
        );
    }
    assert!(out.status.success(), "run.sh failed:\n{text}");
}
