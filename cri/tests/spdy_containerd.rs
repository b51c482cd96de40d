//! capsa-cri's streaming client against the reference: containerd's CRI streaming server
//! (Go, spdystream and wsstream). A pod runs on a bridge network with a busybox container;
//! the client execs in it (stdout and stderr apart, exit codes, over SPDY and WebSocket),
//! drives an interactive terminal whose resize `stty size` sees, and port-forwards several
//! connections at once through one session (megabytes both ways at the same time, checked
//! by hash), then gets containerd's message for a port nobody listens on. The benchmark of
//! our server against containerd's is here too (ignored: run by hand).

mod common;
use common::forward::{pod_server, transfers};
use common::host_backend::{port_forward_url, HostBackend};
use common::stream_client::{self as client, Dial, PortForward, Streams, Transport, OUT_ERR, TTY};
use common::*;
use k8s_cri::v1::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes sent each way on each connection.
const SIZE: usize = 2 * 1024 * 1024;
/// Concurrent port-forward requests (one connection each) in the session.
const CONNECTIONS: u64 = 4;

/// A containerd pod with a busybox container sleeping in it.
struct Pod {
    netns: Netns,
    server: Server,
    c: Clients,
    uid: String,
    id: String,
    pid: i32,
    container: String,
}

impl Pod {
    async fn start() -> Pod {
        let (netns, server, mut c, _) = with_busybox(Kind::Containerd).await;
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
        let container = c
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: id.clone(),
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: "sleeper".into(),
                        attempt: 0,
                    }),
                    image: spec(BUSYBOX),
                    command: vec!["sleep".into(), "3600".into()],
                    linux: Some(LinuxContainerConfig::default()),
                    ..Default::default()
                }),
                sandbox_config: Some(config),
            })
            .await
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", server.log()))
            .into_inner()
            .container_id;
        c.runtime
            .start_container(StartContainerRequest {
                container_id: container.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", server.log()));
        Pod {
            pid: sandbox_pid(&status),
            netns,
            server,
            c,
            uid,
            id,
            container,
        }
    }

    /// How the client reaches containerd's streaming server: from the test's namespace.
    fn dial(&self) -> Dial {
        Dial {
            netns: Some(self.netns.path.clone()),
            ca: None,
        }
    }

    fn pod_netns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid))
    }

    async fn exec_url(&self, cmd: &[&str], s: Streams) -> String {
        self.c
            .runtime
            .clone()
            .exec(ExecRequest {
                container_id: self.container.clone(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                tty: s.tty,
                stdin: s.stdin,
                stdout: s.stdout,
                stderr: s.stderr,
            })
            .await
            .unwrap()
            .into_inner()
            .url
    }

    async fn port_forward_url(&self) -> String {
        self.c
            .runtime
            .clone()
            .port_forward(PortForwardRequest {
                pod_sandbox_id: self.id.clone(),
                port: vec![],
            })
            .await
            .unwrap()
            .into_inner()
            .url
    }

    /// Stops and removes the pod (its container with it); checks no cgroup is left.
    async fn remove(mut self) {
        for _ in 0..2 {
            self.c
                .runtime
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: self.id.clone(),
                })
                .await
                .unwrap();
        }
        self.c
            .runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: self.id.clone(),
            })
            .await
            .unwrap();
        assert_pod_cgroups_gone(&self.uid);
        drop(self.server);
        drop(self.netns);
    }
}

/// Runs `scenario` on a running pod, as a task of its own, so that the pod is removed even
/// when an assertion fails.
async fn with_pod<F, Fut>(scenario: F)
where
    F: FnOnce(Arc<Pod>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let pod = Arc::new(Pod::start().await);
    let result = tokio::spawn(scenario(pod.clone())).await;
    let pod = Arc::into_inner(pod).expect("the scenario is over");
    pod.remove().await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_port_forward_through_containerds_streaming_server() {
    with_pod(|pod| async move {
        exec(&pod).await;
        tty(&pod).await;
        forward(&pod).await;
    })
    .await;
}

async fn exec(pod: &Pod) {
    // containerd 1.6's server speaks SPDY up to v4 and WebSocket up to v4.
    for t in [
        Transport::Spdy,
        Transport::SpdyOnly("channel.k8s.io"),
        Transport::WebSocket("v4.channel.k8s.io"),
        Transport::WebSocket("base64.channel.k8s.io"),
    ] {
        let url = pod
            .exec_url(&["sh", "-c", "echo out; echo err >&2"], OUT_ERR)
            .await;
        let out = client::exec(&url, &pod.dial(), t, OUT_ERR, b"").await;
        assert_eq!(
            (out.stdout().as_str(), out.stderr().as_str()),
            ("out\n", "err\n"),
            "{t:?}"
        );
        let url = pod
            .exec_url(&["sh", "-c", "echo bye; exit 3"], OUT_ERR)
            .await;
        let out = client::exec(&url, &pod.dial(), t, OUT_ERR, b"").await;
        assert_eq!(out.stdout(), "bye\n", "{t:?}");
        match t {
            Transport::Spdy | Transport::WebSocket("v4.channel.k8s.io") => {
                assert_eq!(out.exit_code(), 3, "{t:?}: {}", out.status)
            }
            // Kubernetes' v1 handler closes the error stream as soon as the streams are
            // made: a v1 SPDY client learns no status.
            Transport::SpdyOnly("channel.k8s.io") => assert_eq!(out.status, "", "{t:?}"),
            _ => assert!(out.status.contains("exit"), "{t:?}: {}", out.status),
        }
    }
}

async fn tty(pod: &Pod) {
    let url = pod.exec_url(&["sh"], TTY).await;
    client::tty_scenario(&url, &pod.dial(), Transport::Spdy).await;
}

async fn forward(pod: &Pod) {
    let (port, received) = pod_server(Some(&pod.pod_netns()), CONNECTIONS, SIZE);
    let url = pod.port_forward_url().await;
    let pf = PortForward::connect(&url, &pod.dial()).await;
    tokio::time::timeout(Duration::from_secs(10), pf.session.ping())
        .await
        .expect("containerd answers PING")
        .unwrap();
    let took = transfers(&pf, port, CONNECTIONS, SIZE, received).await;
    // A measurement for the report, not a threshold.
    eprintln!(
        "port-forward through containerd: {CONNECTIONS} connections, {} MiB each way on each, in {took:?}",
        SIZE >> 20
    );
    // The pod's server is gone: containerd reports the dial's failure on the next
    // request's error stream.
    let (error, data) = pf.pair(port, 0).await;
    let message = client::error_message(error).await;
    assert!(
        message.contains(&port.to_string()) && message.contains("refused"),
        "error stream: {message:?}"
    );
    drop(data);
    pf.close().await;
}

// The benchmark: the same client through containerd's server and ours.

const BENCH_BYTES: usize = 256 << 20;
const BENCH_EXECS: u32 = 20;

/// A server in `netns` that sends BENCH_BYTES to its one connection, then closes it.
fn sender(netns: &Path) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = in_netns(Some(netns), || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        l
    });
    let port = listener.local_addr().unwrap().port();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let task = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let block = common::forward::payload(9, 1 << 20);
        for _ in 0..BENCH_BYTES / block.len() {
            conn.write_all(&block).await.unwrap();
        }
    });
    (port, task)
}

