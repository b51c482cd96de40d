//! The container process: identity, capabilities, rlimits, umask, env, cwd, fds.

mod common;
use common::*;
use serde_json::json;
use std::os::fd::AsRawFd;

/// The hex mask /proc/<pid>/status shows for a list of capability numbers.
fn cap_mask(caps: &[u32]) -> String {
    format!("{:016x}", caps.iter().fold(0u64, |m, c| m | (1u64 << c)))
}

fn status_field(out: &str, field: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} not in {out}"))
        .trim()
        .to_string()
}

#[test]
fn capabilities_no_new_privs_and_identity_match_the_spec() {
    let mut w = World::new();
    let mut b = w.bundle(&["sh", "-c", "cat /proc/self/status; id"]);
    b.set(|c| {
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [5, 65534]});
        c["process"]["capabilities"] = json!({
            "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_CHOWN"],
            "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "inheritable": ["CAP_KILL"],
            "ambient": ["CAP_KILL"]
        });
        c["process"]["noNewPrivileges"] = json!(true);
    });
    let out = w.run_ok(&b);
    // CAP_CHOWN=0, CAP_KILL=5, CAP_NET_BIND_SERVICE=10
    assert_eq!(status_field(&out, "CapBnd"), cap_mask(&[0, 5, 10]));
    // After execve as a non-root user only the ambient set survives into permitted/effective.
    assert_eq!(status_field(&out, "CapEff"), cap_mask(&[5]));
    assert_eq!(status_field(&out, "CapPrm"), cap_mask(&[5]));
    assert_eq!(status_field(&out, "CapInh"), cap_mask(&[5]));
    assert_eq!(status_field(&out, "CapAmb"), cap_mask(&[5]));
    assert_eq!(status_field(&out, "NoNewPrivs"), "1");
    assert_eq!(
        status_field(&out, "Uid")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1000"; 4]
    );
    assert_eq!(status_field(&out, "Groups"), "5 65534");
    assert!(
        out.contains("uid=1000(tester) gid=1000(tester) groups=5(tty),65534(nogroup)"),
        "{out}"
    );
}

#[test]
fn root_keeps_exactly_the_effective_set_it_is_given() {
    let mut w = World::new();
    let mut b = w.bundle(&[
        "sh",
        "-c",
        "grep -E 'Cap(Eff|Bnd)|NoNewPrivs' /proc/self/status",
    ]);
    b.set(|c| {
        c["process"]["capabilities"] = json!({
            "bounding": ["CAP_SYS_ADMIN", "CAP_NET_RAW"],
            "effective": ["CAP_SYS_ADMIN", "CAP_NET_RAW"],
            "permitted": ["CAP_SYS_ADMIN", "CAP_NET_RAW"]
        });
        c["process"]["noNewPrivileges"] = json!(false);
    });
    let out = w.run_ok(&b);
    assert_eq!(status_field(&out, "CapEff"), cap_mask(&[13, 21]));
    assert_eq!(status_field(&out, "CapBnd"), cap_mask(&[13, 21]));
    assert_eq!(status_field(&out, "NoNewPrivs"), "0");
}

#[test]
fn rlimits_umask_env_cwd_and_oom_score_adj() {
    let mut w = World::new();
    let mut b = w.bundle(&["sh", "-c", "ulimit -n; ulimit -Hn; ulimit -c; umask; pwd; echo $GREETING; echo $HOME; cat /proc/self/oom_score_adj"]);
    b.set(|c| {
        c["process"]["rlimits"] = json!([
            {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 768},
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}
        ]);
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000, "umask": 0o027});
        c["process"]["cwd"] = json!("/home/tester/work");
        c["process"]["env"] = json!(["PATH=/bin", "GREETING=hello there"]);
        c["process"]["oomScoreAdj"] = json!(500);
    });
    let lines: Vec<String> = w.run_ok(&b).lines().map(str::to_string).collect();
    assert_eq!(
        lines,
        [
            "512",
            "768",
            "0",
            "0027",
            "/home/tester/work",
            "hello there",
            "/home/tester",
            "500"
        ]
    );
}

