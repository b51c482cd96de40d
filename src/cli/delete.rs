//! `capsa delete`: remove containers and everything they held.

/// Delete containers: their processes, cgroup and state
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kill a running container first; a missing container is not an error
    #[arg(short = 'f', long)]
    pub force: bool,
    /// The containers' ids
    #[arg(required = true)]
    pub ids: Vec<String>,
}

pub fn run(runtime: &capsa::Runtime, args: &Args) -> anyhow::Result<i32> {
    let mut failed = None;
    for id in &args.ids {
        match runtime.remove(id, args.force) {
            Ok(()) => {}
            Err(e) => {
                if args.ids.len() > 1 {
                    log::error!("{:#}", anyhow::Error::from(e));
                    failed = Some(anyhow::anyhow!("deleting some containers failed"));
                } else {
                    return Err(e.into());
                }
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(0),
    }
}
