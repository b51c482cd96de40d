//! ListMetricDescriptors and ListPodSandboxMetrics: the cadvisor-style metrics kubelet serves
//! on `/metrics/cadvisor` when its PodAndContainerStatsFromCRI gate asks the runtime for them
//! instead of running cadvisor.
//!
//! kubelet turns each descriptor into a Prometheus description (name, help, label keys) and
//! each metric into a sample of it, so every metric carries exactly one value per label key
//! of its descriptor. The label keys are cadvisor's, in its order, so that dashboards and
//! recording rules written for cadvisor's output keep working: `container` (the CRI name),
//! `id` (the cgroup path), `image`, `name` (the runtime's id), `namespace` and `pod`; network
//! metrics add `interface`, disk I/O metrics `device` (as cadvisor: `/dev/<name>` of the
//! block device, from sysfs). Pod-level metrics (the pod's cgroup and network) have an empty
//! `container` and `image`.
//!
//! Values are the CRI's unsigned integers: a counter of seconds is whole seconds (the CRI has
//! no fractional values); the nanosecond counters stay available through ContainerStats.

use crate::daemon::Daemon;
use k8s_cri::v1::*;
use tonic::Status;

/// cadvisor's label keys of every container metric.
pub const LABEL_KEYS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

/// One metric capsa-cri serves: its name, help, kind and the label key it adds, if any.
struct Kind {
    name: &'static str,
    help: &'static str,
    counter: bool,
    extra_label: Option<&'static str>,
}

