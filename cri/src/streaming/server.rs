//! The streaming server: CRI's `Exec`, `Attach` and `PortForward` validate a request and
//! mint a URL here; the client (kubelet's proxy) comes back to it with an HTTP upgrade.
//!
//! ```text
//!   get_exec(req) ─ validate, Backend::check_container ─ TokenCache ─► http://ADDR/exec/TOKEN
//!   TCP (+TLS) ─► HTTP head ─► /KIND/TOKEN consumed (else 404)
//!       ├─ Upgrade: SPDY/3.1  ─► Session ─► remotecommand::spdy_streams / portforward::serve
//!       └─ Upgrade: websocket ─► websocket::Mux ─► remotecommand::run
//! ```
//!
//! Every request here is an upgrade, answered once, so the server reads the one HTTP head
//! itself (bounded in size and time, with `spdy::upgrade`'s parser) instead of running an
//! HTTP stack whose request/response machinery would only be bypassed: the connection is
//! handed over as it is, with the bytes read past the head. Port-forward is served over
//! SPDY only (kubelet's hop to a runtime is SPDY; a WebSocket port-forward gets 400).

use super::backend::{Backend, BackendError, ExecIo};
pub use super::idle::DEFAULT_IDLE_TIMEOUT;
use super::idle::{Activity, Counted};
use super::portforward;
use super::remotecommand::{self, Channels, Expected, Outcome, Version};
use super::spdy::upgrade::{
    self, parse_request, Request, Upgraded, CHANNEL_PROTOCOLS, PORT_FORWARD_PROTOCOLS,
};
use super::spdy::{Config, Role, Session};
use super::tokens::{Cached, TokenCache};
use super::websocket::{self, Mux};
use super::StreamError;
use k8s_cri::v1::{
    AttachRequest, AttachResponse, ExecRequest, ExecResponse, PortForwardRequest,
    PortForwardResponse,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::rustls;
use tonic::Status;

/// How long a client has for the TLS handshake and the HTTP head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the end of a session may take to reach a slow client.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The server's certificate chain and key, PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("streaming server: binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("streaming server: reading {path}")]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("streaming server: the TLS certificate {cert} and key {key}")]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

struct Shared {
    tokens: TokenCache,
    /// A connection idle this long is closed (None: never).
    idle_timeout: Option<Duration>,
    backend: Arc<dyn Backend>,
    /// `http://ADDR` or `https://ADDR`, what URLs start with.
    base: String,
}

/// A running streaming server; dropping it stops it, and with it every session (exec'd
/// processes are killed, port-forward connections closed).
pub struct StreamingServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for StreamingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn tls_acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    fn pem(path: &Path) -> impl FnOnce(rustls::pki_types::pem::Error) -> ServerError + '_ {
        move |source| ServerError::Pem {
            path: path.to_path_buf(),
            source,
        }
    }
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(pem(&files.cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem(&files.cert))?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(pem(&files.key))?;
    let tls_err = |source| ServerError::Tls {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(tls_err)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The address URLs name: a wildcard bind is reached on loopback (kubelet, the only
/// client, runs on this node).
fn url_addr(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, bound.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, bound.port()).into(),
        _ => bound,
    }
}

/// At least one stream, and no stderr with a terminal (its output is one stream).
pub fn validate_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<(), Status> {
    if !(stdin || stdout || stderr) {
        return Err(Status::invalid_argument(
            "one of stdin, stdout, or stderr must be set",
        ));
    }
    if tty && stderr {
        return Err(Status::invalid_argument(
            "tty and stderr cannot both be true (a terminal's output is one stream)",
        ));
    }
    Ok(())
}

fn require_id(id: &str, what: &str) -> Result<(), Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument(format!("{what} is empty")));
    }
    Ok(())
}

/// The ports of a PortForward request, each in 1..=65535.
pub fn validate_ports(ports: &[i32]) -> Result<Vec<u16>, Status> {
    ports
        .iter()
        .map(|&p| {
            u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| Status::invalid_argument(format!("port {p} is not in 1..65535")))
        })
        .collect()
}

impl StreamingServer {
    /// Binds `addr` (port 0: any free one) and serves, over TLS when `tls` names a
    /// certificate and key; connections idle for [`DEFAULT_IDLE_TIMEOUT`] are closed.
    pub async fn start(
        addr: SocketAddr,
        tls: Option<TlsFiles>,
        backend: Arc<dyn Backend>,
    ) -> Result<StreamingServer, ServerError> {
        let idle = Some(DEFAULT_IDLE_TIMEOUT);
        Self::start_with(addr, tls, backend, TokenCache::default(), idle).await
    }

