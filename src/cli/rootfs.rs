//! `capsa rootfs`: image layers and overlay roots, for scripts and tests.

use clap::Subcommand;
use std::path::PathBuf;

/// Unpack, mount and diff image layers (overlayfs)
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: RootfsCommand,
}

#[derive(Debug, Subcommand)]
pub enum RootfsCommand {
    /// Unpack an OCI layer (tar, tar+gzip or tar+zstd) into an empty layer directory,
    /// converting .wh. whiteouts to overlay whiteouts
    Unpack {
        /// The layer file
        layer: PathBuf,
        /// The layer directory (created when missing; must be empty)
        dir: PathBuf,
        /// Verify the layer's bytes against this digest first (sha256:<hex>)
        #[arg(long)]
        digest: Option<String>,
    },
    /// Mount layer directories as an overlay on TARGET (read-only without --upper)
    Mount {
        /// A lower layer directory; repeat, top layer first
        #[arg(long = "lower", required = true, value_name = "DIR")]
        lower: Vec<PathBuf>,
        /// The writable upper directory
        #[arg(long, requires = "work", value_name = "DIR")]
        upper: Option<PathBuf>,
        /// overlayfs's work directory (same filesystem as --upper, empty)
        #[arg(long, requires = "upper", value_name = "DIR")]
        work: Option<PathBuf>,
        /// Where to mount
        target: PathBuf,
    },
    /// Unmount an overlay mounted by `capsa rootfs mount`
    Umount {
        /// The mount point
        target: PathBuf,
    },
    /// Write the changes in an upper directory as an OCI layer tar (whiteouts as .wh. entries)
    Diff {
        /// The upper directory
        upper: PathBuf,
        /// The tar file to write
        out: PathBuf,
    },
}

pub fn run(args: &Args) -> anyhow::Result<i32> {
    use capsa::overlay;
    match &args.command {
        RootfsCommand::Unpack { layer, dir, digest } => {
            let s = overlay::unpack(layer, dir, digest.as_deref())?;
            outln!(
                "{} entries, {} whiteouts, {} opaque directories",
                s.entries,
                s.whiteouts,
                s.opaque_dirs
            )?;
        }
        RootfsCommand::Mount {
            lower,
            upper,
            work,
            target,
        } => {
            let upper = upper.as_deref().zip(work.as_deref());
            let upper = upper.map(|(upper, work)| overlay::Upper::new(upper, work));
            overlay::mount(lower, upper, target)?;
        }
        RootfsCommand::Umount { target } => overlay::unmount(target)?,
        RootfsCommand::Diff { upper, out } => {
            let s = overlay::diff(upper, out)?;
            outln!(
                "{} entries, {} whiteouts, {} opaque directories",
                s.entries,
                s.whiteouts,
                s.opaque_dirs
            )?;
        }
    }
    Ok(0)
}
