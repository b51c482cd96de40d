//! A fake host and fake image accounts for the unit tests.

use super::{mount_containing, Accounts, EtcFile, Host, HostDevice, MountEntry};
use capsa::security::lsm::Lsm;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Default)]
pub struct FakeHost {
    /// path -> what it resolves to; anything else does not exist.
    pub paths: HashMap<PathBuf, PathBuf>,
    pub devices: HashMap<PathBuf, HostDevice>,
    pub mountinfo: String,
    pub apparmor: bool,
    pub selinux: bool,
    pub profiles: HashMap<PathBuf, Vec<u8>>,
    pub cgroup_v2: bool,
    /// (sandbox, container) -> pid
    pub targets: HashMap<(String, String), i32>,
}

impl FakeHost {
    pub fn with_path(mut self, path: &str) -> Self {
        self.paths.insert(path.into(), path.into());
        self
    }
}

pub const ALL_CAPS: &[&str] = &["CAP_CHOWN", "CAP_KILL", "CAP_SYS_ADMIN", "CAP_SYS_TIME"];

fn missing() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

impl Host for FakeHost {
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        self.paths.get(path).cloned().ok_or_else(missing)
    }
    fn device(&self, path: &Path) -> io::Result<Option<HostDevice>> {
        Ok(self.devices.get(path).copied())
    }
    fn mount_of(&self, path: &Path) -> io::Result<MountEntry> {
        mount_containing(&self.mountinfo, path).ok_or_else(missing)
    }
    fn host_devices(&self) -> io::Result<Vec<(PathBuf, HostDevice)>> {
        let mut all: Vec<_> = self.devices.iter().map(|(p, d)| (p.clone(), *d)).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }
    fn all_capabilities(&self) -> Vec<String> {
        ALL_CAPS.iter().map(|s| s.to_string()).collect()
    }
    fn lsm_enabled(&self, lsm: Lsm) -> bool {
        match lsm {
            Lsm::AppArmor => self.apparmor,
            Lsm::SeLinux => self.selinux,
        }
    }
    fn read_profile(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.profiles.get(path).cloned().ok_or_else(missing)
    }
    fn cgroup_v2(&self) -> bool {
        self.cgroup_v2
    }
    fn target_pid(&self, sandbox: &str, target: &str) -> Option<i32> {
        self.targets
            .get(&(sandbox.to_string(), target.to_string()))
            .copied()
    }
}

/// An image's /etc/passwd and /etc/group as text (none: the file is missing).
#[derive(Default)]
pub struct FakeAccounts {
    pub passwd: Option<String>,
    pub group: Option<String>,
}

impl Accounts for FakeAccounts {
    fn scan(&self, file: EtcFile, visit: &mut dyn FnMut(&[&str]) -> bool) -> io::Result<()> {
        let text = match file {
            EtcFile::Passwd => &self.passwd,
            EtcFile::Group => &self.group,
        };
        if let Some(text) = text {
            capsa::internal::scan(io::Cursor::new(text.as_bytes()), file.path(), |f| {
                visit(f).then_some(())
            })?;
        }
        Ok(())
    }
}
