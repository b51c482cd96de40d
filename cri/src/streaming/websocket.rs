//! Kubernetes' WebSocket channel protocols: every message carries one channel's bytes after
//! a one-byte channel number (exec and attach: stdin 0, stdout 1, stderr 2, error 3,
//! resize 4). `base64.*` protocols send text messages instead: the channel as an ASCII digit,
//! then the bytes in base64. `v5.channel.k8s.io` adds a half-close: the two bytes
//! `[255, channel]` end that channel (the client's stdin).
//!
//! [`Mux`] turns a WebSocket into one byte stream per channel, for either end: incoming
//! channels become readers, outgoing ones writers. The server's and the tests' client use
//! it alike.

use super::remotecommand::Version;
use super::spdy::upgrade::Request;
use base64::Engine;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::{CancellationToken, PollSender};

/// The exec and attach subprotocols this server speaks over WebSocket.
pub const CHANNEL_PROTOCOLS: [&str; 5] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];
/// The half-close signal's first byte (v5).
pub const CLOSE_SIGNAL: u8 = 255;
/// The largest message either end takes.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// The largest slice of a write sent as one message.
const MAX_CHUNK: usize = 32 * 1024;
/// What an incoming channel buffers before the socket waits for its reader.
const CHANNEL_BUFFER: usize = 64 * 1024;

/// How a protocol encodes channel bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Binary,
    Base64,
}

/// The version and encoding of a channel protocol ("" is the unnegotiated original).
pub fn protocol(name: &str) -> (Version, Encoding) {
    match name {
        "v5.channel.k8s.io" => (Version::V5, Encoding::Binary),
        "v4.channel.k8s.io" => (Version::V4, Encoding::Binary),
        "v4.base64.channel.k8s.io" => (Version::V4, Encoding::Base64),
        "base64.channel.k8s.io" => (Version::V1, Encoding::Base64),
        _ => (Version::V1, Encoding::Binary),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("WebSocket upgrade: no Sec-WebSocket-Key header")]
    NoKey,
    #[error("WebSocket upgrade: version {0:?} (only 13 is spoken)")]
    Version(String),
    #[error("WebSocket upgrade: none of the offered subprotocols {offered:?} is spoken here")]
    NoCommonProtocol { offered: Vec<String> },
}

/// Whether the request asks for a WebSocket.
pub fn is_websocket(req: &Request) -> bool {
    req.header("Upgrade")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// Picks the first subprotocol the client offers that `supported` has (the client's order
/// decides, as Kubernetes' wsstream does); a client offering none gets the original
/// protocol (`None`: no header in the answer).
pub fn negotiate(
    req: &Request,
    supported: &[&'static str],
) -> Result<Option<&'static str>, HandshakeError> {
    let offered: Vec<String> = req
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Sec-WebSocket-Protocol"))
        .flat_map(|(_, v)| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok(None);
    }
    offered
        .iter()
        .find_map(|o| supported.iter().find(|s| **s == o).copied())
        .map(Some)
        .ok_or(HandshakeError::NoCommonProtocol { offered })
}

/// The `101 Switching Protocols` answer to a WebSocket request, or why there is none.
pub fn accept_answer(req: &Request, protocol: Option<&str>) -> Result<String, HandshakeError> {
    let key = req
        .header("Sec-WebSocket-Key")
        .ok_or(HandshakeError::NoKey)?;
    match req.header("Sec-WebSocket-Version").map(str::trim) {
        Some("13") => {}
        v => return Err(HandshakeError::Version(v.unwrap_or_default().to_string())),
    }
    let accept =
        tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
    let mut answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n"
    );
    if let Some(p) = protocol {
        answer.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    answer.push_str("\r\n");
    Ok(answer)
}

/// The message size limits both ends use.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// A WebSocket over `io` (after the handshake) in `role`.
pub async fn from_raw<S>(io: S, role: Role) -> WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    WebSocketStream::from_raw_socket(io, role, Some(config())).await
}

/// Encodes one channel message.
pub fn encode(encoding: Encoding, channel: u8, data: &[u8]) -> Message {
    match encoding {
        Encoding::Binary => {
            let mut m = Vec::with_capacity(data.len() + 1);
            m.push(channel);
            m.extend_from_slice(data);
            Message::Binary(m.into())
        }
        Encoding::Base64 => {
            let mut s = String::with_capacity(data.len() * 4 / 3 + 4);
            s.push(char::from(b'0' + channel));
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
            Message::Text(s.into())
        }
    }
}

/// What a message says: bytes for a channel, or a half-close of one.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Data(u8, Bytes),
    Close(u8),
}

