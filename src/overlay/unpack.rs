//! Unpacking one OCI layer into a layer directory that overlayfs can stack.
//!
//! The layer is untrusted: entry paths are split into components and refused when absolute or
//! when they climb with `..`; parents are walked one O_NOFOLLOW step at a time, so an entry
//! can never write through a symlink an earlier entry planted (the class of bug behind
//! CVE-2018-15664-style extraction escapes); hard-link targets are resolved the same way.

use super::fsutil::{self, is_dir};
use super::names::{self, Compression, Kind};
use super::OverlayError;
use sha2::{Digest, Sha256};
use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// What an unpack did, for callers that report it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackSummary {
    /// Entries unpacked.
    pub entries: usize,
    /// Whiteouts converted.
    pub whiteouts: usize,
    /// Opaque directories marked.
    pub opaque_dirs: usize,
    /// The compression detected.
    pub compression: Option<Compression>,
    /// The layer's diff id: `sha256:<hex>` of the uncompressed tar stream, read to its end.
    /// An image config names each layer by it; a caller that caches unpacked layers by it must
    /// compare, or a hostile image claiming another image's diff id would plant its content
    /// under that id.
    pub diff_id: String,
}

/// Why one entry failed: refused by policy, or a syscall error.
enum Step {
    Refused(String),
    Io(io::Error),
}

impl Step {
    /// The error naming the layer and the entry.
    fn into_error(self, layer: &Path, entry: &Path) -> OverlayError {
        let (layer, entry) = (layer.to_path_buf(), entry.display().to_string());
        match self {
            Step::Refused(reason) => OverlayError::Refused {
                layer,
                entry,
                reason,
            },
            Step::Io(source) => OverlayError::Entry {
                layer,
                entry,
                source,
            },
        }
    }
}

impl From<io::Error> for Step {
    fn from(e: io::Error) -> Self {
        Step::Io(e)
    }
}

/// Unpacks `layer` into `dir` (created if missing, else it must be empty). With a digest, the
/// layer's bytes are verified before anything is written. On any error nothing is left in
/// `dir` (and `dir` itself is removed when this call created it).
pub fn unpack(
    layer: &Path,
    dir: &Path,
    digest: Option<&str>,
) -> Result<UnpackSummary, OverlayError> {
    let layer_err = |source| OverlayError::Layer {
        layer: layer.to_path_buf(),
        source,
    };
    if let Some(d) = digest {
        let expected = names::parse_digest(d).ok_or_else(|| OverlayError::BadDigest(d.into()))?;
        let actual = sha256_file(layer).map_err(layer_err)?;
        if actual != expected {
            return Err(OverlayError::Digest {
                layer: layer.to_path_buf(),
                expected,
                actual,
            });
        }
    }
    let file = std::fs::File::open(layer).map_err(layer_err)?;
    let created = prepare_dir(dir)?;
    let result = fsutil::open_dir(dir)
        .map_err(|source| OverlayError::Io {
            op: "opening",
            path: dir.to_path_buf(),
            source,
        })
        .and_then(|root| extract(layer, file, &root));
    if result.is_err() {
        discard(dir, created);
    }
    result
}

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut hasher = Sha256::new();
    io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hex(hasher))
}

fn hex(hasher: Sha256) -> String {
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Hashes what passes through it: the uncompressed stream, for the diff id.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Creates `dir`, or checks that an existing one is an empty directory. True when created.
fn prepare_dir(dir: &Path) -> Result<bool, OverlayError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let empty = std::fs::read_dir(dir)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if empty {
                Ok(false)
            } else {
                Err(OverlayError::Target {
                    path: dir.to_path_buf(),
                    reason: "not an empty directory",
                })
            }
        }
        Err(source) => Err(OverlayError::Io {
            op: "creating",
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Leaves no partial layer behind after a failure.
fn discard(dir: &Path, created: bool) {
    if created {
        let _ = std::fs::remove_dir_all(dir);
    } else if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let _ = match e.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
                _ => std::fs::remove_file(&p),
            };
        }
    }
}

