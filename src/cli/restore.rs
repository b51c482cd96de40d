//! `capsa restore`: restore a container from a checkpoint with CRIU.

use super::checkpoint::CriuFlags;
use std::path::PathBuf;

/// Restore a container from a checkpoint with CRIU; without --detach wait for it and exit
/// with its status
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The container's id (no container of that id may exist)
    pub id: String,
    /// Path to the bundle directory (holding config.json)
    #[arg(short = 'b', long, default_value = ".", value_name = "DIR")]
    pub bundle: PathBuf,
    /// Directory holding the checkpoint's image files
    #[arg(long = "image-path", default_value = "checkpoint", value_name = "DIR")]
    pub image_path: PathBuf,
    /// File to write the restored process's pid to
    #[arg(long = "pid-file", value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Return once the container runs
    #[arg(short = 'd', long)]
    pub detach: bool,
    #[command(flatten)]
    pub criu: CriuFlags,
}

pub fn run(runtime: &capsa::Runtime, args: &Args) -> anyhow::Result<i32> {
    let cwd = std::env::current_dir()?;
    let c = &args.criu;
    let mut opts = capsa::RestoreOptions::new(&args.bundle, &args.image_path);
    opts.work_path = c.work_path.clone();
    opts.pid_file = args.pid_file.as_ref().map(|p| cwd.join(p));
    opts.tcp_established = c.tcp_established;
    opts.ext_unix_sk = c.ext_unix_sk;
    opts.file_locks = c.file_locks;
    opts.manage_cgroups_mode = c.manage_cgroups_mode;
    opts.criu = c.criu.clone();
    if args.detach {
        runtime.restore(&args.id, &opts)?;
        return Ok(0);
    }
    Ok(runtime.restore_foreground(&args.id, &opts)?)
}