const fn counter(name: &'static str, help: &'static str) -> Kind {
    Kind {
        name,
        help,
        counter: true,
        extra_label: None,
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Kind {
    Kind {
        name,
        help,
        counter: false,
        extra_label: None,
    }
}

/// A counter with one sample per value of the label key it adds (`interface`, `device`).
const fn counter_by(label: &'static str, name: &'static str, help: &'static str) -> Kind {
    Kind {
        name,
        help,
        counter: true,
        extra_label: Some(label),
    }
}

const KINDS: &[Kind] = &[
    counter(
        "container_cpu_usage_seconds_total",
        "Cumulative CPU time consumed, in seconds.",
    ),
    counter(
        "container_cpu_user_seconds_total",
        "Cumulative user CPU time consumed, in seconds.",
    ),
    counter(
        "container_cpu_system_seconds_total",
        "Cumulative system CPU time consumed, in seconds.",
    ),
    counter(
        "container_cpu_cfs_periods_total",
        "Number of elapsed CFS enforcement periods.",
    ),
    counter(
        "container_cpu_cfs_throttled_periods_total",
        "Number of CFS periods in which the container was throttled.",
    ),
    counter(
        "container_cpu_cfs_throttled_seconds_total",
        "Total time the container was throttled, in seconds.",
    ),
    gauge(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, page cache included.",
    ),
    gauge(
        "container_memory_working_set_bytes",
        "Current working set in bytes: usage less inactive file pages.",
    ),
    gauge("container_memory_rss", "Anonymous memory in bytes."),
    gauge("container_memory_cache", "Page cache memory in bytes."),
    gauge("container_memory_swap", "Swap usage in bytes."),
    counter(
        "container_memory_failcnt",
        "Number of times memory usage hit the limit (cgroup v1).",
    ),
    gauge(
        "container_spec_memory_limit_bytes",
        "Memory limit in bytes; 0 when unlimited.",
    ),
    counter(
        "container_oom_events_total",
        "Count of out of memory events observed for the container.",
    ),
    counter_by(
        "device",
        "container_fs_reads_bytes_total",
        "Cumulative count of bytes read.",
    ),
    counter_by(
        "device",
        "container_fs_writes_bytes_total",
        "Cumulative count of bytes written.",
    ),
    counter_by(
        "device",
        "container_fs_reads_total",
        "Cumulative count of reads completed.",
    ),
    counter_by(
        "device",
        "container_fs_writes_total",
        "Cumulative count of writes completed.",
    ),
    gauge(
        "container_processes",
        "Number of processes (tasks) in the container's cgroup.",
    ),
    gauge(
        "container_start_time_seconds",
        "Start time of the container since the Unix epoch, in seconds.",
    ),
    counter_by(
        "interface",
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received.",
    ),
    counter_by(
        "interface",
        "container_network_receive_packets_total",
        "Cumulative count of packets received.",
    ),
    counter_by(
        "interface",
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving.",
    ),
    counter_by(
        "interface",
        "container_network_receive_packets_dropped_total",
        "Cumulative count of packets dropped while receiving.",
    ),
    counter_by(
        "interface",
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted.",
    ),
    counter_by(
        "interface",
        "container_network_transmit_packets_total",
        "Cumulative count of packets transmitted.",
    ),
    counter_by(
        "interface",
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting.",
    ),
    counter_by(
        "interface",
        "container_network_transmit_packets_dropped_total",
        "Cumulative count of packets dropped while transmitting.",
    ),
];

/// Every metric ListPodSandboxMetrics can return.
pub fn descriptors() -> Vec<MetricDescriptor> {
    KINDS
        .iter()
        .map(|k| MetricDescriptor {
            name: k.name.into(),
            help: k.help.into(),
            label_keys: LABEL_KEYS
                .iter()
                .copied()
                .chain(k.extra_label)
                .map(String::from)
                .collect(),
        })
        .collect()
}

/// The label values of one container (or, with empty `container` and `image`, of a pod), in
/// [`LABEL_KEYS`]' order.
pub struct Labels(pub [String; 6]);

impl Labels {
    pub fn new(
        container: &str,
        cgroup: &str,
        image: &str,
        id: &str,
        namespace: &str,
        pod: &str,
    ) -> Self {
        Labels([container, cgroup, image, id, namespace, pod].map(String::from))
    }
}

/// Metrics being collected at one instant for one label set.
pub struct Sampler<'a> {
    labels: &'a Labels,
    now: i64,
    pub metrics: Vec<Metric>,
}

impl<'a> Sampler<'a> {
    pub fn new(labels: &'a Labels, now: i64) -> Self {
        Sampler {
            labels,
            now,
            metrics: Vec::new(),
        }
    }

    /// Adds a sample of `name`; a name without a descriptor is never sent (the unit test
    /// below holds the table and the samples to each other).
    fn push(&mut self, name: &'static str, extra: Option<&str>, value: u64) {
        let Some(k) = KINDS.iter().find(|k| k.name == name) else {
            return;
        };
        self.metrics.push(Metric {
            name: name.into(),
            timestamp: self.now,
            metric_type: if k.counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            } as i32,
            label_values: self
                .labels
                .0
                .iter()
                .cloned()
                .chain(extra.map(String::from))
                .collect(),
            value: Some(UInt64Value { value }),
        });
    }

    /// The cgroup's counters (capsa's units: nanoseconds of CPU, bytes).
    pub fn cgroup(&mut self, st: &capsa::cgroups::stats::Stats) {
        const NS: u64 = 1_000_000_000;
        let cpu = &st.cpu;
        self.push(
            "container_cpu_usage_seconds_total",
            None,
            cpu.usage.total / NS,
        );
        self.push(
            "container_cpu_user_seconds_total",
            None,
            cpu.usage.user / NS,
        );
        self.push(
            "container_cpu_system_seconds_total",
            None,
            cpu.usage.kernel / NS,
        );
        self.push(
            "container_cpu_cfs_periods_total",
            None,
            cpu.throttling.periods,
        );
        self.push(
            "container_cpu_cfs_throttled_periods_total",
            None,
            cpu.throttling.throttled_periods,
        );
        self.push(
            "container_cpu_cfs_throttled_seconds_total",
            None,
            cpu.throttling.throttled_time / NS,
        );
        let m = &st.memory;
        self.push("container_memory_usage_bytes", None, m.usage.usage);
        let working_set = crate::stats::working_set(st);
        self.push("container_memory_working_set_bytes", None, working_set);
        self.push("container_memory_rss", None, crate::stats::rss(st));
        self.push("container_memory_cache", None, m.cache);
        self.push("container_memory_swap", None, m.swap.usage);
        self.push("container_memory_failcnt", None, m.usage.failcnt);
        let limit = crate::stats::memory_limit(st).unwrap_or(0);
        self.push("container_spec_memory_limit_bytes", None, limit);
        self.push("container_processes", None, st.pids.current);
        let io = [
            (
                "container_fs_reads_bytes_total",
                "Read",
                &st.blkio.io_service_bytes_recursive,
            ),
            (
                "container_fs_writes_bytes_total",
                "Write",
                &st.blkio.io_service_bytes_recursive,
            ),
            (
                "container_fs_reads_total",
                "Read",
                &st.blkio.io_serviced_recursive,
            ),
            (
                "container_fs_writes_total",
                "Write",
                &st.blkio.io_serviced_recursive,
            ),
        ];
        // Each device's name read from sysfs once, for its four counters.
        let mut names = std::collections::BTreeMap::new();
        for (metric, op, entries) in io {
            for ((major, minor), value) in crate::stats::per_device(entries, op) {
                let device = names
                    .entry((major, minor))
                    .or_insert_with(|| crate::stats::device_name(major, minor));
                self.push(metric, Some(device), value);
            }
        }
    }

    /// How many times the OOM killer fired in the cgroup.
    pub fn oom_events(&mut self, kills: u64) {
        self.push("container_oom_events_total", None, kills);
    }

    /// When the container started (ns since the epoch).
    pub fn started(&mut self, started_at_ns: i64) {
        let seconds = u64::try_from(started_at_ns / 1_000_000_000).unwrap_or(0);
        self.push("container_start_time_seconds", None, seconds);
    }

    /// Every interface of a `/proc/<pid>/net/dev` but lo.
    pub fn network(&mut self, net_dev: &str) {
        for i in crate::stats::interfaces(net_dev) {
            let counters = [
                ("container_network_receive_bytes_total", i.rx_bytes),
                ("container_network_receive_packets_total", i.rx_packets),
                ("container_network_receive_errors_total", i.rx_errors),
                (
                    "container_network_receive_packets_dropped_total",
                    i.rx_dropped,
                ),
                ("container_network_transmit_bytes_total", i.tx_bytes),
                ("container_network_transmit_packets_total", i.tx_packets),
                ("container_network_transmit_errors_total", i.tx_errors),
                (
                    "container_network_transmit_packets_dropped_total",
                    i.tx_dropped,
                ),
            ];
            for (metric, value) in counters {
                self.push(metric, Some(&i.name), value);
            }
        }
    }
}

