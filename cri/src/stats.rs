//! Pod sandbox statistics from the pod's cgroup (cpu, memory, processes) and its network
//! namespace (/proc/<infra>/net/dev), in the CRI's units. CPU usage in nano-cores needs two
//! samples: the previous one of each sandbox is kept, and the first answer has none.

use k8s_cri::v1::*;
use std::collections::HashMap;
use std::sync::Mutex;

/// The last CPU sample of each sandbox: (timestamp ns, cumulative usage ns).
#[derive(Default)]
pub struct CpuSamples(Mutex<HashMap<String, (i64, u64)>>);

impl CpuSamples {
    /// Records `usage` at `now` and returns the rate since the previous sample, if any.
    pub fn rate(&self, id: &str, now: i64, usage: u64) -> Option<u64> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let previous = m.insert(id.to_string(), (now, usage));
        let (then, before) = previous?;
        let elapsed = now.checked_sub(then).filter(|e| *e > 0)? as u128;
        let used = usage.checked_sub(before)? as u128;
        Some((used * 1_000_000_000 / elapsed) as u64)
    }

    pub fn forget(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

fn value(v: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value: v })
}

/// A memory.stat counter under the first of `keys` the cgroup has (v1's name, then v2's),
/// else 0.
pub fn memory_stat(stats: &capsa::cgroups::stats::Stats, keys: &[&str]) -> u64 {
    let raw = &stats.memory.raw;
    keys.iter().find_map(|k| raw.get(*k).copied()).unwrap_or(0)
}

/// Anonymous memory: v1 total_rss, v2 anon.
pub fn rss(stats: &capsa::cgroups::stats::Stats) -> u64 {
    memory_stat(stats, &["total_rss", "anon"])
}

/// The working set as kubelet computes it: usage less inactive file pages (v1
/// total_inactive_file, v2 inactive_file).
pub fn working_set(stats: &capsa::cgroups::stats::Stats) -> u64 {
    let inactive = memory_stat(stats, &["total_inactive_file", "inactive_file"]);
    stats.memory.usage.usage.saturating_sub(inactive)
}

/// The memory limit, or None when unlimited: v1 reports "no limit" as a huge page-aligned
/// number, v2 as 0 (max).
pub fn memory_limit(stats: &capsa::cgroups::stats::Stats) -> Option<u64> {
    let limit = stats.memory.usage.limit;
    (limit > 0 && limit < (1 << 62)).then_some(limit)
}

/// Memory in the CRI's terms: available = limit - working set when limited.
pub fn memory(stats: &capsa::cgroups::stats::Stats, now: i64) -> MemoryUsage {
    let get = |keys: &[&str]| memory_stat(stats, keys);
    let working_set = working_set(stats);
    MemoryUsage {
        timestamp: now,
        working_set_bytes: value(working_set),
        available_bytes: memory_limit(stats).map(|limit| UInt64Value {
            value: limit.saturating_sub(working_set),
        }),
        usage_bytes: value(stats.memory.usage.usage),
        rss_bytes: value(rss(stats)),
        page_faults: value(get(&["total_pgfault", "pgfault"])),
        major_page_faults: value(get(&["total_pgmajfault", "pgmajfault"])),
    }
}

/// The `op` ("Read" or "Write") entries of a blkio list summed per device (major, minor), in
/// device order.
pub fn per_device(
    entries: &[capsa::cgroups::stats::BlkioEntry],
    op: &str,
) -> std::collections::BTreeMap<(u64, u64), u64> {
    let mut out = std::collections::BTreeMap::new();
    for e in entries.iter().filter(|e| e.op == op) {
        *out.entry((e.major, e.minor)).or_insert(0) += e.value;
    }
    out
}

/// The name cadvisor gives a block device, `/dev/<DEVNAME>` from its sysfs uevent; its
/// numbers (`major:minor`) when sysfs does not know it.
pub fn device_name(major: u64, minor: u64) -> String {
    std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent"))
        .ok()
        .and_then(|u| {
            u.lines()
                .find_map(|l| l.strip_prefix("DEVNAME=").map(|n| format!("/dev/{n}")))
        })
        .unwrap_or_else(|| format!("{major}:{minor}"))
}

/// One interface's counters from `/proc/<pid>/net/dev`.
#[derive(Debug, Default, PartialEq)]
pub struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// The interfaces of a `/proc/<pid>/net/dev` (the process's network namespace), without lo.
pub fn interfaces(net_dev: &str) -> Vec<Interface> {
    net_dev
        .lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|n| n.parse().unwrap_or(0))
                .collect();
            let name = name.trim();
            (name != "lo" && f.len() >= 12).then(|| Interface {
                name: name.to_string(),
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_errors: f[2],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
                tx_dropped: f[11],
            })
        })
        .collect()
}

/// Interface counters in the CRI's terms; eth0 is the default interface.
pub fn network(net_dev: &str, now: i64) -> NetworkUsage {
    let interfaces: Vec<NetworkInterfaceUsage> = interfaces(net_dev)
        .into_iter()
        .map(|i| NetworkInterfaceUsage {
            name: i.name,
            rx_bytes: value(i.rx_bytes),
            rx_errors: value(i.rx_errors),
            tx_bytes: value(i.tx_bytes),
            tx_errors: value(i.tx_errors),
        })
        .collect();
    NetworkUsage {
        timestamp: now,
        default_interface: interfaces.iter().find(|i| i.name == "eth0").cloned(),
        interfaces,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_rate_needs_two_samples() {
        let s = CpuSamples::default();
        assert_eq!(s.rate("a", 1_000_000_000, 500), None);
        // 0.5 s of CPU over 1 s: half a core.
        assert_eq!(s.rate("a", 2_000_000_000, 500_000_500), Some(500_000_000));
        s.forget("a");
        assert_eq!(s.rate("a", 3_000_000_000, 600_000_000), None);
    }

    #[test]
    fn memory_working_set_leaves_out_inactive_files() {
        let mut st = capsa::cgroups::stats::Stats::default();
        st.memory.usage.usage = 10_000;
        st.memory.usage.limit = 50_000;
        st.memory.raw.insert("total_inactive_file".into(), 4_000);
        st.memory.raw.insert("total_rss".into(), 3_000);
        let m = memory(&st, 7);
        assert_eq!(m.working_set_bytes.unwrap().value, 6_000);
        assert_eq!(m.available_bytes.unwrap().value, 44_000);
        assert_eq!(m.rss_bytes.unwrap().value, 3_000);
        st.memory.usage.limit = !0xfff;
        assert!(memory(&st, 7).available_bytes.is_none());
    }

    #[test]
    fn net_dev_is_parsed_without_lo() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
eth0:    2000      20    1    0    0     0          0         0     3000      30    2    0    0     0       0          0\n";
        let n = network(text, 9);
        assert_eq!(n.interfaces.len(), 1);
        let eth0 = n.default_interface.unwrap();
        assert_eq!(eth0.rx_bytes.unwrap().value, 2000);
        assert_eq!(eth0.rx_errors.unwrap().value, 1);
        assert_eq!(eth0.tx_bytes.unwrap().value, 3000);
        assert_eq!(eth0.tx_errors.unwrap().value, 2);
    }
}
