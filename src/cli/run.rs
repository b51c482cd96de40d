//! `capsa run`: create and start; in the foreground, wait and return the container's status.

use super::create::CreateFlags;

/// Create and start a container; without --detach wait for it and exit with its status
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The container's id
    pub id: String,
    #[command(flatten)]
    pub opts: CreateFlags,
    /// Return once the container has started
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Do not delete the container after it exits (it stays stopped until delete)
    #[arg(long)]
    pub keep: bool,
}

pub fn run(runtime: &capsa::Runtime, args: &Args) -> anyhow::Result<i32> {
    Ok(runtime.run(&args.id, &args.opts.to_options()?, args.detach, args.keep)?)
}
