//! The store's file plumbing: private directories, the store lock, temp paths that vanish
//! unless kept, atomic durable writes, disk usage walks.

use super::{io_err, Result};
use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Creates `dir` (and parents) mode 0700, or makes an existing one 0700: layers hold device
/// nodes and set-id files that no host user but root should reach.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(io_err("creating", dir))
}

/// Opens `path` and takes an exclusive flock without waiting.
pub fn lock_exclusive(path: &Path) -> std::io::Result<nix::fcntl::Flock<std::fs::File>> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, errno)| errno.into())
}

/// The file names in `dir`.
pub fn names(dir: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(dir).map_err(io_err("listing", dir))?;
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(io_err("listing", dir))?;
        out.push(e.file_name().to_string_lossy().into_owned());
    }
    Ok(out)
}

/// Removes everything in `dir`: the temps of a daemon that died mid-write.
pub fn empty_dir(dir: &Path) -> Result<()> {
    for name in names(dir)? {
        remove_any(&dir.join(name))?;
    }
    Ok(())
}

fn remove_any(path: &Path) -> Result<()> {
    let r = match path.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    r.map_err(io_err("removing", path))
}

/// A name in the store's tmp/ that is removed on drop unless kept.
pub struct TempPath {
    path: PathBuf,
    keep: bool,
}

impl TempPath {
    /// A fresh, unused name under `tmp` (nothing is created).
    pub fn new(tmp: &Path, what: &str) -> TempPath {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        TempPath {
            path: tmp.join(format!("{what}-{}-{n}", std::process::id())),
            keep: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// It was renamed into place: nothing to remove.
    pub fn keep(mut self) {
        self.keep = true;
    }

    /// Removes it now, reporting failure (drop removes quietly).
    pub fn remove(mut self) -> Result<()> {
        self.keep = true;
        remove_any(&self.path)
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.keep {
            let _ = remove_any(&self.path);
        }
    }
}

/// Creates a new file at `path` (never an existing one, never through a link).
pub fn create_new(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

/// fsync of a directory: makes the renames into it durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", dir))
}

/// Writes `path` whole or not at all: a temp in `tmp` (same filesystem), fsynced, renamed.
pub fn write_atomic(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let t = TempPath::new(tmp, "record");
    let mut f = create_new(t.path()).map_err(io_err("creating", t.path()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io_err("writing", path))?;
    std::fs::rename(t.path(), path).map_err(io_err("renaming into place", path))?;
    t.keep();
    sync_dir(path.parent().unwrap_or(Path::new("/")))
}

/// Bytes (allocated blocks) and inodes under `path`, each inode counted once, without
/// following links or crossing into other mounts (containerd's snapshot usage does the same).
pub fn disk_usage(path: &Path) -> Result<(u64, u64)> {
    let top = match path.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(io_err("measuring", path)(e)),
    };
    let dev = top.dev();
    let mut seen = HashSet::new();
    let (mut bytes, mut inodes) = (0, 0);
    let mut stack = vec![(path.to_path_buf(), top)];
    while let Some((p, m)) = stack.pop() {
        if seen.insert(m.ino()) {
            bytes += m.blocks() * 512;
            inodes += 1;
        }
        if !m.is_dir() {
            continue;
        }
        let entries = match std::fs::read_dir(&p) {
            Ok(e) => e,
            // Removed while we walked (a layer collected, a container gone): not an error.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("measuring", &p)(e)),
        };
        for e in entries.flatten() {
            if let Ok(cm) = e.path().symlink_metadata() {
                if cm.dev() == dev {
                    stack.push((e.path(), cm));
                }
            }
        }
    }
    Ok((bytes, inodes))
}

/// The mount point of the filesystem holding `path`: the highest ancestor on the same
/// device.
pub fn mountpoint_of(path: &Path) -> Result<PathBuf> {
    let dev = path.metadata().map_err(io_err("measuring", path))?.dev();
    let mut cur = path.to_path_buf();
    while let Some(parent) = cur.parent() {
        match parent.metadata() {
            Ok(m) if m.dev() == dev => cur = parent.to_path_buf(),
            _ => break,
        }
    }
    Ok(cur)
}
