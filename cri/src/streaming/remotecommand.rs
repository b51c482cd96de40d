//! Exec and attach sessions (Kubernetes' "remotecommand"), whichever the transport.
//!
//! ```text
//!   client stdin  ──► process stdin        (EOF when the client half-closes it)
//!   client resize ──► ExecIo::resize       (JSON {"Width":..,"Height":..}, one after another)
//!   process stdout ─► client stdout        (FIN at EOF)
//!   process stderr ─► client stderr
//!   exit code      ─► client error stream  (a metav1.Status; then the connection closes)
//! ```
//!
//! The SPDY transport opens one stream per channel (header `streamType`), the WebSocket one
//! prefixes each message with its channel number ([`super::websocket`]); both hand
//! [`run`] the same [`Channels`]. A client that goes away ends the session at once: the
//! `ExecIo` is dropped, which kills an exec'd process.

use super::backend::{BoxRead, BoxWrite, ExecIo, ProcRead, ProcWrite};
use super::spdy::{Headers, Session, Stream};
use super::StreamError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

/// How long a client gets to open its streams after the upgrade (kubelet's default).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of one copy's buffer between a process and the client.
const COPY_BUFFER: usize = 64 * 1024;
/// A resize message longer than this ends the resize stream.
const MAX_RESIZE_MESSAGE: usize = 4096;

/// The remotecommand protocol version: what the status looks like and whether a terminal
/// can be resized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// `channel.k8s.io` (and base64 over WebSocket): failures as plain text.
    V1,
    V2,
    /// Adds the resize stream.
    V3,
    /// The status as metav1.Status JSON, exit codes as a `NonZeroExitCode` cause.
    V4,
    /// WebSocket only: the client can half-close stdin.
    V5,
}

impl Version {
    /// The version of an SPDY subprotocol name.
    pub fn of_spdy(protocol: &str) -> Version {
        match protocol {
            "v4.channel.k8s.io" => Version::V4,
            "v3.channel.k8s.io" => Version::V3,
            "v2.channel.k8s.io" => Version::V2,
            _ => Version::V1,
        }
    }

    fn resizable(self) -> bool {
        self >= Version::V3
    }
}

/// How a session ended, for the error stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The exec'd process exited with this non-zero code.
    ExitCode(i32),
    /// The runtime failed (to start the process, or while it ran).
    Internal(String),
}

#[derive(Serialize)]
struct StatusCause<'a> {
    #[serde(rename = "reason", skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    message: &'a str,
}

#[derive(Serialize)]
struct StatusDetails<'a> {
    causes: Vec<StatusCause<'a>>,
}

/// metav1.Status as Go's encoding/json writes it (empty fields left out, `metadata` kept).
#[derive(Serialize)]
struct Status<'a> {
    metadata: serde_json::Map<String, serde_json::Value>,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<StatusDetails<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
}

impl Outcome {
    /// The message a failure carries (Kubernetes' wording).
    fn message(&self) -> Option<String> {
        match self {
            Outcome::Success => None,
            Outcome::ExitCode(code) => Some(format!(
                "command terminated with non-zero exit code: exit status {code}"
            )),
            Outcome::Internal(e) => Some(format!("Internal error occurred: {e}")),
        }
    }

    /// What the error stream carries in `version` (empty: nothing).
    pub fn encode(&self, version: Version) -> Vec<u8> {
        let message = self.message();
        if version < Version::V4 {
            return message.unwrap_or_default().into_bytes();
        }
        let code = match self {
            Outcome::ExitCode(code) => code.to_string(),
            _ => String::new(),
        };
        let status = match self {
            Outcome::Success => Status {
                metadata: Default::default(),
                status: "Success",
                message: None,
                reason: None,
                details: None,
                code: None,
            },
            Outcome::ExitCode(_) => Status {
                metadata: Default::default(),
                status: "Failure",
                message: message.as_deref(),
                reason: Some("NonZeroExitCode"),
                details: Some(StatusDetails {
                    causes: vec![StatusCause {
                        kind: Some("ExitCode"),
                        message: &code,
                    }],
                }),
                code: None,
            },
            Outcome::Internal(e) => Status {
                metadata: Default::default(),
                status: "Failure",
                message: message.as_deref(),
                reason: Some("InternalError"),
                details: Some(StatusDetails {
                    causes: vec![StatusCause {
                        kind: None,
                        message: e,
                    }],
                }),
                code: Some(500),
            },
        };
        // Serializing plain strings and maps cannot fail.
        serde_json::to_vec(&status).unwrap_or_default()
    }
}