fn decompressor(file: std::fs::File) -> io::Result<(Compression, Box<dyn Read>)> {
    let mut reader = BufReader::new(file);
    let compression = names::detect(reader.fill_buf()?);
    let stream: Box<dyn Read> = match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new(reader)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
        ),
    };
    Ok((compression, stream))
}

fn extract(
    layer: &Path,
    file: std::fs::File,
    root: &OwnedFd,
) -> Result<UnpackSummary, OverlayError> {
    let layer_err = |source| OverlayError::Layer {
        layer: layer.to_path_buf(),
        source,
    };
    let (compression, stream) = decompressor(file).map_err(layer_err)?;
    let mut summary = UnpackSummary {
        compression: Some(compression),
        ..Default::default()
    };
    let mut dir_times: Vec<(Vec<OsString>, i64)> = Vec::new();
    let mut archive = tar::Archive::new(Hashing {
        inner: stream,
        hasher: Sha256::new(),
    });
    for entry in archive.entries().map_err(layer_err)? {
        let mut entry = entry.map_err(layer_err)?;
        let path: PathBuf = entry.path().map_err(layer_err)?.into_owned();
        extract_entry(root, &mut entry, &path, &mut summary, &mut dir_times)
            .map_err(|e| e.into_error(layer, &path))?;
        summary.entries += 1;
    }
    // The tar reader stops at the end-of-archive blocks; the diff id covers the whole stream.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(layer_err)?;
    summary.diff_id = format!("sha256:{}", hex(rest.hasher));
    // Directory times last, deepest first: creating their children moved them.
    for (comps, mtime) in dir_times.iter().rev() {
        let refs: Vec<&OsStr> = comps.iter().map(OsString::as_os_str).collect();
        if let Some((last, parents)) = refs.split_last() {
            let set = walk(root, parents, false)
                .and_then(|p| Ok(fsutil::set_mtime_at(&p, last, *mtime)?));
            set.map_err(|e| e.into_error(layer, &PathBuf::from_iter(comps)))?;
        }
    }
    Ok(summary)
}

/// Opens the directory `comps` below `root`, one O_NOFOLLOW step at a time, creating missing
/// ones when asked (tar streams may omit parents).
fn walk(root: &OwnedFd, comps: &[&OsStr], create: bool) -> Result<OwnedFd, Step> {
    let mut cur = root.try_clone()?;
    for c in comps {
        cur = match fsutil::open_dir_at(&cur, c) {
            Ok(fd) => fd,
            Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {
                fsutil::mkdir_at(&cur, c, 0o755)?;
                fsutil::open_dir_at(&cur, c)?
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
                return Err(Step::Refused(format!(
                    "{:?} is a symlink or not a directory: writing through it would leave the layer",
                    c
                )))
            }
            Err(e) => return Err(e.into()),
        };
    }
    Ok(cur)
}