/// Decodes one message (`None`: nothing to deliver, e.g. an empty or control message).
pub fn decode(encoding: Encoding, close_signal: bool, msg: Message) -> Option<Frame> {
    let mut data: Bytes = match msg {
        Message::Binary(b) => b,
        Message::Text(t) => Bytes::from(t.as_str().as_bytes().to_vec()),
        _ => return None,
    };
    if data.is_empty() {
        return None;
    }
    let first = data[0];
    if close_signal && first == CLOSE_SIGNAL {
        return (data.len() == 2).then(|| Frame::Close(data[1]));
    }
    let rest = data.split_off(1);
    match encoding {
        Encoding::Binary => Some(Frame::Data(first, rest)),
        Encoding::Base64 => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&rest)
                .ok()?;
            Some(Frame::Data(first.wrapping_sub(b'0'), bytes.into()))
        }
    }
}

/// One outgoing channel: each write becomes a message; with `close_signal`, shutting it down
/// sends `[255, channel]`.
pub struct ChannelWriter {
    channel: u8,
    encoding: Encoding,
    close_signal: bool,
    tx: PollSender<Message>,
}

impl AsyncWrite for ChannelWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(self.tx.poll_reserve(cx)).map_err(|_| closed())?;
        let n = buf.len().min(MAX_CHUNK);
        let msg = encode(self.encoding, self.channel, &buf[..n]);
        self.tx.send_item(msg).map_err(|_| closed())?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.close_signal && !self.tx.is_closed() {
            ready!(self.tx.poll_reserve(cx)).map_err(|_| closed())?;
            let msg = Message::Binary(vec![CLOSE_SIGNAL, self.channel].into());
            self.tx.send_item(msg).map_err(|_| closed())?;
        }
        self.tx.close();
        Poll::Ready(Ok(()))
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the WebSocket is closed")
}

/// A WebSocket split into channels. Dropping it ends its tasks (and the connection).
pub struct Mux {
    /// Incoming channels' bytes, by channel number; EOF when the peer half-closes the
    /// channel or the connection ends.
    pub readers: HashMap<u8, DuplexStream>,
    /// Outgoing channels, by number.
    pub writers: HashMap<u8, ChannelWriter>,
    /// Cancelled once the peer's side of the connection is over.
    pub closed: CancellationToken,
    tx: mpsc::Sender<Message>,
    reader: JoinHandle<()>,
    writer: Option<JoinHandle<()>>,
}

impl Mux {
    /// Splits `ws`: `incoming` channels are read from the peer, `outgoing` written to it.
    /// With `close_in`, the peer's `[255, channel]` ends an incoming channel; with
    /// `close_out`, shutting down a writer sends it (v5: only the client half-closes).
    pub fn new<S>(
        ws: WebSocketStream<S>,
        encoding: Encoding,
        incoming: &[u8],
        outgoing: &[u8],
        close_in: bool,
        close_out: bool,
    ) -> Mux
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sink, stream) = ws.split();
        let (tx, rx) = mpsc::channel::<Message>(16);
        let closed = CancellationToken::new();
        let mut readers = HashMap::new();
        let mut feeds = HashMap::new();
        for &c in incoming {
            let (ours, theirs) = tokio::io::duplex(CHANNEL_BUFFER);
            readers.insert(c, theirs);
            feeds.insert(c, ours);
        }
        let writers = outgoing
            .iter()
            .map(|&channel| {
                (
                    channel,
                    ChannelWriter {
                        channel,
                        encoding,
                        close_signal: close_out,
                        tx: PollSender::new(tx.clone()),
                    },
                )
            })
            .collect();
        let reader = tokio::spawn(read_loop(stream, feeds, encoding, close_in, closed.clone()));
        let writer = tokio::spawn(write_loop(sink, rx));
        Mux {
            readers,
            writers,
            closed,
            tx,
            reader,
            writer: Some(writer),
        }
    }

    /// Sends one message on `channel` (an empty one tells a Kubernetes client the session
    /// is ready).
    pub async fn send(&self, encoding: Encoding, channel: u8, data: &[u8]) -> io::Result<()> {
        self.tx
            .send(encode(encoding, channel, data))
            .await
            .map_err(|_| closed())
    }

    /// Waits (bounded by the caller) until every writer is gone and what they wrote went
    /// out, then closes the connection with a close frame.
    pub async fn finish(mut self) {
        self.writers.clear();
        let (tx, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(w) = self.writer.take() {
            let _ = w.await;
        }
    }
}

impl Drop for Mux {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(w) = &self.writer {
            w.abort();
        }
    }
}

