//! The HTTP/1.1 upgrade that precedes a SPDY/3.1 session, as Kubernetes does it
//! (apimachinery's httpstream): the client sends
//!
//! ```text
//! POST /portforward/TOKEN HTTP/1.1
//! Connection: Upgrade
//! Upgrade: SPDY/3.1
//! X-Stream-Protocol-Version: portforward.k8s.io
//! ```
//!
//! and the server answers `101 Switching Protocols` naming the chosen
//! `X-Stream-Protocol-Version`; from the next byte on, both speak SPDY. Without the upgrade
//! headers the answer is 400, without a common protocol 403 listing what the server
//! accepts (`X-Accepted-Stream-Protocol-Versions`), as Kubernetes answers.

use bytes::{Buf, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Exec and attach subprotocols, best first.
pub const CHANNEL_PROTOCOLS: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// The port-forward subprotocol.
pub const PORT_FORWARD_PROTOCOLS: [&str; 1] = ["portforward.k8s.io"];

const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";
/// An HTTP head longer than this is refused.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// An upgrade that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("HTTP upgrade: {op}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("HTTP upgrade: the request head is over {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("HTTP upgrade: the connection closed before the head ended")]
    Truncated,
    #[error("HTTP upgrade: malformed HTTP head")]
    Malformed(#[source] httparse::Error),
    #[error("HTTP upgrade: missing `Connection: Upgrade` and `Upgrade: SPDY/3.1` headers")]
    NotUpgrade,
    #[error("HTTP upgrade: no {PROTOCOL_HEADER} header")]
    NoProtocolHeader,
    #[error("HTTP upgrade: no common stream protocol: client offers {offered:?}, server accepts {accepted:?}")]
    NoCommonProtocol {
        offered: Vec<String>,
        accepted: Vec<String>,
    },
    #[error("HTTP upgrade: the server answered {status}: {body}")]
    Refused { status: u16, body: String },
}

/// The request a client upgraded with.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target, e.g. `/portforward/TOKEN`.
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every comma-separated value of every `name` header.
    fn list(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect()
    }
}

/// The byte stream after the upgrade: bytes read past the HTTP head come first.
pub struct Upgraded<T> {
    rest: BytesMut,
    io: T,
}

impl<T> Upgraded<T> {
    /// `io` with `rest` (bytes already read past the head) to be read first.
    pub fn new(rest: BytesMut, io: T) -> Upgraded<T> {
        Upgraded { rest, io }
    }

    pub fn into_inner(self) -> (BytesMut, T) {
        (self.rest, self.io)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Upgraded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.rest.is_empty() {
            let n = self.rest.len().min(buf.remaining());
            buf.put_slice(&self.rest[..n]);
            self.rest.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Upgraded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Reads an HTTP head (request or response) up to its blank line; returns the head's
/// bytes and what was read after it.
pub async fn read_head<T: AsyncRead + Unpin>(
    io: &mut T,
) -> Result<(Vec<u8>, BytesMut), UpgradeError> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf.to_vec(), rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(UpgradeError::HeadTooLarge);
        }
        buf.reserve(1024);
        let n = io
            .read_buf(&mut buf)
            .await
            .map_err(|source| UpgradeError::Io {
                op: "reading the HTTP head",
                source,
            })?;
        if n == 0 {
            return Err(UpgradeError::Truncated);
        }
    }
}

async fn write<T: AsyncWrite + Unpin>(
    io: &mut T,
    text: &str,
    op: &'static str,
) -> Result<(), UpgradeError> {
    io.write_all(text.as_bytes())
        .await
        .map_err(|source| UpgradeError::Io { op, source })
}

/// Parses a request head (pure: no I/O).
pub fn parse_request(head: &[u8]) -> Result<Request, UpgradeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head).map_err(UpgradeError::Malformed)? {
        httparse::Status::Complete(_) => {}
        httparse::Status::Partial => return Err(UpgradeError::Truncated),
    }
    Ok(Request {
        method: req.method.unwrap_or_default().to_string(),
        path: req.path.unwrap_or_default().to_string(),
        headers: req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
    })
}

