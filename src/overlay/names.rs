//! Pure logic of layer entry names: which entries are whiteouts, and which paths are allowed.
//! (The syscalls live in unpack.rs and diff.rs; this is what can be unit-tested alone.)

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

/// The prefix of a whiteout entry in an OCI layer (image-spec "layer.md").
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The entry that makes its directory opaque.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to treat a directory as opaque.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What an entry's last path component asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    /// An ordinary file, directory, link or node.
    Plain,
    /// `.wh.NAME`: NAME is deleted in this layer.
    Whiteout(OsString),
    /// `.wh..wh..opq`: the directory hides everything below it.
    Opaque,
    /// Another `.wh..wh.` name (aufs bookkeeping such as `.wh..wh.plnk`): ignored.
    Meta,
}

/// Classifies an entry by its file name.
pub fn classify(name: &OsStr) -> Kind {
    let bytes = name.as_bytes();
    if bytes == OPAQUE_MARKER.as_bytes() {
        Kind::Opaque
    } else if bytes.starts_with(b".wh..wh.") {
        Kind::Meta
    } else if let Some(rest) = bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
        Kind::Whiteout(OsStr::from_bytes(rest).to_os_string())
    } else {
        Kind::Plain
    }
}

/// The tar name of a whiteout for `name`.
pub fn whiteout_name(name: &OsStr) -> OsString {
    let mut out = OsString::from(WHITEOUT_PREFIX);
    out.push(name);
    out
}

/// Why an entry path is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum PathRefusal {
    Absolute,
    ParentDir,
}

impl std::fmt::Display for PathRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathRefusal::Absolute => "absolute path escapes the layer",
            PathRefusal::ParentDir => "\"..\" escapes the layer",
        })
    }
}

/// Splits an entry path into its components inside the layer: `./` and repeated slashes are
/// dropped; an absolute path or any `..` is refused rather than rewritten, so that a layer
/// built to escape is reported, not silently "fixed".
pub fn components(path: &Path) -> Result<Vec<&OsStr>, PathRefusal> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(PathRefusal::ParentDir),
            Component::RootDir | Component::Prefix(_) => return Err(PathRefusal::Absolute),
        }
    }
    Ok(out)
}

/// Detects a layer's compression from its first bytes (OCI media types are not trusted:
/// the same file is often named `layer.tar` whatever it holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

pub fn detect(magic: &[u8]) -> Compression {
    if magic.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Parses `sha256:<64 hex>` into the lowercase hex digest.
pub fn parse_digest(digest: &str) -> Option<String> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| hex.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteouts_are_classified() {
        assert_eq!(classify(OsStr::new("passwd")), Kind::Plain);
        assert_eq!(
            classify(OsStr::new(".wh.passwd")),
            Kind::Whiteout("passwd".into())
        );
        assert_eq!(classify(OsStr::new(".wh..wh..opq")), Kind::Opaque);
        assert_eq!(classify(OsStr::new(".wh..wh.plnk")), Kind::Meta);
        assert_eq!(classify(OsStr::new(".whx")), Kind::Plain);
        assert_eq!(whiteout_name(OsStr::new("a b")), OsString::from(".wh.a b"));
    }

    #[test]
    fn escaping_paths_are_refused() {
        assert_eq!(
            components(Path::new("./etc//passwd")).unwrap(),
            vec![OsStr::new("etc"), OsStr::new("passwd")]
        );
        assert_eq!(
            components(Path::new("/etc/passwd")),
            Err(PathRefusal::Absolute)
        );
        assert_eq!(
            components(Path::new("a/../../x")),
            Err(PathRefusal::ParentDir)
        );
        assert!(components(Path::new("./")).unwrap().is_empty());
    }

    #[test]
    fn compression_and_digest() {
        assert_eq!(detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(detect(b"etc/\0\0\0"), Compression::None);
        let d = format!("sha256:{}", "AB".repeat(32));
        assert_eq!(parse_digest(&d), Some("ab".repeat(32)));
        assert_eq!(parse_digest("sha256:abc"), None);
        assert_eq!(parse_digest("md5:00"), None);
    }
}
