//! Image layers and overlay roots (docs/design.md, "Overlay roots").
//!
//! - [`unpack`]: an OCI layer (tar, tar+gzip, tar+zstd, detected by content) into a layer
//!   directory, whiteouts converted to what overlayfs reads, escapes refused.
//! - [`mount`] / [`unmount`]: layers top-first as lowerdir, with an upper and work dir or
//!   read-only; stacks longer than one page of mount options go through fsconfig.
//! - [`diff`]: an upper directory back into an OCI layer tar, as `docker commit` does.

mod diff;
mod fsutil;
mod mount;
mod names;
mod unpack;

pub use diff::{diff, DiffSummary};
pub use mount::{mount, unmount, Upper};
pub use names::Compression;
pub use unpack::{unpack, UnpackSummary};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("layer {}", layer.display())]
    Layer {
        layer: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid digest {0:?}: expected sha256:<64 hex digits>")]
    BadDigest(String),
    #[error("layer {}: digest mismatch: expected sha256:{expected}, content is sha256:{actual}", layer.display())]
    Digest {
        layer: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("layer {}: entry {entry:?}: {reason}", layer.display())]
    Refused {
        layer: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("layer {}: entry {entry:?}", layer.display())]
    Entry {
        layer: PathBuf,
        entry: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Target { path: PathBuf, reason: &'static str },
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mounting overlay on {} ({layers} lower layers)", target.display())]
    Mount {
        target: PathBuf,
        layers: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("unmounting {}", target.display())]
    Unmount {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("upper {}: entry {entry:?}", upper.display())]
    Diff {
        upper: PathBuf,
        entry: String,
        #[source]
        source: std::io::Error,
    },
}
