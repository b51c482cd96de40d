//! The on-disk cache of ADD results, one file per (network, container, interface) as
//! libcni's `results/<network>-<container>-<ifname>`: the DEL of a later process (a
//! restarted daemon) gets the config and result the ADD used.
//!
//! Written atomically: a temp file created `O_EXCL|O_NOFOLLOW` (never follows a planted
//! link), fsynced, renamed over the entry. Read with `O_NOFOLLOW`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::CniError;

const KIND: &str = "capsa-cni-cache-v1";

/// One cached attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub kind: String,
    pub network_name: String,
    pub container_id: String,
    pub if_name: String,
    /// The network list the ADD ran (a `.conf` already wrapped).
    pub config: Value,
    /// The final ADD result, verbatim.
    pub result: Value,
}

impl Entry {
    pub fn new(
        network_name: &str,
        container_id: &str,
        if_name: &str,
        config: Value,
        result: Value,
    ) -> Entry {
        Entry {
            kind: KIND.to_string(),
            network_name: network_name.to_string(),
            container_id: container_id.to_string(),
            if_name: if_name.to_string(),
            config,
            result,
        }
    }
}

/// The entry's path. The three parts are checked by the callers (network name at load,
/// container id and ifname by `Attachment::validate`): none holds a `/`.
pub fn path(cache_dir: &Path, network: &str, container_id: &str, ifname: &str) -> PathBuf {
    cache_dir.join(format!("{network}-{container_id}-{ifname}"))
}

/// Writes the entry atomically.
pub fn write(path: &Path, entry: &Entry) -> Result<(), CniError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let err = |source: std::io::Error| CniError::Cache {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    let bytes = serde_json::to_vec(entry).map_err(|e| err(std::io::Error::other(e)))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(err)
}

/// Reads the entry; `Ok(None)` when there is none. A corrupt entry is an error naming it
/// (the caller decides whether to go on without it).
pub fn read(path: &Path) -> Result<Option<Entry>, CniError> {
    let mut f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CniError::Cache {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)
        .map_err(|source| CniError::Cache {
            path: path.to_path_buf(),
            source,
        })?;
    let entry: Entry = serde_json::from_slice(&bytes).map_err(|e| CniError::Cache {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    if entry.kind != KIND {
        return Err(CniError::Cache {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("unknown kind {:?}", entry.kind),
            ),
        });
    }
    Ok(Some(entry))
}

/// Removes the entry; a missing entry is fine (DEL is repeatable).
pub fn remove(path: &Path) -> Result<(), CniError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CniError::Cache {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn write_read_remove() {
        let dir = std::env::temp_dir().join(format!("capsa-cni-cache-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let p = path(&dir.join("sub"), "net", "abc", "eth0");
        assert_eq!(read(&p).unwrap(), None);
        let entry = Entry::new(
            "net",
            "abc",
            "eth0",
            json!({"name": "net"}),
            json!({"ips": []}),
        );
        write(&p, &entry).unwrap();
        assert_eq!(read(&p).unwrap(), Some(entry.clone()));
        // Overwrite in place; no temp file left.
        write(&p, &entry).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["net-abc-eth0"]);
        remove(&p).unwrap();
        remove(&p).unwrap();
        assert_eq!(read(&p).unwrap(), None);
        // A planted symlink is not followed.
        std::os::unix::fs::symlink("/etc/hostname", &p).unwrap();
        let err = read(&p).unwrap_err().to_string();
        assert!(err.contains("net-abc-eth0"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
