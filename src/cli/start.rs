//! `capsa start`: start a created container.

/// Start a created container (run its process)
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The container's id
    pub id: String,
}

pub fn run(runtime: &capsa::Runtime, args: &Args) -> anyhow::Result<i32> {
    runtime.load(&args.id)?.start()?;
    Ok(0)
}
