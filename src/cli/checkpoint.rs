//! `capsa checkpoint`: checkpoint a running container with CRIU.

use std::path::PathBuf;

/// Checkpoint a running container with CRIU (stopped afterwards unless --leave-running)
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The container's id
    pub id: String,
    /// Directory for CRIU's image files (made when missing)
    #[arg(long = "image-path", default_value = "checkpoint", value_name = "DIR")]
    pub image_path: PathBuf,
    /// Images of an earlier --pre-dump, relative to the image path or absolute
    #[arg(long = "parent-path", value_name = "DIR")]
    pub parent_path: Option<PathBuf>,
    /// Leave the container running after the checkpoint
    #[arg(long = "leave-running")]
    pub leave_running: bool,
    /// Only dump the memory (CRIU's pre-dump); the container keeps running
    #[arg(long = "pre-dump")]
    pub pre_dump: bool,
    #[command(flatten)]
    pub criu: CriuFlags,
}

/// The flags `checkpoint` and `restore` share.
#[derive(Debug, Clone, clap::Args)]
pub struct CriuFlags {
    /// Directory for CRIU's log and work files [default: the image path]
    #[arg(long = "work-path", value_name = "DIR")]
    pub work_path: Option<PathBuf>,
    /// Established TCP connections too
    #[arg(long = "tcp-established")]
    pub tcp_established: bool,
    /// Allow unix sockets connected outside the container
    #[arg(long = "ext-unix-sk")]
    pub ext_unix_sk: bool,
    /// File locks too
    #[arg(long = "file-locks")]
    pub file_locks: bool,
    /// How CRIU handles cgroups: soft, full, strict or ignore
    #[arg(long = "manage-cgroups-mode", default_value = "soft", value_name = "MODE",
          value_parser = parse_mode)]
    pub manage_cgroups_mode: capsa::container::CgroupsMode,
    /// The criu binary
    #[arg(long, default_value = "criu", value_name = "PATH")]
    pub criu: PathBuf,
}

fn parse_mode(s: &str) -> Result<capsa::container::CgroupsMode, String> {
    capsa::container::CgroupsMode::parse(s)
        .ok_or_else(|| format!("unknown cgroups mode {s:?}: use soft, full, strict or ignore"))
}

pub fn run(runtime: &capsa::Runtime, args: &Args) -> anyhow::Result<i32> {
    let c = &args.criu;
    let mut opts = capsa::CheckpointOptions::new(&args.image_path);
    opts.work_path = c.work_path.clone();
    opts.parent_path = args.parent_path.clone();
    opts.leave_running = args.leave_running;
    opts.tcp_established = c.tcp_established;
    opts.ext_unix_sk = c.ext_unix_sk;
    opts.file_locks = c.file_locks;
    opts.pre_dump = args.pre_dump;
    opts.manage_cgroups_mode = c.manage_cgroups_mode;
    opts.criu = c.criu.clone();
    runtime.load(&args.id)?.checkpoint(&opts)?;
    Ok(0)
}