/// The client's side of a session, whatever carries it.
pub struct Channels {
    pub stdin: Option<BoxRead>,
    pub stdout: Option<BoxWrite>,
    pub stderr: Option<BoxWrite>,
    pub error: BoxWrite,
    pub resize: Option<BoxRead>,
}

/// A terminal size as Kubernetes' clients send it.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Splits the complete JSON objects off the front of `buf` (the resize stream is a
/// sequence of them, as Go's json.Decoder reads it); a malformed one is an error.
pub fn take_sizes(buf: &mut Vec<u8>) -> Result<Vec<TerminalSize>, serde_json::Error> {
    let mut sizes = Vec::new();
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<TerminalSize>();
    let mut used = 0;
    loop {
        match it.next() {
            Some(Ok(size)) => {
                sizes.push(size);
                used = it.byte_offset();
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(e)) => return Err(e),
            None => {
                used = it.byte_offset();
                break;
            }
        }
    }
    buf.drain(..used);
    Ok(sizes)
}

/// Applies the client's terminal sizes until its resize stream ends. Past a bad message
/// the rest is read and dropped: a stream left unread would stall a SPDY connection.
async fn resize_loop(from: &mut BoxRead, io: &dyn ExecIo) -> Infallible {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let n = match from.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        match take_sizes(&mut buf) {
            Ok(sizes) => {
                for s in sizes {
                    if let Err(e) = io.resize(s.height, s.width) {
                        log::debug!("streaming: resizing the terminal: {e}");
                    }
                }
            }
            Err(e) => {
                log::debug!("streaming: a bad resize message: {e}");
                let _ = tokio::io::copy(from, &mut tokio::io::sink()).await;
                break;
            }
        }
        if buf.len() > MAX_RESIZE_MESSAGE {
            log::debug!("streaming: a resize message over {MAX_RESIZE_MESSAGE} bytes");
            let _ = tokio::io::copy(from, &mut tokio::io::sink()).await;
            break;
        }
    }
    // Nothing more to read here: wait for the rest of the session.
    std::future::pending().await
}

/// Copies the client's stdin to the process until either ends; then closes the process's
/// stdin, and drops whatever else the client sends (see [`resize_loop`]).
async fn stdin_loop(from: Option<&mut BoxRead>, to: Option<ProcWrite>) -> Infallible {
    if let Some(from) = from {
        if let Some(mut to) = to {
            let mut buf = BufReader::with_capacity(COPY_BUFFER, &mut *from);
            if let Err(e) = tokio::io::copy_buf(&mut buf, &mut to).await {
                log::debug!("streaming: copying stdin: {e}");
            }
            let _ = to.shutdown().await;
            // Dropping the writer closes the process's stdin.
        }
        let _ = tokio::io::copy(from, &mut tokio::io::sink()).await;
    }
    std::future::pending().await
}

