//! The project's own client of a CRI streaming server (ours or containerd's): exec and
//! attach over SPDY/3.1 or WebSocket, port-forward over SPDY, as Kubernetes' client tools
//! open them (client-go's remotecommand and portforward packages).

use capsa_cri::streaming::spdy::upgrade::{self, CHANNEL_PROTOCOLS, PORT_FORWARD_PROTOCOLS};
use capsa_cri::streaming::spdy::{Config, Headers, Role, Session, Stream};
use capsa_cri::streaming::websocket::{self, Mux};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// A connection's byte stream, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// How to reach a server: from inside a network namespace (containerd's listens in the
/// test's), trusting a CA for https URLs.
#[derive(Debug, Clone, Default)]
pub struct Dial {
    pub netns: Option<PathBuf>,
    pub ca: Option<PathBuf>,
}

/// The exec/attach transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// SPDY/3.1 offering every channel protocol (the server picks v4).
    Spdy,
    /// SPDY/3.1 offering only this protocol.
    SpdyOnly(&'static str),
    /// WebSocket with this subprotocol.
    WebSocket(&'static str),
}

/// The streams a session asks for (they must match the CRI request).
#[derive(Debug, Clone, Copy, Default)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// stdout and stderr apart.
pub const OUT_ERR: Streams = Streams {
    stdin: false,
    stdout: true,
    stderr: true,
    tty: false,
};
/// stdin in, stdout out.
pub const IN_OUT: Streams = Streams {
    stdin: true,
    stdout: true,
    stderr: false,
    tty: false,
};
/// An interactive terminal.
pub const TTY: Streams = Streams {
    stdin: true,
    stdout: true,
    stderr: false,
    tty: true,
};

/// Splits `http://HOST:PORT/PATH` (or https).
pub fn split_url(url: &str) -> (bool, String, String) {
    let (tls, rest) = match url.strip_prefix("https://") {
        Some(r) => (true, r),
        None => (false, url.strip_prefix("http://").expect("an http(s) URL")),
    };
    let (addr, path) = rest.split_at(rest.find('/').expect("a path"));
    (tls, addr.to_string(), path.to_string())
}

/// Connects to the URL's address (through TLS for https); returns the stream, the host
/// and the path.
pub async fn dial(url: &str, how: &Dial) -> std::io::Result<(Box<dyn Io>, String, String)> {
    let (tls, addr, path) = split_url(url);
    let a = addr.clone();
    let tcp = super::in_netns(how.netns.as_deref(), move || {
        let s = std::net::TcpStream::connect(&a)?;
        s.set_nonblocking(true)?;
        s.set_nodelay(true)?;
        Ok::<_, std::io::Error>(s)
    })?;
    let tcp = tokio::net::TcpStream::from_std(tcp)?;
    if !tls {
        return Ok((Box::new(tcp), addr, path));
    }
    use rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    let ca = how.ca.as_ref().expect("a CA for an https URL");
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = addr.rsplit_once(':').unwrap().0.trim_matches(['[', ']']);
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    Ok((Box::new(stream), addr, path))
}

/// What holds a session's connection open.
enum Conn {
    Spdy(Session),
    WebSocket(Mux),
}

/// A running exec or attach session, its streams to use as the test likes.
pub struct Remote {
    pub protocol: String,
    pub stdin: Option<BoxWrite>,
    pub stdout: Option<BoxRead>,
    pub stderr: Option<BoxRead>,
    resize: Option<BoxWrite>,
    error: BoxRead,
    conn: Conn,
}

/// What a session printed and its error stream.
#[derive(Debug)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: String,
}

impl Output {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// The exit code a v4 status reports (0 for Success).
    pub fn exit_code(&self) -> i32 {
        exit_code(&self.status)
    }
}

/// The exit code in a v4 status (0 for Success); panics on anything else.
pub fn exit_code(status: &str) -> i32 {
    let v: serde_json::Value =
        serde_json::from_str(status).unwrap_or_else(|e| panic!("status {status:?}: {e}"));
    match v["status"].as_str() {
        Some("Success") => 0,
        _ => {
            assert_eq!(v["reason"], "NonZeroExitCode", "{status}");
            let cause = &v["details"]["causes"][0];
            assert_eq!(cause["reason"], "ExitCode", "{status}");
            cause["message"].as_str().unwrap().parse().unwrap()
        }
    }
}

async fn open_spdy(session: &Session, kind: &str) -> Stream {
    let s = session
        .open(Headers::new().with("streamType", kind))
        .unwrap();
    s.reply()
        .await
        .unwrap_or_else(|e| panic!("reply to {kind}: {e}"));
    s
}

fn split(s: Stream) -> (BoxRead, BoxWrite) {
    let (r, w) = tokio::io::split(s);
    (Box::new(r), Box::new(w))
}

