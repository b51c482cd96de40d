//! OCI `linux.resources` -> cgroup file writes, for v1 and for v2. Pure: the writes are
//! computed here and applied by the manager, so every conversion is unit-tested.

use super::CgroupError;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

/// One write: the controller whose directory holds the file (v1; on v2 all files share one
/// directory and `controller` only names the feature), the file, the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub controller: &'static str,
    pub file: String,
    pub value: String,
    /// The write to make instead where the kernel has no `file` (BFQ's weight files exist
    /// only with BFQ, the others only without it on recent kernels).
    pub fallback: Option<Box<Write>>,
}

impl Write {
    /// This write, or its fallback when `exists` says the file is missing.
    pub fn resolve(&self, exists: impl Fn(&str) -> bool) -> &Write {
        match &self.fallback {
            Some(f) if !exists(&self.file) => f,
            _ => self,
        }
    }
}

fn w(controller: &'static str, file: impl Into<String>, value: impl ToString) -> Write {
    Write {
        controller,
        file: file.into(),
        value: value.to_string(),
        fallback: None,
    }
}

/// `preferred`, or `fallback` where the kernel lacks the preferred file.
fn either(preferred: Write, fallback: Write) -> Write {
    Write {
        fallback: Some(Box::new(fallback)),
        ..preferred
    }
}

fn invalid(field: &str, value: impl ToString, reason: &'static str) -> CgroupError {
    CgroupError::InvalidValue {
        field: field.to_string(),
        value: value.to_string(),
        reason,
    }
}

/// cpu.shares (v1, 2..262144) -> cpu.weight (v2, 1..10000) on the quadratic curve crun and
/// runc use, which maps the default 1024 to the default 100.
pub fn shares_to_weight(shares: u64) -> u64 {
    match shares {
        0 => 0,
        1 | 2 => 1,
        s if s >= 262_144 => 10_000,
        s => {
            let l = (s as f64).log2();
            let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
            10f64.powf(exponent).ceil() as u64
        }
    }
}

/// OCI memory.swap is memory+swap; v2's memory.swap.max is swap alone.
pub fn v2_swap_max(limit: Option<i64>, swap: i64) -> Result<String, CgroupError> {
    match (swap, limit) {
        (-1, _) => Ok("max".into()),
        (s, Some(l)) if l > 0 && s >= l => Ok((s - l).to_string()),
        (s, Some(l)) if l > 0 => Err(invalid(
            "memory.swap",
            s,
            "must be at least memory.limit (it counts memory plus swap)",
        )),
        (s, _) => Err(invalid("memory.swap", s, "needs memory.limit on cgroup v2")),
    }
}

/// The v1 text of a rule ("c 1:3 rw"), or None for a rule that grants or denies nothing.
/// Access letters the kernel does not know are dropped, as runc drops them (the kernel
/// refuses the whole rule over one); no `access` means all three.
fn device_rule(r: &LinuxDeviceCgroup) -> Option<String> {
    let t = match r.typ() {
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => "c",
        Some(LinuxDeviceType::B) => "b",
        // A fifo is no device: the devices cgroup has no rule for it.
        Some(LinuxDeviceType::P) => return None,
        Some(LinuxDeviceType::A) | None => "a",
    };
    let num = |n: Option<i64>| {
        n.filter(|n| *n >= 0)
            .map_or("*".to_string(), |n| n.to_string())
    };
    let access: String = match r.access().as_deref().filter(|a| !a.is_empty()) {
        None => "rwm".into(),
        Some(a) => "rwm".chars().filter(|c| a.contains(*c)).collect(),
    };
    if access.is_empty() {
        return None;
    }
    Some(format!(
        "{t} {}:{} {access}",
        num(r.major()),
        num(r.minor())
    ))
}

/// Devices every container may use: the nodes capsa creates, /dev/console, /dev/ptmx and
/// the pty slaves (what runc allows by default).
pub fn default_device_rules() -> Vec<String> {
    let mut rules: Vec<String> = crate::spec::DEFAULT_DEVICES
        .iter()
        .map(|(_, major, minor)| format!("c {major}:{minor} rwm"))
        .collect();
    rules.extend(["c 5:1 rwm".into(), "c 5:2 rwm".into(), "c 136:* rwm".into()]);
    rules
}

