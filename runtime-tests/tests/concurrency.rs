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

/// Two bundles with the same `linux.cgroupsPath`.
fn sharing_bundles(w: &mut World, cgroup: &str) -> (Bundle, Bundle) {
    let path = format!("/capsa/{cgroup}");
    let mut a = w.bundle(&["sleep", "1000"]);
    a.set(|c| c["linux"]["cgroupsPath"] = serde_json::json!(path));
    let mut b = w.bundle(&["sleep", "1000"]);
    b.set(|c| c["linux"]["cgroupsPath"] = serde_json::json!(path));
    (a, b)
}

/// A cgroup has one owner: a second container given the same cgroupsPath is refused while
/// the first exists, even stopped with its cgroup empty (before, it was let in, and deleting
/// the first then killed the second's processes).
#[test]
fn a_second_container_in_the_same_cgroup_is_refused_until_the_first_is_deleted() {
    let mut w = World::new();
    let cgroup = w.id("shared");
    let (mut a, b) = sharing_bundles(&mut w, &cgroup);
    a.set(|c| c["process"]["args"] = serde_json::json!(["true"]));
    let first = w.id("first");
    let pid = w.create(&first, &a);
    w.ok(&["start", &first]);
    wait_exit(pid);
    reap(pid);
    assert_eq!(w.status(&first), "stopped");

    let second = w.id("second");
    let err = w.fails(&["create", "--bundle", b.dir_str(), &second]);
    assert!(
        err.contains(&format!(
            "the cgroup is already in use by container {first}"
        )),
        "{err}"
    );
    assert!(w.fails(&["state", &second]).contains("does not exist"));

    w.ok(&["delete", &first]);
    let pid = w.create(&second, &b);
    w.ok(&["start", &second]);
    assert_eq!(w.status(&second), "running");
    w.ok(&["delete", "--force", &second]);
    wait_exit(pid);
}

/// Two creates racing for one cgroupsPath: exactly one wins, the other fails cleanly and
/// leaves nothing; the winner's processes are untouched by the loser.
#[test]
fn racing_creates_in_one_cgroup_admit_exactly_one() {
    let mut w = World::new();
    for round in 0..8 {
        let cgroup = w.id(&format!("contested{round}"));
        let (a, b) = sharing_bundles(&mut w, &cgroup);
        let ids = [w.id("ra"), w.id("rb")];
        // stderr goes to files: the winner's init inherits it, and a pipe would stay open.
        let errs = [a.dir.join("create.err"), b.dir.join("create.err")];
        let children: Vec<_> = [(&ids[0], &a, &errs[0]), (&ids[1], &b, &errs[1])]
            .into_iter()
            .map(|(id, bundle, err)| {
                w.cmd()
                    .args(["create", "--bundle", bundle.dir_str(), id])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(err).unwrap())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let codes: Vec<_> = children
            .into_iter()
            .map(|mut c| c.wait().unwrap())
            .collect();
        let won: Vec<usize> = (0..2).filter(|i| codes[*i].success()).collect();
        assert_eq!(won.len(), 1, "round {round}: {codes:?}");
        let (winner, loser) = (&ids[won[0]], &ids[1 - won[0]]);
        let err = std::fs::read_to_string(&errs[1 - won[0]]).unwrap();
        assert!(err.contains("already in use"), "{err}");
        assert!(w.fails(&["state", loser]).contains("does not exist"));
        let pid = w.state(winner)["pid"].as_i64().unwrap() as i32;
        w.ok(&["start", winner]);
        w.ok(&["delete", "--force", loser]);
        assert_eq!(w.status(winner), "running");
        w.ok(&["delete", "--force", winner]);
        wait_exit(pid);
        reap(pid);
    }
}
