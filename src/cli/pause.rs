//! `capsa pause`: freeze every process of a container.

/// Pause (freeze) every process in the container
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The container's id
    pub id: String,
}

pub fn run(runtime: &capsa::Runtime, args: &Args) -> anyhow::Result<i32> {
    runtime.load(&args.id)?.pause()?;
    Ok(0)
}