impl Remote {
    /// Opens a session on `url` with the `streams` the request asked for.
    pub async fn connect(url: &str, how: &Dial, transport: Transport, streams: Streams) -> Remote {
        let (io, host, path) = dial(url, how).await.unwrap();
        match transport {
            Transport::Spdy => Self::spdy(io, &host, &path, &CHANNEL_PROTOCOLS, streams).await,
            Transport::SpdyOnly(p) => Self::spdy(io, &host, &path, &[p], streams).await,
            Transport::WebSocket(p) => Self::websocket(io, &host, &path, p, streams).await,
        }
    }

    async fn spdy(
        io: Box<dyn Io>,
        host: &str,
        path: &str,
        protocols: &[&str],
        streams: Streams,
    ) -> Remote {
        let (protocol, up) = upgrade::connect(io, host, path, protocols)
            .await
            .unwrap_or_else(|e| panic!("upgrading {path}: {e}"));
        let session = Session::new(up, Role::Client, Config::kubernetes()).unwrap();
        // client-go's order: error first, then stdin, stdout, stderr, resize.
        let (error, mut error_w) = split(open_spdy(&session, "error").await);
        error_w.shutdown().await.unwrap();
        let mut stdin = None;
        if streams.stdin {
            stdin = Some(split(open_spdy(&session, "stdin").await).1);
        }
        let mut stdout = None;
        if streams.stdout {
            stdout = Some(split(open_spdy(&session, "stdout").await).0);
        }
        let mut stderr = None;
        if streams.stderr {
            stderr = Some(split(open_spdy(&session, "stderr").await).0);
        }
        let mut resize = None;
        if streams.tty && protocol != "channel.k8s.io" && protocol != "v2.channel.k8s.io" {
            resize = Some(split(open_spdy(&session, "resize").await).1);
        }
        Remote {
            protocol,
            stdin,
            stdout,
            stderr,
            resize,
            error,
            conn: Conn::Spdy(session),
        }
    }

    async fn websocket(
        io: Box<dyn Io>,
        host: &str,
        path: &str,
        protocol: &str,
        streams: Streams,
    ) -> Remote {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{host}{path}").into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        let (ws, resp) =
            tokio_tungstenite::client_async_with_config(req, io, Some(websocket::config()))
                .await
                .unwrap_or_else(|e| panic!("WebSocket upgrade of {path}: {e}"));
        let chosen = resp
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let (version, encoding) = websocket::protocol(&chosen);
        let v5 = version == capsa_cri::streaming::remotecommand::Version::V5;
        let mut mux = Mux::new(ws, encoding, &[1, 2, 3], &[0, 4], false, v5);
        let mut reader = |c: u8, on: bool| {
            let r = mux.readers.remove(&c).unwrap();
            on.then(|| Box::new(r) as BoxRead)
        };
        let stdout = reader(1, streams.stdout);
        let stderr = reader(2, streams.stderr);
        let error = reader(3, true).unwrap();
        let stdin = mux
            .writers
            .remove(&0)
            .filter(|_| streams.stdin)
            .map(|w| Box::new(w) as BoxWrite);
        let resize = mux
            .writers
            .remove(&4)
            .filter(|_| streams.tty)
            .map(|w| Box::new(w) as BoxWrite);
        Remote {
            protocol: chosen,
            stdin,
            stdout,
            stderr,
            resize,
            error,
            conn: Conn::WebSocket(mux),
        }
    }

    /// Sends a terminal size (the session must have a tty).
    pub async fn resize(&mut self, width: u16, height: u16) {
        let msg = format!("{{\"Width\":{width},\"Height\":{height}}}");
        let r = self.resize.as_mut().expect("a resize stream");
        r.write_all(msg.as_bytes()).await.unwrap();
        r.flush().await.unwrap();
    }

    /// Reads the error stream to its end: the session's status.
    pub async fn status(&mut self) -> String {
        String::from_utf8(read_all(&mut self.error).await).unwrap()
    }

    /// Writes `input` (then half-closes stdin), reads stdout, stderr and the status to
    /// their ends, all at once.
    pub async fn finish(mut self, input: &[u8]) -> Output {
        let stdin = self.stdin.take();
        // The stdin stream is kept until the end: a SPDY stream dropped before the server
        // closed its side would be reset, and what it did not read yet lost.
        let write = async move {
            let mut stdin = stdin;
            if let Some(s) = &mut stdin {
                s.write_all(input).await.unwrap();
                s.shutdown().await.unwrap();
            }
            stdin
        };
        let read = |r: Option<BoxRead>| async move {
            match r {
                Some(mut r) => read_all(&mut r).await,
                None => Vec::new(),
            }
        };
        let (stdout, stderr) = (self.stdout.take(), self.stderr.take());
        let (stdin, stdout, stderr, status) =
            tokio::join!(write, read(stdout), read(stderr), self.status());
        self.close().await;
        drop(stdin);
        Output {
            stdout,
            stderr,
            status,
        }
    }

