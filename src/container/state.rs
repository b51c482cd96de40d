//! state.json and the derived status.
//!
//! What is stored is what cannot be observed (pid, its start time, bundle, cgroup path,
//! hooks); the status never is: it is derived each time from the facts (docs/design.md,
//! "State and status").

use super::ContainerError;
use oci_spec::runtime::Hooks;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "state.json";
pub const EXEC_FIFO: &str = "exec.fifo";
/// The directory under a state root that holds pods (a leading dot keeps it out of the
/// container list, whose entries all have a state.json): the state root's layout is the
/// container layer's, the pod layer keeps its records there.
pub(crate) const PODS_DIR: &str = ".pods";

/// What state.json holds: the facts fixed at create (the status is derived, never stored).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredState {
    /// The runtime-spec version of the config.
    pub oci_version: String,
    /// The container's id.
    pub id: String,
    /// The init's pid on the host.
    pub pid: i32,
    /// Field 22 of `/proc/<pid>/stat` when init was created: tells a pid reused by another
    /// process apart from ours.
    pub pid_start_time: u64,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The root filesystem, absolute.
    pub rootfs: PathBuf,
    /// When it was created (RFC 3339).
    pub created: String,
    /// The config's annotations.
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// The container's cgroup, from the hierarchy root.
    pub cgroup_path: PathBuf,
    /// The config's hooks, run again at delete.
    #[serde(default)]
    pub hooks: Option<Hooks>,
    /// The container has no pid namespace of its own: its other processes outlive init.
    #[serde(default)]
    pub shared_pid_ns: bool,
    /// config.json's process: the template `exec` starts from.
    #[serde(default)]
    pub process: Option<oci_spec::runtime::Process>,
    /// linux.seccomp: `exec`'d processes get the container's filter too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
    /// Created without a cgroup (rootless, none delegated).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_cgroup: bool,
    /// The pod this container joined, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

/// A container's status, derived from the live process, the exec fifo and the freezer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being set up.
    Creating,
    /// Set up; init waits for start.
    Created,
    /// Started, init alive.
    Running,
    /// Frozen.
    Paused,
    /// Init has exited.
    Stopped,
    /// The state file is unreadable: nothing about the container can be trusted but its
    /// name. `list` shows it; `delete --force` removes it.
    Unknown,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
            Status::Unknown => "unknown",
        })
    }
}

/// The status from the facts: init alive (same pid, same start time, not a zombie),
/// exec.fifo still present, cgroup frozen.
pub fn derive_status(alive: bool, fifo_exists: bool, frozen: bool) -> Status {
    match (alive, fifo_exists, frozen) {
        (false, _, _) => Status::Stopped,
        (true, true, _) => Status::Created,
        (true, false, true) => Status::Paused,
        (true, false, false) => Status::Running,
    }
}

/// (state letter, start time) from the text of `/proc/<pid>/stat`. The command name is in
/// parentheses and may itself contain spaces and parentheses: parse after the last ')'.
pub fn parse_proc_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state come fields 4.. of stat(5); starttime is field 22.
    let start = fields.nth(22 - 4)?.parse().ok()?;
    Some((state, start))
}

/// The start time of a live (non-zombie) process, or None.
pub fn live_start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    match parse_proc_stat(&text)? {
        ('Z', _) | ('X', _) => None,
        (_, start) => Some(start),
    }
}

pub(crate) use crate::process::INIT_COMM;

/// Whether `pid` (a live init) has not executed the container process yet: its command
/// name is still init's own, which execve replaces.
pub fn not_executed(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|c| c.trim_end_matches('\n') == INIT_COMM)
}

/// Writes `bytes` to a temporary file beside `path` and renames it over: readers see the old
/// or the new content, never a truncated file. No fsync: state lives on a tmpfs (/run) and
/// does not outlive a reboot anyway; the rename is what readers need (runc does the same).
///
/// The temporary file is created with O_EXCL|O_NOFOLLOW under an unpredictable name: whoever
/// can write the directory (a pid file's, say) cannot plant a symlink there that makes us
/// truncate and write a file of their choice, and a name they took is skipped, not reused.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = PathBuf::new();
    for _ in 0..TEMP_ATTEMPTS {
        tmp = dir.join(format!(".{name}.{}.{:x}", std::process::id(), random_u64()));
        match write_new(&tmp, path, bytes, mode) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            other => return other,
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("temporary file {} exists", tmp.display()),
    ))
}