/// Copies a process's output to the client (or nowhere, when the client did not ask for
/// it), then half-closes the client's stream. An error writing to the client is the
/// client's going away.
pub(crate) async fn copy_out(
    from: Option<ProcRead>,
    to: Option<&mut BoxWrite>,
    what: &'static str,
) -> Result<(), StreamError> {
    let io_err = |source| StreamError::Io { op: what, source };
    match (from, to) {
        (Some(from), Some(to)) => {
            let mut from = BufReader::with_capacity(COPY_BUFFER, from);
            tokio::io::copy_buf(&mut from, to).await.map_err(io_err)?;
            to.shutdown().await.map_err(io_err)
        }
        (Some(from), None) => {
            let mut from = BufReader::with_capacity(COPY_BUFFER, from);
            tokio::io::copy_buf(&mut from, &mut tokio::io::sink())
                .await
                .map(drop)
                .map_err(io_err)
        }
        (None, Some(to)) => to.shutdown().await.map_err(io_err),
        (None, None) => Ok(()),
    }
}

/// Runs one session: copies until the process's output ends and it exits (or the client
/// goes away: `closed` resolves), then writes the outcome on the error stream. `exit_code`
/// says whether a non-zero exit is reported (exec) or not (attach). The channels stay
/// with the caller, to be dropped once the connection is closed (a SPDY stream dropped
/// earlier would be reset, losing what the client did not read yet).
pub async fn run(
    ch: &mut Channels,
    mut io: Box<dyn ExecIo>,
    version: Version,
    exit_code: bool,
    closed: impl Future<Output = ()>,
) -> Result<(), StreamError> {
    let stdin = stdin_loop(ch.stdin.as_mut(), io.take_stdin());
    let stdout = copy_out(io.take_stdout(), ch.stdout.as_mut(), "copying stdout");
    let stderr = copy_out(io.take_stderr(), ch.stderr.as_mut(), "copying stderr");
    let io: &dyn ExecIo = &*io;
    let resize = async {
        match ch.resize.as_mut() {
            Some(r) => resize_loop(r, io).await,
            None => std::future::pending().await,
        }
    };
    let work = async {
        let (out, err, exit) = tokio::join!(stdout, stderr, io.wait());
        out?;
        err?;
        Ok::<_, StreamError>(exit)
    };
    let exit = tokio::select! {
        r = work => r?,
        never = stdin => match never {},
        never = resize => match never {},
        _ = closed => return Err(StreamError::ClientGone),
    };
    let outcome = match exit {
        Ok(0) => Outcome::Success,
        Ok(code) if exit_code => Outcome::ExitCode(code),
        Ok(_) => Outcome::Success,
        Err(e) => Outcome::Internal(crate::cni::error_chain(&e)),
    };
    let status = outcome.encode(version);
    ch.error
        .write_all(&status)
        .await
        .map_err(|source| StreamError::Io {
            op: "writing the status",
            source,
        })?;
    ch.error
        .shutdown()
        .await
        .map_err(|source| StreamError::Io {
            op: "writing the status",
            source,
        })?;
    Ok(())
}

/// Which streams a client must open for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Expected {
    pub fn of(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Expected {
        Expected {
            stdin,
            stdout,
            stderr,
            tty,
        }
    }

    /// The stream types expected in `version` (error always; resize with a tty from v3).
    pub fn types(&self, version: Version) -> Vec<&'static str> {
        let mut t = vec!["error"];
        for (on, name) in [
            (self.stdin, "stdin"),
            (self.stdout, "stdout"),
            (self.stderr, "stderr"),
            (self.tty && version.resizable(), "resize"),
        ] {
            if on {
                t.push(name);
            }
        }
        t
    }
}

/// Accepts the client's streams on an SPDY session (answering each at once, as kubelet
/// does) until every expected one is there, within [`STREAM_CREATION_TIMEOUT`]. Streams of
/// other types are refused.
pub async fn spdy_streams(
    session: &Session,
    expected: Expected,
    version: Version,
) -> Result<HashMap<&'static str, Stream>, StreamError> {
    let want = expected.types(version);
    let mut got: HashMap<&'static str, Stream> = HashMap::new();
    let gather = async {
        while got.len() < want.len() {
            let Some(stream) = session.accept().await else {
                return Err(StreamError::ClientGone);
            };
            let kind = stream.headers().get("streamType").unwrap_or_default();
            let Some(&kind) = want.iter().find(|w| **w == kind) else {
                log::debug!("streaming: refusing a stream of type {kind:?}");
                stream.reset(super::spdy::frame::rst::REFUSED_STREAM);
                continue;
            };
            stream
                .send_reply(Headers::new(), false)
                .map_err(StreamError::Spdy)?;
            got.insert(kind, stream);
        }
        Ok(())
    };
    tokio::time::timeout(STREAM_CREATION_TIMEOUT, gather)
        .await
        .map_err(|_| StreamError::StreamTimeout)??;
    Ok(got)
}

