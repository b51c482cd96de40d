//! The container lifecycle: run, create -> start -> stopped -> delete, kill, list.

mod common;
use common::*;
use std::io::Write;
use std::process::Stdio;

#[test]
fn run_true_exits_zero() {
    let mut w = World::new();
    let b = w.bundle(&["/bin/true"]);
    assert_eq!(w.run(&b).0, 0);
}

#[test]
fn run_returns_the_containers_exit_status() {
    let mut w = World::new();
    let b = w.bundle(&["sh", "-c", "exit 7"]);
    assert_eq!(w.run(&b).0, 7);
}

#[test]
fn run_reports_a_signal_death_as_128_plus_signal() {
    let mut w = World::new();
    // Pid 1 of a pid namespace cannot be SIGKILLed from inside it, so share the host's.
    let mut b = w.bundle(&["sh", "-c", "kill -9 $$"]);
    b.set(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "pid");
    });
    assert_eq!(w.run(&b).0, 137);
}

#[test]
fn output_reaches_the_callers_stdout_and_stderr() {
    let mut w = World::new();
    let b = w.bundle(&["sh", "-c", "echo out-line; echo err-line >&2"]);
    let (code, out, err) = w.run(&b);
    assert_eq!(code, 0);
    assert_eq!(out, "out-line\n");
    assert!(err.contains("err-line"), "{err}");
}

#[test]
fn create_start_stop_delete() {
    let mut w = World::new();
    let b = w.bundle(&["sh", "-c", "read line; echo got $line"]);
    let id = w.id("life");
    let pidfile = b.dir.join("pid");
    // stdin is a pipe we hold: the container exits when we write a line to it.
    let mut create = w
        .cmd()
        .args([
            "create",
            "--bundle",
            b.dir_str(),
            "--pid-file",
            pidfile.to_str().unwrap(),
            &id,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = create.stdin.take().unwrap();
    let mut stdout = create.stdout.take().unwrap();
    assert!(create.wait().unwrap().success());
    // The pid file exists when create returns, and names init.
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    w.pids.push(pid);
    let st = w.state(&id);
    assert_eq!(st["status"], "created");
    assert_eq!(st["pid"], pid);
    assert_eq!(st["id"], id.as_str());
    assert_eq!(st["bundle"], b.dir_str());
    assert!(st["created"].as_str().unwrap().ends_with('Z'));
    for field in ["ociVersion", "rootfs", "owner"] {
        assert!(st.get(field).is_some(), "state lacks {field}");
    }
    // Not exec'd yet: init is still capsa (run from its protected copy, not the host file).
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm, "capsa\n");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_ne!(exe, std::fs::canonicalize(BIN).unwrap());

    w.ok(&["start", &id]);
    assert_eq!(w.status(&id), "running");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(exe.ends_with("busybox"), "{exe:?}");
    assert!(w
        .fails(&["start", &id])
        .contains("cannot start an already running container"));
    assert!(w
        .fails(&["delete", &id])
        .contains("that is not stopped: running"));

    stdin.write_all(b"hello\n").unwrap();
    drop(stdin);
    wait_exit(pid);
    assert_eq!(w.status(&id), "stopped");
    assert_eq!(w.state(&id)["pid"], 0);
    let mut out = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
    assert_eq!(out, "got hello\n");
    assert!(w
        .fails(&["start", &id])
        .contains("cannot start a container that has stopped"));
    assert!(w
        .fails(&["kill", &id, "KILL"])
        .contains("container not running"));
    w.ok(&["delete", &id]);
    assert!(w.fails(&["state", &id]).contains("does not exist"));
}

#[test]
fn delete_of_a_created_container_needs_no_force() {
    let mut w = World::new();
    let b = w.bundle(&["sleep", "100"]);
    let id = w.id("created");
    let pid = w.create(&id, &b);
    assert_eq!(w.status(&id), "created");
    w.ok(&["delete", &id]);
    wait_exit(pid);
}

#[test]
fn kill_accepts_names_and_numbers() {
    let mut w = World::new();
    let mut b = w.bundle(&[
        "sh",
        "-c",
        "trap 'exit 3' USR1; trap 'exit 4' TERM; trap 'exit 5' 37; touch /trapped; \
         while true; do sleep 0.1; done",
    ]);
    b.set(|c| c["root"]["readonly"] = serde_json::json!(false));
    // The shell says when its traps are set: a signal before that would kill it instead.
    let trapped = b.rootfs().join("trapped");
    // 37 is SIGRTMIN+3 (glibc's SIGRTMIN is 34), what podman sends to stop systemd.
    for (sig, code) in [
        ("USR1", 3),
        ("SIGTERM", 4),
        ("10", 3),
        ("37", 5),
        ("RTMIN+3", 5),
    ] {
        let id = w.id("kill");
        let pid = w.create(&id, &b);
        w.ok(&["start", &id]);
        wait_until("the shell's traps", || trapped.exists());
        w.ok(&["kill", &id, sig]);
        wait_exit(pid);
        std::fs::remove_file(&trapped).unwrap();
        assert_eq!(w.status(&id), "stopped");
        // the exit code is seen by the reaper (us, the subreaper)
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), code),
            "{sig}"
        );
        w.ok(&["delete", &id]);
    }
    let id = w.id("kill");
    let pid = w.create(&id, &b);
    assert!(w.fails(&["kill", &id, "NOPE"]).contains("unknown signal"));
    assert!(w.fails(&["kill", &id, "65"]).contains("unknown signal"));
    // Signal 0 sends nothing: it succeeds while the container runs (as with runc and crun)
    // and fails once it has stopped.
    w.ok(&["start", &id]);
    w.ok(&["kill", &id, "0"]);
    assert_eq!(w.status(&id), "running");
    w.ok(&["kill", &id, "9"]);
    wait_exit(pid);
    assert!(w
        .fails(&["kill", &id, "0"])
        .contains("container not running"));
    w.ok(&["delete", &id]);
}