/// Time to receive BENCH_BYTES through a port-forward session at `url`.
async fn download(url: &str, how: &Dial, port: u16) -> Duration {
    let pf = PortForward::connect(url, how).await;
    let started = Instant::now();
    let (error, data) = pf.pair(port, 1).await;
    let (mut rd, mut wr) = tokio::io::split(data);
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0;
    loop {
        let got = rd.read(&mut buf).await.unwrap();
        if got == 0 {
            break;
        }
        n += got;
    }
    let took = started.elapsed();
    assert_eq!(n, BENCH_BYTES);
    wr.shutdown().await.unwrap();
    assert_eq!(client::error_message(error).await, "");
    drop(rd.unsplit(wr));
    pf.close().await;
    took
}

/// The mean time of `BENCH_EXECS` round trips: a URL, then `true` streamed to its status.
async fn exec_round_trips<F, Fut>(mut url: F, how: &Dial) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let started = Instant::now();
    for _ in 0..BENCH_EXECS {
        let out = client::exec(&url().await, how, Transport::Spdy, OUT_ERR, b"").await;
        assert_eq!(out.exit_code(), 0);
    }
    started.elapsed() / BENCH_EXECS
}

fn mib_s(d: Duration) -> f64 {
    (BENCH_BYTES >> 20) as f64 / d.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: cargo test --release --test spdy_containerd -- --ignored --nocapture"]
async fn bench_streaming_against_containerd() {
    with_pod(|pod| async move {
        // Ours: the streaming server on the host-process backend, the pod's netns as its
        // sandbox's (the container side is containerd's, wired to ours later).
        let backend = Arc::new(HostBackend::new(&["c1"], &[("pod", Some(pod.pod_netns()))]));
        let ours = capsa_cri::streaming::StreamingServer::start(
            "127.0.0.1:0".parse().unwrap(),
            None,
            backend,
        )
        .await
        .unwrap();
        let here = Dial::default();

        let (port, sent) = sender(&pod.pod_netns());
        let theirs_pf = download(&pod.port_forward_url().await, &pod.dial(), port).await;
        sent.await.unwrap();
        let (port, sent) = sender(&pod.pod_netns());
        let url = port_forward_url(&ours, "pod", &[]).await;
        let ours_pf = download(&url, &here, port).await;
        sent.await.unwrap();

        let theirs_exec = exec_round_trips(|| pod.exec_url(&["true"], OUT_ERR), &pod.dial()).await;
        let ours = &ours;
        let ours_exec = exec_round_trips(
            move || async move {
                ours.get_exec(&ExecRequest {
                    container_id: "c1".into(),
                    cmd: vec!["true".into()],
                    stdout: true,
                    stderr: true,
                    ..Default::default()
                })
                .await
                .unwrap()
                .url
            },
            &here,
        )
        .await;
        eprintln!(
            "port-forward, {} MiB from the pod: containerd {theirs_pf:?} ({:.0} MiB/s), \
             capsa-cri {ours_pf:?} ({:.0} MiB/s): {:.2}x containerd's throughput",
            BENCH_BYTES >> 20,
            mib_s(theirs_pf),
            mib_s(ours_pf),
            mib_s(ours_pf) / mib_s(theirs_pf),
        );
        eprintln!(
            "exec round trip (URL, then `true` over SPDY to its status), mean of {BENCH_EXECS}: \
             containerd {theirs_exec:?} (Exec RPC + runc exec in the container), capsa-cri \
             {ours_exec:?} (get_exec in process + a host process through the test backend: \
             no container yet): {:.2}x containerd's latency",
            ours_exec.as_secs_f64() / theirs_exec.as_secs_f64()
        );
    })
    .await;
}
