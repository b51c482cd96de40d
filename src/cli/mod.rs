//! Command-line parsing (clap) and dispatch. One file per command; no logic of its own.

mod create;
mod delete;
mod events;
mod exec;
mod features;
mod kill;
mod list;
mod log;
#[cfg(test)]
mod man;
mod pause;
mod pod;
mod ps;
mod resume;
mod rootfs;
mod run;
mod spec;
mod start;
mod state;
mod update;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// capsa: a low-level OCI container runtime, flag-compatible with runc.
#[derive(Debug, Parser)]
#[command(name = "capsa", disable_version_flag = true, about, long_about = None)]
pub struct Cli {
    /// Root directory for storage of container state [default: /run/capsa, or
    /// $XDG_RUNTIME_DIR/capsa when not run as root]
    #[arg(long, global = true, value_name = "PATH")]
    pub root: Option<PathBuf>,
    /// Write log lines to this file instead of stderr
    #[arg(long, global = true, value_name = "PATH")]
    pub log: Option<PathBuf>,
    /// Log format: text or json
    #[arg(long = "log-format", global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Enable debug logging
    #[arg(long, global = true)]
    pub debug: bool,
    /// Use systemd to manage cgroups (not available: capsa manages cgroupfs directly)
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,
    /// Print the version
    #[arg(short = 'v', long)]
    pub version: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Create(create::Args),
    Start(start::Args),
    Run(run::Args),
    Exec(exec::Args),
    State(state::Args),
    Kill(kill::Args),
    Delete(delete::Args),
    List(list::Args),
    Pause(pause::Args),
    Resume(resume::Args),
    Ps(ps::Args),
    Update(update::Args),
    Events(events::Args),
    Spec(spec::Args),
    Features(features::Args),
    Rootfs(rootfs::Args),
    Pod(pod::Args),
}

fn print_version() {
    println!("capsa version {}", env!("CARGO_PKG_VERSION"));
    println!("commit: {}", env!("CAPSA_COMMIT"));
    println!("spec: {}", capsa::OCI_VERSION);
}

/// runc's rule: root's state lives in /run; an unprivileged user's in $XDG_RUNTIME_DIR
/// (falling back to /run/user/<uid>, where logind puts it).
fn default_root() -> PathBuf {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/capsa");
    }
    std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/run/user/{uid}")))
        .join("capsa")
}

fn dispatch(cli: &Cli, command: &Command) -> anyhow::Result<i32> {
    let runtime = capsa::Runtime::new(cli.root.clone().unwrap_or_else(default_root));
    if cli.systemd_cgroup && matches!(command, Command::Create(_) | Command::Run(_)) {
        anyhow::bail!(
            "--systemd-cgroup: the systemd cgroup driver is not available; use cgroupfs paths"
        );
    }
    match command {
        Command::Create(a) => create::run(&runtime, a),
        Command::Start(a) => start::run(&runtime, a),
        Command::Run(a) => run::run(&runtime, a),
        Command::Exec(a) => exec::run(&runtime, a),
        Command::State(a) => state::run(&runtime, a),
        Command::Kill(a) => kill::run(&runtime, a),
        Command::Delete(a) => delete::run(&runtime, a),
        Command::List(a) => list::run(&runtime, a),
        Command::Pause(a) => pause::run(&runtime, a),
        Command::Resume(a) => resume::run(&runtime, a),
        Command::Ps(a) => ps::run(&runtime, a),
        Command::Update(a) => update::run(&runtime, a),
        Command::Events(a) => events::run(&runtime, a),
        Command::Spec(a) => spec::run(a),
        Command::Features(a) => features::run(a),
        Command::Rootfs(a) => rootfs::run(a),
        Command::Pod(a) => pod::run(&runtime, a),
    }
}

/// The subcommand named on a raw command line: the first argument that is neither a global
/// option nor the value of one.
fn raw_subcommand(args: &[std::ffi::OsString]) -> Option<&std::ffi::OsStr> {
    const WITH_VALUE: &[&str] = &["--root", "--log", "--log-format"];
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        match arg.to_str() {
            Some(a) if WITH_VALUE.contains(&a) => {
                rest.next();
            }
            Some(a) if a.starts_with('-') => {}
            _ => return Some(arg),
        }
    }
    None
}

/// Parses, runs, reports; returns the process exit status.
pub fn main() -> i32 {
    // create, run and exec start processes inside containers: they run from a sealed copy
    // of this binary (CVE-2019-5736). Decided on the raw arguments, before clap builds its
    // parser (the copy parses them anyway) and before the log is opened (nothing may be lost
    // to the exec); a failure is reported below, once the command line is known to be one
    // of those three.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let starts_processes = raw_subcommand(&args)
        .and_then(|s| s.to_str())
        .is_some_and(|s| matches!(s, "create" | "run" | "exec"));
    let sealing = (starts_processes && !capsa::security::sealed::is_sealed()).then(|| {
        match capsa::security::sealed::reexec_sealed() {
            Err(e) => e,
        }
    });
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    if cli.version {
        print_version();
        return 0;
    }
    let Some(command) = &cli.command else {
        print_version();
        return 0;
    };
    if let Some(e) = sealing.filter(|_| {
        matches!(
            command,
            Command::Create(_) | Command::Run(_) | Command::Exec(_)
        )
    }) {
        let message = format!("{:#}", anyhow::Error::from(e));
        match log::init(cli.log.as_deref(), cli.log_format, cli.debug) {
            Ok(l) => l.fatal(&message),
            Err(_) => eprintln!("{message}"),
        }
        return if matches!(command, Command::Exec(_)) {
            255
        } else {
            1
        };
    }
    let logger = match log::init(cli.log.as_deref(), cli.log_format, cli.debug) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e:#}");
            return 1;
        }
    };
    match dispatch(&cli, command) {
        Ok(code) => code,
        Err(e) => {
            logger.fatal(&format!("{e:#}"));
            // exec's own status is the process's; a failure of capsa itself is 255, as runc.
            if matches!(command, Command::Exec(_)) {
                255
            } else {
                1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::raw_subcommand;

    fn sub(line: &str) -> Option<String> {
        let args: Vec<std::ffi::OsString> = line.split(' ').map(Into::into).collect();
        raw_subcommand(&args).map(|s| s.to_string_lossy().into_owned())
    }

    #[test]
    fn the_subcommand_is_found_past_global_options_and_their_values() {
        assert_eq!(sub("capsa run x").as_deref(), Some("run"));
        assert_eq!(
            sub("capsa --root run --log /l --log-format json --debug exec c sh").as_deref(),
            Some("exec")
        );
        assert_eq!(sub("capsa --root=/r state run").as_deref(), Some("state"));
        assert_eq!(sub("capsa --debug"), None);
    }
}