    /// As [`StreamingServer::start`], with URLs kept in `tokens` (its lifetime and size)
    /// and connections closed after `idle_timeout` without a byte moved (None: never).
    pub async fn start_with(
        addr: SocketAddr,
        tls: Option<TlsFiles>,
        backend: Arc<dyn Backend>,
        tokens: TokenCache,
        idle_timeout: Option<Duration>,
    ) -> Result<StreamingServer, ServerError> {
        let acceptor = tls.as_ref().map(tls_acceptor).transpose()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let shared = Arc::new(Shared {
            tokens,
            idle_timeout: idle_timeout.filter(|t| !t.is_zero()),
            backend,
            base: format!("{scheme}://{}", url_addr(bound)),
        });
        let task = tokio::spawn(accept_loop(listener, acceptor, shared.clone()));
        Ok(StreamingServer {
            shared,
            addr: bound,
            task,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn url(&self, request: Cached) -> Result<String, Status> {
        let kind = request.kind();
        let token = self
            .shared
            .tokens
            .insert(request)
            .map_err(|e| Status::resource_exhausted(crate::cni::error_chain(&e)))?;
        Ok(format!("{}/{kind}/{token}", self.shared.base))
    }

    /// CRI `Exec`: checks the request and the container, returns the session's URL.
    pub async fn get_exec(&self, req: &ExecRequest) -> Result<ExecResponse, Status> {
        require_id(&req.container_id, "container_id")?;
        if req.cmd.is_empty() {
            return Err(Status::invalid_argument("cmd is empty"));
        }
        validate_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
        self.shared
            .backend
            .check_container(&req.container_id)
            .await?;
        let url = self.url(Cached::Exec(req.clone()))?;
        Ok(ExecResponse { url })
    }

    /// CRI `Attach`.
    pub async fn get_attach(&self, req: &AttachRequest) -> Result<AttachResponse, Status> {
        require_id(&req.container_id, "container_id")?;
        validate_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
        self.shared
            .backend
            .check_container(&req.container_id)
            .await?;
        let url = self.url(Cached::Attach(req.clone()))?;
        Ok(AttachResponse { url })
    }

    /// CRI `PortForward`.
    pub async fn get_port_forward(
        &self,
        req: &PortForwardRequest,
    ) -> Result<PortForwardResponse, Status> {
        require_id(&req.pod_sandbox_id, "pod_sandbox_id")?;
        validate_ports(&req.port)?;
        self.shared
            .backend
            .check_sandbox(&req.pod_sandbox_id)
            .await?;
        let url = self.url(Cached::PortForward(req.clone()))?;
        Ok(PortForwardResponse { url })
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
) {
    // Dropped with this task: every connection goes when the server does.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => {
                    conns.spawn(connection(tcp, tls.clone(), shared.clone()));
                }
                Err(e) => {
                    // Out of fds, most likely: let connections end before trying again.
                    log::warn!("streaming server: accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next() => {}
        }
    }
}

async fn connection(tcp: TcpStream, tls: Option<tokio_rustls::TlsAcceptor>, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let activity = Activity::new();
    let tcp = Counted::new(tcp, activity.clone());
    let session = async {
        match tls {
            None => handle(tcp, &shared).await,
            Some(acceptor) => {
                match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => handle(tls, &shared).await,
                    Ok(Err(e)) => Err(StreamError::Io {
                        op: "the TLS handshake",
                        source: e,
                    }),
                    Err(_) => Err(StreamError::HeadTimeout),
                }
            }
        }
    };
    // Idle: the session is dropped, which closes the connection and ends what it carried.
    let result = match shared.idle_timeout {
        Some(timeout) => tokio::select! {
            r = session => r,
            () = activity.idle(timeout) => Err(StreamError::Idle(timeout)),
        },
        None => session.await,
    };
    if let Err(e) = result {
        log::debug!("streaming server: {}", crate::cni::error_chain(&e));
    }
}

/// A plain HTTP answer that ends the connection.
async fn respond<T: AsyncWrite + Unpin>(io: &mut T, status: &str, body: &str) {
    let text = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = io.write_all(text.as_bytes()).await;
    let _ = io.shutdown().await;
}

/// `/KIND/TOKEN` (a query string ignored: the cached request decides).
fn route(path: &str) -> Option<(&str, &str)> {
    let path = path.split('?').next().unwrap_or_default();
    let mut parts = path.strip_prefix('/')?.split('/');
    let (kind, token) = (parts.next()?, parts.next()?);
    (parts.next().is_none() && !token.is_empty()).then_some((kind, token))
}

async fn handle<T>(mut io: T, shared: &Shared) -> Result<(), StreamError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (head, rest) = tokio::time::timeout(HEAD_TIMEOUT, upgrade::read_head(&mut io))
        .await
        .map_err(|_| StreamError::HeadTimeout)??;
    let req = match parse_request(&head) {
        Ok(r) => r,
        Err(e) => {
            respond(&mut io, "400 Bad Request", &format!("{e}\n")).await;
            return Err(e.into());
        }
    };
    let cached = route(&req.path)
        .and_then(|(kind, token)| shared.tokens.consume(token).filter(|c| c.kind() == kind));
    let Some(cached) = cached else {
        respond(&mut io, "404 Not Found", "404 page not found\n").await;
        return Err(StreamError::UnknownToken(req.path));
    };
    let io = Upgraded::new(rest, io);
    match (cached, websocket::is_websocket(&req)) {
        (Cached::PortForward(pf), false) => port_forward(io, &req, pf, shared).await,
        (Cached::PortForward(_), true) => {
            let mut io = io;
            respond(
                &mut io,
                "400 Bad Request",
                "port-forward is served over SPDY/3.1 only\n",
            )
            .await;
            Err(StreamError::WebSocketPortForward)
        }
        (cached, ws) => {
            let (expected, exec) = match &cached {
                Cached::Exec(r) => (Expected::of(r.stdin, r.stdout, r.stderr, r.tty), true),
                Cached::Attach(r) => (Expected::of(r.stdin, r.stdout, r.stderr, r.tty), false),
                Cached::PortForward(_) => return Ok(()),
            };
            let command = Command {
                expected,
                exec,
                start: start(shared.backend.as_ref(), cached),
            };
            if ws {
                websocket_command(io, &req, command).await
            } else {
                spdy_command(io, &req, command).await
            }
        }
    }
}

/// An exec or an attach whose client is connecting: the streams it asked for, whether its
/// exit code is reported, and the start of its process.
struct Command<F> {
    expected: Expected,
    exec: bool,
    start: F,
}

/// Starts the process of an exec, or joins the container of an attach.
async fn start(backend: &dyn Backend, cached: Cached) -> Result<Box<dyn ExecIo>, BackendError> {
    match cached {
        Cached::Exec(r) => backend.exec(&r.container_id, &r.cmd, r.tty, r.stdin).await,
        Cached::Attach(r) => backend.attach(&r.container_id, r.stdin, r.tty).await,
        Cached::PortForward(r) => Err(BackendError::NotFound {
            what: "container",
            id: r.pod_sandbox_id,
        }),
    }
}

/// Runs a started session, or reports on the error stream why it did not start.
async fn run_or_report(
    ch: &mut Channels,
    started: Result<Box<dyn ExecIo>, BackendError>,
    version: Version,
    exec: bool,
    closed: impl std::future::Future<Output = ()>,
) -> Result<(), StreamError> {
    match started {
        Ok(io) => remotecommand::run(ch, io, version, exec, closed).await,
        Err(e) => {
            let outcome = Outcome::Internal(crate::cni::error_chain(&e));
            let _ = ch.error.write_all(&outcome.encode(version)).await;
            let _ = ch.error.shutdown().await;
            Err(e.into())
        }
    }
}

async fn spdy_command<T, F>(
    mut io: Upgraded<T>,
    req: &Request,
    Command {
        expected,
        exec,
        start,
    }: Command<F>,
) -> Result<(), StreamError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: std::future::Future<Output = Result<Box<dyn ExecIo>, BackendError>>,
{
    let protocol = upgrade::answer(&mut io, req, &CHANNEL_PROTOCOLS).await?;
    let version = Version::of_spdy(protocol);
    let session = Session::new(io, Role::Server, Config::kubernetes())?;
    let streams = remotecommand::spdy_streams(&session, expected, version).await?;
    let mut ch = remotecommand::spdy_channels(streams);
    let result = run_or_report(&mut ch, start.await, version, exec, session.closed()).await;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.close()).await;
    // Only now: streams dropped on an open session would be reset.
    drop(ch);
    result
}

