//! LinuxContainerResources as OCI resources (containerd's `WithResources`: a zero or empty
//! value leaves the setting alone) and the process's oom_score_adj.

use super::SpecError;
use k8s_cri::v1::LinuxContainerResources;
use serde_json::{json, Map, Value};

pub(super) struct Resources {
    pub linux: Value,
    pub oom_score_adj: Option<i32>,
}

fn field(name: &str) -> String {
    format!("config.linux.resources.{name}")
}

fn non_negative(name: &str, value: i64) -> Result<Option<u64>, SpecError> {
    match value {
        0 => Ok(None),
        v if v > 0 => Ok(Some(v as u64)),
        v => Err(SpecError::Invalid {
            field: field(name),
            value: v.to_string(),
            reason: "must not be negative",
        }),
    }
}

pub(super) fn build(r: Option<&LinuxContainerResources>) -> Result<Resources, SpecError> {
    let Some(r) = r else {
        return Ok(Resources {
            linux: json!({}),
            oom_score_adj: None,
        });
    };
    let mut cpu = Map::new();
    if let Some(p) = non_negative("cpu_period", r.cpu_period)? {
        cpu.insert("period".into(), json!(p));
    }
    // A negative quota is the kernel's "no limit" (-1), passed on as containerd does.
    if r.cpu_quota != 0 {
        cpu.insert("quota".into(), json!(r.cpu_quota));
    }
    if let Some(s) = non_negative("cpu_shares", r.cpu_shares)? {
        cpu.insert("shares".into(), json!(s));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(r.cpuset_cpus));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), json!(r.cpuset_mems));
    }
    let mut memory = Map::new();
    if r.memory_limit_in_bytes != 0 {
        memory.insert("limit".into(), json!(r.memory_limit_in_bytes));
    }
    if r.memory_swap_limit_in_bytes != 0 {
        memory.insert("swap".into(), json!(r.memory_swap_limit_in_bytes));
    }
    let mut linux = json!({});
    if !cpu.is_empty() {
        linux["cpu"] = Value::Object(cpu);
    }
    if !memory.is_empty() {
        linux["memory"] = Value::Object(memory);
    }
    if !r.hugepage_limits.is_empty() {
        let limits: Vec<Value> = r
            .hugepage_limits
            .iter()
            .map(|h| json!({"pageSize": h.page_size, "limit": h.limit}))
            .collect();
        linux["hugepageLimits"] = json!(limits);
    }
    if !r.unified.is_empty() {
        linux["unified"] = json!(r.unified);
    }
    let adj = i32::try_from(r.oom_score_adj)
        .ok()
        .filter(|a| (-1000..=1000).contains(a))
        .ok_or_else(|| SpecError::Invalid {
            field: field("oom_score_adj"),
            value: r.oom_score_adj.to_string(),
            reason: "must be within -1000..=1000",
        })?;
    Ok(Resources {
        linux,
        oom_score_adj: Some(adj),
    })
}