const TEMP_ATTEMPTS: usize = 16;

/// Creates `tmp` (never an existing file, never through a symlink), writes it and renames it
/// to `path`; removes it on failure. AlreadyExists when `tmp` is taken.
fn write_new(tmp: &Path, path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(tmp)?;
    let result = f.write_all(bytes).and_then(|()| std::fs::rename(tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    result
}

/// 64 random bits from getrandom(2), or the clock if that fails: uniqueness, not secrecy, is
/// what the temporary name needs (O_EXCL makes a guessed name harmless).
fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: getrandom writes at most buf.len() bytes into our buffer.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), libc::GRND_NONBLOCK) };
    if n == buf.len() as isize {
        u64::from_ne_bytes(buf)
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default()
    }
}

impl StoredState {
    pub(crate) fn load(dir: &Path, id: &str) -> Result<Self, ContainerError> {
        let path = dir.join(STATE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ContainerError::NotExist { id: id.to_string() })
            }
            Err(source) => return Err(ContainerError::ReadState { path, source }),
        };
        serde_json::from_slice(&bytes)
            .map_err(|source| ContainerError::CorruptState { path, source })
    }

    pub(crate) fn save(&self, dir: &Path) -> Result<(), ContainerError> {
        let path = dir.join(STATE_FILE);
        let bytes = serde_json::to_vec(self).map_err(|source| ContainerError::CorruptState {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, &bytes, 0o600)
            .map_err(|source| ContainerError::WriteState { path, source })
    }
}

/// What can still be read from a damaged state file (one cut short, or not JSON at all):
/// enough for `delete --force` to find the container's processes and cgroup.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Salvaged {
    pub pid: Option<i32>,
    pub pid_start_time: Option<u64>,
    pub cgroup_path: Option<PathBuf>,
}

/// The pid, its start time and the cgroup path from the text of a state file, as far as
/// they are there: by field when it parses as JSON, else by looking for each key (a file cut
/// short keeps the fields before the cut; serde writes them in declaration order).
pub fn salvage(text: &[u8]) -> Salvaged {
    if let Ok(serde_json::Value::Object(m)) = serde_json::from_slice(text) {
        return Salvaged {
            pid: m
                .get("pid")
                .and_then(|v| v.as_i64())
                .and_then(|n| i32::try_from(n).ok()),
            pid_start_time: m.get("pidStartTime").and_then(|v| v.as_u64()),
            cgroup_path: m
                .get("cgroupPath")
                .and_then(|v| v.as_str())
                .map(PathBuf::from),
        };
    }
    let text = String::from_utf8_lossy(text);
    let raw = |key: &str| -> Option<String> {
        let pat = format!("\"{key}\":");
        let at = text.find(&pat)? + pat.len();
        Some(text[at..].trim_start().to_string())
    };
    let number = |key: &str| -> Option<String> {
        let v = raw(key)?;
        let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
        // A number cut short is not the number: it must be followed by something.
        (!digits.is_empty() && v.len() > digits.len()).then_some(digits)
    };
    let string = |key: &str| -> Option<String> {
        let v = raw(key)?;
        let body = v.strip_prefix('"')?;
        let end = body.find('"')?;
        let s = &body[..end];
        (!s.contains('\\')).then(|| s.to_string())
    };
    Salvaged {
        pid: number("pid").and_then(|n| n.parse().ok()),
        pid_start_time: number("pidStartTime").and_then(|n| n.parse().ok()),
        cgroup_path: string("cgroupPath").map(PathBuf::from),
    }
}

