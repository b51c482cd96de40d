//! Which entry of an image index this host runs, by containerd's platform matcher rules:
//! the OS must be linux, the architecture the host's (after normalisation: `x86_64` is
//! `amd64`, `aarch64` is `arm64`), and the variant one the host can run, the closest first
//! (an arm v7 host runs v7, then v6, then v5; an arm64 `""` is `v8`; an x86-64-v3 host runs
//! amd64 v3, v2, v1 — unset is v1).

use serde::Deserialize;

/// A platform as an index entry states it (`os`, `architecture`, `variant`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    /// This host: linux, its architecture, and for amd64 the x86-64 level the CPU supports.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "loongarch64" => "loong64",
            a => a,
        };
        let variant = match architecture {
            "amd64" => Some(format!("v{}", amd64_level())),
            "arm64" => Some("v8".to_string()),
            "arm" => Some("v7".to_string()),
            _ => None,
        };
        Platform {
            os: "linux".to_string(),
            architecture: architecture.to_string(),
            variant,
        }
    }

    /// `os/architecture[/variant]`, for messages.
    pub fn display(&self) -> String {
        match &self.variant {
            Some(v) if !v.is_empty() => format!("{}/{}/{v}", self.os, self.architecture),
            _ => format!("{}/{}", self.os, self.architecture),
        }
    }
}

/// The index of the entry `host` should run among `entries` (`None`: no platform, an entry
/// without one only if nothing else matches), or `None` if none fits.
pub fn choose(entries: &[Option<Platform>], host: &Platform) -> Option<usize> {
    let host = normalize(host);
    let mut best: Option<(usize, usize)> = None; // (rank, index), lower rank is better
    for (i, p) in entries.iter().enumerate() {
        let rank = match p {
            Some(p) => match rank(&normalize(p), &host) {
                Some(r) => r,
                None => continue,
            },
            None => usize::MAX,
        };
        if best.is_none_or(|(r, _)| rank < r) {
            best = Some((rank, i));
        }
    }
    best.map(|(_, i)| i)
}

/// How far `p`'s variant is from the host's (0: the same), or `None` if the host cannot
/// run `p`.
fn rank(p: &Platform, host: &Platform) -> Option<usize> {
    if p.os != host.os || p.architecture != host.architecture {
        return None;
    }
    let level =
        |v: &Option<String>| -> Option<u32> { v.as_deref()?.strip_prefix('v')?.parse().ok() };
    match p.architecture.as_str() {
        // Numbered variants the host runs down to the lowest (containerd's arm rule, and
        // its amd64 level rule).
        "arm" | "amd64" => {
            let (have, want) = (level(&host.variant)?, level(&p.variant)?);
            (want <= have).then(|| (have - want) as usize)
        }
        _ => (p.variant == host.variant).then_some(0),
    }
}

/// containerd's normalisation of OS, architecture and default variants.
fn normalize(p: &Platform) -> Platform {
    let os = p.os.to_ascii_lowercase();
    let (architecture, default_variant) = match p.architecture.to_ascii_lowercase().as_str() {
        "x86_64" | "x86-64" | "amd64" => ("amd64".to_string(), Some("v1")),
        "aarch64" | "arm64" => ("arm64".to_string(), Some("v8")),
        "armhf" => ("arm".to_string(), Some("v7")),
        "armel" => ("arm".to_string(), Some("v6")),
        "arm" => ("arm".to_string(), Some("v7")),
        "i386" | "i686" | "x86" => ("386".to_string(), None),
        a => (a.to_string(), None),
    };
    let variant = match p.variant.as_deref().map(str::to_ascii_lowercase) {
        None => default_variant.map(str::to_string),
        Some(v) if v.is_empty() => default_variant.map(str::to_string),
        Some(v) if architecture == "arm" && v == "8" => Some("v8".to_string()),
        Some(v) if architecture == "arm64" && (v == "8" || v == "v8.0") => Some("v8".to_string()),
        Some(v) => Some(v),
    };
    Platform {
        os,
        architecture,
        variant,
    }
}

