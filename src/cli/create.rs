//! `capsa create`: create a container from a bundle; its process waits for `start`.

use std::path::PathBuf;

/// Create a container (its process waits for `capsa start`)
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The container's id
    pub id: String,
    #[command(flatten)]
    pub opts: CreateFlags,
}

/// The flags `create` and `run` share.
#[derive(Debug, Clone, clap::Args)]
pub struct CreateFlags {
    /// Path to the bundle directory (holding config.json)
    #[arg(short = 'b', long, default_value = ".", value_name = "DIR")]
    pub bundle: PathBuf,
    /// Unix socket that receives the pty master when process.terminal is true
    #[arg(long = "console-socket", value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// File to write the container process's pid to
    #[arg(long = "pid-file", value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Do not use pivot_root (for a rootfs on ramfs)
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Do not create a new session keyring for the container
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Pass N additional file descriptors (3 .. 3+N-1) to the container
    #[arg(long = "preserve-fds", default_value_t = 0, value_name = "N")]
    pub preserve_fds: u32,
    /// Join pod ID (created by `capsa pod create`): its shared namespaces and cgroup
    #[arg(long, value_name = "ID")]
    pub pod: Option<String>,
}

impl CreateFlags {
    pub fn to_options(&self) -> anyhow::Result<capsa::CreateOptions> {
        // A relative --pid-file is relative to the caller's directory.
        let cwd = std::env::current_dir()?;
        let mut opts = capsa::CreateOptions::new(&self.bundle)
            .no_pivot(self.no_pivot)
            .no_new_keyring(self.no_new_keyring)
            .preserve_fds(self.preserve_fds);
        opts.pid_file = self.pid_file.as_ref().map(|p| cwd.join(p));
        opts.console_socket = self.console_socket.as_ref().map(|p| cwd.join(p));
        opts.pod = self.pod.clone();
        // Not a runc flag: the environment sets the bound on init's setup steps (seconds).
        if let Ok(secs) = std::env::var("CAPSA_SETUP_TIMEOUT") {
            let secs: u64 = secs.parse().map_err(|_| {
                anyhow::anyhow!("CAPSA_SETUP_TIMEOUT={secs:?}: expected a number of seconds")
            })?;
            opts.setup_timeout = Some(std::time::Duration::from_secs(secs));
        }
        Ok(opts)
    }
}

pub fn run(runtime: &capsa::Runtime, args: &Args) -> anyhow::Result<i32> {
    runtime.create_abortable(&args.id, &args.opts.to_options()?)?;
    Ok(0)
}
