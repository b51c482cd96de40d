//! cgroup v2, proven in a VM: this host runs the v1 hybrid layout, so runtime-tests/vm/run.sh
//! boots Debian's kernel under qemu with cgroup2 mounted and, in one boot
//! (runtime-tests/vm/v2-suite.sh), runs the cgroups_* integration test binaries built here
//! (static, like capsa) -- the same assertions as on this host, against cgroup2 -- and the
//! scenarios of runtime-tests/vm/cgroup2-tests.sh they do not cover (CLONE_INTO_CGROUP, the
//! cgroup namespace, the runc parity of cpu.max updates, BFQ weights, pausing at full quota,
//! nested and frozen cgroups, cleanup, ...). Each binary and each scenario is one RESULT line.

mod common;
use common::vm::Vm;
use common::*;

/// The test binaries the VM runs: every cgroups_* test of this host.
const CGROUP_TESTS: [&str; 5] = [
    "cgroups_memory",
    "cgroups_cpu",
    "cgroups_pids",
    "cgroups_devices",
    "cgroups_control",
];

#[test]
fn cgroup_v2_tests_and_scenarios_pass_in_a_vm() {
    // The busybox fixture is built here: the VM sees this machine's root read-only.
    setup();
    let mut args = vec!["test", "--no-run"];
    for t in CGROUP_TESTS {
        args.extend(["--test", t]);
    }
    let bins = cargo_executables(&args, "test");
    let paths: Vec<String> = CGROUP_TESTS
        .iter()
        .map(|t| {
            let p = bins.get(*t).unwrap_or_else(|| panic!("cargo built no {t}"));
            p.to_str().unwrap().to_string()
        })
        .collect();
    let tests = CGROUP_TESTS.iter().map(|t| format!("test:{t}"));
    let scenarios = [
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
    ]
    .map(String::from);
    Vm::new(BIN.as_ref(), "runtime-tests/vm/v2-suite.sh")
        .guest_env(format!("CAPSA_TEST_BINS={}", paths.join(",")))
        .require(tests.chain(scenarios));
}
