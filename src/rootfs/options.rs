//! Mount options -> mount(2) flags, propagation and filesystem data. Pure, unit-tested.

use nix::mount::MsFlags;

/// A mount entry's options, split the way mount(2) wants them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags to set.
    pub flags: MsFlags,
    /// Propagation changes, applied one by one after the mount.
    pub propagation: Vec<MsFlags>,
    /// Filesystem-specific options ("mode=755", "newinstance"), passed as data.
    pub data: Vec<String>,
    /// podman's `tmpcopyup`: copy the directory's previous content into the new tmpfs.
    pub tmpcopyup: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            propagation: Vec::new(),
            data: Vec::new(),
            tmpcopyup: false,
        }
    }
}

impl MountOptions {
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    /// Flags that need a remount to take effect on a bind mount (the kernel ignores them on
    /// the initial MS_BIND call).
    pub fn bind_remount_flags(&self) -> MsFlags {
        self.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT)
    }

    pub fn data_string(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

enum Opt {
    Set(MsFlags),
    Clear(MsFlags),
    Propagation(MsFlags),
    TmpCopyUp,
}

fn lookup(option: &str) -> Option<Opt> {
    use MsFlags as F;
    use Opt::*;
    Some(match option {
        "defaults" => Clear(F::empty()),
        "ro" => Set(F::MS_RDONLY),
        "rw" => Clear(F::MS_RDONLY),
        "suid" => Clear(F::MS_NOSUID),
        "nosuid" => Set(F::MS_NOSUID),
        "dev" => Clear(F::MS_NODEV),
        "nodev" => Set(F::MS_NODEV),
        "exec" => Clear(F::MS_NOEXEC),
        "noexec" => Set(F::MS_NOEXEC),
        "sync" => Set(F::MS_SYNCHRONOUS),
        "async" => Clear(F::MS_SYNCHRONOUS),
        "dirsync" => Set(F::MS_DIRSYNC),
        "remount" => Set(F::MS_REMOUNT),
        "mand" => Set(F::MS_MANDLOCK),
        "nomand" => Clear(F::MS_MANDLOCK),
        "atime" => Clear(F::MS_NOATIME),
        "noatime" => Set(F::MS_NOATIME),
        "diratime" => Clear(F::MS_NODIRATIME),
        "nodiratime" => Set(F::MS_NODIRATIME),
        "relatime" => Set(F::MS_RELATIME),
        "norelatime" => Clear(F::MS_RELATIME),
        "strictatime" => Set(F::MS_STRICTATIME),
        "nostrictatime" => Clear(F::MS_STRICTATIME),
        "lazytime" => Set(F::MS_LAZYTIME),
        "nolazytime" => Clear(F::MS_LAZYTIME),
        "iversion" => Set(F::MS_I_VERSION),
        "noiversion" => Clear(F::MS_I_VERSION),
        "silent" => Set(F::MS_SILENT),
        "loud" => Clear(F::MS_SILENT),
        "bind" => Set(F::MS_BIND),
        "rbind" => Set(F::MS_BIND | F::MS_REC),
        "private" => Propagation(F::MS_PRIVATE),
        "rprivate" => Propagation(F::MS_PRIVATE | F::MS_REC),
        "shared" => Propagation(F::MS_SHARED),
        "rshared" => Propagation(F::MS_SHARED | F::MS_REC),
        "slave" => Propagation(F::MS_SLAVE),
        "rslave" => Propagation(F::MS_SLAVE | F::MS_REC),
        "unbindable" => Propagation(F::MS_UNBINDABLE),
        "runbindable" => Propagation(F::MS_UNBINDABLE | F::MS_REC),
        "tmpcopyup" => TmpCopyUp,
        _ => return None,
    })
}

/// Options capsa recognises but cannot honour yet; refused rather than silently ignored.
const UNSUPPORTED: &[&str] = &[
    "idmap",
    "ridmap",
    "rro",
    "rrw",
    "rnosuid",
    "rsuid",
    "rnodev",
    "rdev",
    "rnoexec",
    "rexec",
    "rnoatime",
    "ratime",
    "rrelatime",
    "rnorelatime",
    "rstrictatime",
    "rnostrictatime",
    "rnodiratime",
    "rdiratime",
    "rnosymfollow",
    "rsymfollow",
];

/// Every flag-like option capsa understands, for `capsa features`.
pub fn known_options() -> Vec<&'static str> {
    [
        "defaults",
        "ro",
        "rw",
        "suid",
        "nosuid",
        "dev",
        "nodev",
        "exec",
        "noexec",
        "sync",
        "async",
        "dirsync",
        "remount",
        "mand",
        "nomand",
        "atime",
        "noatime",
        "diratime",
        "nodiratime",
        "relatime",
        "norelatime",
        "strictatime",
        "nostrictatime",
        "lazytime",
        "nolazytime",
        "iversion",
        "noiversion",
        "silent",
        "loud",
        "bind",
        "rbind",
        "private",
        "rprivate",
        "shared",
        "rshared",
        "slave",
        "rslave",
        "unbindable",
        "runbindable",
        "tmpcopyup",
    ]
    .to_vec()
}