async fn websocket_command<T, F>(
    mut io: Upgraded<T>,
    req: &Request,
    command: Command<F>,
) -> Result<(), StreamError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: std::future::Future<Output = Result<Box<dyn ExecIo>, BackendError>>,
{
    let Command {
        expected,
        exec,
        start,
    } = command;
    let answer = websocket::negotiate(req, &websocket::CHANNEL_PROTOCOLS)
        .and_then(|p| Ok((p, websocket::accept_answer(req, p)?)));
    let (protocol, answer) = match answer {
        Ok(a) => a,
        Err(e) => {
            respond(&mut io, "400 Bad Request", &format!("{e}\n")).await;
            return Err(e.into());
        }
    };
    io.write_all(answer.as_bytes())
        .await
        .map_err(|source| StreamError::Io {
            op: "writing the WebSocket answer",
            source,
        })?;
    let (version, encoding) = websocket::protocol(protocol.unwrap_or_default());
    let ws = websocket::from_raw(io, tokio_tungstenite::tungstenite::protocol::Role::Server).await;
    // Only the channels the request asked for are read: bytes for others are dropped.
    let mut incoming = Vec::new();
    if expected.stdin {
        incoming.push(STDIN);
    }
    if expected.tty {
        incoming.push(RESIZE);
    }
    let mut mux = Mux::new(
        ws,
        encoding,
        &incoming,
        &[STDOUT, STDERR, ERROR],
        version == Version::V5,
        false,
    );
    // An empty message on the first channel the client will read from says the session
    // is up (as kubelet's server does).
    let first = match (expected.stdout, expected.stderr) {
        (true, _) => STDOUT,
        (false, true) => STDERR,
        _ => ERROR,
    };
    mux.send(encoding, first, &[])
        .await
        .map_err(|source| StreamError::Io {
            op: "opening the channels",
            source,
        })?;
    let mut take_writer = |c: u8, on: bool| {
        mux.writers
            .remove(&c)
            .filter(|_| on)
            .map(|w| Box::new(w) as super::backend::BoxWrite)
    };
    let stdout = take_writer(STDOUT, expected.stdout);
    let stderr = take_writer(STDERR, expected.stderr);
    let error = take_writer(ERROR, true).unwrap_or_else(|| Box::new(tokio::io::sink()));
    let mut ch = Channels {
        stdin: mux
            .readers
            .remove(&STDIN)
            .map(|r| Box::new(r) as super::backend::BoxRead),
        stdout,
        stderr,
        error,
        resize: mux
            .readers
            .remove(&RESIZE)
            .map(|r| Box::new(r) as super::backend::BoxRead),
    };
    let closed = mux.closed.clone();
    let result = run_or_report(&mut ch, start.await, version, exec, closed.cancelled()).await;
    // The writers go first: the connection closes once they are all gone.
    drop(ch);
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, mux.finish()).await;
    result
}

