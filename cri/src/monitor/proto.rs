//! The monitor's wire formats, shared by the monitor and the daemon's side.
//!
//! Readiness (the monitor → its starter, once, on the `--ready-fd` pipe): one JSON line,
//! [`Ready`].
//!
//! Control socket (`<dir>/ctl`, a unix stream socket): the client sends one request line —
//! `start`, `status`, `reopen`, `resize <rows> <cols>` or `attach <stdin:0|1>` — and gets one
//! reply line, `ok[ <json>]` or `error <text>`. After `ok` to `attach` the connection
//! carries frames both ways:
//!
//! ```text
//!   kind (1 byte) | length (4 bytes, big endian) | payload (length bytes, at most 64 KiB)
//!   monitor -> client: 1 stdout, 2 stderr (a terminal's output is 1), 3 exit (payload:
//!                      the Exit JSON), then the monitor closes the connection
//!   client -> monitor: 0 stdin data, 5 stdin closed (with stdin_once the container's
//!                      stdin is closed), 4 resize (rows, cols: two big-endian u16)
//! ```
//!
//! A client that stops reading is dropped once 4 MiB wait for it; the container and the log
//! never wait for an attach client.

use serde::{Deserialize, Serialize};

pub const FRAME_STDIN: u8 = 0;
pub const FRAME_STDOUT: u8 = 1;
pub const FRAME_STDERR: u8 = 2;
pub const FRAME_EXIT: u8 = 3;
pub const FRAME_RESIZE: u8 = 4;
pub const FRAME_STDIN_CLOSE: u8 = 5;
/// The largest payload a frame may carry.
pub const MAX_FRAME: usize = 64 * 1024;
/// A request line longer than this is refused.
pub const MAX_REQUEST: usize = 256;

/// What the monitor tells its starter once the container is created, or why it is not.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ready {
    Ok {
        /// The container's init.
        pid: i32,
        /// The monitor itself.
        monitor_pid: i32,
    },
    Error {
        kind: capsa::ErrorKind,
        /// The whole cause chain.
        message: String,
    },
}

/// A control request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Start,
    Status,
    Reopen,
    Resize { rows: u16, cols: u16 },
    Attach { stdin: bool },
}

impl Request {
    pub fn parse(line: &str) -> Result<Request, String> {
        let mut words = line.split(' ');
        let verb = words.next().unwrap_or_default();
        let args: Vec<&str> = words.collect();
        let number = |s: &str, what: &str| {
            s.parse::<u16>()
                .map_err(|_| format!("resize: {what} {s:?} is not a number from 0 to 65535"))
        };
        match (verb, args.as_slice()) {
            ("start", []) => Ok(Request::Start),
            ("status", []) => Ok(Request::Status),
            ("reopen", []) => Ok(Request::Reopen),
            ("resize", [r, c]) => Ok(Request::Resize {
                rows: number(r, "rows")?,
                cols: number(c, "cols")?,
            }),
            ("attach", ["0"]) => Ok(Request::Attach { stdin: false }),
            ("attach", ["1"]) => Ok(Request::Attach { stdin: true }),
            _ => Err(format!("unknown request {line:?}")),
        }
    }

    pub fn line(&self) -> String {
        match self {
            Request::Start => "start".into(),
            Request::Status => "status".into(),
            Request::Reopen => "reopen".into(),
            Request::Resize { rows, cols } => format!("resize {rows} {cols}"),
            Request::Attach { stdin } => format!("attach {}", u8::from(*stdin)),
        }
    }
}

/// The answer to `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorStatus {
    /// The container's init.
    pub pid: i32,
    pub monitor_pid: i32,
    /// When `start` started it (ns since the epoch); 0 before.
    pub started_ns: i64,
    pub tty: bool,
    pub stdin: bool,
}

/// A frame's bytes.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    push_frame(&mut out, kind, payload);
    out
}

/// Appends a frame to `out`; payloads over [`MAX_FRAME`] become several frames.
pub fn push_frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let mut pieces = payload.chunks(MAX_FRAME).peekable();
    if pieces.peek().is_none() {
        out.push(kind);
        out.extend_from_slice(&0u32.to_be_bytes());
        return;
    }
    for piece in pieces {
        out.push(kind);
        out.extend_from_slice(&(piece.len() as u32).to_be_bytes());
        out.extend_from_slice(piece);
    }
}

/// Takes one whole frame off the front of `buf`: `Ok(None)` when more bytes are needed, an
/// error for a frame larger than [`MAX_FRAME`].
pub fn take_frame(buf: &mut Vec<u8>) -> Result<Option<(u8, Vec<u8>)>, String> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_FRAME {
        return Err(format!("frame of {len} bytes (at most {MAX_FRAME})"));
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    let kind = buf[0];
    let payload = buf[5..5 + len].to_vec();
    buf.drain(..5 + len);
    Ok(Some((kind, payload)))
}

/// The payload of a resize frame.
pub fn resize_payload(rows: u16, cols: u16) -> [u8; 4] {
    let (r, c) = (rows.to_be_bytes(), cols.to_be_bytes());
    [r[0], r[1], c[0], c[1]]
}

pub fn parse_resize(payload: &[u8]) -> Option<(u16, u16)> {
    match payload {
        [r0, r1, c0, c1] => Some((
            u16::from_be_bytes([*r0, *r1]),
            u16::from_be_bytes([*c0, *c1]),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_are_named() {
        for r in [
            Request::Start,
            Request::Status,
            Request::Reopen,
            Request::Resize { rows: 24, cols: 80 },
            Request::Attach { stdin: true },
            Request::Attach { stdin: false },
        ] {
            assert_eq!(Request::parse(&r.line()), Ok(r));
        }
        assert!(Request::parse("resize 24 x").unwrap_err().contains("cols"));
        assert!(Request::parse("resize 70000 1")
            .unwrap_err()
            .contains("rows"));
        assert!(Request::parse("rm -rf")
            .unwrap_err()
            .contains("unknown request"));
        assert!(Request::parse("attach 2").is_err());
    }

    #[test]
    fn frames_round_trip_in_pieces() {
        let mut buf = Vec::new();
        push_frame(&mut buf, FRAME_STDOUT, b"hello");
        push_frame(&mut buf, FRAME_STDIN_CLOSE, b"");
        push_frame(&mut buf, FRAME_STDERR, &vec![7u8; MAX_FRAME + 1]);
        let mut got = Vec::new();
        let mut partial = Vec::new();
        for b in buf {
            partial.push(b);
            while let Some(f) = take_frame(&mut partial).unwrap() {
                got.push((f.0, f.1.len()));
            }
        }
        assert_eq!(
            got,
            vec![
                (FRAME_STDOUT, 5),
                (FRAME_STDIN_CLOSE, 0),
                (FRAME_STDERR, MAX_FRAME),
                (FRAME_STDERR, 1)
            ]
        );
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut buf = vec![FRAME_STDIN];
        buf.extend_from_slice(&(MAX_FRAME as u32 + 1).to_be_bytes());
        assert!(take_frame(&mut buf).unwrap_err().contains("frame of"));
    }

    #[test]
    fn resize_payload_round_trips() {
        assert_eq!(parse_resize(&resize_payload(50, 132)), Some((50, 132)));
        assert_eq!(parse_resize(b"abc"), None);
    }
}
