//! Records on disk: one JSON file per object (`<dir>/<id>.json`), written whole to a temp
//! file and renamed, so a daemon killed at any instant leaves either the old record or the
//! new one, never half of one. Loading skips (and reports) leftovers that are not records.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{step} {}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("record {} is corrupt", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{id:?} is not a record id (want [0-9a-z_.-], 1..=128 bytes)")]
    BadId { id: String },
}

/// What [`Store::load_all`] finds: the records by id, and the entries that were not.
pub struct Loaded<T> {
    pub records: Vec<(String, T)>,
    pub broken: Vec<StoreError>,
}

/// A directory of records of one type.
#[derive(Debug, Clone)]
pub struct Store<T> {
    dir: PathBuf,
    kind: PhantomData<fn() -> T>,
}

/// Ids become file names: only what cannot name another file.
fn check_id(id: &str) -> Result<(), StoreError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadId { id: id.into() })
    }
}

impl<T: Serialize + DeserializeOwned> Store<T> {
    /// Opens (creating) the store directory.
    pub fn open(dir: &Path) -> Result<Store<T>, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            step: "creating",
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Store {
            dir: dir.to_path_buf(),
            kind: PhantomData,
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes the record atomically.
    pub fn save(&self, id: &str, record: &T) -> Result<(), StoreError> {
        check_id(id)?;
        let path = self.path(id);
        let bytes = serde_json::to_vec(record).map_err(|source| StoreError::Corrupt {
            path: path.clone(),
            source,
        })?;
        capsa::internal::write_atomic(&path, &bytes, 0o600).map_err(|source| StoreError::Io {
            step: "writing",
            path,
            source,
        })
    }

    /// Removes the record; an absent one is fine (removal is repeated by design).
    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        check_id(id)?;
        let path = self.path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io {
                step: "removing",
                path,
                source,
            }),
        }
    }

    /// Every record, by id; corrupt records are returned as errors beside the good ones
    /// (the daemon logs them and serves on), temp files of an interrupted write are removed.
    pub fn load_all(&self) -> Result<Loaded<T>, StoreError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| StoreError::Io {
            step: "listing",
            path: self.dir.clone(),
            source,
        })?;
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            if name.starts_with('.') {
                // An interrupted write's temp file: the record it was replacing is intact.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if check_id(id).is_err() {
                continue;
            }
            let parsed = std::fs::read(&path)
                .map_err(|source| StoreError::Io {
                    step: "reading",
                    path: path.clone(),
                    source,
                })
                .and_then(|b| {
                    serde_json::from_slice(&b).map_err(|source| StoreError::Corrupt {
                        path: path.clone(),
                        source,
                    })
                });
            match parsed {
                Ok(r) => good.push((id.to_string(), r)),
                Err(e) => bad.push(e),
            }
        }
        good.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Loaded {
            records: good,
            broken: bad,
        })
    }
}

/// A new object id: 64 hex digits from the kernel's random source, as containerd's ids.
pub fn new_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: getrandom writes at most the given length into the buffer's free tail.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
            continue;
        }
        filled += n as usize;
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct R {
        n: u32,
    }

    #[test]
    fn records_round_trip_and_leftovers_are_handled() {
        let d = std::env::temp_dir().join(format!("capsa-cri-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let s: Store<R> = Store::open(&d).unwrap();
        s.save("b", &R { n: 2 }).unwrap();
        s.save("a", &R { n: 1 }).unwrap();
        s.save("a", &R { n: 3 }).unwrap();
        std::fs::write(d.join(".a.json.123"), "{").unwrap();
        std::fs::write(d.join("c.json"), "{").unwrap();
        let Loaded {
            records: good,
            broken: bad,
        } = s.load_all().unwrap();
        assert_eq!(
            good,
            vec![("a".into(), R { n: 3 }), ("b".into(), R { n: 2 })]
        );
        assert_eq!(bad.len(), 1);
        assert!(bad[0].to_string().contains("c.json"), "{}", bad[0]);
        assert!(!d.join(".a.json.123").exists());
        s.remove("a").unwrap();
        s.remove("a").unwrap();
        assert!(s.save("../x", &R { n: 0 }).is_err());
        assert!(s.save("", &R { n: 0 }).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn ids_are_64_hex_digits_and_differ() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
