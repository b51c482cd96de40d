//! The exec helper's wire format, shared by the helper and the daemon's side.
//!
//! One unix stream socket (the helper's descriptor 3), JSON lines both ways:
//!
//! ```text
//!   daemon -> helper   one Start line; then "kill" lines (or end of file: the same)
//!   helper -> daemon   {"started":{"pid":N}} with SCM_RIGHTS: a pidfd of the process, then
//!                      the pty master when it has a terminal
//!                      then {"exited":{"code":C}} once it is reaped
//!                      or, instead of both, {"failed":{"kind":..,"error":{..}}}
//! ```

use capsa::error::RemoteError;
use oci_spec::runtime::Process;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The helper's descriptor for the socket.
pub const CONTROL_FD: i32 = 3;
/// The daemon's request to kill the process (its whole process group).
pub const KILL: &[u8] = b"kill\n";
/// The longest line either side accepts (a Start carries the process's whole environment).
pub const MAX_LINE: u64 = 16 << 20;

/// What to run: the process (its `terminal` decides whether it gets a pty) in container `id`
/// of the capsa state root `root`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Start {
    pub root: PathBuf,
    pub id: String,
    pub process: Process,
}

/// What the helper reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// The process runs; its host pid.
    Started { pid: i32 },
    /// It has ended and been reaped: its exit code, or 128 + N if signal N killed it.
    Exited { code: i32 },
    /// It could not be started: capsa's error, with its cause chain and errno.
    Failed {
        kind: capsa::ErrorKind,
        error: RemoteError,
    },
}

impl Report {
    /// The report as one line.
    pub fn line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_one_line_each() {
        let failed = Report::Failed {
            kind: capsa::ErrorKind::WrongState,
            error: RemoteError {
                message: "a\nb".into(),
                errno: Some(2),
                cause: None,
            },
        };
        for r in [
            Report::Started { pid: 7 },
            Report::Exited { code: 137 },
            failed,
        ] {
            let line = r.line();
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            assert!(line.ends_with(b"\n"));
            let back: Report = serde_json::from_slice(&line).unwrap();
            assert_eq!(back.line(), line);
        }
        assert_eq!(
            Report::Started { pid: 7 }.line(),
            b"{\"started\":{\"pid\":7}}\n"
        );
    }
}
