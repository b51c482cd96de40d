//! capsa-cri's SPDY/3.1 client against the reference: containerd's CRI streaming server
//! (Go, spdystream) serving `PortForward`. A pod runs on a bridge network; a TCP server in
//! its network namespace takes several connections at once through one port-forward
//! session, each receiving and sending megabytes at the same time, checked by hash both
//! ways; a later request to the port, when nobody listens any more, gets containerd's
//! message on its error stream.

mod common;
use capsa_cri::streaming::spdy::upgrade::{self, PORT_FORWARD_PROTOCOLS};
use capsa_cri::streaming::spdy::{Config, Headers, Role, Session, Stream};
use common::*;
use k8s_cri::v1::*;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes sent each way on each connection.
const SIZE: usize = 2 * 1024 * 1024;
/// Concurrent port-forward requests (one connection each) in the session.
const CONNECTIONS: u64 = 4;

/// `len` bytes no two runs of a short pattern would give (xorshift).
fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha(b: &[u8]) -> Vec<u8> {
    Sha256::digest(b).to_vec()
}

/// Runs `f` on a thread inside the network namespace at `path` (sockets made there keep
/// working from any thread).
fn in_netns<T: Send + 'static>(path: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = path.to_string();
    std::thread::spawn(move || {
        enter_netns(&path);
        f()
    })
    .join()
    .unwrap()
}

/// Opens one port-forward request's stream pair, as client-go does: the error stream
/// first (our half closed at once: the client never writes to it), then the data stream,
/// each waiting for the server's SYN_REPLY.
async fn stream_pair(session: &Session, port: u16, request: u32) -> (Stream, Stream) {
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

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_through_containerds_streaming_server() {
    let (netns, server, mut c) = networked(Kind::Containerd, "bridge").await;
    let uid = uid();
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "spdy".into(),
            uid: uid.clone(),
            namespace: "capsa-test".into(),
            attempt: 1,
        }),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("/capsa-cri-test/pod{uid}"),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (id, status) = start_pod(&mut c, &server, &config).await;
    let scenario = tokio::spawn(forward(
        server.clients().await,
        netns.path.to_str().unwrap().to_string(),
        id.clone(),
        sandbox_pid(&status),
        server.dir.join("stderr.log"),
    ))
    .await;
    for _ in 0..2 {
        c.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .unwrap();
    }
    c.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
    assert_pod_cgroups_gone(&uid);
    if let Err(e) = scenario {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The transfers, on a running pod: a task of its own, so that the pod is removed even
/// when an assertion fails.
async fn forward(
    mut c: Clients,
    netns_path: String,
    id: String,
    pod_pid: i32,
    server_log: std::path::PathBuf,
) {
    let pod_ns = format!("/proc/{pod_pid}/ns/net");

    // The pod's server: on each of CONNECTIONS connections, reads an 8-byte seed, then
    // takes SIZE bytes while sending payload(2 * seed); answers (seed, hash of what came).
    let listener = in_netns(&pod_ns, || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        l
    });
    let port = listener.local_addr().unwrap().port();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let pod_server = tokio::spawn(async move {
        let mut handlers = Vec::new();
        for _ in 0..CONNECTIONS {
            let (conn, _) = listener.accept().await.unwrap();
            handlers.push(tokio::spawn(async move {
                let (mut r, mut w) = conn.into_split();
                let seed = r.read_u64().await.unwrap();
                let send = async move { w.write_all(&payload(2 * seed, SIZE)).await.map(|_| w) };
                let recv = async move {
                    let mut got = vec![0u8; SIZE];
                    r.read_exact(&mut got).await.map(|_| sha(&got))
                };
                let (w, got) = tokio::join!(send, recv);
                drop(w.unwrap());
                (seed, got.unwrap())
            }));
        }
        let mut received = Vec::new();
        for h in handlers {
            received.push(h.await.unwrap());
        }
        received.sort();
        received
    });

    let url = c
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: id.clone(),
            port: vec![i32::from(port)],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    let fds_before = open_fds();

    let addr_owned = addr.to_string();
    let tcp = in_netns(&netns_path, move || {
        let s = std::net::TcpStream::connect(&addr_owned).unwrap();
        s.set_nonblocking(true).unwrap();
        s
    });
    let tcp = tokio::net::TcpStream::from_std(tcp).unwrap();
    let (protocol, upgraded) = upgrade::connect(tcp, addr, path, &PORT_FORWARD_PROTOCOLS)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "upgrading {url}: {e}\n{}",
                std::fs::read_to_string(&server_log).unwrap_or_default()
            )
        });
    assert_eq!(protocol, "portforward.k8s.io");
    let session = Session::new(upgraded, Role::Client, Config::kubernetes()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), session.ping())
        .await
        .expect("containerd answers PING")
        .unwrap();

    // CONNECTIONS requests at once, both directions at once, each larger than any window.
    let started = std::time::Instant::now();
    let session = std::sync::Arc::new(session);
    let mut requests = tokio::task::JoinSet::new();
    for seed in 1..=CONNECTIONS {
        let session = session.clone();
        requests.spawn(async move {
            let (mut error, data) = stream_pair(&session, port, seed as u32).await;
            let (mut rd, mut wr) = tokio::io::split(data);
            let send = async move {
                wr.write_u64(seed).await.unwrap();
                wr.write_all(&payload(seed, SIZE)).await.unwrap();
                wr
            };
            let recv = async move {
                let mut got = Vec::new();
                rd.read_to_end(&mut got).await.unwrap();
                (rd, got)
            };
            let (mut wr, (rd, got)) = tokio::join!(send, recv);
            assert_eq!(got.len(), SIZE, "bytes from the pod on request {seed}");
            assert!(
                got == payload(2 * seed, SIZE),
                "what the pod sent on request {seed}"
            );
            let mut message = String::new();
            error.read_to_string(&mut message).await.unwrap();
            assert_eq!(message, "", "error stream of request {seed}");
            wr.shutdown().await.unwrap();
            drop(rd.unsplit(wr));
        });
    }
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(r) = requests.join_next().await {
            if let Err(e) = r {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    })
    .await
    .expect("the transfers finish");
    let session = std::sync::Arc::into_inner(session).expect("the requests are done");
    // A measurement for the report, not a threshold.
    eprintln!(
        "port-forward through containerd: {CONNECTIONS} connections, {} MiB each way on each, in {:?}",
        SIZE >> 20,
        started.elapsed()
    );
    let want: Vec<(u64, Vec<u8>)> = (1..=CONNECTIONS)
        .map(|seed| (seed, sha(&payload(seed, SIZE))))
        .collect();
    assert!(pod_server.await.unwrap() == want, "what the pod received");

    // The pod's server is gone: containerd reports the dial's failure on the next
    // request's error stream.
    let (mut error, data) = stream_pair(&session, port, 0).await;
    let mut message = String::new();
    error.read_to_string(&mut message).await.unwrap();
    assert!(
        message.contains(&port.to_string()) && message.contains("refused"),
        "error stream: {message:?}"
    );
    drop((error, data));

    session.close().await;
    eventually("the session's sockets closed", || async {
        open_fds() <= fds_before
    })
    .await;
}
