//! Concurrent commands on one container serialise on its lock and never corrupt its state.

mod common;
use common::*;
use std::process::{Command, Stdio};

#[test]
fn parallel_state_kill_and_delete_never_corrupt_the_state() {
    let mut w = World::new();
    let b = w.bundle(&["sh", "-c", "trap '' CONT; while true; do sleep 1; done"]);
    for round in 0..3 {
        let id = w.id(&format!("race{round}"));
        let pid = w.create(&id, &b);
        w.ok(&["start", &id]);
        let spawn = |args: &[&str]| -> std::process::Child {
            Command::new(BIN)
                .arg("--root")
                .arg(&w.root)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let mut children = Vec::new();
        for i in 0..12 {
            let args: Vec<&str> = match i % 4 {
                0 => vec!["state", &id],
                1 => vec!["kill", &id, "CONT"],
                2 => vec!["delete", "--force", &id],
                _ => vec!["list", "--format", "json"],
            };
            children.push((args.join(" "), spawn(&args)));
        }
        for (what, child) in children {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if what.starts_with("delete") {
                // delete --force succeeds whether it did the delete or found it done
                assert!(out.status.success(), "{what}: {stderr}");
            } else if what.starts_with("state") {
                if out.status.success() {
                    let v: serde_json::Value = serde_json::from_str(&stdout)
                        .unwrap_or_else(|e| panic!("corrupt state {e}: {stdout}"));
                    assert_eq!(v["id"], id.as_str());
                } else {
                    assert!(stderr.contains("does not exist"), "{what}: {stderr}");
                }
            } else if what.starts_with("list") {
                assert!(out.status.success(), "{what}: {stderr}");
                let _: serde_json::Value = serde_json::from_str(&stdout).unwrap();
            } else if !out.status.success() {
                assert!(
                    stderr.contains("does not exist") || stderr.contains("container not running"),
                    "{what}: {stderr}"
                );
            }
        }
        wait_exit(pid);
        assert!(w.fails(&["state", &id]).contains("does not exist"));
    }
}
