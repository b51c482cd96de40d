//! An upper directory back into an OCI layer (what `docker commit` does): overlay whiteouts
//! (0:0 character devices) become `.wh.NAME` entries and opaque directories get a
//! `.wh..wh..opq` entry, so the tar applies to the same lower layers with the same result.

use super::names;
use super::OverlayError;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What a diff wrote, for callers that report it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DiffSummary {
    /// Entries written.
    pub entries: usize,
    /// Deletions written as `.wh.` entries.
    pub whiteouts: usize,
    /// Opaque directories written.
    pub opaque_dirs: usize,
}

struct Writer<W: io::Write> {
    tar: tar::Builder<W>,
    /// (dev, ino) of files with several links -> the first path written: later ones are links.
    links: HashMap<(u64, u64), PathBuf>,
    summary: DiffSummary,
}

/// Writes the changes recorded in `upper` as an uncompressed layer tar at `out`. On error the
/// partial output is removed.
pub fn diff(upper: &Path, out: &Path) -> Result<DiffSummary, OverlayError> {
    let file = std::fs::File::create(out).map_err(|source| OverlayError::Io {
        op: "creating",
        path: out.to_path_buf(),
        source,
    })?;
    let mut w = Writer {
        tar: tar::Builder::new(io::BufWriter::new(file)),
        links: HashMap::new(),
        summary: DiffSummary::default(),
    };
    let result = w
        .walk(upper, Path::new(""))
        .and_then(|()| {
            w.tar
                .finish()
                .map_err(|source| (PathBuf::from(out), source))
        })
        .map_err(|(entry, source)| OverlayError::Diff {
            upper: upper.to_path_buf(),
            entry: entry.display().to_string(),
            source,
        });
    match result {
        Ok(()) => Ok(w.summary),
        Err(e) => {
            drop(w);
            let _ = std::fs::remove_file(out);
            Err(e)
        }
    }
}

fn header_for(meta: &Metadata, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(meta.uid().into());
    h.set_gid(meta.gid().into());
    h.set_mtime(meta.mtime().max(0) as u64);
    h.set_size(0);
    h
}

/// A regular, empty, root-owned entry: the form of `.wh.` markers.
fn marker_header() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(0);
    h
}

type Failed = (PathBuf, io::Error);

impl<W: io::Write> Writer<W> {
    fn walk(&mut self, dir: &Path, rel: &Path) -> Result<(), Failed> {
        let fail = |source| (rel.to_path_buf(), source);
        let mut names: Vec<OsString> = std::fs::read_dir(dir)
            .map_err(fail)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(fail)?;
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let rel = rel.join(&name);
            let is_dir = self
                .entry(&path, &rel)
                .map_err(|source| (rel.clone(), source))?;
            if is_dir {
                self.walk(&path, &rel)?;
            }
        }
        Ok(())
    }

    /// xattrs carried as PAX `SCHILY.xattr.*`, except overlay's own bookkeeping.
    fn xattrs(&mut self, path: &Path) -> io::Result<()> {
        let mut pairs: Vec<(String, Vec<u8>)> = Vec::new();
        for name in xattr::list(path)? {
            let Some(n) = name.to_str() else { continue };
            if n.starts_with("trusted.overlay.") {
                continue;
            }
            if let Some(v) = xattr::get(path, &name)? {
                pairs.push((format!("SCHILY.xattr.{n}"), v));
            }
        }
        if !pairs.is_empty() {
            self.tar
                .append_pax_extensions(pairs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        Ok(())
    }

    /// Writes one entry; true when it is a directory to descend into.
    fn entry(&mut self, path: &Path, rel: &Path) -> io::Result<bool> {
        let meta = std::fs::symlink_metadata(path)?;
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            let name = rel.file_name().unwrap_or_default();
            let wh = rel.with_file_name(names::whiteout_name(name));
            self.tar
                .append_data(&mut marker_header(), wh, io::empty())?;
            self.summary.whiteouts += 1;
            self.summary.entries += 1;
            return Ok(false);
        }
        if ft.is_socket() {
            return Ok(false); // not representable in a layer
        }
        self.xattrs(path)?;
        if ft.is_dir() {
            let mut h = header_for(&meta, tar::EntryType::Directory);
            self.tar.append_data(&mut h, rel, io::empty())?;
            if xattr::get(path, names::OPAQUE_XATTR)?.as_deref() == Some(b"y") {
                let marker = rel.join(names::OPAQUE_MARKER);
                self.tar
                    .append_data(&mut marker_header(), marker, io::empty())?;
                self.summary.opaque_dirs += 1;
            }
        } else if ft.is_symlink() {
            let mut h = header_for(&meta, tar::EntryType::Symlink);
            self.tar
                .append_link(&mut h, rel, std::fs::read_link(path)?)?;
        } else if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            match self.links.get(&key) {
                Some(first) if meta.nlink() > 1 => {
                    let first = first.clone();
                    let mut h = header_for(&meta, tar::EntryType::Link);
                    self.tar.append_link(&mut h, rel, first)?;
                }
                _ => {
                    if meta.nlink() > 1 {
                        self.links.insert(key, rel.to_path_buf());
                    }
                    let mut h = header_for(&meta, tar::EntryType::Regular);
                    h.set_size(meta.len());
                    self.tar
                        .append_data(&mut h, rel, std::fs::File::open(path)?)?;
                }
            }
        } else {
            let kind = if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Fifo
            };
            let mut h = header_for(&meta, kind);
            let rdev = meta.rdev();
            h.set_device_major(libc::major(rdev))?;
            h.set_device_minor(libc::minor(rdev))?;
            self.tar.append_data(&mut h, rel, io::empty())?;
        }
        self.summary.entries += 1;
        Ok(ft.is_dir())
    }
}
