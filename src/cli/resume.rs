//! `capsa resume`: thaw a paused container.

/// Resume (thaw) a paused container
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The container's id
    pub id: String,
}

pub fn run(runtime: &capsa::Runtime, args: &Args) -> anyhow::Result<i32> {
    runtime.load(&args.id)?.resume()?;
    Ok(0)
}
