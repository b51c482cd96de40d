//! capsa-cri's streaming server (exec, attach, port-forward over SPDY/3.1 and WebSocket),
//! driven by the project's own client, on a backend of host processes
//! (`common::host_backend`): the protocols, tokens, disconnects and port-forwarding into a
//! network namespace the test makes. The same client against containerd is in
//! spdy_containerd.rs.

mod common;
use capsa_cri::streaming::spdy::upgrade;
use capsa_cri::streaming::tokens::TokenCache;
use capsa_cri::streaming::{StreamingServer, TlsFiles};
use common::forward::{pod_server, transfers};
use common::host_backend::{port_forward_url, HostBackend};
use common::stream_client::{
    self as client, Dial, PortForward, Remote, Streams, Transport, IN_OUT, OUT_ERR, TTY,
};
use common::*;
use k8s_cri::v1::{AttachRequest, ExecRequest, PortForwardRequest};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::BufReader;

const CONTAINER: &str = "c1";

async fn server(sandboxes: &[(&str, Option<PathBuf>)]) -> StreamingServer {
    server_with(sandboxes, None, TokenCache::default()).await
}

async fn server_with(
    sandboxes: &[(&str, Option<PathBuf>)],
    tls: Option<TlsFiles>,
    tokens: TokenCache,
) -> StreamingServer {
    let backend = Arc::new(HostBackend::new(&[CONTAINER], sandboxes));
    let addr = "127.0.0.1:0".parse().unwrap();
    StreamingServer::start_with(addr, tls, backend, tokens, None)
        .await
        .unwrap()
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

fn exec_req(cmd: Vec<String>, s: Streams) -> ExecRequest {
    ExecRequest {
        container_id: CONTAINER.into(),
        cmd,
        tty: s.tty,
        stdin: s.stdin,
        stdout: s.stdout,
        stderr: s.stderr,
    }
}

async fn exec_url(srv: &StreamingServer, cmd: Vec<String>, s: Streams) -> String {
    srv.get_exec(&exec_req(cmd, s)).await.unwrap().url
}

/// Every exec transport: SPDY at each version, WebSocket in each channel protocol.
const TRANSPORTS: [Transport; 9] = [
    Transport::Spdy,
    Transport::SpdyOnly("v3.channel.k8s.io"),
    Transport::SpdyOnly("v2.channel.k8s.io"),
    Transport::SpdyOnly("channel.k8s.io"),
    Transport::WebSocket("v5.channel.k8s.io"),
    Transport::WebSocket("v4.channel.k8s.io"),
    Transport::WebSocket("v4.base64.channel.k8s.io"),
    Transport::WebSocket("channel.k8s.io"),
    Transport::WebSocket("base64.channel.k8s.io"),
];

/// Whether the transport's version reports a v4 Status (JSON) on the error stream.
fn json_status(t: Transport) -> bool {
    matches!(
        t,
        Transport::Spdy
            | Transport::WebSocket("v5.channel.k8s.io")
            | Transport::WebSocket("v4.channel.k8s.io")
            | Transport::WebSocket("v4.base64.channel.k8s.io")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_without_a_tty_on_every_protocol() {
    let srv = server(&[]).await;
    let how = Dial::default();
    for t in TRANSPORTS {
        let url = exec_url(&srv, sh("echo out; echo err >&2"), OUT_ERR).await;
        let out = client::exec(&url, &how, t, OUT_ERR, b"").await;
        assert_eq!(out.stdout(), "out\n", "{t:?}");
        assert_eq!(out.stderr(), "err\n", "{t:?}");
        if json_status(t) {
            assert_eq!(out.status, r#"{"metadata":{},"status":"Success"}"#, "{t:?}");
        } else {
            assert_eq!(out.status, "", "{t:?}");
        }

        let url = exec_url(&srv, sh("echo bye; exit 3"), OUT_ERR).await;
        let out = client::exec(&url, &how, t, OUT_ERR, b"").await;
        assert_eq!(out.stdout(), "bye\n", "{t:?}");
        if json_status(t) {
            assert_eq!(out.exit_code(), 3, "{t:?}");
        } else {
            assert_eq!(
                out.status, "command terminated with non-zero exit code: exit status 3",
                "{t:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_reaches_the_process_and_its_end_too() {
    let srv = server(&[]).await;
    let how = Dial::default();
    // Larger than every window and buffer on the way, both ways at once.
    let input = common::forward::payload(7, 4 << 20);
    // v4 WebSocket cannot half-close stdin: the others can.
    for t in [
        Transport::Spdy,
        Transport::SpdyOnly("channel.k8s.io"),
        Transport::WebSocket("v5.channel.k8s.io"),
    ] {
        let url = exec_url(&srv, vec!["cat".into()], IN_OUT).await;
        let out = client::exec(&url, &how, t, IN_OUT, &input).await;
        assert!(
            out.stdout == input,
            "{t:?}: {} bytes back",
            out.stdout.len()
        );
        if json_status(t) {
            assert_eq!(out.exit_code(), 0, "{t:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tty_shell_is_interactive_and_resizable() {
    let srv = server(&[]).await;
    let how = Dial::default();
    for t in [
        Transport::Spdy,
        Transport::WebSocket("v5.channel.k8s.io"),
        Transport::WebSocket("v4.base64.channel.k8s.io"),
    ] {
        let url = exec_url(&srv, vec!["sh".into()], TTY).await;
        client::tty_scenario(&url, &how, t).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_reads_and_writes_the_containers_stdio() {
    let srv = server(&[]).await;
    let how = Dial::default();
    let streams = Streams {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    for t in [Transport::Spdy, Transport::WebSocket("v5.channel.k8s.io")] {
        let url = srv
            .get_attach(&AttachRequest {
                container_id: CONTAINER.into(),
                stdin: true,
                tty: false,
                stdout: true,
                stderr: true,
            })
            .await
            .unwrap()
            .url;
        assert!(url.contains("/attach/"), "{url}");
        let out = client::exec(&url, &how, t, streams, b"one\ntwo\n").await;
        assert_eq!(out.stdout(), "attached\ngot one\ngot two\n", "{t:?}");
        assert_eq!(out.exit_code(), 0, "{t:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_checked_before_a_url_is_given() {
    let srv = server(&[("pod", None)]).await;
    let bad = |tty, stdin, stdout, stderr| ExecRequest {
        container_id: CONTAINER.into(),
        cmd: vec!["true".into()],
        tty,
        stdin,
        stdout,
        stderr,
    };
    for (req, code, says) in [
        (
            bad(false, false, false, false),
            tonic::Code::InvalidArgument,
            "stdin, stdout, or stderr",
        ),
        (
            bad(true, false, true, true),
            tonic::Code::InvalidArgument,
            "tty and stderr",
        ),
        (
            ExecRequest {
                container_id: "nope".into(),
                ..bad(false, false, true, false)
            },
            tonic::Code::NotFound,
            "container nope not found",
        ),
        (
            ExecRequest {
                cmd: vec![],
                ..bad(false, false, true, false)
            },
            tonic::Code::InvalidArgument,
            "cmd is empty",
        ),
    ] {
        let e = srv.get_exec(&req).await.unwrap_err();
        assert_eq!(e.code(), code, "{e}");
        assert!(e.message().contains(says), "{e}");
    }
    let e = srv
        .get_port_forward(&PortForwardRequest {
            pod_sandbox_id: "other".into(),
            port: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    let e = srv
        .get_port_forward(&PortForwardRequest {
            pod_sandbox_id: "pod".into(),
            port: vec![70000],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
}

/// The status of the server's answer to an upgrade on `url`.
async fn upgrade_status(url: &str) -> u16 {
    let (io, host, path) = client::dial(url, &Dial::default()).await.unwrap();
    match upgrade::connect(io, &host, &path, &upgrade::CHANNEL_PROTOCOLS).await {
        Ok(_) => 101,
        Err(upgrade::UpgradeError::Refused { status, .. }) => status,
        Err(e) => panic!("{url}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_works_once_and_not_after_it_expires() {
    let srv = server(&[]).await;
    let url = exec_url(&srv, sh("true"), OUT_ERR).await;
    let out = client::exec(&url, &Dial::default(), Transport::Spdy, OUT_ERR, b"").await;
    assert_eq!(out.exit_code(), 0);
    assert_eq!(upgrade_status(&url).await, 404, "a reused token");
    let (_, addr, _) = client::split_url(&url);
    assert_eq!(
        upgrade_status(&format!("http://{addr}/exec/AAAAAAAAAAAAAAAAAAAAAA")).await,
        404,
        "an unknown token"
    );
    // An exec token on the attach path is no attach token.
    let url = exec_url(&srv, sh("true"), OUT_ERR).await;
    assert_eq!(
        upgrade_status(&url.replace("/exec/", "/attach/")).await,
        404,
        "a token of another kind"
    );
    assert_eq!(
        upgrade_status(&url).await,
        404,
        "consumed by the wrong path"
    );

    let expiring = server_with(&[], None, TokenCache::new(Duration::ZERO, 10)).await;
    let url = exec_url(&expiring, sh("true"), OUT_ERR).await;
    assert_eq!(upgrade_status(&url).await, 404, "an expired token");
}

/// This process's open connections with one end on `port` (tests run in parallel in this
/// process: a count of all fds would see theirs).
fn sockets_on(port: u16) -> usize {
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap().lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port_of = |a: &str| u16::from_str_radix(a.rsplit(':').next().unwrap(), 16).unwrap();
            // State 0A is the server's listening socket.
            if f[3] != "0A" && (port_of(f[1]) == port || port_of(f[2]) == port) {
                inodes.insert(format!("socket:[{}]", f[9]));
            }
        }
    }
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|l| inodes.contains(l.to_str().unwrap_or_default()))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_has_its_process_killed() {
    let srv = server(&[]).await;
    let how = Dial::default();
    let port = srv.addr().port();
    for (t, streams) in [
        (Transport::Spdy, OUT_ERR),
        (Transport::Spdy, TTY),
        (Transport::WebSocket("v5.channel.k8s.io"), OUT_ERR),
        (Transport::WebSocket("v4.channel.k8s.io"), TTY),
    ] {
        // The shell prints the pid of a child it waits for; both must go.
        let url = exec_url(&srv, sh("sleep 1000 & echo $! $$; wait"), streams).await;
        let mut r = Remote::connect(&url, &how, t, streams).await;
        let mut out = BufReader::new(r.stdout.take().unwrap());
        let line = client::line_until(&mut out, |l| l.split(' ').count() == 2).await;
        let pids: Vec<String> = line.split(' ').map(String::from).collect();
        for p in &pids {
            assert!(
                std::path::Path::new(&format!("/proc/{p}")).exists(),
                "{t:?}: {p} runs"
            );
        }
        drop(out);
        r.abort();
        for p in &pids {
            eventually(&format!("{t:?}: process {p} killed and reaped"), || async {
                !std::path::Path::new(&format!("/proc/{p}")).exists()
            })
            .await;
        }
        eventually(&format!("{t:?}: the session's sockets closed"), || async {
            sockets_on(port) == 0
        })
        .await;
    }
}

/// containerd's stream_idle_timeout: a session over which nothing moves for the timeout is
/// closed and its process killed; one whose output keeps coming runs to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_closed_and_a_busy_one_is_not() {
    let backend = Arc::new(HostBackend::new(&[CONTAINER], &[]));
    let idle = Duration::from_secs(2);
    let addr = "127.0.0.1:0".parse().unwrap();
    let srv = StreamingServer::start_with(addr, None, backend, TokenCache::default(), Some(idle))
        .await
        .unwrap();
    let how = Dial::default();
    for t in [Transport::Spdy, Transport::WebSocket("v5.channel.k8s.io")] {
        let url = exec_url(&srv, sh("echo $$; exec sleep 1000"), OUT_ERR).await;
        let mut r = Remote::connect(&url, &how, t, OUT_ERR).await;
        let mut out = BufReader::new(r.stdout.take().unwrap());
        let pid = client::line_until(&mut out, |l| !l.is_empty()).await;
        // Nothing more moves: the server ends the session (stdout reaches its end) and the
        // process with it.
        let end = async {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 256];
            // End of stream, or the connection closed under it; no more output.
            match out.read(&mut buf).await {
                Ok(0) | Err(_) => {}
                Ok(n) => panic!("{t:?}: unexpected output {:?}", &buf[..n]),
            }
        };
        tokio::time::timeout(Duration::from_secs(60), end)
            .await
            .unwrap_or_else(|_| panic!("{t:?}: the idle session was not closed"));
        eventually(&format!("{t:?}: process {pid} killed"), || async {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        })
        .await;
        r.abort();
        // Output every 0.2 s for longer than the timeout: never idle, so it completes.
        let script = "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do echo $i; sleep 0.2; done";
        let url = exec_url(&srv, sh(script), OUT_ERR).await;
        let out = Remote::connect(&url, &how, t, OUT_ERR)
            .await
            .finish(b"")
            .await;
        let lines = String::from_utf8(out.stdout).unwrap();
        assert_eq!(lines.lines().count(), 15, "{t:?}: {lines}");
        assert_eq!(out.status, r#"{"metadata":{},"status":"Success"}"#, "{t:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_into_a_pod_network_namespace() {
    // 20 connections at once, 64 MiB each way in all, checked by hash both ways.
    const CONNECTIONS: u64 = 20;
    const SIZE: usize = (64 << 20) / CONNECTIONS as usize;
    let netns = Netns::new();
    let srv = server(&[("pod", Some(netns.path.clone())), ("hostnet", None)]).await;
    let how = Dial::default();
    let (port, received) = pod_server(Some(&netns.path), CONNECTIONS, SIZE);
    let url = port_forward_url(&srv, "pod", &[]).await;
    let pf = PortForward::connect(&url, &how).await;
    let took = transfers(&pf, port, CONNECTIONS, SIZE, received).await;
    eprintln!("port-forward through capsa-cri's server: {CONNECTIONS} connections, 64 MiB each way, in {took:?}");

    // Nobody listens there any more: the error stream says so, the session lives on.
    let (error, data) = pf.pair(port, 1000).await;
    let message = client::error_message(error).await;
    assert!(
        message.contains(&port.to_string()) && message.contains("refused"),
        "error stream: {message:?}"
    );
    drop(data);
    // The port is dialled in the pod's namespace, not here: a server on the same port
    // here is not reached.
    let here = std::net::TcpListener::bind(("127.0.0.1", port));
    if here.is_ok() {
        let (error, data) = pf.pair(port, 1001).await;
        assert!(client::error_message(error).await.contains("refused"));
        drop(data);
    }
    drop(here);
    pf.close().await;

    // A host-network pod, with its ports limited to the request's.
    let (port, received) = pod_server(None, 1, 1 << 20);
    let url = port_forward_url(&srv, "hostnet", &[port]).await;
    let pf = PortForward::connect(&url, &how).await;
    transfers(&pf, port, 1, 1 << 20, received).await;
    let (error, data) = pf.pair(port.wrapping_add(1).max(1), 7).await;
    let message = client::error_message(error).await;
    assert!(
        message.contains("not among the request's ports"),
        "{message:?}"
    );
    drop(data);
    pf.close().await;
    eventually("the sessions' sockets closed", || async {
        sockets_on(srv.addr().port()) == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_over_websocket_is_refused_with_400() {
    let srv = server(&[("pod", None)]).await;
    let url = port_forward_url(&srv, "pod", &[80]).await;
    let (io, host, path) = client::dial(&url, &Dial::default()).await.unwrap();
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{host}{path}").into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v4.channel.k8s.io".parse().unwrap(),
    );
    let Err(e) = tokio_tungstenite::client_async(req, io).await else {
        panic!("a WebSocket port-forward was accepted");
    };
    assert!(e.to_string().contains("400"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_over_tls() {
    let dir = scratch("stream-tls");
    run_ok(
        std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=capsa-stream",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
            ])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem")),
    );
    let tls = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let srv = server_with(&[], Some(tls), TokenCache::default()).await;
    let url = exec_url(&srv, sh("echo secret; exit 4"), OUT_ERR).await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let how = Dial {
        netns: None,
        ca: Some(dir.join("cert.pem")),
    };
    for t in [Transport::Spdy, Transport::WebSocket("v5.channel.k8s.io")] {
        let url = exec_url(&srv, sh("echo secret; exit 4"), OUT_ERR).await;
        let out = client::exec(&url, &how, t, OUT_ERR, b"").await;
        assert_eq!(out.stdout(), "secret\n", "{t:?}");
        assert_eq!(out.exit_code(), 4, "{t:?}");
    }
    // Plain HTTP to the TLS port gets nothing.
    let plain = url.replace("https://", "http://");
    let (io, host, path) = client::dial(&plain, &Dial::default()).await.unwrap();
    assert!(
        upgrade::connect(io, &host, &path, &upgrade::CHANNEL_PROTOCOLS)
            .await
            .is_err()
    );
    // A key that does not exist is named.
    let e = StreamingServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Some(TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("missing.pem"),
        }),
        Arc::new(HostBackend::default()),
    )
    .await
    .err()
    .unwrap();
    assert!(e.to_string().contains("missing.pem"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