/// The v1 devices cgroup writes: the spec's rules in order (deny-all first when it gives none),
/// then the default allow-list and the spec's own `linux.devices`.
pub fn v1_device_writes(rules: Option<&[LinuxDeviceCgroup]>, extra_allow: &[String]) -> Vec<Write> {
    let mut out = Vec::new();
    match rules.filter(|r| !r.is_empty()) {
        None => out.push(w("devices", "devices.deny", "a *:* rwm")),
        Some(rules) => {
            for r in rules {
                let file = if r.allow() {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                if let Some(rule) = device_rule(r) {
                    out.push(w("devices", file, rule));
                }
            }
        }
    }
    for rule in default_device_rules()
        .into_iter()
        .chain(extra_allow.iter().cloned())
    {
        out.push(w("devices", "devices.allow", rule));
    }
    out
}

fn check_cpu(r: &LinuxResources) -> Result<(), CgroupError> {
    if let Some(cpu) = r.cpu() {
        if let Some(q) = cpu.quota() {
            if q == 0 || q < -1 {
                return Err(invalid(
                    "cpu.quota",
                    q,
                    "must be positive (or -1 for no limit)",
                ));
            }
        }
        if let Some(p) = cpu.period() {
            if p == 0 {
                return Err(invalid("cpu.period", p, "must be positive"));
            }
        }
    }
    Ok(())
}

/// The v1 writes for `r`, in an order the kernel accepts (period before quota, memory limit
/// before memory+swap).
pub fn v1_writes(r: &LinuxResources) -> Result<Vec<Write>, CgroupError> {
    check_cpu(r)?;
    let mut out = Vec::new();
    if let Some(cpu) = r.cpu() {
        if let Some(s) = cpu.shares() {
            out.push(w("cpu", "cpu.shares", s));
        }
        if let Some(p) = cpu.period() {
            out.push(w("cpu", "cpu.cfs_period_us", p));
        }
        if let Some(q) = cpu.quota() {
            out.push(w("cpu", "cpu.cfs_quota_us", q));
        }
        if let Some(b) = cpu.burst() {
            out.push(w("cpu", "cpu.cfs_burst_us", b));
        }
        if let Some(p) = cpu.realtime_period() {
            out.push(w("cpu", "cpu.rt_period_us", p));
        }
        if let Some(rt) = cpu.realtime_runtime() {
            out.push(w("cpu", "cpu.rt_runtime_us", rt));
        }
        if let Some(i) = cpu.idle() {
            out.push(w("cpu", "cpu.idle", i));
        }
        if let Some(c) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
            out.push(w("cpuset", "cpuset.cpus", c));
        }
        if let Some(m) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
            out.push(w("cpuset", "cpuset.mems", m));
        }
    }
    if let Some(mem) = r.memory() {
        if let Some(l) = mem.limit() {
            out.push(w("memory", "memory.limit_in_bytes", l));
        }
        if let Some(s) = mem.swap() {
            out.push(w("memory", "memory.memsw.limit_in_bytes", s));
        }
        if let Some(res) = mem.reservation() {
            out.push(w("memory", "memory.soft_limit_in_bytes", res));
        }
        if let Some(sw) = mem.swappiness() {
            if sw > 100 {
                return Err(invalid(
                    "memory.swappiness",
                    sw,
                    "must be between 0 and 100",
                ));
            }
            out.push(w("memory", "memory.swappiness", sw));
        }
        if mem.disable_oom_killer() == Some(true) {
            out.push(w("memory", "memory.oom_control", 1));
        }
    }
    if let Some(p) = r.pids() {
        let v = if p.limit() > 0 {
            p.limit().to_string()
        } else {
            "max".into()
        };
        out.push(w("pids", "pids.max", v));
    }
    if let Some(b) = r.block_io() {
        // BFQ's files where the kernel has them, as runc chooses (CFQ's blkio.weight is
        // gone since 5.0).
        if let Some(wt) = b.weight() {
            out.push(either(
                w("blkio", "blkio.bfq.weight", wt),
                w("blkio", "blkio.weight", wt),
            ));
        }
        if let Some(lw) = b.leaf_weight() {
            out.push(w("blkio", "blkio.leaf_weight", lw));
        }
        for d in b.weight_device().iter().flatten() {
            if let Some(wt) = d.weight() {
                let value = format!("{}:{} {wt}", d.major(), d.minor());
                out.push(either(
                    w("blkio", "blkio.bfq.weight_device", &value),
                    w("blkio", "blkio.weight_device", value),
                ));
            }
        }
        let throttles = [
            (
                "blkio.throttle.read_bps_device",
                b.throttle_read_bps_device(),
            ),
            (
                "blkio.throttle.write_bps_device",
                b.throttle_write_bps_device(),
            ),
            (
                "blkio.throttle.read_iops_device",
                b.throttle_read_iops_device(),
            ),
            (
                "blkio.throttle.write_iops_device",
                b.throttle_write_iops_device(),
            ),
        ];
        for (file, list) in throttles {
            for d in list.iter().flatten() {
                out.push(w(
                    "blkio",
                    file,
                    format!("{}:{} {}", d.major(), d.minor(), d.rate()),
                ));
            }
        }
    }
    for h in r.hugepage_limits().iter().flatten() {
        out.push(w(
            "hugetlb",
            format!("hugetlb.{}.limit_in_bytes", h.page_size()),
            h.limit(),
        ));
    }
    if let Some(n) = r.network() {
        if let Some(id) = n.class_id() {
            out.push(w("net_cls", "net_cls.classid", id));
        }
        for p in n.priorities().iter().flatten() {
            out.push(w(
                "net_prio",
                "net_prio.ifpriomap",
                format!("{} {}", p.name(), p.priority()),
            ));
        }
    }
    if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        return Err(invalid("unified", "...", "unified keys need cgroup v2"));
    }
    Ok(out)
}