#[test]
fn delete_force_kills_a_running_container_and_everything_in_it() {
    let mut w = World::new();
    let b = w.bundle(&["sh", "-c", "sleep 100 & sleep 100 & wait"]);
    let id = w.id("force");
    let pid = w.create(&id, &b);
    w.ok(&["start", &id]);
    w.ok(&["delete", "--force", &id]);
    wait_exit(pid);
}

#[test]
fn delete_force_of_a_missing_container_succeeds() {
    let w = World::new();
    w.ok(&["delete", "--force", "never-existed"]);
    let err = w.fails(&["delete", "never-existed"]);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn run_detach_then_kill_all_in_a_shared_pid_namespace() {
    let mut w = World::new();
    let mut b = w.bundle(&["sh", "-c", "sleep 100 & sleep 100"]);
    b.set(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "pid");
    });
    let id = w.id("detach");
    w.ok(&["run", "--detach", "--bundle", b.dir_str(), &id]);
    let pid = w.state(&id)["pid"].as_i64().unwrap() as i32;
    w.pids.push(pid);
    // run --detach returns once sh is exec'd, maybe before it has forked the first sleep.
    let mut pids: Vec<i32> = Vec::new();
    wait_until("sh's two sleeps in the cgroup", || {
        let procs = read_cgroup("pids", &id, "cgroup.procs");
        pids = procs.lines().map(|l| l.parse().unwrap()).collect();
        pids.len() == 2
    });
    w.pids.extend(&pids);
    w.ok(&["kill", "--all", &id, "KILL"]);
    for p in &pids {
        wait_exit(*p);
    }
    assert_eq!(w.status(&id), "stopped");
    w.ok(&["delete", &id]);
}

#[test]
fn list_shows_containers_in_table_json_and_quiet_forms() {
    let mut w = World::new();
    let b = w.bundle(&["sleep", "100"]);
    let a = w.id("lista");
    let c = w.id("listb");
    w.create(&a, &b);
    w.create(&c, &b);
    let table = w.ok(&["list"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    );
    assert_eq!(lines.filter(|l| l.contains("created")).count(), 2);
    let json: serde_json::Value =
        serde_json::from_str(&w.ok(&["list", "--format", "json"])).unwrap();
    let ids: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a.as_str(), c.as_str()]);
    assert_eq!(json[0]["owner"], "root");
    assert_eq!(w.ok(&["list", "-q"]), format!("{a}\n{c}\n"));
    w.ok(&["delete", &a, &c]);
    assert_eq!(w.ok(&["list", "-q"]), "");
}