/// Runs `ls -l /proc/self/fd` as the container process with `fd` duplicated onto fd 3 of
/// capsa, and returns the container's descriptors (ls's own handle on the directory left out).
fn container_fds(w: &mut World, fd: i32, preserve: &str) -> Vec<(i32, String)> {
    let b = w.bundle(&["ls", "-l", "/proc/self/fd"]);
    let id = w.id("fds");
    let mut cmd = w.cmd();
    cmd.args([
        "run",
        "--preserve-fds",
        preserve,
        "--bundle",
        b.dir_str(),
        &id,
    ]);
    cmd.stdin(std::process::Stdio::null());
    // SAFETY: pre_exec runs in the forked child before exec; dup2 and fcntl are
    // async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            if fd == 3 {
                // dup2(3, 3) would keep close-on-exec set: clear it instead.
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (left, target) = l.split_once(" -> ")?;
            let n = left.split_whitespace().last()?.parse().ok()?;
            (!target.starts_with("/proc/")).then(|| (n, target.to_string()))
        })
        .collect()
}

#[test]
fn only_stdio_reaches_the_container_even_when_the_caller_leaks_fds() {
    let mut w = World::new();
    // fd 3 of capsa is a descriptor its caller forgot to mark close-on-exec.
    let leaked = std::fs::File::open("/etc/hostname").unwrap();
    let fds = container_fds(&mut w, leaked.as_raw_fd(), "0");
    let numbers: Vec<i32> = fds.iter().map(|f| f.0).collect();
    assert_eq!(numbers, [0, 1, 2], "{fds:?}");
}

#[test]
fn preserve_fds_passes_the_next_n_descriptors() {
    let mut w = World::new();
    let data = scratch().join(unique("fd3"));
    std::fs::write(&data, "through fd 3\n").unwrap();
    let file = std::fs::File::open(&data).unwrap();
    let fds = container_fds(&mut w, file.as_raw_fd(), "1");
    std::fs::remove_file(&data).unwrap();
    let numbers: Vec<i32> = fds.iter().map(|f| f.0).collect();
    assert_eq!(numbers, [0, 1, 2, 3], "{fds:?}");
    assert_eq!(fds[3].1, data.to_str().unwrap());
}

#[test]
fn a_missing_executable_fails_at_create_and_leaves_nothing() {
    let mut w = World::new();
    let b = w.bundle(&["no-such-program", "arg"]);
    let id = w.id("noexec");
    let err = w.fails(&["create", "--bundle", b.dir_str(), &id]);
    assert!(
        err.contains(r#"exec: \"no-such-program\": executable file not found in $PATH"#),
        "{err}"
    );
    assert!(w.fails(&["state", &id]).contains("does not exist"));
    let b = w.bundle(&["/bin/nope"]);
    let err = w.fails(&["run", "--bundle", b.dir_str(), &id]);
    assert!(
        err.contains(r#"exec: \"/bin/nope\": No such file or directory"#),
        "{err}"
    );
}

#[test]
fn an_error_inside_init_reaches_the_caller_with_its_cause_and_errno() {
    let mut w = World::new();
    let mut b = w.bundle(&["true"]);
    b.set(|c| {
        // RLIMIT_NOFILE above the current hard limit needs CAP_SYS_RESOURCE, which this
        // sandbox lacks: the setrlimit in init fails with EPERM.
        c["process"]["rlimits"] =
            json!([{"type": "RLIMIT_NOFILE", "soft": 1u64 << 40, "hard": 1u64 << 40}]);
    });
    let id = w.id("initerr");
    let out = w.capsa(&["--log-format", "json", "run", "--bundle", b.dir_str(), &id]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line: serde_json::Value = serde_json::from_str(err.trim()).unwrap();
    let msg = line["msg"].as_str().unwrap();
    assert!(
        msg.contains("setting RLIMIT_NOFILE to soft 1099511627776, hard 1099511627776: Operation not permitted (os error 1)"),
        "{msg}"
    );
}