/// cpu.max for a quota and a period, either of which may be missing: v2 keeps both in one
/// file, so the missing one is kept from `now` (the file's current "$QUOTA $PERIOD"), as
/// runc keeps it from the container's recorded config. A quota of -1 is "max".
pub fn v2_cpu_max(quota: Option<i64>, period: Option<u64>, now: &str) -> String {
    let mut current = now.split_whitespace();
    let (quota_now, period_now) = (current.next(), current.next());
    let quota = match quota {
        Some(q) if q > 0 => q.to_string(),
        Some(_) => "max".into(),
        None => quota_now.unwrap_or("max").to_string(),
    };
    let period = period.map_or_else(
        || period_now.unwrap_or("100000").to_string(),
        |p| p.to_string(),
    );
    format!("{quota} {period}")
}

/// The v2 writes for `r`; `cpu_max_now` is the cgroup's cpu.max ("max 100000" when new).
pub fn v2_writes(r: &LinuxResources, cpu_max_now: &str) -> Result<Vec<Write>, CgroupError> {
    check_cpu(r)?;
    let mut out = Vec::new();
    if let Some(cpu) = r.cpu() {
        if let Some(s) = cpu.shares() {
            out.push(w("cpu", "cpu.weight", shares_to_weight(s)));
        }
        if cpu.quota().is_some() || cpu.period().is_some() {
            out.push(w(
                "cpu",
                "cpu.max",
                v2_cpu_max(cpu.quota(), cpu.period(), cpu_max_now),
            ));
        }
        if let Some(b) = cpu.burst() {
            out.push(w("cpu", "cpu.max.burst", b));
        }
        if let Some(i) = cpu.idle() {
            out.push(w("cpu", "cpu.idle", i));
        }
        if cpu.realtime_runtime().is_some() || cpu.realtime_period().is_some() {
            return Err(invalid(
                "cpu.realtimeRuntime",
                "...",
                "realtime scheduling limits need cgroup v1",
            ));
        }
        if let Some(c) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
            out.push(w("cpuset", "cpuset.cpus", c));
        }
        if let Some(m) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
            out.push(w("cpuset", "cpuset.mems", m));
        }
    }
    if let Some(mem) = r.memory() {
        if let Some(l) = mem.limit() {
            out.push(w(
                "memory",
                "memory.max",
                if l < 0 { "max".into() } else { l.to_string() },
            ));
        }
        if let Some(s) = mem.swap() {
            out.push(w("memory", "memory.swap.max", v2_swap_max(mem.limit(), s)?));
        }
        if let Some(res) = mem.reservation() {
            out.push(w(
                "memory",
                "memory.low",
                if res < 0 {
                    "max".into()
                } else {
                    res.to_string()
                },
            ));
        }
        if mem.swappiness().is_some_and(|s| s != 0 && s != 60) {
            return Err(invalid(
                "memory.swappiness",
                mem.swappiness().unwrap_or(0),
                "not available on cgroup v2",
            ));
        }
        if mem.disable_oom_killer() == Some(true) {
            return Err(invalid(
                "memory.disableOOMKiller",
                true,
                "not available on cgroup v2",
            ));
        }
    }
    if let Some(p) = r.pids() {
        let v = if p.limit() > 0 {
            p.limit().to_string()
        } else {
            "max".into()
        };
        out.push(w("pids", "pids.max", v));
    }
    if let Some(b) = r.block_io() {
        // io.bfq.weight takes blkio's 1..1000 as it is; io.weight, its own scale.
        if let Some(wt) = b.weight() {
            out.push(either(
                w("io", "io.bfq.weight", format!("default {wt}")),
                w(
                    "io",
                    "io.weight",
                    format!("default {}", blkio_to_io_weight(wt)),
                ),
            ));
        }
        for d in b.weight_device().iter().flatten() {
            if let Some(wt) = d.weight() {
                let dev = format!("{}:{}", d.major(), d.minor());
                out.push(either(
                    w("io", "io.bfq.weight", format!("{dev} {wt}")),
                    w(
                        "io",
                        "io.weight",
                        format!("{dev} {}", blkio_to_io_weight(wt)),
                    ),
                ));
            }
        }
        let throttles = [
            ("rbps", b.throttle_read_bps_device()),
            ("wbps", b.throttle_write_bps_device()),
            ("riops", b.throttle_read_iops_device()),
            ("wiops", b.throttle_write_iops_device()),
        ];
        for (key, list) in throttles {
            for d in list.iter().flatten() {
                let rate = if d.rate() == 0 {
                    "max".to_string()
                } else {
                    d.rate().to_string()
                };
                out.push(w(
                    "io",
                    "io.max",
                    format!("{}:{} {key}={rate}", d.major(), d.minor()),
                ));
            }
        }
    }
    for h in r.hugepage_limits().iter().flatten() {
        out.push(w(
            "hugetlb",
            format!("hugetlb.{}.max", h.page_size()),
            h.limit(),
        ));
    }
    let mut unified: Vec<_> = r.unified().iter().flatten().collect();
    unified.sort();
    for (k, v) in unified {
        if k.contains('/') || k.starts_with('.') {
            return Err(invalid("unified", k, "not a cgroup file name"));
        }
        let controller = match k.split('.').next().unwrap_or("") {
            "cpu" => "cpu",
            "memory" => "memory",
            "pids" => "pids",
            "io" => "io",
            "cpuset" => "cpuset",
            "hugetlb" => "hugetlb",
            _ => "cgroup",
        };
        out.push(w(controller, k.clone(), v));
    }
    Ok(out)
}

