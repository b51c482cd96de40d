//! `capsa update`: change a running container's resource limits.

use anyhow::Context;
use oci_spec::runtime::LinuxResources;
use serde_json::{json, Map, Value};
use std::io::Read;

/// Update a container's resource limits (runc's flags, or --resources with LinuxResources JSON)
#[derive(Debug, clap::Args)]
pub struct Args {
    /// LinuxResources JSON from a file, or "-" for stdin
    #[arg(short = 'r', long, value_name = "FILE")]
    pub resources: Option<String>,
    /// Block IO weight (10-1000)
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<u16>,
    /// CPU CFS period in microseconds
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<u64>,
    /// CPU CFS quota in microseconds (-1 for none)
    #[arg(long = "cpu-quota", allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPU shares (relative weight)
    #[arg(long = "cpu-share")]
    pub cpu_share: Option<u64>,
    /// CPU realtime period in microseconds
    #[arg(long = "cpu-rt-period")]
    pub cpu_rt_period: Option<u64>,
    /// CPU realtime runtime in microseconds
    #[arg(long = "cpu-rt-runtime")]
    pub cpu_rt_runtime: Option<i64>,
    /// CPUs allowed (0-3, 0,1)
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes allowed (0-3, 0,1)
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    /// Memory limit (bytes, or with a k/m/g suffix; -1 for none)
    #[arg(long, allow_hyphen_values = true, value_parser = parse_bytes)]
    pub memory: Option<i64>,
    /// Memory soft limit (bytes or with a suffix)
    #[arg(long = "memory-reservation", allow_hyphen_values = true, value_parser = parse_bytes)]
    pub memory_reservation: Option<i64>,
    /// Memory plus swap limit (bytes or with a suffix; -1 for unlimited swap)
    #[arg(long = "memory-swap", allow_hyphen_values = true, value_parser = parse_bytes)]
    pub memory_swap: Option<i64>,
    /// Maximum number of pids (0 or less for none)
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// The container's id
    pub id: String,
}

/// "64m" -> 67108864; "-1" stays -1. Suffixes are binary (k = 1024), as runc/docker read them.
pub fn parse_bytes(s: &str) -> Result<i64, String> {
    if s == "-1" {
        return Ok(-1);
    }
    let lower = s.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, mult) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1i64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        Some('t') => (&lower[..lower.len() - 1], 1 << 40),
        _ => (lower, 1),
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    if n < 0.0 {
        return Err(format!("invalid size {s:?}"));
    }
    Ok((n * mult as f64) as i64)
}

fn set(obj: &mut Map<String, Value>, section: &str, key: &str, value: Value) {
    let entry = obj.entry(section.to_string()).or_insert_with(|| json!({}));
    if let Some(m) = entry.as_object_mut() {
        m.insert(key.to_string(), value);
    }
}

fn resources(args: &Args) -> anyhow::Result<LinuxResources> {
    let mut obj = match &args.resources {
        Some(path) => {
            let mut text = String::new();
            if path == "-" {
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading resources from stdin")?;
            } else {
                text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
            }
            match serde_json::from_str::<Value>(&text).context("--resources: not JSON")? {
                Value::Object(m) => m,
                _ => anyhow::bail!("--resources: expected a LinuxResources JSON object"),
            }
        }
        None => Map::new(),
    };
    let o = &mut obj;
    if let Some(v) = args.blkio_weight {
        set(o, "blockIO", "weight", json!(v));
    }
    if let Some(v) = args.cpu_period {
        set(o, "cpu", "period", json!(v));
    }
    if let Some(v) = args.cpu_quota {
        set(o, "cpu", "quota", json!(v));
    }
    if let Some(v) = args.cpu_share {
        set(o, "cpu", "shares", json!(v));
    }
    if let Some(v) = args.cpu_rt_period {
        set(o, "cpu", "realtimePeriod", json!(v));
    }
    if let Some(v) = args.cpu_rt_runtime {
        set(o, "cpu", "realtimeRuntime", json!(v));
    }
    if let Some(v) = &args.cpuset_cpus {
        set(o, "cpu", "cpus", json!(v));
    }
    if let Some(v) = &args.cpuset_mems {
        set(o, "cpu", "mems", json!(v));
    }
    if let Some(v) = args.memory {
        set(o, "memory", "limit", json!(v));
    }
    if let Some(v) = args.memory_reservation {
        set(o, "memory", "reservation", json!(v));
    }
    if let Some(v) = args.memory_swap {
        set(o, "memory", "swap", json!(v));
    }
    if let Some(v) = args.pids_limit {
        set(o, "pids", "limit", json!(v));
    }
    serde_path_to_error::deserialize(Value::Object(obj))
        .map_err(|e| anyhow::anyhow!("resources: {}: {}", e.path(), e.inner()))
}

pub fn run(runtime: &capsa::Runtime, args: &Args) -> anyhow::Result<i32> {
    let r = resources(args)?;
    runtime.load(&args.id)?.update(&r)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_binary_suffixes() {
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1G").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("512kb").unwrap(), 512 << 10);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert_eq!(parse_bytes("-1").unwrap(), -1);
        assert!(parse_bytes("lots").is_err());
    }
}