    /// Ends the connection.
    pub async fn close(self) {
        match self.conn {
            Conn::Spdy(s) => s.close().await,
            Conn::WebSocket(m) => drop(m),
        }
    }

    /// Drops the connection at once, as a client that dies does.
    pub fn abort(self) {
        drop(self);
    }
}

/// Reads `r` to its end. A reset ends it too, as Kubernetes' clients take it: kubelet's
/// server (containerd's) resets every stream once it wrote the status, and what came
/// before the reset is the stream's whole content.
pub async fn read_all(r: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut v = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match r.read(&mut buf).await {
            Ok(0) => return v,
            Ok(n) => v.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return v,
            Err(e) => panic!("reading a stream: {e}"),
        }
    }
}

/// One session run to its end: `input` on stdin when `streams.stdin`.
pub async fn exec(
    url: &str,
    how: &Dial,
    transport: Transport,
    streams: Streams,
    input: &[u8],
) -> Output {
    Remote::connect(url, how, transport, streams)
        .await
        .finish(input)
        .await
}

/// A port-forward session (SPDY).
pub struct PortForward {
    pub session: Arc<Session>,
}

impl PortForward {
    pub async fn connect(url: &str, how: &Dial) -> PortForward {
        let (io, host, path) = dial(url, how).await.unwrap();
        let (protocol, up) = upgrade::connect(io, &host, &path, &PORT_FORWARD_PROTOCOLS)
            .await
            .unwrap_or_else(|e| panic!("upgrading {url}: {e}"));
        assert_eq!(protocol, "portforward.k8s.io");
        let session = Session::new(up, Role::Client, Config::kubernetes()).unwrap();
        PortForward {
            session: Arc::new(session),
        }
    }

    /// Opens one request's stream pair, as client-go does: the error stream first (our
    /// half closed at once: the client never writes to it), then the data stream, each
    /// waiting for the server's SYN_REPLY.
    pub async fn pair(&self, port: u16, request: u32) -> (Stream, Stream) {
        stream_pair(&self.session, port, request).await
    }

    pub async fn close(self) {
        Arc::into_inner(self.session)
            .expect("no request is running")
            .close()
            .await
    }
}

/// See [`PortForward::pair`].
pub async fn stream_pair(session: &Session, port: u16, request: u32) -> (Stream, Stream) {
    let headers = |kind: &str| {
        Headers::new()
            .with("streamType", kind)
            .with("port", &port.to_string())
            .with("requestID", &request.to_string())
    };
    let mut error = session.open(headers("error")).unwrap();
    error.reply().await.unwrap();
    error.shutdown().await.unwrap();
    let data = session.open(headers("data")).unwrap();
    data.reply().await.unwrap();
    (error, data)
}

/// Reads a port-forward error stream to its end.
pub async fn error_message(mut error: Stream) -> String {
    let mut message = String::new();
    error.read_to_string(&mut message).await.unwrap();
    message
}

/// Reads terminal lines until one satisfies `want`; returns it. A shell's prompt (`# `, or
/// busybox's `/ # `) may come before an answer: the terminal echoes input as it arrives,
/// the shell prompts when it is ready.
pub async fn line_until(
    out: &mut tokio::io::BufReader<BoxRead>,
    want: impl Fn(&str) -> bool,
) -> String {
    use tokio::io::AsyncBufReadExt;
    loop {
        let mut line = String::new();
        let n = out.read_line(&mut line).await.unwrap();
        assert!(n > 0, "the terminal ended before the line we wait for");
        let line = line
            .trim_end_matches(['\r', '\n'])
            .trim_start_matches("/ # ")
            .trim_start_matches("# ")
            .to_string();
        if want(&line) {
            return line;
        }
    }
}

/// An interactive shell at `url` (exec of `sh` with stdin and a tty): resized to 123x45,
/// which `stty size` must come to show (the resize travels on a stream of its own: it asks
/// until then), answering a command, then exiting 5, which the status reports.
pub async fn tty_scenario(url: &str, how: &Dial, t: Transport) {
    let mut r = Remote::connect(url, how, t, TTY).await;
    let mut out = tokio::io::BufReader::new(r.stdout.take().unwrap());
    let mut stdin = r.stdin.take().unwrap();
    r.resize(123, 45).await;
    loop {
        stdin.write_all(b"stty size\n").await.unwrap();
        let size = line_until(&mut out, |l| {
            let w: Vec<&str> = l.split(' ').collect();
            w.len() == 2 && w.iter().all(|x| x.parse::<u16>().is_ok())
        })
        .await;
        if size == "45 123" {
            break;
        }
    }
    stdin.write_all(b"echo $((6*7))\n").await.unwrap();
    line_until(&mut out, |l| l == "42").await;
    stdin.write_all(b"exit 5\n").await.unwrap();
    read_all(&mut out).await;
    assert_eq!(exit_code(&r.status().await), 5, "{t:?}");
    r.close().await;
    drop(stdin);
}
