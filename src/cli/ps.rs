//! `capsa ps`: the processes in a container.

use anyhow::Context;

/// List the processes running in a container
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format: table (ps(1) output) or json (host pids)
    #[arg(short = 'f', long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
    /// The container's id
    pub id: String,
    /// Arguments for ps(1) in table format (default: -ef)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

pub fn run(runtime: &capsa::Runtime, args: &Args) -> anyhow::Result<i32> {
    let pids: Vec<i32> = runtime
        .load(&args.id)?
        .pids()?
        .iter()
        .map(|p| p.as_raw())
        .collect();
    if args.format == "json" {
        outln!("{}", serde_json::to_string(&pids)?)?;
        return Ok(0);
    }
    // As runc: run ps(1) and keep the header and the rows whose PID column is ours.
    let ps_args = if args.ps_args.is_empty() {
        vec!["-ef".to_string()]
    } else {
        args.ps_args.clone()
    };
    let out = std::process::Command::new("ps")
        .args(&ps_args)
        .output()
        .context("running ps")?;
    anyhow::ensure!(
        out.status.success(),
        "ps {}: {}",
        ps_args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let column = header
        .split_whitespace()
        .position(|h| h == "PID")
        .context("ps output has no PID column")?;
    outln!("{header}")?;
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(column)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            outln!("{line}")?;
        }
    }
    Ok(0)
}
