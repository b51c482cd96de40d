//! Port-forward sessions (`portforward.k8s.io` over SPDY): for every forwarded connection
//! the client opens two streams with the same `requestID` header and the pod's `port`, an
//! `error` stream and a `data` stream; once both are there, the server dials
//! `localhost:PORT` inside the pod's network namespace and copies bytes both ways on the
//! data stream. A dial that fails is told on the error stream (containerd's wording), which
//! the server closes in every case when the connection ends. Any number of pairs, on any
//! ports, run at once on one session.

use super::spdy::{frame::rst, Headers, Session, Stream};
use super::StreamError;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// How long the second stream of a pair may take (kubelet's stream creation timeout).
pub const PAIR_TIMEOUT: Duration = Duration::from_secs(30);
/// Pairs waiting for their second stream, at most, on one session.
const MAX_PENDING_PAIRS: usize = 1024;
const COPY_BUFFER: usize = 64 * 1024;

/// A stream's headers, checked as kubelet checks them.
#[derive(Debug, PartialEq, Eq)]
pub struct StreamInfo {
    pub port: u16,
    pub data: bool,
    pub request_id: String,
}

/// Reads a port-forward stream's headers; `Err` says why the stream is refused. Without a
/// `requestID` (clients older than Kubernetes 1.6), a pair's ids are consecutive odd stream
/// ids, error first, as kubelet assumes.
pub fn stream_info(headers: &Headers, stream_id: u32) -> Result<StreamInfo, String> {
    let port = headers
        .get("port")
        .ok_or_else(|| "\"port\" header is required".to_string())?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("unable to parse {port:?} as a port"))?;
    if port == 0 {
        return Err("port \"0\" must be > 0".into());
    }
    let data = match headers.get("streamType") {
        Some("data") => true,
        Some("error") => false,
        Some(t) => return Err(format!("invalid stream type {t:?}")),
        None => return Err("\"streamType\" header is required".into()),
    };
    let request_id = match headers.get("requestID") {
        Some(id) => id.to_string(),
        None if data => stream_id.saturating_sub(2).to_string(),
        None => stream_id.to_string(),
    };
    Ok(StreamInfo {
        port,
        data,
        request_id,
    })
}

#[derive(Default)]
struct Pair {
    data: Option<Stream>,
    error: Option<Stream>,
    port: u16,
    since: Option<Instant>,
}

/// Serves a port-forward session until the client ends it. `ports`, when not empty, are
/// the only ones the client may ask for (those of the CRI request).
pub async fn serve(
    session: Session,
    sandbox_id: String,
    netns: Option<PathBuf>,
    ports: Vec<u16>,
) -> Result<(), StreamError> {
    let mut pending: HashMap<String, Pair> = HashMap::new();
    let mut forwards = JoinSet::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    loop {
        let stream = tokio::select! {
            s = session.accept() => match s {
                Some(s) => s,
                None => break,
            },
            _ = sweep.tick() => {
                expire(&mut pending);
                continue;
            }
            Some(_) = forwards.join_next() => continue,
        };
        let info = match stream_info(stream.headers(), stream.id()) {
            Ok(i) => i,
            Err(why) => {
                log::debug!("streaming: port-forward refuses a stream: {why}");
                stream.reset(rst::REFUSED_STREAM);
                continue;
            }
        };
        if !pending.contains_key(&info.request_id) && pending.len() >= MAX_PENDING_PAIRS {
            stream.reset(rst::REFUSED_STREAM);
            continue;
        }
        stream
            .send_reply(Headers::new(), false)
            .map_err(StreamError::Spdy)?;
        let pair = pending.entry(info.request_id.clone()).or_default();
        pair.since.get_or_insert_with(Instant::now);
        pair.port = info.port;
        let slot = if info.data {
            &mut pair.data
        } else {
            &mut pair.error
        };
        // A second stream of the same kind replaces (and resets) the first.
        *slot = Some(stream);
        if pair.data.is_some() && pair.error.is_some() {
            if let Some(Pair {
                data: Some(data),
                error: Some(error),
                port,
                ..
            }) = pending.remove(&info.request_id)
            {
                let allowed = ports.is_empty() || ports.contains(&port);
                forwards.spawn(forward(
                    data,
                    error,
                    port,
                    allowed,
                    sandbox_id.clone(),
                    netns.clone(),
                ));
            }
        }
    }
    // The session is over: every forward still running goes with it.
    forwards.shutdown().await;
    Ok(())
}

/// Ends the pairs whose second stream did not come in time, telling the client why.
fn expire(pending: &mut HashMap<String, Pair>) {
    let now = Instant::now();
    pending.retain(|id, pair| {
        let fresh = pair
            .since
            .is_some_and(|t| now.duration_since(t) < PAIR_TIMEOUT);
        if !fresh {
            log::debug!("streaming: port-forward request {id} timed out waiting for streams");
            if let Some(error) = pair.error.take() {
                tokio::spawn(async move {
                    let mut error = error;
                    let _ = error.write_all(b"timed out waiting for streams").await;
                    let _ = error.shutdown().await;
                });
            }
        }
        fresh
    });
}

