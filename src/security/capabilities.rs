//! The five capability sets of the spec, applied in an order the kernel accepts.

use super::SecurityError;
use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};
use std::str::FromStr;

/// Parses "CAP_SYS_ADMIN" (or "SYS_ADMIN") into a capability.
pub fn parse_capability(name: &str) -> Result<Capability, SecurityError> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    Capability::from_str(&full).map_err(|_| SecurityError::UnknownCapability {
        name: name.to_string(),
    })
}

/// The capabilities this process holds (its effective set), sorted: what a privileged
/// container may be given (containerd's `WithAllCurrentCapabilities`). The kernel's whole
/// list may name some this process lacks (a runtime without CAP_SYS_RESOURCE), which no
/// container it starts can get.
pub fn current_capabilities() -> Vec<String> {
    let mut names: Vec<String> = caps::read(None, caps::CapSet::Effective)
        .map(|set| set.iter().map(|c| c.to_string()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// The resolved sets; `None` for a set the spec leaves out (it is then emptied, as runc does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapabilitySets {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub permitted: CapsHashSet,
    pub ambient: CapsHashSet,
}

fn convert(set: &Option<Capabilities>) -> Result<CapsHashSet, SecurityError> {
    set.iter()
        .flatten()
        .map(|c| parse_capability(&c.to_string()))
        .collect()
}

impl CapabilitySets {
    pub fn from_spec(c: &LinuxCapabilities) -> Result<Self, SecurityError> {
        Ok(CapabilitySets {
            bounding: convert(c.bounding())?,
            effective: convert(c.effective())?,
            inheritable: convert(c.inheritable())?,
            permitted: convert(c.permitted())?,
            ambient: convert(c.ambient())?,
        })
    }
}

/// Drops the bounding set to what the spec lists. Runs before the uid change, while
/// CAP_SETPCAP is still held.
pub fn drop_bounding(sets: &CapabilitySets) -> Result<(), SecurityError> {
    for cap in caps::all() {
        if sets.bounding.contains(&cap) {
            continue;
        }
        match caps::drop(None, CapSet::Bounding, cap) {
            Ok(()) => {}
            // Capabilities newer than the running kernel are simply absent.
            Err(_) if !caps::runtime::thread_all_supported().contains(&cap) => {}
            Err(source) => {
                return Err(SecurityError::Capability {
                    what: "dropping bounding",
                    cap: cap.to_string(),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Sets inheritable, effective, permitted, then ambient: capset requires effective to stay
/// within permitted at every step, and ambient within permitted and inheritable. The
/// inheritable set is set exactly to the spec's, never widened (CVE-2022-29162).
pub fn apply(sets: &CapabilitySets) -> Result<(), SecurityError> {
    let set = |which: CapSet, name: &'static str, value: &CapsHashSet| {
        caps::set(None, which, value)
            .map_err(|source| SecurityError::CapabilitySet { set: name, source })
    };
    set(CapSet::Inheritable, "inheritable", &sets.inheritable)?;
    let current_permitted = caps::read(None, CapSet::Permitted).unwrap_or_default();
    let effective: CapsHashSet = sets
        .effective
        .intersection(&current_permitted)
        .copied()
        .collect();
    set(CapSet::Effective, "effective", &effective)?;
    set(CapSet::Permitted, "permitted", &sets.permitted)?;
    set(CapSet::Effective, "effective", &sets.effective)?;
    caps::clear(None, CapSet::Ambient).map_err(|source| SecurityError::CapabilitySet {
        set: "ambient",
        source,
    })?;
    for cap in &sets.ambient {
        // The kernel only lets a capability into the ambient set when it is both permitted
        // and inheritable; runc's default spec lists ambient caps without inheritable ones,
        // and runc skips them. So do we, saying so in the debug log.
        if !sets.permitted.contains(cap) || !sets.inheritable.contains(cap) {
            log::debug!("ambient capability {cap} skipped: not in both permitted and inheritable");
            continue;
        }
        caps::raise(None, CapSet::Ambient, *cap).map_err(|source| SecurityError::Capability {
            what: "raising ambient",
            cap: cap.to_string(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_and_without_prefix() {
        assert_eq!(parse_capability("CAP_KILL").unwrap(), Capability::CAP_KILL);
        assert_eq!(
            parse_capability("net_admin").unwrap(),
            Capability::CAP_NET_ADMIN
        );
        assert!(parse_capability("CAP_FLY").is_err());
    }
}
