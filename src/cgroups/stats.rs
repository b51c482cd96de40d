//! Resource usage read from the cgroup files, in the shape `runc events --stats` prints.

use super::v1;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// CPU time used.
#[derive(Debug, Default, Serialize)]
pub struct CpuUsage {
    /// Nanoseconds.
    pub total: u64,
    /// Per CPU, nanoseconds.
    pub percpu: Vec<u64>,
    /// In kernel mode, nanoseconds.
    pub kernel: u64,
    /// In user mode, nanoseconds.
    pub user: u64,
}

/// CFS bandwidth throttling counts.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Throttling {
    /// Enforcement periods elapsed.
    pub periods: u64,
    /// Periods in which the group was throttled.
    pub throttled_periods: u64,
    /// Nanoseconds.
    pub throttled_time: u64,
}

/// CPU statistics.
#[derive(Debug, Default, Serialize)]
pub struct Cpu {
    /// Time used.
    pub usage: CpuUsage,
    /// CFS bandwidth throttling.
    pub throttling: Throttling,
}

/// One memory counter with its limit, peak and failures.
#[derive(Debug, Default, Serialize)]
pub struct MemoryEntry {
    /// The limit, bytes (u64::MAX when unlimited).
    pub limit: u64,
    /// Current usage, bytes.
    pub usage: u64,
    /// Peak usage, bytes.
    pub max: u64,
    /// How often the limit was hit.
    pub failcnt: u64,
}

/// Memory statistics.
#[derive(Debug, Default, Serialize)]
pub struct Memory {
    /// Page cache, bytes.
    pub cache: u64,
    /// Memory.
    pub usage: MemoryEntry,
    /// Memory plus swap.
    pub swap: MemoryEntry,
    /// Every counter of memory.stat, by name.
    pub raw: BTreeMap<String, u64>,
}

/// Task counts.
#[derive(Debug, Default, Serialize)]
pub struct Pids {
    /// Tasks in the group.
    pub current: u64,
    /// pids.max (0 when unlimited).
    pub limit: u64,
}

/// One block I/O counter of one device.
#[derive(Debug, Default, Serialize)]
pub struct BlkioEntry {
    /// Device major number.
    pub major: u64,
    /// Device minor number.
    pub minor: u64,
    /// The operation (Read, Write, ...).
    pub op: String,
    /// The count.
    pub value: u64,
}

/// Block I/O statistics.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Blkio {
    /// Bytes moved, per device and operation.
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    /// Operations done, per device and operation.
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

/// A cgroup's statistics, in the shape of runc's `events --stats`.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    /// CPU.
    pub cpu: Cpu,
    /// Memory.
    pub memory: Memory,
    /// Tasks.
    pub pids: Pids,
    /// Block I/O.
    pub blkio: Blkio,
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A single number ("max" and unreadable files count as 0).
fn number(path: &Path) -> u64 {
    read(path).trim().parse().unwrap_or(0)
}

/// The value of `key` in a "key value" file (cpu.stat, memory.events, oom_control...).
pub(crate) fn keyed(path: &Path, key: &str) -> u64 {
    read(path)
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0)
}

fn all_keyed(path: &Path) -> BTreeMap<String, u64> {
    read(path)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// USER_HZ ticks (cpuacct.stat) to nanoseconds.
fn ticks_to_ns(ticks: u64) -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1_000_000_000 / hz
}

/// "8:0 Read 4096" lines of blkio.throttle.io_service_bytes_recursive.
fn blkio_v1(path: &Path) -> Vec<BlkioEntry> {
    read(path)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, op, value) = (f.next()?, f.next()?, f.next()?);
            let (major, minor) = dev.split_once(':')?;
            Some(BlkioEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                op: op.to_string(),
                value: value.parse().ok()?,
            })
        })
        .collect()
}

