//! What capsa-cri keeps of each container, and what it observes of it.
//!
//! The record (`<state>/container-records/<id>.json`) is what CreateContainer decided: the
//! request, the image, where its files and its monitor are. Its state is never stored but
//! observed, so it is right after any crash, of the daemon or of anything else:
//!
//! ```text
//! <monitor dir>/exit.json present          EXITED (code, times, OOMKilled from the monitor)
//! monitor alive, started_at == 0            CREATED
//! monitor alive, started_at > 0             RUNNING
//! monitor gone, no exit.json                RUNNING if capsa still sees its init (its
//!                                           output has no reader any more), else EXITED
//!                                           with reason Unknown
//! ```

use crate::monitor::{self, Exit};
use k8s_cri::v1::{ContainerConfig, ContainerState, LinuxContainerResources};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    /// The name it reserved ([`name_key`]).
    pub name_key: String,
    pub config: ContainerConfig,
    /// The image's id (its config digest): CRI's `image_id`, and what the lease holds.
    pub image_id: String,
    /// The image's first tag, else the request's `image` as sent (ContainerStatus `image`).
    pub image_name: String,
    /// The image's first repo digest, else its id (ContainerStatus `image_ref`).
    pub image_ref: String,
    /// The image's StopSignal ("" = SIGTERM).
    pub stop_signal: String,
    pub created_at: i64,
    /// Set by StartContainer (ns since the epoch); 0 before.
    pub started_at: i64,
    /// The CRI log file ("" when kubelet gave none).
    pub log_path: String,
    /// The monitor owning the container's stdio, and its start time (clock ticks since
    /// boot, field 22 of /proc/<pid>/stat): a pid alone could name a later process.
    pub monitor_pid: i32,
    pub monitor_start: u64,
    /// The resources last applied (CreateContainer's, then UpdateContainerResources').
    pub resources: Option<LinuxContainerResources>,
    /// True from before CreateContainer's first side effect until the container exists
    /// whole: a daemon finding such a record at startup removes what was made.
    pub pending: bool,
}

impl ContainerRecord {
    pub fn name(&self) -> String {
        self.config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default()
    }
}

/// A container's state as observed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub state: ContainerState,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
}

/// The start time of process `pid` (field 22 of /proc/<pid>/stat), if it exists and is not
/// a zombie.
pub fn process_start(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    if fields.next()? == "Z" {
        return None;
    }
    // `rest` starts at field 3 (state); field 22 is 19 further.
    fields.nth(18)?.parse().ok()
}

/// Whether the monitor the record names still runs.
pub fn monitor_alive(r: &ContainerRecord) -> bool {
    r.monitor_pid > 0 && process_start(r.monitor_pid) == Some(r.monitor_start)
}

/// What `exit.json` says, as CRI's fields.
pub fn exited(r: &ContainerRecord, exit: &Exit) -> Observed {
    let reason = if exit.oom_killed {
        "OOMKilled"
    } else if exit.code == 0 {
        "Completed"
    } else {
        "Error"
    };
    Observed {
        state: ContainerState::ContainerExited,
        started_at: if exit.started_ns > 0 {
            exit.started_ns
        } else {
            r.started_at
        },
        finished_at: exit.finished_ns,
        exit_code: exit.code,
        reason: reason.into(),
        message: String::new(),
    }
}

/// A container whose monitor runs: CREATED, or RUNNING once started.
pub fn alive(r: &ContainerRecord) -> Observed {
    Observed {
        state: if r.started_at > 0 {
            ContainerState::ContainerRunning
        } else {
            ContainerState::ContainerCreated
        },
        started_at: r.started_at,
        finished_at: 0,
        exit_code: 0,
        reason: String::new(),
        message: String::new(),
    }
}

/// Observes container `r` whose monitor lives in `monitor_dir`; `capsa_alive` is asked only
/// when the monitor is gone without a record of the exit.
pub fn observe(
    r: &ContainerRecord,
    monitor_dir: &Path,
    capsa_alive: impl FnOnce() -> bool,
) -> Observed {
    let running = |state, message: &str| Observed {
        state,
        message: message.into(),
        ..alive(r)
    };
    match monitor::exit_status(monitor_dir) {
        Ok(Some(exit)) => return exited(r, &exit),
        Ok(None) => {}
        Err(e) => {
            log::warn!("container {}: {}", r.id, crate::cni::error_chain(&e));
        }
    }
    if monitor_alive(r) {
        return alive(r);
    }
    // The monitor may have written exit.json and left between the two looks.
    if let Ok(Some(exit)) = monitor::exit_status(monitor_dir) {
        return exited(r, &exit);
    }
    if capsa_alive() {
        return running(
            ContainerState::ContainerRunning,
            "the container's monitor is gone: its output is no longer logged",
        );
    }
    Observed {
        state: ContainerState::ContainerExited,
        started_at: r.started_at,
        finished_at: 0,
        exit_code: 255,
        reason: "Unknown".into(),
        message: "the container's monitor died before recording its exit".into(),
    }
}

/// The monitor's directory for container `id` under `base`: the id's first 32 digits keep
/// `<dir>/ctl` within a socket address's 107 bytes under a long runtime root.
pub fn monitor_dir(base: &Path, id: &str) -> PathBuf {
    base.join(&id[..id.len().min(32)])
}

/// kubelet's container name key (containerd's): container, pod, namespace, pod uid,
/// attempt. Two containers never share one.
pub fn name_key(config: &ContainerConfig, sandbox: &k8s_cri::v1::PodSandboxMetadata) -> String {
    let m = config.metadata.clone().unwrap_or_default();
    format!(
        "{}_{}_{}_{}_{}",
        m.name, sandbox.name, sandbox.namespace, sandbox.uid, m.attempt
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_read_and_a_zombie_or_absent_pid_has_none() {
        let me = std::process::id() as i32;
        assert!(process_start(me).unwrap() > 0);
        assert_eq!(process_start(i32::MAX), None);
    }

    #[test]
    fn exit_reasons() {
        let r = ContainerRecord {
            id: "c".into(),
            sandbox_id: "s".into(),
            name_key: "n".into(),
            config: ContainerConfig::default(),
            image_id: String::new(),
            image_name: String::new(),
            image_ref: String::new(),
            stop_signal: String::new(),
            created_at: 1,
            started_at: 5,
            log_path: String::new(),
            monitor_pid: 0,
            monitor_start: 0,
            resources: None,
            pending: false,
        };
        let exit = |code, oom| Exit {
            code,
            signal: None,
            started_ns: 0,
            finished_ns: 9,
            oom_killed: oom,
        };
        assert_eq!(exited(&r, &exit(0, false)).reason, "Completed");
        assert_eq!(exited(&r, &exit(3, false)).reason, "Error");
        assert_eq!(exited(&r, &exit(137, true)).reason, "OOMKilled");
        // The monitor never started it: the record's start time stands.
        assert_eq!(exited(&r, &exit(0, false)).started_at, 5);
        let dir = std::env::temp_dir().join(format!("capsa-obs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let o = observe(&r, &dir, || false);
        assert_eq!(
            (o.state, o.exit_code, o.reason.as_str()),
            (ContainerState::ContainerExited, 255, "Unknown")
        );
        assert_eq!(
            observe(&r, &dir, || true).state,
            ContainerState::ContainerRunning
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