impl Daemon {
    pub async fn list_metric_descriptors(
        &self,
        _: ListMetricDescriptorsRequest,
    ) -> Result<ListMetricDescriptorsResponse, Status> {
        Ok(ListMetricDescriptorsResponse {
            descriptors: descriptors(),
        })
    }

    /// Every ready sandbox: its own cgroup's counters and its network's (container "",
    /// as cadvisor's pod-level series), and each of its containers not exited (as
    /// ListContainerStats: an exited container's cgroup lingers until it is removed, with
    /// nothing left to measure).
    pub async fn list_pod_sandbox_metrics(
        &self,
        _: ListPodSandboxMetricsRequest,
    ) -> Result<ListPodSandboxMetricsResponse, Status> {
        let containers = self.containers().all();
        let mut pod_metrics = Vec::new();
        for sandbox in self.sandboxes() {
            // Ready: not stopped, its infra process alive (is_ready's test, with the pod
            // loaded once). A pod or container removed meanwhile is skipped, not an error.
            if sandbox.stopped {
                continue;
            }
            let Ok(pod) = self.runtime().load_pod(&sandbox.id) else {
                continue;
            };
            let Some(infra) = pod.live_pid() else {
                continue;
            };
            let meta = sandbox.config.metadata.clone().unwrap_or_default();
            let now = crate::pods::now_ns();
            let cgroup = pod.state().cgroup_path.to_string_lossy().into_owned();
            let labels = Labels::new("", &cgroup, "", &sandbox.id, &meta.namespace, &meta.name);
            let mut s = Sampler::new(&labels, now);
            if let Ok(m) = capsa::cgroups::Manager::new(&pod.state().cgroup_path) {
                if let Ok(st) = m.stats() {
                    s.cgroup(&st);
                    s.oom_events(m.oom_kills());
                }
            }
            if !sandbox.host_network {
                if let Ok(text) = std::fs::read_to_string(format!("/proc/{infra}/net/dev")) {
                    s.network(&text);
                }
            }
            let mut container_metrics = Vec::new();
            for r in containers.iter().filter(|r| r.sandbox_id == sandbox.id) {
                let seen = self.observe(r);
                if seen.state == ContainerState::ContainerExited {
                    continue;
                }
                let Some(c) = self.runtime().load(&r.id).ok() else {
                    continue;
                };
                let Ok(cgroup) = c.cgroup() else {
                    continue;
                };
                let Ok(st) = cgroup.stats() else {
                    continue;
                };
                let name = r.config.metadata.as_ref().map(|m| m.name.as_str());
                let labels = Labels::new(
                    name.unwrap_or_default(),
                    &c.stored().cgroup_path.to_string_lossy(),
                    &r.image_name,
                    &r.id,
                    &meta.namespace,
                    &meta.name,
                );
                let mut cs = Sampler::new(&labels, now);
                cs.cgroup(&st);
                cs.oom_events(cgroup.oom_kills());
                if seen.started_at > 0 {
                    cs.started(seen.started_at);
                }
                container_metrics.push(ContainerMetrics {
                    container_id: r.id.clone(),
                    metrics: cs.metrics,
                });
            }
            container_metrics.sort_by(|a, b| a.container_id.cmp(&b.container_id));
            pod_metrics.push(PodSandboxMetrics {
                pod_sandbox_id: sandbox.id.clone(),
                metrics: s.metrics,
                container_metrics,
            });
        }
        pod_metrics.sort_by(|a, b| a.pod_sandbox_id.cmp(&b.pod_sandbox_id));
        Ok(ListPodSandboxMetricsResponse { pod_metrics })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
eth0:    2000      20    1    4    0     0          0         0     3000      30    2    5    0     0       0          0\n";

    /// Each metric has a descriptor whose label keys it fills, one value each (what kubelet's
    /// conversion to Prometheus requires), and each descriptor is produced.
    #[test]
    fn every_metric_matches_its_descriptor() {
        let labels = Labels::new(
            "app",
            "/kubepods/pod1/c1",
            "busybox:latest",
            "c1",
            "ns",
            "web",
        );
        let mut s = Sampler::new(&labels, 42);
        let mut st = capsa::cgroups::stats::Stats::default();
        st.cpu.usage.total = 3_500_000_000;
        st.cpu.usage.user = 2_000_000_000;
        st.cpu.usage.kernel = 1_500_000_000;
        st.cpu.throttling.throttled_time = 7_000_000_000;
        st.memory.usage.usage = 10_000;
        st.memory.usage.limit = 50_000;
        st.memory.raw.insert("total_inactive_file".into(), 4_000);
        st.memory.raw.insert("total_rss".into(), 3_000);
        st.pids.current = 2;
        let entry = |op: &str, value| capsa::cgroups::stats::BlkioEntry {
            major: 7,
            minor: 4095,
            op: op.into(),
            value,
        };
        st.blkio.io_service_bytes_recursive =
            vec![entry("Read", 100), entry("Write", 200), entry("Total", 300)];
        st.blkio.io_serviced_recursive = vec![entry("Read", 1), entry("Write", 2)];
        s.cgroup(&st);
        s.oom_events(3);
        s.started(1_700_000_000_900_000_000);
        s.network(NET_DEV);
        let descriptors = descriptors();
        let mut produced = std::collections::BTreeSet::new();
        for m in &s.metrics {
            let d = descriptors
                .iter()
                .find(|d| d.name == m.name)
                .unwrap_or_else(|| panic!("{} has no descriptor", m.name));
            assert_eq!(m.label_values.len(), d.label_keys.len(), "{}", m.name);
            assert_eq!(m.timestamp, 42);
            produced.insert(m.name.clone());
        }
        assert_eq!(produced.len(), descriptors.len());
        let value = |name: &str| {
            let m = s.metrics.iter().find(|m| m.name == name).unwrap();
            (m.value.as_ref().unwrap().value, m.metric_type())
        };
        assert_eq!(
            value("container_cpu_usage_seconds_total"),
            (3, MetricType::Counter)
        );
        assert_eq!(value("container_cpu_cfs_throttled_seconds_total").0, 7);
        assert_eq!(
            value("container_memory_working_set_bytes"),
            (6_000, MetricType::Gauge)
        );
        assert_eq!(value("container_spec_memory_limit_bytes").0, 50_000);
        assert_eq!(value("container_processes").0, 2);
        assert_eq!(value("container_start_time_seconds").0, 1_700_000_000);
        assert_eq!(
            value("container_oom_events_total"),
            (3, MetricType::Counter)
        );
        let written = s
            .metrics
            .iter()
            .find(|m| m.name == "container_fs_writes_bytes_total")
            .unwrap();
        assert_eq!(written.value.as_ref().unwrap().value, 200);
        // No such device in sysfs: named by its numbers.
        assert_eq!(written.label_values.last().unwrap(), "7:4095");
        assert_eq!(value("container_fs_reads_total").0, 1);
        let rx_dropped = s
            .metrics
            .iter()
            .find(|m| m.name == "container_network_receive_packets_dropped_total")
            .unwrap();
        assert_eq!(rx_dropped.value.as_ref().unwrap().value, 4);
        assert_eq!(
            rx_dropped.label_values,
            [&labels.0[..], &["eth0".to_string()]].concat()
        );
    }

    #[test]
    fn an_unlimited_memory_limit_is_zero() {
        let labels = Labels::new("", "/p", "", "p", "ns", "web");
        let mut s = Sampler::new(&labels, 1);
        let mut st = capsa::cgroups::stats::Stats::default();
        st.memory.usage.limit = !0xfff;
        s.cgroup(&st);
        let limit = s
            .metrics
            .iter()
            .find(|m| m.name == "container_spec_memory_limit_bytes")
            .unwrap();
        assert_eq!(limit.value.as_ref().unwrap().value, 0);
    }
}
