//! `checkpoint` and `restore` through CRIU. Debian's criu 3.17 fails on this host's kernel
//! (its vDSO is split into [vvar], [vvar_vclock] and [vdso], which 3.17 does not know), with
//! runc as with capsa; so the scenarios that need a working criu run in the VM with Debian's
//! kernel (runtime-tests/vm/checkpoint-tests.sh: a counter loop checkpointed and restored
//! goes on from where it was, --leave-running with --pre-dump and --parent-path, a restore
//! under another id, a foreground restore, a network namespace, a restore criu refuses,
//! bad input, nothing left), and this file asserts their RESULT lines. The host tests are
//! the failure paths, which hold on any kernel.

mod common;

use common::*;
use std::os::unix::net::UnixStream;
use std::process::Stdio;

fn running(w: &mut World, args: &[&str]) -> (String, Bundle, i32) {
    let b = w.bundle(args);
    let (id, pid) = w.started("ck", &b);
    (id, b, pid)
}

/// An image path that cannot be made: refused before criu runs, the container untouched.
/// runc behaves the same (parity).
#[test]
fn an_image_path_that_cannot_be_made_is_refused_and_the_container_keeps_running() {
    require("criu", "criu");
    on_both(|w: &mut World| {
        let (id, _b, pid) = running(w, &["sleep", "1000"]);
        let err = w.fails(&["checkpoint", "--image-path", "/proc/no/such/dir", &id]);
        assert!(err.contains("/proc/no"), "{err}");
        assert_eq!(w.status(&id), "running");
        assert_eq!(w.state(&id)["pid"], pid);
        w.ok(&["delete", "--force", &id]);
        wait_exit(pid);
    });
}

/// A dump criu refuses (on this host its kernel; elsewhere the container's stdout, a unix
/// socket to a peer outside the container, without --ext-unix-sk): the error is criu's own
/// line and names its log, which is there; the container runs on, unchanged.
#[test]
fn a_dump_criu_refuses_names_its_log_and_changes_nothing() {
    require("criu", "criu");
    let mut w = World::new();
    let b = w.bundle(&["sh", "-c", "echo up; exec sleep 1000"]);
    let id = w.id("ck");
    let (ours, theirs) = UnixStream::pair().unwrap();
    let pid_file = b.dir.join("init.pid");
    let st = w
        .cmd()
        .args(["run", "-d", "--bundle", b.dir_str(), "--pid-file"])
        .arg(&pid_file)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .status()
        .unwrap();
    assert!(st.success());
    let pid = read_pid_file(&pid_file);
    w.pids.push(pid);
    let images = b.dir.join("images");
    let err = w.fails(&["checkpoint", "--image-path", images.to_str().unwrap(), &id]);
    let log = images.join("dump.log");
    assert!(err.contains("criu dump failed"), "{err}");
    assert!(err.contains(&format!("(log: {})", log.display())), "{err}");
    assert!(err.contains("Error ("), "criu's own line: {err}");
    assert!(log.exists());
    assert_eq!(w.status(&id), "running");
    assert_eq!(w.state(&id)["pid"], pid);
    w.ok(&["delete", "--force", &id]);
    wait_exit(pid);
    drop(ours);
}

/// No criu binary: a message that says what to install; the container keeps running.
#[test]
fn without_criu_the_error_says_what_to_install() {
    let mut w = World::new();
    let (id, b, pid) = running(&mut w, &["sleep", "1000"]);
    let images = b.dir.join("images");
    let err = w.fails(&[
        "checkpoint",
        "--criu",
        "/nonexistent/criu",
        "--image-path",
        images.to_str().unwrap(),
        &id,
    ]);
    assert!(err.contains("is criu installed"), "{err}");
    assert_eq!(w.status(&id), "running");
    w.ok(&["delete", "--force", &id]);
    wait_exit(pid);
}

/// Restores that cannot start leave nothing: a directory without a checkpoint, a terminal
/// container (refused, as runc without a console socket), an id that exists.
#[test]
fn a_restore_refused_leaves_no_state_cgroup_or_mount() {
    let mut w = World::new();
    let mut b = w.bundle(&["sleep", "1000"]);
    let empty = b.dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let id = w.id("rst");
    let restore = |w: &World, id: &str, images: &std::path::Path, b: &Bundle| {
        w.fails(&[
            "restore",
            "-d",
            "--bundle",
            b.dir_str(),
            "--image-path",
            images.to_str().unwrap(),
            id,
        ])
    };
    let err = restore(&w, &id, &empty, &b);
    assert!(err.contains("is not a checkpoint capsa wrote"), "{err}");
    let err = restore(&w, &id, &b.dir.join("missing"), &b);
    assert!(err.contains("--image-path"), "{err}");
    b.set(|c| c["process"]["terminal"] = serde_json::json!(true));
    let err = restore(&w, &id, &empty, &b);
    assert!(err.contains("process.terminal"), "{err}");
    b.set(|c| c["process"]["terminal"] = serde_json::json!(false));
    let (other, _, pid) = running(&mut w, &["sleep", "1000"]);
    let err = restore(&w, &other, &empty, &b);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(w.status(&other), "running");
    w.ok(&["delete", "--force", &other]);
    wait_exit(pid);
    // The World's drop checks: no state, no cgroup of either id, no mount, no process.
}

/// The scenarios that need a working criu, in the VM with Debian's kernel.
#[test]
fn checkpoint_and_restore_in_a_vm() {
    // criu refuses a container made from a chroot (its root is not its mount namespace's),
    // which is how the VM runs scripts by default.
    common::vm::Vm::new(BIN.as_ref(), "runtime-tests/vm/checkpoint-tests.sh")
        .switch_root()
        .require([
            "criu_check",
            "checkpoint_stops",
            "restore_runs",
            "counter_continues",
            "restored_deletes",
            "restore_failure_clean",
            "leave_running",
            "restore_other_id",
            "restore_foreground",
            "bad_image_path",
            "restore_not_a_checkpoint",
            "netns",
            "nothing_left",
        ]);
}