/// Parses a mount's options. A bind mount has no filesystem to read data options, so an
/// unknown word there is an error rather than something the kernel would silently drop.
pub fn parse(options: &[String], fstype: Option<&str>) -> Result<MountOptions, String> {
    let mut out = MountOptions::default();
    for option in options {
        if UNSUPPORTED.contains(&option.as_str()) {
            return Err(format!("mount option {option:?} is not supported"));
        }
        match lookup(option) {
            Some(Opt::Set(f)) => out.flags |= f,
            Some(Opt::Clear(f)) => out.flags &= !f,
            Some(Opt::Propagation(f)) => out.propagation.push(f),
            Some(Opt::TmpCopyUp) => out.tmpcopyup = true,
            None => out.data.push(option.clone()),
        }
    }
    if fstype == Some("bind") {
        out.flags |= MsFlags::MS_BIND;
    }
    if out.is_bind() {
        if let Some(bad) = out.data.first() {
            return Err(format!("unsupported option {bad:?} for a bind mount"));
        }
        if out.tmpcopyup {
            return Err("tmpcopyup applies to tmpfs mounts, not bind mounts".into());
        }
    } else if out.tmpcopyup && fstype != Some("tmpfs") {
        return Err(format!(
            "tmpcopyup applies to tmpfs mounts, not {}",
            fstype.unwrap_or("(none)")
        ));
    }
    Ok(out)
}

/// Parses `linux.rootfsPropagation`.
pub fn parse_propagation(value: &str) -> Option<MsFlags> {
    match lookup(value) {
        Some(Opt::Propagation(f)) => Some(f),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn splits_flags_data_and_propagation() {
        let o = parse(
            &opts(&["nosuid", "noexec", "mode=755", "size=65536k", "rslave"]),
            Some("tmpfs"),
        )
        .unwrap();
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC);
        assert_eq!(o.data_string().as_deref(), Some("mode=755,size=65536k"));
        assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
    }

    #[test]
    fn later_options_override_earlier() {
        let o = parse(&opts(&["ro", "rw", "nodev", "dev"]), Some("tmpfs")).unwrap();
        assert!(o.flags.is_empty());
    }

    #[test]
    fn bind_mounts_need_remount_for_ro() {
        let o = parse(&opts(&["rbind", "ro", "nosuid"]), None).unwrap();
        assert!(o.is_bind());
        assert_eq!(
            o.bind_remount_flags(),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID
        );
        assert!(parse(&opts(&["bind", "mode=755"]), None).is_err());
        assert!(parse(&[], Some("bind")).unwrap().is_bind());
    }

    #[test]
    fn refuses_unsupported_options() {
        assert!(parse(&opts(&["idmap"]), Some("bind")).is_err());
        assert!(parse(&opts(&["tmpcopyup"]), Some("proc")).is_err());
        assert!(
            parse(&opts(&["tmpcopyup"]), Some("tmpfs"))
                .unwrap()
                .tmpcopyup
        );
    }

    #[test]
    fn rootfs_propagation_values() {
        assert_eq!(
            parse_propagation("rprivate"),
            Some(MsFlags::MS_PRIVATE | MsFlags::MS_REC)
        );
        assert_eq!(parse_propagation("ro"), None);
    }
}
