//! Exec into real busybox containers (run by `capsa-cri-monitor`, as the daemon runs them):
//! ExecSync's output, exit codes, signals, timeout, output cap and errors; the interactive
//! session with a terminal and resize, and with stdin on a pipe. Each test checks that
//! nothing is left: no exec'd process in the container's cgroup, no helper, and (on the
//! case's drop) no container, mount, cgroup or state.

mod common;
use capsa_cri::exec::{exec_sync, ExecError, ExecOutput, ExecRequest, ExecSession};
use common::bundles::{case, case_with, chain, wait_gone, Case, MONITOR};
use nix::sys::signal::Signal;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, MutexGuard};

/// The tests of this file run one at a time: each checks that no helper of any exec is
/// left, which another test's running exec would break.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// A running container to exec into; on drop, checks no exec is left and removes it.
struct Running {
    case: Case,
    init: i32,
    monitor: i32,
    _serial: MutexGuard<'static, ()>,
}

async fn running(prefix: &str) -> Running {
    running_with(prefix, |_| {}).await
}

/// A container whose init sleeps, its config edited by `edit`.
async fn running_with(prefix: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Running {
    let serial = SERIAL.lock().await;
    let case = case_with(prefix, &["sleep", "100000"], false, false, edit);
    let h = case.spawn();
    h.start().unwrap();
    Running {
        init: h.pid(),
        monitor: h.monitor_pid(),
        case,
        _serial: serial,
    }
}

impl Running {
    fn request(&self, cmd: &[&str], tty: bool, stdin: bool) -> ExecRequest {
        let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        let mut req =
            ExecRequest::for_container(&self.case.spec.root, &self.case.spec.id, &cmd, tty, stdin)
                .unwrap();
        req.program = MONITOR.into();
        req
    }

    async fn session(&self, cmd: &[&str], tty: bool, stdin: bool) -> ExecSession {
        ExecSession::spawn(&self.request(cmd, tty, stdin))
            .await
            .unwrap_or_else(|e| panic!("exec {cmd:?}: {}", chain(&e)))
    }

    async fn sync(&self, cmd: &[&str]) -> ExecOutput {
        exec_sync(&self.request(cmd, false, false), None, 1 << 20)
            .await
            .unwrap_or_else(|e| panic!("exec {cmd:?}: {}", chain(&e)))
    }

    /// The processes in the container's cgroup.
    fn procs(&self) -> Vec<i32> {
        let c = self.case.runtime().load(&self.case.spec.id).unwrap();
        let mut p: Vec<i32> = c
            .cgroup()
            .unwrap()
            .procs()
            .unwrap()
            .iter()
            .map(|p| p.as_raw())
            .collect();
        p.sort();
        p
    }

    /// No exec'd process is left in the container, nor any helper.
    fn assert_clean(&self) {
        assert_eq!(
            self.procs(),
            vec![self.init],
            "processes left in the container"
        );
        assert_eq!(helpers(), Vec::<i32>::new(), "exec helpers left");
    }

    /// Waits (bounded) until nothing is left: after a drop, the kill and the reap happen in
    /// the background.
    async fn until_clean(&self) {
        common::eventually("the exec and its helper to be gone", || async {
            self.procs() == vec![self.init] && helpers().is_empty()
        })
        .await;
        self.assert_clean();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.assert_clean();
        }
        // The container stopped and its monitor gone before the case checks for leftovers.
        self.case.kill_container();
        wait_gone(self.monitor);
    }
}

/// Our children running `capsa-cri-monitor exec` (zombies included: a helper not reaped is
/// a leak too).
fn helpers() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let ppid = rest.split(' ').nth(1).unwrap_or_default();
        let comm = &stat[stat.find('(').unwrap_or(0) + 1..stat.rfind(')').unwrap_or(0)];
        if ppid == me && comm.starts_with("capsa-cri-moni") {
            found.push(pid);
        }
    }
    found
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap()
}

#[tokio::test]
async fn stdout_and_stderr_are_captured_apart_with_the_exit_code() {
    let b = running("exec-out").await;
    let out = b
        .sync(&["sh", "-c", "echo out; echo err >&2; echo out2; exit 3"])
        .await;
    assert_eq!(text(&out.stdout), "out\nout2\n");
    assert_eq!(text(&out.stderr), "err\n");
    assert_eq!(out.exit_code, 3);
    b.assert_clean();
    let ok = b.sync(&["true"]).await;
    assert_eq!((ok.stdout.len(), ok.stderr.len(), ok.exit_code), (0, 0, 0));
}