async fn forward(
    data: Stream,
    mut error: Stream,
    port: u16,
    allowed: bool,
    sandbox_id: String,
    netns: Option<PathBuf>,
) {
    let result = if allowed {
        match dial(netns.as_deref(), port, &sandbox_id).await {
            Ok(conn) => copy_both_ways(data, conn).await,
            Err(e) => Err(e),
        }
    } else {
        Err(format!("port {port} is not among the request's ports"))
    };
    if let Err(e) = result {
        let message = format!("error forwarding port {port} to pod {sandbox_id}: {e}");
        log::debug!("streaming: {message}");
        let _ = error.write_all(message.as_bytes()).await;
    }
    let _ = error.shutdown().await;
    // The client's half of the error stream ends when it is done with the request.
    let mut rest = [0u8; 64];
    while let Ok(n) = error.read(&mut rest).await {
        if n == 0 {
            break;
        }
    }
}

/// Copies until both directions have ended; each end's EOF half-closes the other.
async fn copy_both_ways(data: Stream, conn: TcpStream) -> Result<(), String> {
    let (client_r, mut client_w) = tokio::io::split(data);
    let (pod_r, mut pod_w) = conn.into_split();
    let up = async {
        let mut r = BufReader::with_capacity(COPY_BUFFER, client_r);
        tokio::io::copy_buf(&mut r, &mut pod_w).await?;
        pod_w.shutdown().await
    };
    let down = async {
        let mut r = BufReader::with_capacity(COPY_BUFFER, pod_r);
        tokio::io::copy_buf(&mut r, &mut client_w).await?;
        client_w.shutdown().await
    };
    let (up, down) = tokio::join!(up, down);
    up.and(down).map_err(|e| format!("copying: {e}"))
}

/// Connects to `localhost:port` in the network namespace at `netns` (the host's when
/// `None`): IPv4 first, then IPv6, as containerd does. The socket is made on a thread of
/// its own that entered the namespace (setns moves only the calling thread, and a socket
/// keeps its namespace wherever it is used), then handed to tokio.
pub async fn dial(netns: Option<&Path>, port: u16, sandbox_id: &str) -> Result<TcpStream, String> {
    let Some(netns) = netns else {
        let v4 = match TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port)).await {
            Ok(s) => return Ok(s),
            Err(e) => e,
        };
        return TcpStream::connect((std::net::Ipv6Addr::LOCALHOST, port))
            .await
            .map_err(|v6| dial_error(port, sandbox_id, &v4, &v6));
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let path = netns.to_path_buf();
    let id = sandbox_id.to_string();
    std::thread::Builder::new()
        .name("capsa-netns-dial".into())
        .spawn(move || {
            let r = enter(&path).and_then(|()| connect_localhost(port, &id));
            let _ = tx.send(r);
        })
        .map_err(|e| format!("starting a thread to dial in {}: {e}", netns.display()))?;
    let std = rx
        .await
        .map_err(|_| "the dialling thread ended without an answer".to_string())??;
    TcpStream::from_std(std).map_err(|e| e.to_string())
}

fn enter(netns: &Path) -> Result<(), String> {
    let f = std::fs::File::open(netns)
        .map_err(|e| format!("opening the network namespace {}: {e}", netns.display()))?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("entering the network namespace {}: {e}", netns.display()))
}

fn connect_localhost(port: u16, sandbox_id: &str) -> Result<std::net::TcpStream, String> {
    let connect = |addr: std::net::SocketAddr| -> io::Result<std::net::TcpStream> {
        let s = std::net::TcpStream::connect(addr)?;
        s.set_nonblocking(true)?;
        s.set_nodelay(true)?;
        Ok(s)
    };
    let v4 = match connect((std::net::Ipv4Addr::LOCALHOST, port).into()) {
        Ok(s) => return Ok(s),
        Err(e) => e,
    };
    connect((std::net::Ipv6Addr::LOCALHOST, port).into())
        .map_err(|v6| dial_error(port, sandbox_id, &v4, &v6))
}

/// containerd's wording, which names both attempts.
fn dial_error(port: u16, sandbox_id: &str, v4: &io::Error, v6: &io::Error) -> String {
    format!(
        "failed to connect to localhost:{port} inside namespace {sandbox_id:?}, \
         IPv4: {v4} IPv6: {v6}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().fold(Headers::new(), |h, (n, v)| h.with(n, v))
    }

    #[test]
    fn stream_headers_are_checked() {
        let i = stream_info(
            &h(&[("streamType", "data"), ("port", "8080"), ("requestID", "7")]),
            5,
        )
        .unwrap();
        assert_eq!(
            i,
            StreamInfo {
                port: 8080,
                data: true,
                request_id: "7".into()
            }
        );
        // Old clients: the pair's ids are consecutive odd stream ids, error first.
        let e = stream_info(&h(&[("streamType", "error"), ("port", "80")]), 1).unwrap();
        let d = stream_info(&h(&[("streamType", "data"), ("port", "80")]), 3).unwrap();
        assert_eq!(e.request_id, d.request_id);
        for (headers, why) in [
            (h(&[("streamType", "data")]), "\"port\" header is required"),
            (
                h(&[("streamType", "data"), ("port", "70000")]),
                "unable to parse \"70000\"",
            ),
            (h(&[("streamType", "data"), ("port", "0")]), "must be > 0"),
            (h(&[("port", "80")]), "\"streamType\" header is required"),
            (
                h(&[("streamType", "stdin"), ("port", "80")]),
                "invalid stream type \"stdin\"",
            ),
        ] {
            let e = stream_info(&headers, 1).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }
}