fn extract_entry<R: Read>(
    root: &OwnedFd,
    entry: &mut tar::Entry<R>,
    path: &Path,
    summary: &mut UnpackSummary,
    dir_times: &mut Vec<(Vec<OsString>, i64)>,
) -> Result<(), Step> {
    let comps = names::components(path).map_err(|r| Step::Refused(r.to_string()))?;
    let Some((last, parents)) = comps.split_last() else {
        return Ok(()); // "./": the layer root itself
    };
    let parent = walk(root, parents, true)?;
    match names::classify(last) {
        Kind::Meta => return Ok(()),
        Kind::Opaque => {
            // The magic link itself is the last component here: follow it to the directory we hold.
            xattr::set_deref(fsutil::proc_path(&parent, None), names::OPAQUE_XATTR, b"y")?;
            summary.opaque_dirs += 1;
            return Ok(());
        }
        Kind::Whiteout(name) => {
            // overlayfs's whiteout: a 0:0 character device owned by root.
            fsutil::remove_at(&parent, &name)?;
            fsutil::mknod_at(&parent, &name, libc::S_IFCHR, libc::makedev(0, 0))?;
            fsutil::chown_at(&parent, &name, 0, 0)?;
            summary.whiteouts += 1;
            return Ok(());
        }
        Kind::Plain => {}
    }
    let header = entry.header();
    let etype = header.entry_type();
    let mode = header.mode()? & 0o7777;
    let (uid, gid) = (header.uid()? as u32, header.gid()? as u32);
    let mtime = header.mtime()? as i64;
    let existing = fsutil::lstat_at(&parent, last)?;
    if etype.is_dir() {
        match existing {
            Some(st) if is_dir(&st) => {}
            Some(_) => {
                fsutil::remove_at(&parent, last)?;
                fsutil::mkdir_at(&parent, last, 0o700)?;
            }
            None => fsutil::mkdir_at(&parent, last, 0o700)?,
        }
        dir_times.push((comps.iter().map(|c| c.to_os_string()).collect(), mtime));
    } else {
        if existing.is_some() {
            fsutil::remove_at(&parent, last)?;
        }
        match etype {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut f = fsutil::create_file_at(&parent, last)?;
                io::copy(entry, &mut f)?;
            }
            tar::EntryType::Symlink => {
                let target = link_target(entry)?;
                fsutil::symlink_at(target.as_os_str(), &parent, last)?;
            }
            tar::EntryType::Link => {
                let target = link_target(entry)?;
                let tcomps = names::components(&target).map_err(|r| {
                    Step::Refused(format!("hard link to {}: {r}", target.display()))
                })?;
                let Some((tlast, tparents)) = tcomps.split_last() else {
                    return Err(Step::Refused("hard link to the layer root".into()));
                };
                let tparent = walk(root, tparents, false)?;
                fsutil::link_at(&tparent, tlast, &parent, last)?;
                return Ok(()); // the inode already has its metadata
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let kind = match etype {
                    tar::EntryType::Char => libc::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let major = header.device_major()?.unwrap_or(0);
                let minor = header.device_minor()?.unwrap_or(0);
                fsutil::mknod_at(&parent, last, kind | mode, libc::makedev(major, minor))?;
            }
            other => {
                return Err(Step::Refused(format!("unsupported entry type {other:?}")));
            }
        }
    }
    // Owner first: chown clears set-id bits and security.capability, so mode and xattrs follow.
    fsutil::chown_at(&parent, last, uid, gid)?;
    let symlink = etype == tar::EntryType::Symlink;
    if !symlink {
        fsutil::chmod_at(&parent, last, mode)?;
    }
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                xattr::set(
                    fsutil::proc_path(&parent, Some(last)),
                    name,
                    ext.value_bytes(),
                )?;
            }
        }
    }
    if !etype.is_dir() {
        fsutil::set_mtime_at(&parent, last, mtime)?;
    }
    Ok(())
}

fn link_target<R: Read>(entry: &tar::Entry<R>) -> Result<PathBuf, Step> {
    entry
        .link_name()?
        .map(|t| t.into_owned())
        .ok_or_else(|| Step::Refused("link without a target".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("capsa-unpack-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn small_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, "etc/motd", &b"hello"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn the_diff_id_is_the_digest_of_the_uncompressed_stream() {
        let d = scratch("diffid");
        let plain = small_tar();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let layer = d.join("layer.tar.gz");
        std::fs::write(&layer, gz.finish().unwrap()).unwrap();
        let s = unpack(&layer, &d.join("fs"), None).unwrap();
        let mut h = Sha256::new();
        h.update(&plain);
        assert_eq!(s.diff_id, format!("sha256:{}", hex(h)));
        assert_eq!(s.compression, Some(Compression::Gzip));
        // Trailing bytes after the end-of-archive blocks are part of the stream, too.
        let mut padded = plain.clone();
        padded.extend_from_slice(&[0u8; 4096]);
        std::fs::write(&layer, &padded).unwrap();
        let s2 = unpack(&layer, &d.join("fs2"), None).unwrap();
        assert_ne!(s2.diff_id, s.diff_id);
        let mut h = Sha256::new();
        h.update(&padded);
        assert_eq!(s2.diff_id, format!("sha256:{}", hex(h)));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
