//! process.apparmorProfile / process.selinuxLabel (and exec's --apparmor/--process-label):
//! applied when the host's LSM is active; otherwise a clear error, never a silently
//! unconfined container.

mod common;
use common::*;
use serde_json::json;

fn enabled(lsm: &str) -> bool {
    match lsm {
        "AppArmor" => std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .map(|s| s.trim() == "Y")
            .unwrap_or(false),
        _ => std::path::Path::new("/sys/fs/selinux/enforce").exists(),
    }
}

#[test]
fn a_label_for_an_inactive_lsm_is_refused_and_an_active_one_applied() {
    for (lsm, field, label) in [
        ("AppArmor", "apparmorProfile", "unconfined"),
        (
            "SELinux",
            "selinuxLabel",
            "system_u:system_r:container_t:s0",
        ),
    ] {
        let mut w = World::new();
        let mut b = w.bundle(&["cat", "/proc/self/attr/current"]);
        b.set(|c| c["process"][field] = json!(label));
        let (code, out, err) = w.run(&b);
        if enabled(lsm) {
            assert_eq!(code, 0, "{lsm}: {err}");
            assert!(out.contains(label), "{lsm}: {out}");
        } else {
            assert_ne!(code, 0);
            assert!(
                err.contains(lsm) && err.contains(label) && err.contains("not enabled"),
                "{err}"
            );
        }
    }
}

#[test]
fn exec_labels_follow_the_same_rule() {
    let mut w = World::new();
    let b = w.bundle(&["sleep", "1000"]);
    let id = w.id("lsm");
    let pid = w.create(&id, &b);
    w.ok(&["start", &id]);
    for (lsm, flag, label) in [
        ("AppArmor", "--apparmor", "unconfined"),
        (
            "SELinux",
            "--process-label",
            "system_u:system_r:container_t:s0",
        ),
    ] {
        let out = w.capsa(&["exec", flag, label, &id, "cat", "/proc/self/attr/current"]);
        if enabled(lsm) {
            assert!(out.status.success());
        } else {
            assert_eq!(out.status.code(), Some(255));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(lsm) && err.contains("not enabled"), "{err}");
        }
    }
    w.ok(&["delete", "--force", &id]);
    wait_exit(pid);
    reap(pid);
}
