//! `capsa events`: resource statistics once (--stats) or as a stream, with OOM events.

use std::time::Duration;

/// Print container events: statistics every interval and OOM kills, as JSON lines
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the statistics once and exit
    #[arg(long)]
    pub stats: bool,
    /// Time between statistics (e.g. 5s, 500ms, 1m)
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub interval: Duration,
    /// The container's id
    pub id: String,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use ms, s, m or h)"
            ))
        }
    };
    if secs <= 0.0 {
        return Err(format!("duration {s:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn run(runtime: &capsa::Runtime, args: &Args) -> anyhow::Result<i32> {
    let container = runtime.load(&args.id)?;
    if args.stats {
        outln!("{}", serde_json::to_string(&container.stats_event()?)?)?;
        return Ok(0);
    }
    container.watch(args.interval, &mut |event| {
        if let Ok(line) = serde_json::to_string(event) {
            // A reader gone away ends capsa in outln!; another write error is ignored, as
            // runc's fmt.Println ignores it.
            let _ = outln!("{line}");
        }
    })?;
    Ok(0)
}