/// Our descriptors of the kinds an exec uses: pipes, sockets, pidfds and ptys.
fn exec_fds() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .filter(|l| {
            [
                "pipe:",
                "socket:",
                "anon_inode:[pidfd]",
                "/dev/ptmx",
                "/dev/pts/",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .collect();
    fds.sort();
    fds
}

#[tokio::test]
async fn no_descriptor_is_left_open_after_execs() {
    let b = running("exec-fds").await;
    // The first spawn of this process sets up tokio's SIGCHLD handling for good.
    b.sync(&["true"]).await;
    let before = exec_fds();
    b.sync(&["sh", "-c", "echo out; echo err >&2"]).await;
    let req = b.request(&["nope"], false, false);
    exec_sync(&req, None, 1024).await.unwrap_err();
    let mut s = b.session(&["sh", "-c", "exit 2"], true, true).await;
    assert_eq!(s.wait().await.unwrap(), 2);
    drop(s);
    let mut s = b.session(&["cat"], false, true).await;
    drop(s.take_stdin());
    assert_eq!(s.wait().await.unwrap(), 0);
    drop(s);
    assert_eq!(exec_fds(), before);
}

#[tokio::test]
async fn a_process_killed_by_a_signal_exits_128_plus_n() {
    let b = running("exec-sig").await;
    assert_eq!(b.sync(&["sh", "-c", "kill -9 $$"]).await.exit_code, 137);
    assert_eq!(b.sync(&["sh", "-c", "kill -TERM $$"]).await.exit_code, 143);
}

#[tokio::test]
async fn a_timeout_kills_the_process_and_what_it_started() {
    let b = running("exec-timeout").await;
    // sh forks the sleep: killing sh alone would leave it running.
    let req = b.request(&["sh", "-c", "sleep 100; echo never"], false, false);
    let e = exec_sync(&req, Some(Duration::from_secs(1)), 1024)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ExecError::Timeout { timeout, .. } if timeout == Duration::from_secs(1)),
        "{}",
        chain(&e)
    );
    // Gone at return, not later: no exec'd process in the container's cgroup, none in /proc
    // with its root in the container's, no helper.
    b.assert_clean();
    assert_eq!(in_the_container(b.init), vec![b.init]);
}

/// The processes in the mount namespace of `init`.
fn in_the_container(init: i32) -> Vec<i32> {
    let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    let theirs = ns(init).unwrap();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if ns(pid).as_ref() == Some(&theirs) {
            found.push(pid);
        }
    }
    found
}

#[tokio::test]
async fn output_over_the_cap_is_cut_at_exactly_the_cap() {
    let b = running("exec-cap").await;
    // 3 MiB on stdout, then a line on stderr once all of it was written: the process runs
    // to its end although only 100000 bytes are kept.
    let req = b.request(
        &[
            "sh",
            "-c",
            "head -c 3145728 /dev/zero; echo finished >&2; exit 4",
        ],
        false,
        false,
    );
    let out = exec_sync(&req, None, 100_000).await.unwrap();
    assert_eq!(out.stdout.len(), 100_000);
    assert!(out.stdout.iter().all(|&c| c == 0));
    assert_eq!(text(&out.stderr), "finished\n");
    assert_eq!(out.exit_code, 4);
}

#[tokio::test]
async fn a_missing_executable_is_a_setup_error_naming_it() {
    let b = running("exec-nope").await;
    let e = exec_sync(&b.request(&["nope"], false, false), None, 1024)
        .await
        .unwrap_err();
    let text = chain(&e);
    assert!(matches!(e, ExecError::Setup { .. }), "{text}");
    assert!(
        text.contains("exec: \"nope\": executable file not found in $PATH"),
        "{text}"
    );
    // An absolute path that does not exist: the errno comes along.
    let e = exec_sync(&b.request(&["/no/such"], false, false), None, 1024)
        .await
        .unwrap_err();
    assert!(chain(&e).contains("/no/such"), "{}", chain(&e));
    assert_eq!(e.errno(), Some(libc::ENOENT), "{}", chain(&e));
}

#[tokio::test]
async fn exec_into_a_stopped_container_is_a_clear_error() {
    let _serial = SERIAL.lock().await;
    let c = case("exec-stopped", &["true"], false, false);
    let req = {
        let h = c.spawn();
        // Made while it still exists in the created state (its process is the template).
        let mut req = ExecRequest::for_container(
            &c.spec.root,
            &c.spec.id,
            &["echo".to_string()],
            false,
            false,
        )
        .unwrap();
        req.program = MONITOR.into();
        h.start().unwrap();
        assert_eq!(c.wait(&h).code, 0);
        req
    };
    let e = exec_sync(&req, None, 1024).await.unwrap_err();
    assert_eq!(e.kind(), capsa::ErrorKind::WrongState, "{}", chain(&e));
    assert!(
        chain(&e).contains("cannot exec in a stopped container"),
        "{}",
        chain(&e)
    );
    assert_eq!(helpers(), Vec::<i32>::new());
}

