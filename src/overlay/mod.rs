//! Image layers and overlay roots (docs/design.md, "Overlay roots").
//!
//! - [`unpack`]: an OCI layer (tar, tar+gzip, tar+zstd, detected by content) into a layer
//!   directory, whiteouts converted to what overlayfs reads, escapes refused.
//! - [`mount`] / [`unmount`]: layers top-first as lowerdir, with an upper and work dir or
//!   read-only; stacks longer than one page of mount options go through fsconfig.
//! - [`diff`]: an upper directory back into an OCI layer tar, as `docker commit` does.
//! - [`copy_into`]: a tree of a root into a directory of its own (an image's volume).

mod copy;
mod diff;
mod fsutil;
mod mount;
mod names;
mod unpack;

pub use copy::{copy_into, CopySummary};
pub use diff::{diff, DiffSummary};
pub use mount::{mount, unmount, Upper};
pub use names::Compression;
pub use unpack::{unpack, UnpackSummary};

use std::path::PathBuf;

/// A failure unpacking a layer, mounting or unmounting an overlay, or writing a diff.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// Reading the layer file failed.
    #[error("layer {}", layer.display())]
    Layer {
        /// The layer file.
        layer: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// A digest that is not `algorithm:hex`.
    #[error("invalid digest {0:?}: expected sha256:<64 hex digits>")]
    BadDigest(String),
    /// The content does not match the digest asked for.
    #[error("layer {}: digest mismatch: expected sha256:{expected}, content is sha256:{actual}", layer.display())]
    Digest {
        /// The layer file.
        layer: PathBuf,
        /// The digest asked for.
        expected: String,
        /// The digest of the content.
        actual: String,
    },
    /// An entry that would escape the layer directory.
    #[error("layer {}: entry {entry:?}: {reason}", layer.display())]
    Refused {
        /// The layer file.
        layer: PathBuf,
        /// The entry path inside the layer.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// Writing one entry failed.
    #[error("layer {}: entry {entry:?}", layer.display())]
    Entry {
        /// The layer file.
        layer: PathBuf,
        /// The entry path inside the layer.
        entry: String,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The mount or unpack target cannot be used.
    #[error("{}: {reason}", path.display())]
    Target {
        /// The directory.
        path: PathBuf,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A file operation failed.
    #[error("{op} {}", path.display())]
    Io {
        /// The operation.
        op: &'static str,
        /// The file or directory operated on.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The overlay mount failed.
    #[error("mounting overlay on {} ({layers} lower layers)", target.display())]
    Mount {
        /// The mount point.
        target: PathBuf,
        /// How many layers.
        layers: usize,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Unmounting the overlay failed.
    #[error("unmounting {}", target.display())]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// Writing one entry of a diff failed.
    #[error("upper {}: entry {entry:?}", upper.display())]
    Diff {
        /// The upper directory.
        upper: PathBuf,
        /// The entry path inside the layer.
        entry: String,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
}
