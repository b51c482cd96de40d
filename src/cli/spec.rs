//! `capsa spec`: write a default config.json.

use anyhow::Context;
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
    if path.exists() {
        anyhow::bail!("File {} exists. Remove it first", path.display());
    }
    let ids = args.rootless.then(|| {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    });
    let spec = capsa::spec::default_spec(ids);
    let mut text = serde_json::to_string_pretty(&spec)?;
    text.push('\n');
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(0)
}
