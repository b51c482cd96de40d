//! `capsa state`: the container's state as JSON (runc's fields).

/// Print the state of a container as JSON
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The container's id
    pub id: String,
}

pub fn run(runtime: &capsa::Runtime, args: &Args) -> anyhow::Result<i32> {
    let state = runtime.load(&args.id)?.oci_state();
    outln!("{}", serde_json::to_string_pretty(&state)?)?;
    Ok(0)
}