/// The SPDY streams as [`Channels`].
pub fn spdy_channels(streams: HashMap<&'static str, Stream>) -> Channels {
    let mut reads: HashMap<&str, BoxRead> = HashMap::new();
    let mut writes: HashMap<&str, BoxWrite> = HashMap::new();
    for (kind, stream) in streams {
        let (r, w) = tokio::io::split(stream);
        reads.insert(kind, Box::new(r));
        writes.insert(kind, Box::new(w));
    }
    Channels {
        stdin: reads.remove("stdin"),
        stdout: writes.remove("stdout"),
        stderr: writes.remove("stderr"),
        error: writes
            .remove("error")
            .unwrap_or_else(|| Box::new(tokio::io::sink())),
        resize: reads.remove("resize"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_json_is_metav1s() {
        assert_eq!(
            String::from_utf8(Outcome::Success.encode(Version::V4)).unwrap(),
            r#"{"metadata":{},"status":"Success"}"#
        );
        let v: serde_json::Value =
            serde_json::from_slice(&Outcome::ExitCode(3).encode(Version::V4)).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(
            v["details"]["causes"],
            serde_json::json!([{"reason": "ExitCode", "message": "3"}])
        );
        assert!(v.get("code").is_none(), "{v}");
        let v: serde_json::Value =
            serde_json::from_slice(&Outcome::Internal("boom".into()).encode(Version::V4)).unwrap();
        assert_eq!(v["reason"], "InternalError");
        assert_eq!(v["code"], 500);
        assert_eq!(v["message"], "Internal error occurred: boom");
    }

    #[test]
    fn older_versions_get_plain_text_and_nothing_on_success() {
        for v in [Version::V1, Version::V2, Version::V3] {
            assert!(Outcome::Success.encode(v).is_empty());
            assert_eq!(
                String::from_utf8(Outcome::ExitCode(3).encode(v)).unwrap(),
                "command terminated with non-zero exit code: exit status 3"
            );
        }
    }

    #[test]
    fn resize_messages_are_split_as_they_come() {
        let mut buf = br#"{"Width":80,"Height":24}{"Width":100,"#.to_vec();
        assert_eq!(
            take_sizes(&mut buf).unwrap(),
            vec![TerminalSize {
                width: 80,
                height: 24
            }]
        );
        assert_eq!(buf, br#"{"Width":100,"#);
        buf.extend_from_slice(br#""Height":50}  "#);
        assert_eq!(
            take_sizes(&mut buf).unwrap(),
            vec![TerminalSize {
                width: 100,
                height: 50
            }]
        );
        assert!(take_sizes(&mut br#""wide""#.to_vec()).is_err());
        assert!(take_sizes(&mut br#"{"Width":-1,"Height":1}"#.to_vec()).is_err());
    }

    #[test]
    fn expected_streams_follow_the_request_and_version() {
        let e = Expected {
            stdin: true,
            stdout: true,
            stderr: false,
            tty: true,
        };
        assert_eq!(
            e.types(Version::V4),
            vec!["error", "stdin", "stdout", "resize"]
        );
        assert_eq!(e.types(Version::V2), vec!["error", "stdin", "stdout"]);
        assert_eq!(Version::of_spdy("v4.channel.k8s.io"), Version::V4);
        assert_eq!(Version::of_spdy("channel.k8s.io"), Version::V1);
    }
}
