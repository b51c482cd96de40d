//! Bundles for the monitor and exec tests: a copy of the busybox rootfs as a bundle, run
//! by `capsa-cri-monitor` (as the daemon runs them), checked for leftovers on drop.

use super::{busybox_rootfs, run_ok, scratch};
use capsa_cri::monitor::{exit_status, Attach, Exit, Monitor, MonitorHandle, MonitorSpec};
use nix::sys::signal::Signal;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const MONITOR: &str = env!("CARGO_BIN_EXE_capsa-cri-monitor");

/// One container: its bundle (a copy of the busybox rootfs), capsa root, monitor directory
/// and log, all under one scratch directory; cleaned and checked for leftovers on drop.
pub struct Case {
    pub base: PathBuf,
    pub spec: MonitorSpec,
}

pub fn case(prefix: &str, args: &[&str], tty: bool, stdin: bool) -> Case {
    case_with(prefix, args, tty, stdin, |_| {})
}

/// [`case`], its config.json edited by `edit` first.
pub fn case_with(
    prefix: &str,
    args: &[&str],
    tty: bool,
    stdin: bool,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Case {
    let base = scratch(prefix);
    let id = base.file_name().unwrap().to_string_lossy().into_owned();
    let bundle = base.join("b");
    std::fs::create_dir_all(&bundle).unwrap();
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(busybox_rootfs())
            .arg(bundle.join("rootfs")),
    );
    let mut config = serde_json::to_value(capsa::spec::default_spec(None)).unwrap();
    config["process"]["args"] = serde_json::json!(args);
    config["process"]["terminal"] = serde_json::json!(tty);
    edit(&mut config);
    std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
    std::fs::create_dir_all(base.join("logs")).unwrap();
    let spec = MonitorSpec {
        program: MONITOR.into(),
        dir: base.join("m"),
        root: base.join("r"),
        id,
        bundle,
        pod: None,
        log_path: base.join("logs/0.log"),
        tty,
        stdin,
        stdin_once: false,
    };
    Case { base, spec }
}

/// A container running `sh -c script`.
pub fn sh(prefix: &str, script: &str, tty: bool, stdin: bool) -> Case {
    case(prefix, &["sh", "-c", script], tty, stdin)
}

/// Waits for process `pid` (not our child) to end: a pidfd becomes readable.
pub fn wait_gone(pid: i32) {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return; // already gone
    }
    // SAFETY: a fresh descriptor that only we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // A safety net for a hung monitor, not a timing assumption: the wait is for the event.
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, 120_000) };
    assert_eq!(n, 1, "process {pid} did not exit");
}

impl Case {
    pub fn spawn(&self) -> MonitorHandle {
        Monitor::spawn(&self.spec).unwrap_or_else(|e| panic!("spawn: {}", chain(&e)))
    }

    /// Waits for the monitor to end; its exit record.
    pub fn wait(&self, h: &MonitorHandle) -> Exit {
        wait_gone(h.monitor_pid());
        exit_status(&self.spec.dir)
            .unwrap()
            .expect("exit.json after the monitor ended")
    }

    pub fn run(&self) -> Exit {
        let h = self.spawn();
        h.start().unwrap();
        self.wait(&h)
    }

    /// Spawned, attached (with stdin if it has one) and only then started: no output is
    /// missed.
    pub fn start_attached(&self) -> (MonitorHandle, Attach) {
        let h = self.spawn();
        let a = h.attach(self.spec.stdin).unwrap();
        h.start().unwrap();
        (h, a)
    }

    /// SIGKILL to the container's init, through capsa.
    pub fn kill_container(&self) {
        self.runtime()
            .load(&self.spec.id)
            .unwrap()
            .kill(Signal::SIGKILL.into(), false)
            .unwrap();
    }

    pub fn runtime(&self) -> capsa::Runtime {
        capsa::Runtime::new(&self.spec.root)
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let runtime = self.runtime();
        let id = &self.spec.id;
        if std::thread::panicking() {
            let _ = runtime.remove(id, true);
            return;
        }
        runtime.remove(id, true).unwrap();
        let mut leaks = Vec::new();
        if let Ok(e) = std::fs::read_dir(&self.spec.root) {
            let left: Vec<_> = e.flatten().map(|e| e.file_name()).collect();
            if !left.is_empty() {
                leaks.push(format!("capsa state left: {left:?}"));
            }
        }
        for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let d = h.path().join("capsa").join(id);
            if d.exists() {
                leaks.push(format!("cgroup left: {}", d.display()));
            }
        }
        let base = self.base.to_string_lossy().into_owned();
        if let Some(l) = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .find(|l| l.contains(&base))
        {
            leaks.push(format!("mount left: {l}"));
        }
        let procs = processes_mentioning(&self.base);
        if !procs.is_empty() {
            leaks.push(format!("processes left: {procs:?}"));
        }
        assert!(leaks.is_empty(), "left behind: {leaks:#?}");
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// Processes rooted in `dir` (containers) or with `dir` on their command line (monitors).
pub fn processes_mentioning(dir: &Path) -> Vec<i32> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let rooted =
            std::fs::read_link(format!("/proc/{pid}/root")).is_ok_and(|r| r.starts_with(dir));
        let named = std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle));
        if rooted || named {
            found.push(pid);
        }
    }
    found
}

pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    capsa_cri::cni::error_chain(e)
}
