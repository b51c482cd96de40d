//! The pod and container benchmark (issue 15): capsa-cri against containerd 1.6's CRI plugin
//! in the same run, each in a network namespace of its own with the same bridge network and
//! the same busybox image, one server at a time:
//!
//! - start: RunPodSandbox + CreateContainer + StartContainer of a busybox pod (`sleep`),
//!   one after another, median of 30;
//! - memory per running pod with one container, from those 30 pods: the proportional set
//!   size (Pss of /proc/PID/smaps_rollup) of every process the runtime keeps per pod (capsa:
//!   the infra process and the container's monitor; containerd: the pause process and its
//!   shim), plus the daemon's growth over the 30 pods, divided by 30; the container's own
//!   `sleep` is the workload and counted for neither;
//! - 100 pods started 8 at a time: the wall time;
//! - ExecSync of `/bin/true`: median of 50;
//! - the streaming exec round trip: the Exec RPC, then a SPDY session running `true` to its
//!   exit status, median of 30;
//! - ListContainers with 500 containers (50 pods of 10 created containers): median of 20.
//!
//! Ignored by default: `runtime-tests/bench/cri.sh` runs it on a release build.

mod common;
use common::containers::*;
use common::stream_client as client;
use common::*;
use k8s_cri::v1::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Pss of a process in KiB (0 once it is gone).
fn pss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn ppid(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(1).unwrap().parse().unwrap()
}

#[derive(Default, Debug)]
struct Results {
    start_ms: f64,
    pod_kib: f64,
    hundred_s: f64,
    exec_ms: Option<f64>,
    /// Exec + a SPDY session running `true` to its exit status, median of 30.
    stream_exec_ms: f64,
    list_ms: f64,
}

/// Run + Create + Start of one pod named `name`: its sandbox and container ids.
async fn start_one(c: &mut Clients, server: &Server, name: &str) -> (Pod, String) {
    let pod = Pod::run(c, server, name).await;
    let id = pod
        .start(
            c,
            server,
            &container_config("c", BUSYBOX, &["sleep", "100000"]),
        )
        .await;
    (pod, id)
}