/// The x86-64 micro-architecture level (1 to 4) this CPU supports, as containerd's
/// platforms package derives amd64 variants.
fn amd64_level() -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let v2 = has!("cmpxchg16b")
            && has!("popcnt")
            && has!("sse3")
            && has!("sse4.1")
            && has!("sse4.2")
            && has!("ssse3");
        let v3 = v2
            && has!("avx")
            && has!("avx2")
            && has!("bmi1")
            && has!("bmi2")
            && has!("f16c")
            && has!("fma")
            && has!("lzcnt")
            && has!("movbe")
            && has!("xsave");
        let v4 = v3
            && has!("avx512f")
            && has!("avx512bw")
            && has!("avx512cd")
            && has!("avx512dq")
            && has!("avx512vl");
        if v4 {
            4
        } else if v3 {
            3
        } else if v2 {
            2
        } else {
            1
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(os: &str, arch: &str, variant: Option<&str>) -> Option<Platform> {
        Some(Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.map(Into::into),
        })
    }

    fn host(arch: &str, variant: &str) -> Platform {
        p("linux", arch, Some(variant)).unwrap()
    }

    #[test]
    fn linux_and_the_host_architecture_only() {
        let entries = [
            p("windows", "amd64", None),
            p("linux", "arm64", Some("v8")),
            p("linux", "amd64", None),
            p("unknown", "unknown", None),
        ];
        assert_eq!(choose(&entries, &host("amd64", "v3")), Some(2));
        assert_eq!(choose(&entries, &host("arm64", "v8")), Some(1));
        assert_eq!(choose(&entries, &host("s390x", "")), None);
        assert_eq!(choose(&entries[..2], &host("amd64", "v1")), None);
    }

    #[test]
    fn architecture_names_are_normalised() {
        let entries = [p("Linux", "x86_64", None), p("linux", "aarch64", None)];
        assert_eq!(choose(&entries, &host("amd64", "v1")), Some(0));
        assert_eq!(choose(&entries, &host("arm64", "v8")), Some(1));
        let armhf = [p("linux", "armhf", None)];
        assert_eq!(choose(&armhf, &host("arm", "v7")), Some(0));
    }

    #[test]
    fn arm_variants_go_down_from_the_host_closest_first() {
        let entries = [
            p("linux", "arm", Some("v5")),
            p("linux", "arm", Some("v6")),
            p("linux", "arm", Some("v8")),
        ];
        assert_eq!(choose(&entries, &host("arm", "v7")), Some(1));
        assert_eq!(choose(&entries[..1], &host("arm", "v7")), Some(0));
        assert_eq!(choose(&entries[2..], &host("arm", "v7")), None);
        // An arm entry without a variant is v7.
        assert_eq!(choose(&[p("linux", "arm", None)], &host("arm", "v6")), None);
    }

    #[test]
    fn arm64_without_a_variant_is_v8() {
        let entries = [p("linux", "arm64", None)];
        assert_eq!(choose(&entries, &host("arm64", "v8")), Some(0));
        assert_eq!(
            choose(&[p("linux", "arm64", Some("v9"))], &host("arm64", "v8")),
            None
        );
    }

    #[test]
    fn amd64_levels_prefer_the_highest_the_cpu_runs() {
        let entries = [
            p("linux", "amd64", None),
            p("linux", "amd64", Some("v3")),
            p("linux", "amd64", Some("v4")),
        ];
        assert_eq!(choose(&entries, &host("amd64", "v3")), Some(1));
        assert_eq!(choose(&entries, &host("amd64", "v2")), Some(0));
        assert_eq!(choose(&entries[1..], &host("amd64", "v2")), None);
    }

    #[test]
    fn an_entry_without_a_platform_is_the_last_resort() {
        let entries = [None, p("linux", "amd64", None)];
        assert_eq!(choose(&entries, &host("amd64", "v1")), Some(1));
        assert_eq!(choose(&entries[..1], &host("amd64", "v1")), Some(0));
    }

    #[test]
    fn the_host_is_linux_with_a_known_architecture() {
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        assert!(!h.architecture.is_empty());
        if cfg!(target_arch = "x86_64") {
            assert_eq!(h.architecture, "amd64");
            assert!(h.display().starts_with("linux/amd64/v"), "{}", h.display());
        }
    }
}