pub(crate) fn v1(m: &v1::Manager) -> Stats {
    let mut s = Stats::default();
    if let Some(d) = m.controller_dir("cpuacct") {
        s.cpu.usage.total = number(&d.join("cpuacct.usage"));
        s.cpu.usage.percpu = read(&d.join("cpuacct.usage_percpu"))
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        s.cpu.usage.user = ticks_to_ns(keyed(&d.join("cpuacct.stat"), "user"));
        s.cpu.usage.kernel = ticks_to_ns(keyed(&d.join("cpuacct.stat"), "system"));
    }
    if let Some(d) = m.controller_dir("cpu") {
        let f = d.join("cpu.stat");
        s.cpu.throttling = Throttling {
            periods: keyed(&f, "nr_periods"),
            throttled_periods: keyed(&f, "nr_throttled"),
            throttled_time: keyed(&f, "throttled_time"),
        };
    }
    if let Some(d) = m.controller_dir("memory") {
        let entry = |prefix: &str| MemoryEntry {
            limit: number(&d.join(format!("{prefix}limit_in_bytes"))),
            usage: number(&d.join(format!("{prefix}usage_in_bytes"))),
            max: number(&d.join(format!("{prefix}max_usage_in_bytes"))),
            failcnt: number(&d.join(format!("{prefix}failcnt"))),
        };
        s.memory.usage = entry("memory.");
        s.memory.swap = entry("memory.memsw.");
        s.memory.raw = all_keyed(&d.join("memory.stat"));
        s.memory.cache = s.memory.raw.get("cache").copied().unwrap_or(0);
    }
    if let Some(d) = m.controller_dir("pids") {
        s.pids.current = number(&d.join("pids.current"));
        s.pids.limit = number(&d.join("pids.max"));
    }
    if let Some(d) = m.controller_dir("blkio") {
        s.blkio.io_service_bytes_recursive =
            blkio_v1(&d.join("blkio.throttle.io_service_bytes_recursive"));
        s.blkio.io_serviced_recursive = blkio_v1(&d.join("blkio.throttle.io_serviced_recursive"));
    }
    s
}

/// "254:0 rbytes=1 wbytes=2 rios=3 wios=4 ..." lines of io.stat.
fn io_v2(path: &Path) -> Blkio {
    let mut b = Blkio::default();
    for line in read(path).lines() {
        let mut f = line.split_whitespace();
        let Some((major, minor)) = f.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let value = v.parse().unwrap_or(0);
            let (list, op) = match k {
                "rbytes" => (&mut b.io_service_bytes_recursive, "Read"),
                "wbytes" => (&mut b.io_service_bytes_recursive, "Write"),
                "rios" => (&mut b.io_serviced_recursive, "Read"),
                "wios" => (&mut b.io_serviced_recursive, "Write"),
                _ => continue,
            };
            list.push(BlkioEntry {
                major,
                minor,
                op: op.into(),
                value,
            });
        }
    }
    b
}

pub(crate) fn v2(dir: &Path) -> Stats {
    let mut s = Stats::default();
    let cpu = dir.join("cpu.stat");
    s.cpu.usage.total = keyed(&cpu, "usage_usec") * 1000;
    s.cpu.usage.user = keyed(&cpu, "user_usec") * 1000;
    s.cpu.usage.kernel = keyed(&cpu, "system_usec") * 1000;
    s.cpu.throttling = Throttling {
        periods: keyed(&cpu, "nr_periods"),
        throttled_periods: keyed(&cpu, "nr_throttled"),
        throttled_time: keyed(&cpu, "throttled_usec") * 1000,
    };
    s.memory.usage = MemoryEntry {
        limit: number(&dir.join("memory.max")),
        usage: number(&dir.join("memory.current")),
        max: number(&dir.join("memory.peak")),
        failcnt: keyed(&dir.join("memory.events"), "max"),
    };
    s.memory.swap = MemoryEntry {
        limit: number(&dir.join("memory.swap.max")),
        usage: number(&dir.join("memory.swap.current")),
        max: 0,
        failcnt: keyed(&dir.join("memory.swap.events"), "max"),
    };
    s.memory.raw = all_keyed(&dir.join("memory.stat"));
    s.memory.cache = s.memory.raw.get("file").copied().unwrap_or(0);
    s.pids.current = number(&dir.join("pids.current"));
    s.pids.limit = number(&dir.join("pids.max"));
    s.blkio = io_v2(&dir.join("io.stat"));
    s
}