async fn read_loop<S>(
    mut stream: futures_util::stream::SplitStream<WebSocketStream<S>>,
    mut feeds: HashMap<u8, DuplexStream>,
    encoding: Encoding,
    close_in: bool,
    closed: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(Ok(msg)) = stream.next().await {
        if msg.is_close() {
            break;
        }
        match decode(encoding, close_in, msg) {
            Some(Frame::Data(c, data)) => {
                if let Some(feed) = feeds.get_mut(&c) {
                    if feed.write_all(&data).await.is_err() {
                        // Its reader is gone: the bytes have nowhere to go.
                        feeds.remove(&c);
                    }
                }
            }
            Some(Frame::Close(c)) => {
                feeds.remove(&c);
            }
            None => {}
        }
    }
    drop(feeds);
    closed.cancel();
}

async fn write_loop<S>(
    mut sink: futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
    mut rx: mpsc::Receiver<Message>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(msg) = rx.recv().await {
        if sink.feed(msg).await.is_err() {
            return;
        }
        while let Ok(msg) = rx.try_recv() {
            if sink.feed(msg).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streaming::spdy::upgrade::parse_request;

    fn req(head: &str) -> Request {
        parse_request(head.replace('\n', "\r\n").as_bytes()).unwrap()
    }

    #[test]
    fn the_clients_order_picks_the_protocol() {
        let r = req(
            "GET /exec/t HTTP/1.1\nUpgrade: websocket\nConnection: Upgrade\n\
                     Sec-WebSocket-Protocol: v9.channel.k8s.io, base64.channel.k8s.io\n\
                     Sec-WebSocket-Protocol: v5.channel.k8s.io\n\n",
        );
        assert!(is_websocket(&r));
        assert_eq!(
            negotiate(&r, &CHANNEL_PROTOCOLS).unwrap(),
            Some("base64.channel.k8s.io")
        );
        let r = req("GET /exec/t HTTP/1.1\nUpgrade: websocket\n\n");
        assert_eq!(negotiate(&r, &CHANNEL_PROTOCOLS).unwrap(), None);
        let r = req("GET /exec/t HTTP/1.1\nSec-WebSocket-Protocol: portforward.k8s.io\n\n");
        let e = negotiate(&r, &CHANNEL_PROTOCOLS).unwrap_err();
        assert!(e.to_string().contains("portforward.k8s.io"), "{e}");
        assert_eq!(
            protocol("v5.channel.k8s.io"),
            (Version::V5, Encoding::Binary)
        );
        assert_eq!(
            protocol("v4.base64.channel.k8s.io"),
            (Version::V4, Encoding::Base64)
        );
        assert_eq!(protocol(""), (Version::V1, Encoding::Binary));
    }

    #[test]
    fn the_accept_key_is_rfc6455s() {
        // The example of RFC 6455, section 1.3.
        let r = req("GET /exec/t HTTP/1.1\nUpgrade: websocket\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n\n");
        let answer = accept_answer(&r, Some("v5.channel.k8s.io")).unwrap();
        assert!(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(answer.contains("Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n"));
        let r = req("GET /exec/t HTTP/1.1\nSec-WebSocket-Key: x\nSec-WebSocket-Version: 8\n\n");
        assert!(matches!(
            accept_answer(&r, None),
            Err(HandshakeError::Version(_))
        ));
        let r = req("GET /exec/t HTTP/1.1\nSec-WebSocket-Version: 13\n\n");
        assert!(matches!(
            accept_answer(&r, None),
            Err(HandshakeError::NoKey)
        ));
    }

    #[test]
    fn channel_messages_round_trip() {
        for enc in [Encoding::Binary, Encoding::Base64] {
            let m = encode(enc, 2, b"hello\0");
            assert_eq!(
                decode(enc, true, m),
                Some(Frame::Data(2, Bytes::from_static(b"hello\0")))
            );
        }
        assert_eq!(
            encode(Encoding::Base64, 1, b"hi"),
            Message::Text("1aGk=".into())
        );
        let close = Message::Binary(vec![255, 0].into());
        assert_eq!(
            decode(Encoding::Binary, true, close.clone()),
            Some(Frame::Close(0))
        );
        assert_eq!(
            decode(Encoding::Binary, false, close),
            Some(Frame::Data(255, Bytes::from_static(&[0])))
        );
        assert_eq!(
            decode(Encoding::Binary, true, Message::Binary(vec![255].into())),
            None
        );
        assert_eq!(
            decode(Encoding::Base64, true, Message::Text("1!!".into())),
            None
        );
    }
}