async fn remove_pods(c: &Clients, pods: Vec<Pod>) {
    let sem = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = Vec::new();
    for pod in pods {
        let mut c = Clients {
            runtime: c.runtime.clone(),
            images: c.images.clone(),
        };
        let permit = sem.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            pod.remove(&mut c).await;
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn bench(kind: Kind) -> Results {
    let (netns, server, mut c, _) = with_busybox(kind).await;
    let daemon = server.pid().unwrap() as i32;
    let mut r = Results::default();
    // Warm-up, unrecorded.
    let (pod, _) = start_one(&mut c, &server, "warm").await;
    pod.remove(&mut c).await;
    let daemon_before = pss_kib(daemon);
    let mut times = Vec::new();
    let mut pods = Vec::new();
    for i in 0..30 {
        let t = Instant::now();
        let (pod, id) = start_one(&mut c, &server, &format!("s{i}")).await;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        pods.push((pod, id));
    }
    r.start_ms = median(times);
    let mut helpers = 0;
    for (pod, id) in &pods {
        let infra = sandbox_pid(&pod_status(&mut c, &pod.id).await.unwrap());
        let extra = match kind {
            Kind::Capsa => {
                let s = container_status(&mut c, id).await.unwrap();
                let info: serde_json::Value = serde_json::from_str(&s.info["info"]).unwrap();
                info["monitorPid"].as_i64().unwrap() as i32
            }
            Kind::Containerd => ppid(infra),
        };
        helpers += pss_kib(infra) + pss_kib(extra);
    }
    let daemon_growth = pss_kib(daemon).saturating_sub(daemon_before);
    r.pod_kib = (helpers + daemon_growth) as f64 / 30.0;
    eprintln!(
        "{kind:?}: helpers {:.0} KiB/pod, daemon growth {:.0} KiB/pod",
        helpers as f64 / 30.0,
        daemon_growth as f64 / 30.0
    );
    // ExecSync on the first pod's container.
    let target = pods[0].1.clone();
    let mut execs = Vec::new();
    let mut exec_ok = true;
    for _ in 0..50 {
        let t = Instant::now();
        match exec_sync(&mut c, &target, &["/bin/true"], 10).await {
            Ok((_, _, 0)) => execs.push(t.elapsed().as_secs_f64() * 1000.0),
            Ok(other) => panic!("{kind:?}: ExecSync /bin/true: {other:?}"),
            Err(e) => {
                eprintln!("{kind:?}: ExecSync: {e}");
                exec_ok = false;
                break;
            }
        }
    }
    r.exec_ms = exec_ok.then(|| median(execs));
    // The streaming round trip: the Exec RPC, then the session to its status.
    let dial = client::Dial {
        netns: Some(netns.path.clone()),
        ca: None,
    };
    let mut rounds = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let url = c
            .runtime
            .exec(ExecRequest {
                container_id: target.clone(),
                cmd: vec!["true".into()],
                stdout: true,
                stderr: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .url;
        let out = client::exec(&url, &dial, client::Transport::Spdy, client::OUT_ERR, b"").await;
        assert_eq!(out.exit_code(), 0, "{kind:?}");
        rounds.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    r.stream_exec_ms = median(rounds);
    remove_pods(&c, pods.into_iter().map(|(p, _)| p).collect()).await;
    // 100 pods, 8 at a time.
    let sem = Arc::new(tokio::sync::Semaphore::new(8));
    let server = Arc::new(server);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let mut c = server.clients().await;
        let server = server.clone();
        let permit = sem.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let (pod, _) = start_one(&mut c, &server, &format!("h{i}")).await;
            drop(permit);
            pod
        }));
    }
    let mut pods = Vec::new();
    for task in tasks {
        pods.push(task.await.unwrap());
    }
    r.hundred_s = t.elapsed().as_secs_f64();
    remove_pods(&c, pods).await;
    // 500 containers: 50 pods of 10, created and not started.
    let mut pods = Vec::new();
    for i in 0..50 {
        let pod = Pod::run(&mut c, &server, &format!("l{i}")).await;
        for j in 0..10 {
            pod.create(
                &mut c,
                &container_config(&format!("c{j}"), BUSYBOX, &["true"]),
            )
            .await
            .unwrap();
        }
        pods.push(pod);
    }
    let mut lists = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let n = c
            .runtime
            .list_containers(ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers
            .len();
        lists.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(n, 500, "{kind:?}");
    }
    r.list_ms = median(lists);
    remove_pods(&c, pods).await;
    drop(c);
    if let Ok(server) = Arc::try_unwrap(server) {
        drop(server);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: runtime-tests/bench/cri.sh runs it on a release build"]
async fn pods_containers_exec_and_list_capsa_cri_against_containerd() {
    let capsa = bench(Kind::Capsa).await;
    let ctrd = bench(Kind::Containerd).await;
    let ratio = |a: f64, b: f64| a / b;
    println!("\n| | capsa-cri | containerd 1.6 | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| RunPodSandbox + CreateContainer + StartContainer, median of 30 (ms) | {:.1} | {:.1} | {:.2}x |",
        capsa.start_ms,
        ctrd.start_ms,
        ratio(capsa.start_ms, ctrd.start_ms)
    );
    println!(
        "| 100 pods, 8 at a time (s) | {:.2} | {:.2} | {:.2}x |",
        capsa.hundred_s,
        ctrd.hundred_s,
        ratio(capsa.hundred_s, ctrd.hundred_s)
    );
    match (capsa.exec_ms, ctrd.exec_ms) {
        (Some(a), Some(b)) => println!(
            "| ExecSync /bin/true, median of 50 (ms) | {a:.1} | {b:.1} | {:.2}x |",
            ratio(a, b)
        ),
        (a, b) => println!("| ExecSync /bin/true, median of 50 (ms) | {a:?} | {b:?} | - |"),
    }
    println!(
        "| Exec + SPDY session of `true` to its exit status, median of 30 (ms) | {:.1} | {:.1} | {:.2}x |",
        capsa.stream_exec_ms,
        ctrd.stream_exec_ms,
        ratio(capsa.stream_exec_ms, ctrd.stream_exec_ms)
    );
    println!(
        "| memory per running pod with one container (KiB, Pss) | {:.0} | {:.0} | {:.2}x |",
        capsa.pod_kib,
        ctrd.pod_kib,
        ratio(capsa.pod_kib, ctrd.pod_kib)
    );
    println!(
        "| ListContainers with 500 containers, median of 20 (ms) | {:.1} | {:.1} | {:.2}x |",
        capsa.list_ms,
        ctrd.list_ms,
        ratio(capsa.list_ms, ctrd.list_ms)
    );
}
