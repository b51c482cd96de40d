//! exec: a new process in a running container, in all its namespaces and its cgroup.

mod common;
use common::*;
use serde_json::json;
use std::io::Write;
use std::process::Stdio;

fn running(w: &mut World, edit: impl FnOnce(&mut serde_json::Value)) -> (String, i32, Bundle) {
    let mut b = w.bundle(&["sleep", "100"]);
    b.set(|c| {
        c["hostname"] = json!("exec-host");
        edit(c)
    });
    let (id, pid) = w.started("exec", &b);
    (id, pid, b)
}

#[test]
fn exec_joins_every_namespace_and_the_cgroup_of_init() {
    let mut w = World::new();
    let (id, pid, _b) = running(&mut w, |_| {});
    let script = "for k in mnt uts ipc pid net cgroup; do echo $k $(readlink /proc/self/ns/$k); done; hostname; cat /proc/self/cgroup | grep pids; echo $$";
    let out = w.ok(&["exec", &id, "sh", "-c", script]);
    let lines: Vec<&str> = out.lines().collect();
    for (i, kind) in ["mnt", "uts", "ipc", "pid", "net", "cgroup"]
        .iter()
        .enumerate()
    {
        let init_ns = std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
        assert_eq!(lines[i], format!("{kind} {}", init_ns.display()), "{kind}");
    }
    assert_eq!(lines[6], "exec-host");
    assert!(
        lines[7].ends_with(&format!(":pids:/capsa/{id}")),
        "{}",
        lines[7]
    );
    assert_ne!(lines[8], "1", "exec is not the container's pid 1");
    w.force_delete(&id, pid);
}

#[test]
fn exit_status_stdio_and_stdin_pass_through() {
    let mut w = World::new();
    let (id, pid, _b) = running(&mut w, |_| {});
    assert_eq!(
        w.capsa(&["exec", &id, "sh", "-c", "exit 3"]).status.code(),
        Some(3)
    );
    let mut child = w
        .cmd()
        .args(["exec", &id, "sh", "-c", "read x; echo got $x; echo err >&2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"line\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got line\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    w.force_delete(&id, pid);
}

#[test]
fn flags_set_user_cwd_env_groups_caps_and_no_new_privs() {
    let mut w = World::new();
    let (id, pid, _b) = running(&mut w, |_| {});
    let out = w.ok(&[
        "exec",
        "-u",
        "1000:1000",
        "--cwd",
        "/tmp",
        "-e",
        "FOO=bar",
        "--additional-gids",
        "5",
        "--cap",
        "CAP_NET_RAW",
        "--no-new-privs",
        &id,
        "sh",
        "-c",
        "id; pwd; echo $FOO; grep -E 'CapBnd|NoNewPrivs' /proc/self/status",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "uid=1000(tester) gid=1000(tester) groups=5(tty)");
    assert_eq!(lines[1], "/tmp");
    assert_eq!(lines[2], "bar");
    // capsa spec's defaults (AUDIT_WRITE=29, KILL=5, NET_BIND_SERVICE=10) plus NET_RAW=13
    let bnd = lines[3].split_whitespace().nth(1).unwrap();
    assert_eq!(
        u64::from_str_radix(bnd, 16).unwrap(),
        (1 << 29) | (1 << 5) | (1 << 10) | (1 << 13)
    );
    assert!(lines[4].ends_with('1'), "{}", lines[4]);
    w.force_delete(&id, pid);
}

#[test]
fn a_process_json_describes_the_whole_process() {
    let mut w = World::new();
    let (id, pid, b) = running(&mut w, |_| {});
    let process = b.dir.join("process.json");
    std::fs::write(
        &process,
        serde_json::to_vec(&json!({
            "args": ["sh", "-c", "echo $A $B; pwd; id -u; umask"],
            "env": ["PATH=/bin", "A=1", "B=2"],
            "cwd": "/etc",
            "user": {"uid": 1000, "gid": 1000, "umask": 0o077}
        }))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        w.ok(&["exec", "--process", process.to_str().unwrap(), &id]),
        "1 2\n/etc\n1000\n0077\n"
    );
    w.force_delete(&id, pid);
}

#[test]
fn detached_exec_writes_a_pid_file_relative_to_the_caller() {
    let mut w = World::new();
    let (id, pid, b) = running(&mut w, |_| {});
    let status = w
        .cmd()
        .current_dir(&b.dir)
        .args([
            "exec",
            "--detach",
            "--pid-file",
            "exec.pid",
            &id,
            "sleep",
            "50",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let exec_pid = read_pid_file(&b.dir.join("exec.pid"));
    w.pids.push(exec_pid);
    let procs = read_cgroup("pids", &id, "cgroup.procs");
    assert!(procs.lines().any(|l| l == exec_pid.to_string()), "{procs}");
    // exec --detach returns once the process has been executed.
    assert!(std::fs::read_link(format!("/proc/{exec_pid}/exe"))
        .unwrap()
        .ends_with("busybox"));
    kill_and_reap(exec_pid);
    w.force_delete(&id, pid);
}

#[test]
fn exec_fails_with_runcs_words_and_exit_255() {
    let mut w = World::new();
    let (id, pid, _b) = running(&mut w, |_| {});
    let out = w.capsa(&["exec", &id, "no-such-program"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains(r#"exec: \"no-such-program\": executable file not found in $PATH"#));
    w.ok(&["pause", &id]);
    let out = w.capsa(&["exec", &id, "true"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot exec in a paused container"));
    w.ok(&["resume", &id]);
    w.ok(&["kill", &id, "KILL"]);
    wait_exit(pid);
    let out = w.capsa(&["exec", &id, "true"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot exec in a stopped container"));
    w.ok(&["delete", &id]);
    let out = w.capsa(&["exec", "ghost", "true"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn exec_into_a_user_namespace_is_root_inside_and_mapped_outside() {
    let mut w = World::new();
    let (id, pid, b) = running(&mut w, |c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
        c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    });
    let _ = b;
    let out = w.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "id -u; grep Uid /proc/self/uid_map >/dev/null; cat /proc/self/uid_map",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["0", "200000", "65536"]
    );
    w.force_delete(&id, pid);
}

/// An argument holding a NUL byte cannot reach execve; it used to become "" silently (and
/// run `echo ""`). Now the exec fails naming it, and the container is untouched.
#[test]
fn an_argument_with_a_nul_byte_is_refused_naming_it() {
    let mut w = World::new();
    let (id, pid, b) = running(&mut w, |_| {});
    for (process, field) in [
        (
            json!({"args": ["echo", "a\u{0}b"], "cwd": "/", "user": {"uid": 0, "gid": 0}}),
            "process.args[1]",
        ),
        (
            json!({"args": ["true"], "env": ["PATH=/bin", "X=\u{0}"], "cwd": "/",
                   "user": {"uid": 0, "gid": 0}}),
            "process.env[1]",
        ),
    ] {
        let file = b.dir.join("nul-process.json");
        std::fs::write(&file, serde_json::to_vec(&process).unwrap()).unwrap();
        let err = w.fails(&["exec", "--process", file.to_str().unwrap(), &id]);
        assert!(
            err.contains(&format!("{field} holds a NUL byte")),
            "{field}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    assert_eq!(w.status(&id), "running");
    assert_eq!(
        w.ok(&["exec", &id, "echo", "still", "fine"]),
        "still fine\n"
    );
    w.force_delete(&id, pid);
}