#[test]
fn annotations_of_any_size_reach_init_in_the_state() {
    // runc takes a 300 KB annotation; a datagram of the sync channel held 208 KiB at most.
    let mut w = World::new();
    for size in [300_000usize, 1 << 20] {
        let mut b = w.bundle(&["true"]);
        let seen = b.dir.join("state-seen");
        // createContainer hooks run in init, with the state init received on stdin.
        let hook = format!("cat > {}", seen.display());
        b.set(|c| {
            c["annotations"] = serde_json::json!({ "big": "x".repeat(size) });
            c["hooks"] = serde_json::json!({ "createContainer": [
                { "path": "/bin/sh", "args": ["sh", "-c", hook], "env": ["PATH=/usr/bin:/bin"] }
            ]});
        });
        w.run_ok(&b);
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&seen).unwrap()).unwrap();
        assert_eq!(state["annotations"]["big"].as_str().unwrap().len(), size);
    }
}

/// Starts `capsa ARGS --bundle B ID` with a `kind` hook that never ends, sends it `signal`
/// once the hook runs, and checks that everything was undone; returns how capsa ended.
fn interrupted_in_a_hook(
    w: &mut World,
    args: &[&str],
    kind: &str,
    signal: nix::sys::signal::Signal,
) -> std::process::ExitStatus {
    let mut b = w.bundle(&["true"]);
    // The hook says it is running on a fifo, then sleeps. startContainer hooks run after
    // pivot_root, where the bundle's rootfs/tmp is /tmp.
    let fifo = b.rootfs().join("tmp/hook-running");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let seen = if kind == "startContainer" {
        "/tmp/hook-running".to_string()
    } else {
        fifo.display().to_string()
    };
    // Its host pid: the redirection is opened by the shell itself, and until pivot_root
    // /proc is the host's.
    let hook = format!("read pid rest < /proc/self/stat; echo $pid > {seen}; exec sleep 30");
    b.set(|c| {
        c["hooks"] = serde_json::json!({ kind: [
            { "path": "/bin/sh", "args": ["sh", "-c", hook], "env": ["PATH=/usr/bin:/bin"] }
        ]});
    });
    let id = w.id("setupsig");
    let mut capsa = w
        .cmd()
        .args(args)
        .args(["--bundle", b.dir_str(), &id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let hook_pid: i32 = std::fs::read_to_string(&fifo)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(capsa.id() as i32), signal).unwrap();
    let status = capsa.wait().unwrap();
    // A hook the runtime ran is its child, killed and reaped; one init ran died with its pid
    // namespace. (The startContainer one, in the container's own /proc, is checked as a
    // process rooted in the bundle when the World ends.)
    if kind != "startContainer" {
        assert!(
            !std::path::Path::new(&format!("/proc/{hook_pid}")).exists(),
            "{args:?} {kind}: hook {hook_pid} left"
        );
    }
    assert!(
        w.fails(&["state", &id]).contains("does not exist"),
        "{args:?} {kind}"
    );
    status
}

#[test]
fn a_run_stopped_by_a_signal_while_setting_up_removes_everything() {
    // A hook that never ends holds the setup; SIGTERM (or SIGINT) to `capsa run` cannot be
    // forwarded to an init that is not yet the container's process: the run gives up, kills
    // what it started, deletes the container and exits 128+N.
    use nix::sys::signal::Signal;
    let mut w = World::new();
    for (kind, signal) in [
        ("createRuntime", Signal::SIGTERM),
        ("createContainer", Signal::SIGINT),
        ("startContainer", Signal::SIGTERM),
    ] {
        let status = interrupted_in_a_hook(&mut w, &["run"], kind, signal);
        assert_eq!(status.code(), Some(128 + signal as i32), "{kind}: {status}");
    }
}

#[test]
fn create_and_run_detach_stopped_by_a_signal_while_setting_up_remove_everything() {
    // Killed half-way by SIGTERM's default action, they left the cgroups, the state
    // directory and the hook behind; now they undo the setup, then die of the signal.
    use nix::sys::signal::Signal;
    use std::os::unix::process::ExitStatusExt;
    let mut w = World::new();
    for (args, kind) in [
        (&["create"][..], "createRuntime"),
        (&["create"][..], "createContainer"),
        (&["run", "--detach"][..], "prestart"),
        (&["run", "--detach"][..], "startContainer"),
    ] {
        let status = interrupted_in_a_hook(&mut w, args, kind, Signal::SIGTERM);
        assert_eq!(
            status.signal(),
            Some(Signal::SIGTERM as i32),
            "{args:?} {kind}: {status}"
        );
    }
}