#[tokio::test]
async fn the_exec_runs_as_the_containers_user() {
    let b = running_with("exec-user", |config| {
        config["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1001});
    })
    .await;
    let out = b.sync(&["sh", "-c", "id -u; id -g"]).await;
    assert_eq!(text(&out.stdout), "1000\n1001\n");
}

#[tokio::test]
async fn a_dropped_exec_sync_kills_its_process() {
    let b = running("exec-drop").await;
    let req = b.request(&["sleep", "1000"], false, false);
    let task = tokio::spawn(async move { exec_sync(&req, None, 1024).await });
    common::eventually("the exec to run", || async { b.procs().len() == 2 }).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    b.until_clean().await;
}

#[tokio::test]
async fn a_dropped_session_kills_its_process_group() {
    let b = running("exec-drop-session").await;
    let s = b
        .session(&["sh", "-c", "sleep 1000 & sleep 1000"], false, false)
        .await;
    common::eventually("both sleeps to run", || async { b.procs().len() >= 3 }).await;
    drop(s);
    b.until_clean().await;
}

fn signal_helper(s: &ExecSession, sig: Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(s.helper_pid() as i32), sig).unwrap();
}

#[tokio::test]
async fn sigterm_to_the_helper_kills_the_process_and_reports_it() {
    let b = running("exec-term").await;
    let mut s = b.session(&["sleep", "1000"], false, false).await;
    signal_helper(&s, Signal::SIGTERM);
    assert_eq!(s.wait().await.unwrap(), 137);
    b.assert_clean();
}

#[tokio::test]
async fn a_sigkilled_helper_is_an_error_and_its_process_is_killed_anyway() {
    let b = running("exec-helper-killed").await;
    let mut s = b.session(&["sleep", "1000"], false, false).await;
    signal_helper(&s, Signal::SIGKILL);
    let e = s.wait().await.unwrap_err();
    assert!(
        matches!(e, ExecError::HelperDied { .. }) && chain(&e).contains("signal: 9"),
        "{}",
        chain(&e)
    );
    // The process, orphaned, was killed through its pidfd; init reaps it.
    b.until_clean().await;
}

#[tokio::test]
async fn a_terminal_session_resizes_and_exits_7() {
    let b = running("exec-tty").await;
    let mut s = b.session(&["sh"], true, true).await;
    assert!(s.take_stdout().is_none() && s.take_stdin().is_none());
    let mut term = s.take_terminal().unwrap();
    s.resize(30, 100).unwrap();
    term.write_all(b"stty size; exit 7\n").await.unwrap();
    let mut seen = Vec::new();
    term.read_to_end(&mut seen).await.unwrap();
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.contains("30 100"), "{seen:?}");
    assert_eq!(s.wait().await.unwrap(), 7);
    // Asked again, the same answer.
    assert_eq!(s.wait().await.unwrap(), 7);
    b.assert_clean();
    // The helper's console socket directory went with it.
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("capsa-cri-exec.")
        })
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn cat_echoes_its_stdin_and_ends_when_it_closes() {
    let b = running("exec-cat").await;
    let mut s = b.session(&["cat"], false, true).await;
    assert!(s.take_terminal().is_none());
    assert!(s.resize(1, 1).is_err());
    let mut stdin = s.take_stdin().unwrap();
    let mut stdout = s.take_stdout().unwrap();
    stdin.write_all(b"hello\n").await.unwrap();
    let mut line = [0u8; 6];
    stdout.read_exact(&mut line).await.unwrap();
    assert_eq!(&line, b"hello\n");
    drop(stdin);
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    assert_eq!(s.wait().await.unwrap(), 0);
    b.assert_clean();
}

/// ExecSync of /bin/true against `runc exec` of the same bundle under runc, median of 50.
#[tokio::test]
#[ignore]
async fn bench_exec_true() {
    use std::process::Command;
    use std::time::Instant;
    let b = running("exec-bench").await;
    let runc_root = b.case.base.join("runc");
    let runc_id = format!("{}-runc", b.case.spec.id);
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.case.spec.bundle.join("config.json")).unwrap())
            .unwrap();
    // runc's own cgroup, apart from capsa's.
    cfg["linux"]["cgroupsPath"] = serde_json::json!(format!("/{runc_id}"));
    std::fs::write(b.case.spec.bundle.join("config.json"), cfg.to_string()).unwrap();
    let runc = |args: &[&str]| {
        let mut c = Command::new("runc");
        c.arg("--root").arg(&runc_root).args(args);
        c
    };
    let status = runc(&["run", "-d", "--bundle"])
        .arg(&b.case.spec.bundle)
        .arg(&runc_id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let req = b.request(&["/bin/true"], false, false);
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        assert_eq!(exec_sync(&req, None, 1 << 20).await.unwrap().exit_code, 0);
        ours.push(t.elapsed());
        let t = Instant::now();
        assert!(runc(&["exec", &runc_id, "/bin/true"])
            .status()
            .unwrap()
            .success());
        theirs.push(t.elapsed());
    }
    let _ = runc(&["delete", "--force", &runc_id]).status();
    let (ours, theirs) = (median(ours), median(theirs));
    println!(
        "exec of /bin/true, median of 50: capsa-cri exec_sync {:.2} ms, runc exec {:.2} ms ({:.2}x)",
        ours.as_secs_f64() * 1e3,
        theirs.as_secs_f64() * 1e3,
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
}