/// blkio.weight (10..1000) -> io.weight (1..10000), the linear map runc uses.
pub fn blkio_to_io_weight(w: u16) -> u64 {
    if w == 0 {
        return 0;
    }
    1 + (u64::from(w).saturating_sub(10)) * 9999 / 990
}

/// Whether `r` asks for nothing (what a rootless spec has).
pub fn is_empty(r: &LinuxResources) -> bool {
    serde_json::to_value(r).is_ok_and(|v| v.as_object().is_none_or(|o| o.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(json: &str) -> LinuxResources {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn shares_map_onto_the_weight_curve() {
        assert_eq!(shares_to_weight(1024), 100);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(512), 59);
        assert!(shares_to_weight(2048) > 100 && shares_to_weight(2048) < 300);
    }

    #[test]
    fn swap_is_memory_plus_swap_in_oci_and_swap_alone_on_v2() {
        assert_eq!(
            v2_swap_max(Some(64 << 20), 128 << 20).unwrap(),
            (64 << 20).to_string()
        );
        assert_eq!(v2_swap_max(Some(64 << 20), -1).unwrap(), "max");
        assert!(v2_swap_max(Some(64 << 20), 32 << 20).is_err());
        assert!(v2_swap_max(None, 1 << 20).is_err());
    }

    #[test]
    fn v1_writes_period_before_quota_and_limit_before_swap() {
        let r = res(r#"{"cpu":{"quota":20000,"period":100000,"shares":512},
                        "memory":{"limit":67108864,"swap":134217728},"pids":{"limit":5}}"#);
        let files: Vec<(String, String)> = v1_writes(&r)
            .unwrap()
            .into_iter()
            .map(|w| (w.file, w.value))
            .collect();
        let pos = |f: &str| files.iter().position(|(x, _)| x == f).unwrap();
        assert!(pos("cpu.cfs_period_us") < pos("cpu.cfs_quota_us"));
        assert!(pos("memory.limit_in_bytes") < pos("memory.memsw.limit_in_bytes"));
        assert!(files.contains(&("pids.max".into(), "5".into())));
        assert!(files.contains(&("cpu.shares".into(), "512".into())));
    }

    #[test]
    fn v2_writes_use_v2_files() {
        let r = res(r#"{"cpu":{"quota":20000,"period":100000,"shares":1024},
                        "memory":{"limit":67108864,"swap":134217728,"reservation":1048576},
                        "pids":{"limit":0},
                        "blockIO":{"weight":500,"throttleWriteBpsDevice":[{"major":254,"minor":0,"rate":2097152}]},
                        "hugepageLimits":[{"pageSize":"2MB","limit":0}],
                        "unified":{"memory.high":"50000000"}}"#);
        let writes = v2_writes(&r, "max 100000").unwrap();
        // Without BFQ's files: what the fallbacks write.
        let files: Vec<(String, String)> = writes
            .iter()
            .map(|w| w.resolve(|f| !f.contains("bfq")))
            .map(|w| (w.file.clone(), w.value.clone()))
            .collect();
        assert!(writes
            .iter()
            .any(|w| w.file == "io.bfq.weight" && w.value == "default 500"));
        for expected in [
            ("cpu.weight", "100"),
            ("cpu.max", "20000 100000"),
            ("memory.max", "67108864"),
            ("memory.swap.max", "67108864"),
            ("memory.low", "1048576"),
            ("pids.max", "max"),
            ("io.weight", "default 4950"),
            ("io.max", "254:0 wbps=2097152"),
            ("hugetlb.2MB.max", "0"),
            ("memory.high", "50000000"),
        ] {
            assert!(
                files.contains(&(expected.0.into(), expected.1.into())),
                "{expected:?} not in {files:?}"
            );
        }
    }

    #[test]
    fn a_v2_quota_or_period_alone_keeps_the_other() {
        assert_eq!(
            v2_cpu_max(None, Some(50_000), "20000 100000"),
            "20000 50000"
        );
        assert_eq!(v2_cpu_max(Some(30_000), None, "20000 50000"), "30000 50000");
        assert_eq!(v2_cpu_max(Some(-1), None, "20000 50000"), "max 50000");
        assert_eq!(
            v2_cpu_max(Some(10_000), Some(20_000), "max 100000"),
            "10000 20000"
        );
        assert_eq!(v2_cpu_max(None, Some(50_000), ""), "max 50000");
    }

    #[test]
    fn bad_values_are_refused_before_any_write() {
        assert!(v1_writes(&res(r#"{"cpu":{"quota":-5}}"#)).is_err());
        assert!(v2_writes(&res(r#"{"cpu":{"quota":0}}"#), "max 100000").is_err());
        assert!(v1_writes(&res(r#"{"memory":{"swappiness":101}}"#)).is_err());
        assert!(v1_writes(&res(r#"{"unified":{"memory.high":"1"}}"#)).is_err());
        assert!(v2_writes(&res(r#"{"unified":{"../x":"1"}}"#), "max 100000").is_err());
        assert_eq!(
            v1_writes(&res(r#"{"cpu":{"quota":-1}}"#)).unwrap()[0].value,
            "-1"
        );
    }

    #[test]
    fn device_rules_default_to_deny_all_plus_the_allow_list() {
        let writes = v1_device_writes(None, &["b 8:0 r".into()]);
        assert_eq!(writes[0].file, "devices.deny");
        assert_eq!(writes[0].value, "a *:* rwm");
        assert!(writes
            .iter()
            .any(|w| w.file == "devices.allow" && w.value == "c 1:3 rwm"));
        assert!(writes.iter().any(|w| w.value == "c 136:* rwm"));
        assert_eq!(writes.last().unwrap().value, "b 8:0 r");
        let rule: LinuxDeviceCgroup =
            serde_json::from_str(r#"{"allow":true,"type":"c","major":10,"access":"rw"}"#).unwrap();
        let writes = v1_device_writes(Some(&[rule]), &[]);
        assert_eq!(writes[0].value, "c 10:* rw");
        assert_eq!(writes[0].file, "devices.allow");
    }

    #[test]
    fn unknown_access_letters_are_dropped_and_fifos_get_no_rule() {
        let rules: Vec<LinuxDeviceCgroup> = serde_json::from_str(
            r#"[{"allow":true,"type":"c","major":1,"minor":11,"access":"rwa"},
                {"allow":true,"type":"c","major":1,"minor":12,"access":"x"},
                {"allow":true,"type":"p","access":"rwm"},
                {"allow":false,"type":"b","major":8,"access":"mr"}]"#,
        )
        .unwrap();
        let writes = v1_device_writes(Some(&rules), &[]);
        assert_eq!(writes[0].value, "c 1:11 rw");
        assert_eq!(writes[1].value, "b 8:* rm");
        assert_eq!(writes[1].file, "devices.deny");
        assert_eq!(writes[2].value, "c 1:3 rwm", "then the defaults");
    }
}
