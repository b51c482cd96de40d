//! The devices cgroup: only allowed devices can be opened or created.

mod common;
use common::*;
use serde_json::json;

/// A shell function, `open NAME REDIRECTION`, that says "NAME opened", "NAME denied" (the
/// device cgroup's EPERM), or the error another failure gave: a device whose driver is not
/// loaded (ENXIO, ENODEV) is not a denial.
const OPEN: &str = "open() { if err=$( (eval \"exec 3$2\") 2>&1 ); then echo $1 opened; \
                    else case \"$err\" in *'not permitted'*) echo $1 denied;; \
                    *) echo \"$1: $err\";; esac; fi; };";

#[test]
fn a_device_not_in_the_allow_list_cannot_be_opened_or_created() {
    let mut w = World::new();
    let script = format!(
        "{OPEN} mknod /dev/mem2 c 1 1 2>/dev/null && echo mknod-mem-ok || echo mknod-mem-denied; \
         mknod /dev/null2 c 1 3 && cat /dev/null2 && echo null-ok; open tun '</tmp/tun'"
    );
    let mut b = w.bundle(&["sh", "-c", &script]);
    // A node for /dev/net/tun (10:200) in the image: present, but not allowed.
    let st = std::process::Command::new("mknod")
        .arg(b.rootfs().join("tmp/tun"))
        .args(["c", "10", "200"])
        .status()
        .unwrap();
    assert!(st.success());
    b.set(|c| {
        c["linux"]["resources"]["devices"] = json!([{"allow": false, "access": "rwm"}]);
        c["process"]["capabilities"]["bounding"]
            .as_array_mut()
            .unwrap()
            .push(json!("CAP_MKNOD"));
        c["process"]["capabilities"]["effective"]
            .as_array_mut()
            .unwrap()
            .push(json!("CAP_MKNOD"));
        c["process"]["capabilities"]["permitted"]
            .as_array_mut()
            .unwrap()
            .push(json!("CAP_MKNOD"));
    });
    assert_eq!(w.run_ok(&b), "mknod-mem-denied\nnull-ok\ntun denied\n");

    // Allowed by a rule: readable.
    b.set(|c| {
        c["linux"]["resources"]["devices"] = json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 10, "minor": 200, "access": "r"}
        ]);
    });
    let out = w.run_ok(&b);
    assert!(out.ends_with("tun opened\n"), "{out}");
}

#[test]
fn a_spec_device_node_is_only_as_open_as_the_device_rules_say() {
    let mut w = World::new();
    // /dev/loop-control (10:237): not one of the devices every container may use.
    let script = format!("{OPEN} open read '</dev/myloop'; open write '>/dev/myloop'");
    let mut b = w.bundle(&["sh", "-c", &script]);
    b.set(|c| {
        c["linux"]["devices"] = json!([{"path": "/dev/myloop", "type": "c", "major": 10,
                                        "minor": 237, "fileMode": 0o600}]);
        c["linux"]["resources"]["devices"] = json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 10, "minor": 237, "access": "r"}
        ]);
    });
    // As runc: the node is made, but no rule of its own widens the spec's "r".
    assert_eq!(w.run_ok(&b), "read opened\nwrite denied\n");
}