/// Removes a container's state directory with state.json last: a delete killed half way
/// leaves a state file naming the cgroup, so the next `delete --force` can finish.
pub fn remove_state_dir(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        if e.file_name() == STATE_FILE {
            continue;
        }
        let result = if e.file_type()?.is_dir() {
            std::fs::remove_dir_all(e.path())
        } else {
            std::fs::remove_file(e.path())
        };
        match result {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    match std::fs::remove_file(dir.join(STATE_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The state as `capsa state` prints it: runc's fields, in runc's order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OciState {
    /// The runtime-spec version.
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// The container's id.
    pub id: String,
    /// The init's pid (0 once stopped).
    pub pid: i32,
    /// The status, derived now.
    pub status: Status,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The root filesystem.
    pub rootfs: PathBuf,
    /// When it was created (RFC 3339).
    pub created: String,
    /// The config's annotations.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
    /// The owner of the state directory (`capsa list`).
    pub owner: String,
}

/// The state the runtime spec hands to hooks on stdin.
#[derive(Debug, Clone, Serialize)]
pub struct HookState<'a> {
    #[serde(rename = "ociVersion")]
    pub oci_version: &'a str,
    pub id: &'a str,
    pub status: Status,
    pub pid: i32,
    pub bundle: &'a Path,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: &'a HashMap<String, String>,
}

impl HookState<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_derived_from_facts() {
        assert_eq!(derive_status(false, true, true), Status::Stopped);
        assert_eq!(derive_status(true, true, false), Status::Created);
        assert_eq!(derive_status(true, false, true), Status::Paused);
        assert_eq!(derive_status(true, false, false), Status::Running);
    }

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line =
            "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        assert_eq!(parse_proc_stat(line), Some(('S', 987654)));
        assert_eq!(parse_proc_stat("garbage"), None);
    }

    /// A directory of its own under the system's temp dir, removed at the end.
    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "capsa-state-{tag}-{}-{:x}",
            std::process::id(),
            random_u64()
        ));
        std::fs::create_dir(&d).unwrap();
        d
    }

    #[test]
    fn a_planted_symlink_at_the_temporary_name_is_not_followed() {
        let d = temp_dir("symlink");
        let victim = d.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let pid_file = d.join("init.pid");
        // The name the old code used, and a fixed name handed to write_new directly.
        let old_name = d.join(format!(".init.pid.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &old_name).unwrap();
        let fixed = d.join(".init.pid.fixed");
        std::os::unix::fs::symlink(&victim, &fixed).unwrap();

        let err = write_new(&fixed, &pid_file, b"42", 0o644).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists, "{err}");
        assert!(std::fs::symlink_metadata(&fixed).unwrap().is_symlink());
        write_atomic(&pid_file, b"4242", 0o644).unwrap();

        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), "4242");
        assert!(!std::fs::symlink_metadata(&pid_file).unwrap().is_symlink());
        let mut left: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let old = old_name.file_name().unwrap().to_string_lossy().into_owned();
        let mut expected = vec![
            ".init.pid.fixed".to_string(),
            "init.pid".into(),
            "victim".into(),
            old,
        ];
        expected.sort();
        assert_eq!(left, expected, "a temporary file was left behind");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_taken_temporary_name_is_never_written() {
        let d = temp_dir("taken");
        let tmp = d.join(".state.json.taken");
        std::fs::write(&tmp, "someone else's").unwrap();
        let err = write_new(&tmp, &d.join("state.json"), b"{}", 0o600).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&tmp).unwrap(), "someone else's");
        assert!(!d.join("state.json").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn salvages_what_a_damaged_state_file_still_says() {
        let full = br#"{"ociVersion":"1.2.0","id":"c","pid":42,"pidStartTime":7,"bundle":"/b","rootfs":"/r","created":"x","annotations":{},"cgroupPath":"/capsa/c","hooks":null}"#;
        let want = Salvaged {
            pid: Some(42),
            pid_start_time: Some(7),
            cgroup_path: Some(PathBuf::from("/capsa/c")),
        };
        assert_eq!(salvage(full), want);
        // Cut short after the cgroup path: still all three.
        let cut = &full[..full.len() - 14];
        assert_eq!(salvage(cut), want);
        // Cut inside the start time: that one is not trusted.
        let cut = br#"{"ociVersion":"1.2.0","id":"c","pid":42,"pidStartTime":7"#;
        assert_eq!(
            salvage(cut),
            Salvaged {
                pid: Some(42),
                ..Default::default()
            }
        );
        // Valid JSON of the wrong shape, and garbage.
        assert_eq!(
            salvage(br#"{"pid":"x","cgroupPath":"/a"}"#),
            Salvaged {
                cgroup_path: Some(PathBuf::from("/a")),
                ..Default::default()
            }
        );
        assert_eq!(salvage(b"\x00\xff garbage"), Salvaged::default());
    }

    #[test]
    fn own_process_is_live() {
        let me = std::process::id() as i32;
        assert!(live_start_time(me).is_some());
        assert_eq!(live_start_time(0), None);
    }
}
