//! Exec, Attach and PortForward through the CRI into real containers, the same client
//! against capsa-cri's streaming server and containerd's: exec with stdout and stderr apart
//! and exit codes over SPDY and WebSocket, an interactive terminal resized, an attach to a
//! container reading its stdin, port-forward into the pod, and (capsa-cri) a client that
//! goes away mid-exec leaving no process.

mod common;
use common::containers::*;
use common::forward::{pod_server, transfers};
use common::stream_client::{
    self as client, Dial, PortForward, Streams, Transport, IN_OUT, OUT_ERR,
};
use common::*;
use k8s_cri::v1::*;
use std::time::Duration;

async fn exec_url(c: &mut Clients, id: &str, cmd: &[&str], s: Streams) -> String {
    c.runtime
        .exec(ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty: s.tty,
            stdin: s.stdin,
            stdout: s.stdout,
            stderr: s.stderr,
        })
        .await
        .unwrap_or_else(|e| panic!("Exec: {e}"))
        .into_inner()
        .url
}

/// Processes whose command line mentions `needle`.
fn processes_with(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_attach_and_port_forward_into_containers() {
    for kind in KINDS {
        let (netns, server, mut c, _) = with_busybox(kind).await;
        let pod = Pod::run(&mut c, &server, "stream").await;
        let dial = Dial {
            netns: Some(netns.path.clone()),
            ca: None,
        };
        let sleeper = pod
            .start(
                &mut c,
                &server,
                &container_config("s", BUSYBOX, &["sleep", "100000"]),
            )
            .await;
        // Exec, stdout and stderr apart, exit code 3.
        for t in [Transport::Spdy, Transport::WebSocket("v4.channel.k8s.io")] {
            let url = exec_url(
                &mut c,
                &sleeper,
                &["sh", "-c", "echo out; echo err >&2; exit 3"],
                OUT_ERR,
            )
            .await;
            let out = client::exec(&url, &dial, t, OUT_ERR, b"").await;
            assert_eq!(
                (
                    out.stdout().as_str(),
                    out.stderr().as_str(),
                    out.exit_code()
                ),
                ("out\n", "err\n", 3),
                "{kind:?} {t:?}"
            );
        }
        // stdin through to a process and its end.
        let url = exec_url(&mut c, &sleeper, &["cat"], IN_OUT).await;
        let out = client::exec(&url, &dial, Transport::Spdy, IN_OUT, b"through cat\n").await;
        assert_eq!(
            (out.stdout().as_str(), out.exit_code()),
            ("through cat\n", 0),
            "{kind:?}"
        );
        // An interactive terminal: resized, answering, exit 5.
        let url = exec_url(&mut c, &sleeper, &["sh"], client::TTY).await;
        client::tty_scenario(&url, &dial, Transport::Spdy).await;
        // Attach to a container reading its stdin: with stdin_once, the first client's end
        // of input is the container's (cat ends; without stdin_once it would wait on).
        let mut reader = container_config("r", BUSYBOX, &["sh", "-c", "cat; echo cat done"]);
        reader.stdin = true;
        reader.stdin_once = true;
        let reader = pod.start(&mut c, &server, &reader).await;
        let url = c
            .runtime
            .attach(AttachRequest {
                container_id: reader.clone(),
                stdin: true,
                tty: false,
                stdout: true,
                stderr: false,
            })
            .await
            .unwrap_or_else(|e| panic!("{kind:?} Attach: {e}"))
            .into_inner()
            .url;
        let out = client::exec(&url, &dial, Transport::Spdy, IN_OUT, b"one\ntwo\n").await;
        assert_eq!(out.stdout(), "one\ntwo\ncat done\n", "{kind:?}");
        let s = wait_exited(&mut c, &reader).await;
        assert_eq!(s.exit_code, 0, "{kind:?}");
        // Port-forward to a server in the pod's network namespace.
        let infra = sandbox_pid(&pod_status(&mut c, &pod.id).await.unwrap());
        let pod_netns = std::path::PathBuf::from(format!("/proc/{infra}/ns/net"));
        let (port, received) = pod_server(Some(&pod_netns), 8, 4 << 20);
        let url = c
            .runtime
            .port_forward(PortForwardRequest {
                pod_sandbox_id: pod.id.clone(),
                port: vec![],
            })
            .await
            .unwrap_or_else(|e| panic!("{kind:?} PortForward: {e}"))
            .into_inner()
            .url;
        let pf = PortForward::connect(&url, &dial).await;
        transfers(&pf, port, 8, 4 << 20, received).await;
        pf.close().await;
        // A client that goes away mid-exec: its process goes too (capsa-cri; containerd's
        // exec'd process lives on until it ends by itself).
        if kind == Kind::Capsa {
            let url = exec_url(&mut c, &sleeper, &["sleep", "424242"], OUT_ERR).await;
            let remote = client::Remote::connect(&url, &dial, Transport::Spdy, OUT_ERR).await;
            eventually("the exec'd sleep", || async {
                !processes_with("424242").is_empty()
            })
            .await;
            remote.abort();
            eventually("the exec'd sleep gone", || async {
                processes_with("424242").is_empty()
            })
            .await;
            let e = c
                .runtime
                .exec(ExecRequest {
                    container_id: "no-such-container".into(),
                    cmd: vec!["true".into()],
                    stdout: true,
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
        }
        pod.remove(&mut c).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
