//! `capsa spec`: write a default config.json.

use anyhow::Context;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// Write a default config.json into the bundle directory
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle directory
    #[arg(short = 'b', long, default_value = ".", value_name = "DIR")]
    pub bundle: PathBuf,
    /// A spec for an unprivileged user: a user namespace mapping the caller to root
    #[arg(long)]
    pub rootless: bool,
}

pub fn run(args: &Args) -> anyhow::Result<i32> {
    let path = args.bundle.join("config.json");
    let ids = args.rootless.then(|| {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    });
    let spec = capsa::spec::default_spec(ids);
    let mut text = serde_json::to_string_pretty(&spec)?;
    text.push('\n');
    // Created new, never through a symlink: a dangling link planted at config.json would
    // otherwise have us create whatever file it names (an exists() check follows it too).
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
    {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            anyhow::bail!("File {} exists. Remove it first", path.display())
        }
        other => other.with_context(|| format!("creating {}", path.display()))?,
    };
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(0)
}
