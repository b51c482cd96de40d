//! linux.seccomp: profiles loaded into the container (and into exec'd processes), blocked
//! syscalls returning the profile's errno, and SCMP_ACT_NOTIFY handing the notification fd to
//! linux.seccomp.listenerPath.

mod common;
use common::*;
use serde_json::json;

/// Everything allowed but mkdir/mkdirat, which fail with EXDEV (18).
fn mkdir_blocked() -> serde_json::Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18},
            {"names": ["a_syscall_no_kernel_has"], "action": "SCMP_ACT_ERRNO"}
        ]
    })
}

#[test]
fn a_blocked_syscall_returns_the_profiles_errno_and_others_work() {
    let mut w = World::new();
    let mut b = w.bundle(&[
        "sh",
        "-c",
        "grep -E '^Seccomp:' /proc/self/status; mkdir /x 2>&1; touch /dev/shm/y && echo touched",
    ]);
    b.set(|c| c["linux"]["seccomp"] = mkdir_blocked());
    let out = w.run_ok(&b);
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("Invalid cross-device link"), "{out}");
    assert!(out.contains("touched"), "{out}");
}

#[test]
fn the_filter_holds_without_no_new_privs_for_an_unprivileged_user() {
    // Without no_new_privs, loading needs CAP_SYS_ADMIN: it must happen before the process
    // becomes uid 1000 with no capabilities.
    let mut w = World::new();
    let mut b = w.bundle(&[
        "sh",
        "-c",
        "id -u; mkdir /tmp/x 2>&1; grep NoNewPrivs /proc/self/status",
    ]);
    b.set(|c| {
        c["linux"]["seccomp"] = mkdir_blocked();
        c["process"]["noNewPrivileges"] = json!(false);
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    });
    let out = w.run_ok(&b);
    assert!(out.starts_with("1000\n"), "{out}");
    assert!(out.contains("Invalid cross-device link"), "{out}");
    assert!(out.contains("NoNewPrivs:\t0"), "{out}");
}

#[test]
fn default_errno_allowlist_profile() {
    // The shape of containerd's and podman's defaults: deny by default with an errno,
    // allow a list. Here: ENOSYS (38) for everything a shell does not need.
    let mut w = World::new();
    let extra = ["getppid", "fork", "vfork", "faccessat2"];
    let allowed = [SHELL_SYSCALLS, &extra[..]].concat();
    let mut b = w.bundle(&["sh", "-c", "mkdir /x 2>&1; echo done"]);
    b.set(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": allowed.to_vec(), "action": "SCMP_ACT_ALLOW"}]
        })
    });
    let out = w.run_ok(&b);
    assert!(out.contains("Function not implemented"), "{out}");
    assert!(out.contains("done"), "{out}");
}

#[test]
fn exec_gets_the_containers_filter() {
    let mut w = World::new();
    let mut b = w.bundle(&["sleep", "1000"]);
    b.set(|c| c["linux"]["seccomp"] = mkdir_blocked());
    let id = w.id("seccomp-exec");
    let pid = w.create(&id, &b);
    w.ok(&["start", &id]);
    let out = w.capsa(&[
        "exec",
        &id,
        "sh",
        "-c",
        "mkdir /x 2>&1; grep ^Seccomp: /proc/self/status",
    ]);
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("Invalid cross-device link"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    w.ok(&["delete", "--force", &id]);
    wait_exit(pid);
    reap(pid);
}

#[test]
fn notify_hands_the_fd_to_the_listener_which_answers() {
    use std::os::unix::net::UnixListener;
    let mut w = World::new();
    let sock = scratch().join(format!("{}.sock", unique("listener")));
    let listener = UnixListener::bind(&sock).unwrap();
    let mut b = w.bundle(&["sh", "-c", "mkdir /x 2>&1; echo after"]);
    let sock_str = sock.to_str().unwrap().to_string();
    b.set(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": sock_str,
            "listenerMetadata": "hello-listener",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
        })
    });
    // The listener: receive the state and the fd, then answer one notification with EXDEV.
    let agent = std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let (stream, _) = listener.accept().unwrap();
        let (bytes, fd) = recv_with_fd(stream.as_raw_fd());
        let state: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        let req = libseccomp::ScmpNotifReq::receive(fd.as_raw_fd()).unwrap();
        libseccomp::ScmpNotifResp::new_error(
            req.id,
            -libc::EXDEV,
            libseccomp::ScmpNotifRespFlags::empty(),
        )
        .respond(fd.as_raw_fd())
        .unwrap();
        (state, link)
    });
    let out = w.run_ok(&b);
    let (state, link) = agent.join().unwrap();
    assert!(link.to_string_lossy().contains("seccomp"), "{link:?}");
    assert_eq!(state["fds"], json!(["seccompFd"]));
    assert_eq!(state["metadata"], "hello-listener");
    assert!(state["pid"].as_i64().unwrap() > 0);
    assert_eq!(state["state"]["status"], "creating");
    assert!(
        out.contains("Invalid cross-device link") && out.contains("after"),
        "{out}"
    );
    let _ = std::fs::remove_file(&sock);
}

#[test]
fn a_bad_profile_is_refused_naming_the_field() {
    let mut w = World::new();
    let mut b = w.bundle(&["true"]);
    b.set(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        })
    });
    let (code, _, err) = w.run(&b);
    assert_ne!(code, 0);
    assert!(err.contains("listenerPath"), "{err}");
    let mut b = w.bundle(&["true"]);
    b.set(|c| c["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_BOGUS"}));
    let (code, _, err) = w.run(&b);
    assert_ne!(code, 0);
    assert!(err.contains("linux.seccomp.defaultAction"), "{err}");
}