/// Checks the upgrade headers and picks the best protocol of `supported` (best first) that
/// the client offers.
pub fn negotiate(req: &Request, supported: &[&'static str]) -> Result<&'static str, UpgradeError> {
    let connection_upgrade = req
        .list("Connection")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("upgrade"));
    let spdy = req
        .header("Upgrade")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("SPDY/3.1"));
    if !connection_upgrade || !spdy {
        return Err(UpgradeError::NotUpgrade);
    }
    let offered = req.list(PROTOCOL_HEADER);
    if offered.is_empty() {
        return Err(UpgradeError::NoProtocolHeader);
    }
    supported
        .iter()
        .find(|p| offered.iter().any(|o| o == *p))
        .copied()
        .ok_or_else(|| UpgradeError::NoCommonProtocol {
            offered,
            accepted: supported.iter().map(|s| s.to_string()).collect(),
        })
}

/// The `101 Switching Protocols` answer naming `protocol`.
pub fn switching_protocols(protocol: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         {PROTOCOL_HEADER}: {protocol}\r\n\r\n"
    )
}

/// The error answer for a refused upgrade.
pub fn refusal(err: &UpgradeError) -> String {
    let (status, extra) = match err {
        UpgradeError::NoCommonProtocol { accepted, .. } => (
            "403 Forbidden",
            accepted
                .iter()
                .map(|a| format!("X-Accepted-Stream-Protocol-Versions: {a}\r\n"))
                .collect::<String>(),
        ),
        _ => ("400 Bad Request", String::new()),
    };
    let body = format!("{err}\n");
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n{extra}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The server's side: reads the request, answers 101 with the negotiated protocol (or an
/// error status, then returns the error), and hands back the upgraded stream.
pub async fn accept<T: AsyncRead + AsyncWrite + Unpin>(
    mut io: T,
    supported: &[&'static str],
) -> Result<(Request, &'static str, Upgraded<T>), UpgradeError> {
    let (head, rest) = read_head(&mut io).await?;
    let req = match parse_request(&head) {
        Ok(req) => req,
        Err(e) => {
            write(&mut io, &refusal(&e), "writing the HTTP answer").await?;
            return Err(e);
        }
    };
    let protocol = answer(&mut io, &req, supported).await?;
    Ok((req, protocol, Upgraded { rest, io }))
}

/// Answers a request already read: 101 with the negotiated protocol, or the refusal (and
/// then the error).
pub async fn answer<T: AsyncWrite + Unpin>(
    io: &mut T,
    req: &Request,
    supported: &[&'static str],
) -> Result<&'static str, UpgradeError> {
    let result = negotiate(req, supported);
    let text = match &result {
        Ok(protocol) => switching_protocols(protocol),
        Err(e) => refusal(e),
    };
    write(io, &text, "writing the HTTP answer").await?;
    result
}

/// The client's side: sends the upgrade request for `path` offering `protocols`, and
/// returns the protocol the server chose with the upgraded stream.
pub async fn connect<T: AsyncRead + AsyncWrite + Unpin>(
    mut io: T,
    host: &str,
    path: &str,
    protocols: &[&str],
) -> Result<(String, Upgraded<T>), UpgradeError> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    );
    for p in protocols {
        req.push_str(&format!("{PROTOCOL_HEADER}: {p}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    write(&mut io, &req, "writing the upgrade request").await?;
    let (head, rest) = read_head(&mut io).await?;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    resp.parse(&head).map_err(UpgradeError::Malformed)?;
    let status = resp.code.unwrap_or_default();
    if status != 101 {
        let mut body = rest.to_vec();
        body.truncate(1024);
        return Err(UpgradeError::Refused {
            status,
            body: String::from_utf8_lossy(&body).trim().to_string(),
        });
    }
    let chosen = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(PROTOCOL_HEADER))
        .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
        .unwrap_or_default();
    Ok((chosen, Upgraded { rest, io }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(head: &str) -> Request {
        parse_request(head.replace('\n', "\r\n").as_bytes()).unwrap()
    }

    #[test]
    fn the_best_common_protocol_is_chosen() {
        let r = req(
            "POST /exec/abc HTTP/1.1\nHost: x\nConnection: Upgrade\nUpgrade: SPDY/3.1\n\
                     X-Stream-Protocol-Version: channel.k8s.io\n\
                     X-Stream-Protocol-Version: v2.channel.k8s.io, v4.channel.k8s.io\n\n",
        );
        assert_eq!(r.path, "/exec/abc");
        assert_eq!(
            negotiate(&r, &CHANNEL_PROTOCOLS).unwrap(),
            "v4.channel.k8s.io"
        );
        let r = req(
            "POST /exec/abc HTTP/1.1\nConnection: keep-alive, upgrade\nupgrade: spdy/3.1\n\
                     x-stream-protocol-version: channel.k8s.io\n\n",
        );
        assert_eq!(negotiate(&r, &CHANNEL_PROTOCOLS).unwrap(), "channel.k8s.io");
        let r = req(
            "POST /portforward/t HTTP/1.1\nConnection: Upgrade\nUpgrade: SPDY/3.1\n\
                     X-Stream-Protocol-Version: portforward.k8s.io\n\n",
        );
        assert_eq!(
            negotiate(&r, &PORT_FORWARD_PROTOCOLS).unwrap(),
            "portforward.k8s.io"
        );
    }

    #[test]
    fn refusals_say_why() {
        let r = req("POST /exec/abc HTTP/1.1\nUpgrade: SPDY/3.1\n\
                     X-Stream-Protocol-Version: v4.channel.k8s.io\n\n");
        let e = negotiate(&r, &CHANNEL_PROTOCOLS).unwrap_err();
        assert!(matches!(e, UpgradeError::NotUpgrade), "{e}");
        assert!(refusal(&e).starts_with("HTTP/1.1 400 "));
        let r = req("POST /exec/abc HTTP/1.1\nConnection: Upgrade\nUpgrade: websocket\n\n");
        assert!(matches!(
            negotiate(&r, &CHANNEL_PROTOCOLS),
            Err(UpgradeError::NotUpgrade)
        ));
        let r = req("POST /exec/abc HTTP/1.1\nConnection: Upgrade\nUpgrade: SPDY/3.1\n\n");
        assert!(matches!(
            negotiate(&r, &CHANNEL_PROTOCOLS),
            Err(UpgradeError::NoProtocolHeader)
        ));
        let r = req(
            "POST /exec/abc HTTP/1.1\nConnection: Upgrade\nUpgrade: SPDY/3.1\n\
                     X-Stream-Protocol-Version: v5.channel.k8s.io\n\n",
        );
        let e = negotiate(&r, &CHANNEL_PROTOCOLS).unwrap_err();
        let answer = refusal(&e);
        assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
        assert!(answer.contains("X-Accepted-Stream-Protocol-Versions: v4.channel.k8s.io\r\n"));
        assert!(
            answer.contains("client offers [\"v5.channel.k8s.io\"]"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn a_client_and_a_server_upgrade_and_keep_early_bytes() {
        let (c, s) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move {
            let (req, protocol, mut up) = accept(s, &PORT_FORWARD_PROTOCOLS).await.unwrap();
            let mut first = [0u8; 5];
            up.read_exact(&mut first).await.unwrap();
            (req.path, protocol, first)
        });
        let (chosen, mut up) = connect(c, "localhost", "/portforward/tok", &["portforward.k8s.io"])
            .await
            .unwrap();
        assert_eq!(chosen, "portforward.k8s.io");
        up.write_all(b"hello").await.unwrap();
        let (path, protocol, first) = server.await.unwrap();
        assert_eq!(path, "/portforward/tok");
        assert_eq!(protocol, "portforward.k8s.io");
        assert_eq!(&first, b"hello");
    }

    #[tokio::test]
    async fn a_hostile_head_is_cut_off() {
        let (mut c, s) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(accept(s, &CHANNEL_PROTOCOLS));
        let mut head = b"POST / HTTP/1.1\r\n".to_vec();
        head.extend(std::iter::repeat_n(b'a', 40 * 1024));
        let _ = c.write_all(&head).await;
        let err = server.await.unwrap().err().unwrap();
        assert!(matches!(err, UpgradeError::HeadTooLarge), "{err}");
    }
}
