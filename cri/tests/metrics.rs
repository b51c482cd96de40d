//! ListMetricDescriptors and ListPodSandboxMetrics (kubelet's PodAndContainerStatsFromCRI:
//! `/metrics/cadvisor` from the runtime): every metric fits its descriptor's label keys, the
//! labels name the pod and container as cadvisor's do, the counters agree with the cgroup's
//! and the network's own numbers (ContainerStats, PodSandboxStats), a container's disk I/O
//! (on a loop device of the test's) and OOM kills are counted, and what there is nothing
//! left to measure of (an exited container, a stopped pod) is left out. containerd 1.6
//! predates both calls (Unimplemented, checked).

mod common;
use common::containers::*;
use common::*;
use k8s_cri::v1::*;
use std::collections::HashMap;

/// The value of the one metric `name` among `metrics` whose label `key` is `value` (or the
/// only one named so, with no `key`).
fn value(metrics: &[Metric], name: &str, label: Option<(usize, &str)>) -> u64 {
    let found: Vec<&Metric> = metrics
        .iter()
        .filter(|m| m.name == name)
        .filter(|m| label.is_none_or(|(i, v)| m.label_values.get(i).map(String::as_str) == Some(v)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {label:?} in {metrics:#?}");
    found[0].value.as_ref().unwrap().value
}

async fn pod_metrics(c: &mut Clients) -> Vec<PodSandboxMetrics> {
    c.runtime
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .pod_metrics
}

async fn of_pod(c: &mut Clients, pod: &str) -> PodSandboxMetrics {
    pod_metrics(c)
        .await
        .into_iter()
        .find(|p| p.pod_sandbox_id == pod)
        .unwrap_or_else(|| panic!("no metrics of pod {pod}"))
}

fn of_container(p: &PodSandboxMetrics, id: &str) -> Vec<Metric> {
    p.container_metrics
        .iter()
        .find(|c| c.container_id == id)
        .unwrap_or_else(|| panic!("no metrics of container {id} in {p:#?}"))
        .metrics
        .clone()
}

#[tokio::test]
async fn pod_and_container_metrics_fit_their_descriptors_and_the_cgroups_numbers() {
    for kind in KINDS {
        let (_netns, server, mut c, _) = with_busybox(kind).await;
        let descriptors = c
            .runtime
            .list_metric_descriptors(ListMetricDescriptorsRequest::default())
            .await;
        if kind == Kind::Containerd {
            assert_eq!(descriptors.unwrap_err().code(), tonic::Code::Unimplemented);
            let e = c
                .runtime
                .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest::default())
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unimplemented);
            continue;
        }
        let descriptors: HashMap<String, Vec<String>> = descriptors
            .unwrap()
            .into_inner()
            .descriptors
            .into_iter()
            .map(|d| (d.name, d.label_keys))
            .collect();
        let base = ["container", "id", "image", "name", "namespace", "pod"];
        assert_eq!(descriptors["container_cpu_usage_seconds_total"], base);
        assert_eq!(
            descriptors["container_network_receive_bytes_total"],
            [&base[..], &["interface"]].concat()
        );
        let pod = Pod::run(&mut c, &server, "metered").await;
        let mut burner = container_config("burner", BUSYBOX, &["sh", "-c", "while :; do :; done"]);
        resources(&mut burner).memory_limit_in_bytes = 64 << 20;
        let burner = pod.start(&mut c, &server, &burner).await;
        let quick = pod
            .start(
                &mut c,
                &server,
                &container_config("quick", BUSYBOX, &["true"]),
            )
            .await;
        wait_exited(&mut c, &quick).await;

        // The busy loop's CPU reaches a whole second: the counter moves, in seconds.
        let cpu = "container_cpu_usage_seconds_total";
        eventually("a second of CPU in the burner's metrics", || {
            let mut c = c.clone();
            let (pod, burner) = (pod.id.clone(), burner.clone());
            async move {
                value(
                    &of_container(&of_pod(&mut c, &pod).await, &burner),
                    cpu,
                    None,
                ) >= 1
            }
        })
        .await;

        let before = of_pod(&mut c, &pod.id).await;
        let stats = c
            .runtime
            .container_stats(ContainerStatsRequest {
                container_id: burner.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
        let sandbox_stats = c
            .runtime
            .pod_sandbox_stats(PodSandboxStatsRequest {
                pod_sandbox_id: pod.id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
        let after = of_pod(&mut c, &pod.id).await;

        // Every metric fits its descriptor (kubelet's conversion to Prometheus needs it).
        let every = before
            .metrics
            .iter()
            .chain(before.container_metrics.iter().flat_map(|c| &c.metrics));
        for m in every {
            let keys = descriptors
                .get(&m.name)
                .unwrap_or_else(|| panic!("{} has no descriptor", m.name));
            assert_eq!(m.label_values.len(), keys.len(), "{m:?}");
            assert!(m.timestamp > 0, "{m:?}");
        }

        // The exited container: left out.
        let ids: Vec<&str> = before
            .container_metrics
            .iter()
            .map(|c| c.container_id.as_str())
            .collect();
        assert_eq!(ids, [burner.as_str()]);

        // The burner's labels, and its counters bracketing ContainerStats' own.
        let (m1, m2) = (
            of_container(&before, &burner),
            of_container(&after, &burner),
        );
        let cpu_labels = &m1.iter().find(|m| m.name == cpu).unwrap().label_values;
        let status = state_of(&mut c, &burner).await;
        assert_eq!(cpu_labels[0], "burner");
        // id: the cgroup path, as the container's processes see it.
        let pid = container_pid(&container_status(&mut c, &burner).await.unwrap());
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let lines: Vec<(&str, &str)> = cgroups
            .lines()
            .filter_map(|l| l.splitn(3, ':').skip(1).collect::<Vec<_>>().try_into().ok())
            .map(|[names, path]: [&str; 2]| (names, path))
            .collect();
        // v1's memory hierarchy, else v2's single one.
        let path = lines
            .iter()
            .find(|(names, _)| names.split(',').any(|n| n == "memory"))
            .or_else(|| lines.iter().find(|(names, _)| names.is_empty()))
            .map(|(_, path)| *path);
        assert_eq!(Some(cpu_labels[1].as_str()), path, "{cgroups}");
        assert_eq!(cpu_labels[2], status.image.unwrap().image);
        assert_eq!(cpu_labels[3], burner);
        assert_eq!(cpu_labels[4], "capsa-test");
        assert_eq!(cpu_labels[5], "metered");
        let ns = stats.cpu.unwrap().usage_core_nano_seconds.unwrap().value;
        assert!(
            value(&m1, cpu, None) <= ns / 1_000_000_000
                && ns / 1_000_000_000 <= value(&m2, cpu, None),
            "{} <= {ns} ns <= {}",
            value(&m1, cpu, None),
            value(&m2, cpu, None)
        );
        assert_eq!(
            value(&m1, "container_spec_memory_limit_bytes", None),
            64 << 20
        );
        let usage = value(&m1, "container_memory_usage_bytes", None);
        assert!(usage > 0 && value(&m1, "container_memory_working_set_bytes", None) <= usage);
        assert!(value(&m1, "container_processes", None) >= 1);
        let started = value(&m1, "container_start_time_seconds", None);
        assert_eq!(started, (status.started_at / 1_000_000_000) as u64);

        // The pod's own series: container "", its cgroup holding both the infra process and
        // the burner, its network's counters bracketing PodSandboxStats'.
        let pod_cpu = before.metrics.iter().find(|m| m.name == cpu).unwrap();
        assert_eq!(pod_cpu.label_values[0], "");
        assert_eq!(pod_cpu.label_values[3], pod.id);
        assert_eq!(pod_cpu.label_values[5], "metered");
        assert!(value(&before.metrics, "container_processes", None) >= 2);
        let eth0 = sandbox_stats
            .linux
            .unwrap()
            .network
            .unwrap()
            .default_interface
            .unwrap();
        let rx = "container_network_receive_bytes_total";
        let on_eth0 = Some((6, "eth0"));
        let got = eth0.rx_bytes.unwrap().value;
        assert!(
            value(&before.metrics, rx, on_eth0) <= got && got <= value(&after.metrics, rx, on_eth0),
            "rx bytes {got}"
        );
        assert!(!before
            .metrics
            .iter()
            .any(|m| m.label_values.get(6).is_some_and(|i| i == "lo")));

        // A stopped pod has no processes to measure: left out.
        c.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.id.clone(),
            })
            .await
            .unwrap();
        assert!(!pod_metrics(&mut c)
            .await
            .iter()
            .any(|p| p.pod_sandbox_id == pod.id));
        pod.remove(&mut c).await;
        assert_nothing_left(&server);
    }
}

/// A loop device of the test's (8 MiB of a scratch file), detached when dropped.
struct Loop {
    path: String,
    /// `major:minor`.
    numbers: String,
}

impl Loop {
    fn new(dir: &std::path::Path) -> Loop {
        let image = dir.join("loop.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        let path = run_ok(
            std::process::Command::new("losetup")
                .args(["-f", "--show"])
                .arg(&image),
        )
        .trim()
        .to_string();
        let name = path.trim_start_matches("/dev/");
        let numbers = std::fs::read_to_string(format!("/sys/block/{name}/dev"))
            .unwrap()
            .trim()
            .to_string();
        Loop { path, numbers }
    }

    /// Makes cgroup v1 count the device's I/O per cgroup. Recent kernels (6.x) count a
    /// device's bios in the blkio throttle statistics only once the throttle policy is
    /// active on its queue, which the first throttle rule for it does: set one, with no
    /// effective limit, in a cgroup of the test's own, and remove it (the policy stays
    /// active until the device goes). cgroup v2 counts every device in io.stat.
    fn count_on_v1(&self) {
        let dir = std::path::PathBuf::from(format!(
            "/sys/fs/cgroup/blkio/capsa-cri-io-{}",
            std::process::id()
        ));
        if !std::path::Path::new("/sys/fs/cgroup/blkio").is_dir() {
            return;
        }
        std::fs::create_dir(&dir).unwrap();
        let rule = dir.join("blkio.throttle.write_bps_device");
        std::fs::write(&rule, format!("{} {}", self.numbers, 1u64 << 40)).unwrap();
        std::fs::write(&rule, format!("{} 0", self.numbers)).unwrap();
        std::fs::remove_dir(&dir).unwrap();
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.path])
            .status();
    }
}

#[tokio::test]
async fn disk_io_and_oom_kills_are_counted() {
    // containerd 1.6 serves no metrics (see above).
    let (_netns, server, mut c, _) = with_busybox(Kind::Capsa).await;
    let pod = Pod::run(&mut c, &server, "io").await;
    // A block device of the test's own, given to the container; O_DIRECT, so that the I/O
    // is the container's (the page cache's writeback is not charged to it on cgroup v1).
    let dev = Loop::new(&server.dir);
    dev.count_on_v1();
    let mut disk = container_config(
        "disk",
        BUSYBOX,
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/dev/xvdb bs=64k count=16 oflag=direct && \
             dd if=/dev/xvdb of=/dev/null bs=64k count=16 iflag=direct && exec sleep 1000",
        ],
    );
    disk.devices = vec![Device {
        host_path: dev.path.clone(),
        container_path: "/dev/xvdb".into(),
        permissions: "rw".into(),
    }];
    let disk = pod.start(&mut c, &server, &disk).await;
    // dd's 64 MiB buffer in a 16 MiB cgroup: the OOM killer takes dd, the shell goes on.
    let mut hog = container_config(
        "hog",
        BUSYBOX,
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/dev/null bs=64M count=1; exec sleep 1000",
        ],
    );
    resources(&mut hog).memory_limit_in_bytes = 16 << 20;
    let hog = pod.start(&mut c, &server, &hog).await;
    let sum = |metrics: &[Metric], name: &str| -> u64 {
        metrics
            .iter()
            .filter(|m| m.name == name)
            .map(|m| m.value.as_ref().unwrap().value)
            .sum()
    };
    eventually("the disk container's I/O in its metrics", || {
        let mut c = c.clone();
        let (pod, disk) = (pod.id.clone(), disk.clone());
        async move {
            let m = of_container(&of_pod(&mut c, &pod).await, &disk);
            sum(&m, "container_fs_writes_bytes_total") >= 1 << 20
                && sum(&m, "container_fs_reads_bytes_total") >= 1 << 20
        }
    })
    .await;
    eventually("the hog's OOM kill in its metrics", || {
        let mut c = c.clone();
        let (pod, hog) = (pod.id.clone(), hog.clone());
        async move {
            let m = of_container(&of_pod(&mut c, &pod).await, &hog);
            value(&m, "container_oom_events_total", None) >= 1
        }
    })
    .await;
    let p = of_pod(&mut c, &pod.id).await;
    let m = of_container(&p, &disk);
    assert_eq!(value(&m, "container_oom_events_total", None), 0);
    // 16 writes and 16 reads of 64 KiB on the loop device, named as cadvisor names it.
    let on = Some((6, dev.path.as_str()));
    assert_eq!(value(&m, "container_fs_writes_bytes_total", on), 1 << 20);
    assert_eq!(value(&m, "container_fs_reads_bytes_total", on), 1 << 20);
    assert!(value(&m, "container_fs_writes_total", on) >= 16);
    assert!(value(&m, "container_fs_reads_total", on) >= 16);
    // The pod's cgroup counts what its containers did (the recursive counters).
    assert_eq!(
        value(&p.metrics, "container_fs_writes_bytes_total", on),
        1 << 20
    );
    let status = state_of(&mut c, &hog).await;
    assert_eq!(status.state, ContainerState::ContainerRunning as i32);
    pod.remove(&mut c).await;
    assert_nothing_left(&server);
}
