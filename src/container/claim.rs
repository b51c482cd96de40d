//! Which container owns a cgroup. Two containers given the same `linux.cgroupsPath` would
//! share it, and deleting one would kill the other's processes; so a cgroup has one owner,
//! recorded as `<root>/@cgroup.<hash of the path>`, a symlink to the owner's id ('@' is not
//! allowed in ids, so no container is ever named so).
//!
//! The check and the claim are one step: both happen under an flock on the state root. A
//! claim is live while its owner's state directory exists and names the same cgroup; one
//! left by a create killed before its state directory appeared is stale, and the next claim
//! of the path takes it over. `delete` releases its own claim with the cgroup.

use super::{state, validate_id, ContainerError};
use sha2::{Digest, Sha256};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Prefix of claim names in the state root.
pub const PREFIX: &str = "@cgroup.";

fn claim_path(root: &Path, cgroup: &Path) -> PathBuf {
    let digest = Sha256::digest(cgroup.as_os_str().as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    root.join(format!("{PREFIX}{hex}"))
}

/// The cgroup a container's state directory names: from its state file, salvaged if the file
/// is damaged, else the default path of its id (where a container without a readable state
/// file would have its cgroup).
pub(crate) fn cgroup_of(dir: &Path, id: &str) -> Option<PathBuf> {
    let default = || crate::cgroups::container_path(None, id).ok();
    match std::fs::read(dir.join(state::STATE_FILE)) {
        Ok(text) => match state::salvage(&text).cgroup_path {
            Some(p) => crate::cgroups::container_path(Some(&p), id).ok(),
            None => default(),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir.is_dir() => default(),
        Err(_) => None,
    }
}

/// The id of the container that holds a live claim on `cgroup`, if any.
pub(crate) fn owner(root: &Path, cgroup: &Path) -> Option<String> {
    let link = std::fs::read_link(claim_path(root, cgroup)).ok()?;
    let id = link.to_str()?.to_string();
    validate_id(&id).ok()?;
    (cgroup_of(&root.join(&id), &id).as_deref() == Some(cgroup)).then_some(id)
}

/// Whether a container other than `id` owns `cgroup`: then `id` must not touch it.
pub(crate) fn owned_by_other(root: &Path, cgroup: &Path, id: &str) -> bool {
    owner(root, cgroup).is_some_and(|o| o != id)
}

/// Claims `cgroup` for `id`; the caller holds the root's lock. Refused when another
/// container holds a live claim.
pub(crate) fn claim(root: &Path, cgroup: &Path, id: &str) -> Result<Claim, ContainerError> {
    if let Some(other) = owner(root, cgroup) {
        if other != id {
            return Err(ContainerError::CgroupInUse {
                path: cgroup.to_path_buf(),
                by: format!("container {other}"),
            });
        }
    }
    let path = claim_path(root, cgroup);
    let err = |source| ContainerError::StateDir {
        path: path.clone(),
        source,
    };
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    std::os::unix::fs::symlink(id, &path).map_err(err)?;
    Ok(Claim {
        root: root.to_path_buf(),
        cgroup: cgroup.to_path_buf(),
        id: id.to_string(),
        armed: true,
    })
}

/// Releases `id`'s claim on `cgroup` (one held by another container is left alone).
pub(crate) fn release(root: &Path, cgroup: &Path, id: &str) {
    let path = claim_path(root, cgroup);
    if std::fs::read_link(&path).is_ok_and(|l| l.as_os_str() == id) {
        let _ = std::fs::remove_file(&path);
    }
}

/// Removes claims that name `id` while it has no state directory: what a create killed
/// between claiming and placing its state leaves.
pub(crate) fn sweep(root: &Path, id: &str) {
    // Under the root's lock: a create claims and places its directory in one step.
    let Ok(_root) = super::lock::DirLock::acquire(root) else {
        return;
    };
    if root.join(id).exists() {
        return;
    }
    for name in super::entry_names(root).unwrap_or_default() {
        if name.starts_with(PREFIX) {
            let path = root.join(&name);
            if std::fs::read_link(&path).is_ok_and(|l| l.as_os_str() == id) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// A claim made by a create that has not finished: released on drop unless disarmed.
pub(crate) struct Claim {
    root: PathBuf,
    cgroup: PathBuf,
    id: String,
    armed: bool,
}

impl Claim {
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.armed {
            release(&self.root, &self.cgroup, &self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_live_claim_per_cgroup() {
        let root = std::env::temp_dir().join(format!("capsa-claim-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("a")).unwrap();
        let cg = Path::new("/shared/x");
        std::fs::write(root.join("a/state.json"), br#"{"cgroupPath":"/shared/x"}"#).unwrap();
        let mut a = claim(&root, cg, "a").unwrap();
        a.disarm();
        assert_eq!(owner(&root, cg).as_deref(), Some("a"));
        assert!(matches!(
            claim(&root, cg, "b"),
            Err(ContainerError::CgroupInUse { .. })
        ));
        assert!(owned_by_other(&root, cg, "b"));
        assert!(!owned_by_other(&root, cg, "a"));
        // a's state gone (a create killed before placing it): the claim is stale.
        std::fs::remove_dir_all(root.join("a")).unwrap();
        assert_eq!(owner(&root, cg), None);
        std::fs::create_dir_all(root.join("b")).unwrap();
        std::fs::write(root.join("b/state.json"), br#"{"cgroupPath":"/shared/x"}"#).unwrap();
        drop(claim(&root, cg, "b").unwrap());
        assert_eq!(owner(&root, cg), None, "an armed claim is released on drop");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
