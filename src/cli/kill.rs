//! `capsa kill`: send a signal to a container's process (or all of them).

/// Send a signal (name or number, default SIGTERM) to the container's init process
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Send the signal to every process in the container
    #[arg(short = 'a', long)]
    pub all: bool,
    /// The container's id
    pub id: String,
    /// The signal: KILL, SIGKILL, 9, RTMIN+3 (realtime), or 0 to only check that it runs
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

pub fn run(runtime: &capsa::Runtime, args: &Args) -> anyhow::Result<i32> {
    let signal = capsa::container::parse_signal(&args.signal)?;
    runtime.load(&args.id)?.kill(signal, args.all)?;
    Ok(0)
}