/// The remotecommand channel numbers over WebSocket.
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;

async fn port_forward<T>(
    mut io: Upgraded<T>,
    req: &Request,
    pf: PortForwardRequest,
    shared: &Shared,
) -> Result<(), StreamError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    upgrade::answer(&mut io, req, &PORT_FORWARD_PROTOCOLS).await?;
    let session = Session::new(io, Role::Server, Config::kubernetes())?;
    let netns = shared
        .backend
        .port_forward_netns(&pf.pod_sandbox_id)
        .await?;
    // Validated when the URL was minted.
    let ports = validate_ports(&pf.port).unwrap_or_default();
    portforward::serve(session, pf.pod_sandbox_id, netns, ports).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_need_a_stream_and_no_stderr_with_a_tty() {
        assert!(validate_streams(false, true, false, false).is_ok());
        assert!(validate_streams(true, false, false, true).is_ok());
        let e = validate_streams(false, false, false, false).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("stdin, stdout, or stderr"), "{e}");
        let e = validate_streams(false, true, true, true).unwrap_err();
        assert!(e.message().contains("tty and stderr"), "{e}");
        assert_eq!(validate_ports(&[80, 65535]).unwrap(), vec![80, 65535]);
        for bad in [0, -1, 65536] {
            let e = validate_ports(&[bad]).unwrap_err();
            assert!(e.message().contains(&format!("port {bad} ")), "{e}");
        }
    }

    #[test]
    fn routes_take_a_kind_and_a_token() {
        assert_eq!(route("/exec/abc"), Some(("exec", "abc")));
        assert_eq!(
            route("/exec/abc?command=ls&output=1"),
            Some(("exec", "abc"))
        );
        assert_eq!(route("/exec/"), None);
        assert_eq!(route("/exec"), None);
        assert_eq!(route("/exec/a/b"), None);
        assert_eq!(route("exec/a"), None);
    }

    #[test]
    fn a_wildcard_address_is_reached_on_loopback() {
        assert_eq!(
            url_addr("0.0.0.0:10010".parse().unwrap()),
            "127.0.0.1:10010".parse().unwrap()
        );
        assert_eq!(
            url_addr("[::]:1".parse().unwrap()),
            "[::1]:1".parse().unwrap()
        );
        assert_eq!(
            url_addr("10.0.0.1:1".parse().unwrap()),
            "10.0.0.1:1".parse().unwrap()
        );
    }
}
