//! The image pull benchmark (issue 14): PullImage of `images.sh bench` (busybox + 49 gzip
//! layers, 200 MiB) from one local registry, capsa-cri against containerd 1.6's CRI plugin,
//! in the same run, rounds alternating (and which server goes first alternating too).
//!
//! Every round starts each server afresh on an empty root (a new scratch directory, removed
//! when it stops), so every pull downloads and unpacks every layer: nothing is left in a
//! content store, a snapshotter or a page cache of the server's own. Only the PullImage call
//! is timed; the server is up and answering before it starts. Peak RSS is the daemon's
//! VmHWM (for containerd, the containerd process: it unpacks in-process), reset to its
//! current RSS through /proc/PID/clear_refs just before the pull, so it is the pull's peak,
//! not the start-up's.
//!
//! Ignored by default: `runtime-tests/bench/pull.sh` runs it on a release build
//! (`BENCH_PULL_ROUNDS`, default 5, after one unrecorded warm-up round).

mod common;
use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One measured pull.
struct Sample {
    wall: Duration,
    /// VmHWM after the pull, KiB.
    peak_kib: u64,
}

/// A `/proc/PID/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("/proc/{pid}/status has no {field}"))
}

/// The daemon's process: `Server` starts it through nsenter, which execs it.
fn daemon_pid(server: &Server) -> u32 {
    let pid = server.pid().expect("the server runs");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    let want = match server.kind {
        Kind::Capsa => "capsa-cri",
        Kind::Containerd => "containerd",
    };
    assert_eq!(comm.trim(), want, "pid {pid} is not the daemon");
    pid
}

/// Starts `kind` afresh, pulls `image` once (timed), checks the id, stops it. With `phases`,
/// prints the daemon's own log lines about the pull (capsa-cri's debug log times each
/// phase).
async fn one_pull(
    kind: Kind,
    netns: &Netns,
    registry: &Arc<Registry>,
    image: &str,
    phases: bool,
) -> Sample {
    let server = Server::start_with(kind, Some(netns), registry.clone()).await;
    let pid = daemon_pid(&server);
    let mut c = server.clients().await;
    // 5: reset the peak RSS to the current RSS (proc(5), since Linux 4.0).
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let start = Instant::now();
    let id = pull(&mut c, image, None)
        .await
        .unwrap_or_else(|e| panic!("{kind:?} PullImage {image}: {e}\n{}", server.log()));
    let wall = start.elapsed();
    let peak_kib = status_kib(pid, "VmHWM");
    assert_eq!(id, Fixture::Bench.image_id(), "{kind:?}");
    if phases {
        for line in server.log().lines().filter(|l| l.contains("pull")) {
            eprintln!("  {kind:?}: {line}");
        }
    }
    Sample { wall, peak_kib }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[tokio::test]
#[ignore = "a benchmark: runtime-tests/bench/pull.sh runs it on a release build"]
async fn pull_of_a_50_layer_200_mib_image_capsa_cri_against_containerd() {
    let rounds: usize = std::env::var("BENCH_PULL_ROUNDS")
        .ok()
        .map(|v| v.parse().expect("BENCH_PULL_ROUNDS: a number"))
        .unwrap_or(5);
    assert!(rounds > 0, "BENCH_PULL_ROUNDS: at least 1");
    let netns = Netns::new();
    let registry = Arc::new(Registry::start(Some(&netns)));
    let image = registry.push(Fixture::Bench, "library/bench:latest").image;
    let mut samples: Vec<(Kind, Vec<Sample>)> = KINDS.iter().map(|k| (*k, Vec::new())).collect();
    // Round 0 is a warm-up (the registry's files into the page cache), not recorded.
    for round in 0..=rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            vec![0, 1]
        } else {
            vec![1, 0]
        };
        for i in order {
            let kind = samples[i].0;
            let s = one_pull(kind, &netns, &registry, &image, round == rounds).await;
            eprintln!(
                "round {round} {kind:?}: {:.3} s, peak RSS {:.1} MiB{}",
                s.wall.as_secs_f64(),
                s.peak_kib as f64 / 1024.0,
                if round == 0 { " (warm-up)" } else { "" }
            );
            if round > 0 {
                samples[i].1.push(s);
            }
        }
    }

    let stats = |v: &[Sample]| {
        let wall: Vec<f64> = v.iter().map(|s| s.wall.as_secs_f64()).collect();
        let peak: Vec<f64> = v.iter().map(|s| s.peak_kib as f64 / 1024.0).collect();
        let max = |v: &[f64]| v.iter().copied().fold(f64::MIN, f64::max);
        let min = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
        (
            median(wall.clone()),
            min(&wall),
            max(&wall),
            median(peak.clone()),
            max(&peak),
        )
    };
    println!("\nPullImage of {image} (50 layers, 200 MiB), {rounds} rounds each, fresh roots\n");
    println!(
        "| server | median (s) | min (s) | max (s) | peak RSS median (MiB) | peak RSS max (MiB) |"
    );
    println!("|---|---|---|---|---|---|");
    let mut medians = Vec::new();
    for (kind, v) in &samples {
        let (med, min, max, rss, rss_max) = stats(v);
        medians.push((med, rss));
        let name = match kind {
            Kind::Capsa => "capsa-cri",
            Kind::Containerd => "containerd 1.6 CRI",
        };
        println!("| {name} | {med:.3} | {min:.3} | {max:.3} | {rss:.1} | {rss_max:.1} |");
    }
    println!(
        "\ncapsa-cri / containerd: time {:.2}x, peak RSS {:.2}x",
        medians[0].0 / medians[1].0,
        medians[0].1 / medians[1].1
    );
}
