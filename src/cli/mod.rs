//! Command-line parsing (clap) and dispatch. One file per command; no logic of its own.

/// `println!` for a command's output, returning `anyhow::Result<()>`: see [`out::line`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::out::line(format_args!($($arg)*))
    };
}

mod checkpoint;
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
mod out;
mod pause;
mod pod;
mod ps;
mod restore;
mod resume;
mod rootfs;
mod run;
mod spec;
mod start;
mod state;
mod update;

use capsa::container::ContainerError;
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
    #[command(flatten)]
    pub options: Options,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The options of capsa itself; all but --version may also follow the subcommand.
#[derive(Debug, clap::Args)]
pub struct Options {
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
    Checkpoint(checkpoint::Args),
    Restore(restore::Args),
    Spec(spec::Args),
    Features(features::Args),
    Rootfs(rootfs::Args),
    Pod(pod::Args),
}

fn print_version() -> anyhow::Result<()> {
    outln!("capsa version {}", env!("CARGO_PKG_VERSION"))?;
    outln!("commit: {}", env!("CAPSA_COMMIT"))?;
    outln!("spec: {}", capsa::OCI_VERSION)
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
    let runtime = capsa::Runtime::new(cli.options.root.clone().unwrap_or_else(default_root));
    if cli.options.systemd_cgroup && matches!(command, Command::Create(_) | Command::Run(_)) {
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
        Command::Checkpoint(a) => checkpoint::run(&runtime, a),
        Command::Restore(a) => restore::run(&runtime, a),
        Command::Spec(a) => spec::run(a),
        Command::Features(a) => features::run(a),
        Command::Rootfs(a) => rootfs::run(a),
        Command::Pod(a) => pod::run(&runtime, a),
    }
}

impl Command {
    /// The parser of subcommand `name` alone, as the derive builds it inside the whole tree.
    fn parser(name: &str) -> Option<clap::Command> {
        use clap::Args as _;
        Some(match name {
            "create" => create::Args::augment_args(clap::Command::new("create")),
            "start" => start::Args::augment_args(clap::Command::new("start")),
            "run" => run::Args::augment_args(clap::Command::new("run")),
            "exec" => exec::Args::augment_args(clap::Command::new("exec")),
            "state" => state::Args::augment_args(clap::Command::new("state")),
            "kill" => kill::Args::augment_args(clap::Command::new("kill")),
            "delete" => delete::Args::augment_args(clap::Command::new("delete")),
            "list" => list::Args::augment_args(clap::Command::new("list")),
            "pause" => pause::Args::augment_args(clap::Command::new("pause")),
            "resume" => resume::Args::augment_args(clap::Command::new("resume")),
            "ps" => ps::Args::augment_args(clap::Command::new("ps")),
            "update" => update::Args::augment_args(clap::Command::new("update")),
            "events" => events::Args::augment_args(clap::Command::new("events")),
            "checkpoint" => checkpoint::Args::augment_args(clap::Command::new("checkpoint")),
            "restore" => restore::Args::augment_args(clap::Command::new("restore")),
            "spec" => spec::Args::augment_args(clap::Command::new("spec")),
            "features" => features::Args::augment_args(clap::Command::new("features")),
            "rootfs" => rootfs::Args::augment_args(clap::Command::new("rootfs")),
            "pod" => pod::Args::augment_args(clap::Command::new("pod")),
            _ => return None,
        })
    }
}

/// Parses a command line. Building clap's parser for all 19 subcommands costs about 0.3 ms
/// per call here, a fifth of a `capsa state`; a line that names one is parsed by a tree
/// holding only that one (same flags, help and errors: the tests compare both trees). A
/// line without a known subcommand (`--help`, `help`, a typo) gets the whole tree, for its
/// list of commands and suggestions.
fn parse(args: &[std::ffi::OsString]) -> Result<Cli, clap::Error> {
    use clap::{Args as _, FromArgMatches as _};
    let Some(sub) = raw_subcommand(args)
        .and_then(|s| s.to_str())
        .and_then(Command::parser)
    else {
        return Cli::try_parse_from(args);
    };
    let root = Options::augment_args(
        clap::Command::new("capsa")
            .disable_version_flag(true)
            .about(env!("CARGO_PKG_DESCRIPTION")),
    )
    .subcommand(sub);
    Cli::from_arg_matches(&root.try_get_matches_from(args)?)
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
    let sealing = (starts_processes && !capsa::internal::is_sealed()).then(|| {
        match capsa::internal::reexec_sealed() {
            Err(e) => e,
        }
    });
    let cli = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let Some(command) = cli.command.as_ref().filter(|_| !cli.options.version) else {
        return match print_version() {
            Ok(()) => 0,
            Err(e) => {
                out::error_line(format_args!("{e:#}"));
                1
            }
        };
    };
    if let Some(e) = sealing.filter(|_| {
        matches!(
            command,
            Command::Create(_) | Command::Run(_) | Command::Exec(_)
        )
    }) {
        let message = format!("{:#}", anyhow::Error::from(e));
        match log::init(&cli.options) {
            Ok(l) => l.fatal(&message),
            Err(_) => out::error_line(format_args!("{message}")),
        }
        return if matches!(command, Command::Exec(_)) {
            255
        } else {
            1
        };
    }
    let logger = match log::init(&cli.options) {
        Ok(l) => l,
        Err(e) => {
            out::error_line(format_args!("{e:#}"));
            return 1;
        }
    };
    match dispatch(&cli, command) {
        Ok(code) => code,
        Err(e) => {
            logger.fatal(&format!("{e:#}"));
            // A create undone on SIGTERM (or ^C) ends as that signal would have ended it.
            if let Some(capsa::Error::Container(ContainerError::Interrupted { signal })) =
                e.downcast_ref::<capsa::Error>()
            {
                out::die_of(*signal);
            }
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
    use super::{parse, raw_subcommand, Cli, Command};
    use clap::{CommandFactory, Parser};

    fn args(line: &str) -> Vec<std::ffi::OsString> {
        line.split(' ').map(Into::into).collect()
    }

    /// What a command line gives through the whole tree and through one subcommand's:
    /// the parsed command, or the text clap prints (help, usage, errors).
    fn both(line: &str) -> (String, String) {
        let show = |r: Result<Cli, clap::Error>| match r {
            Ok(cli) => format!("{cli:?}"),
            Err(e) => format!("{:?}: {}", e.kind(), e.render()),
        };
        (
            show(Cli::try_parse_from(args(line))),
            show(parse(&args(line))),
        )
    }

    #[test]
    fn every_subcommand_has_a_parser_of_its_own_with_the_same_help() {
        let full = Cli::command();
        for sub in full.get_subcommands().filter(|s| s.get_name() != "help") {
            let name = sub.get_name();
            assert!(Command::parser(name).is_some(), "{name}");
            let (whole, alone) = both(&format!("capsa {name} --help"));
            assert!(whole.starts_with("DisplayHelp"), "{whole}");
            assert_eq!(whole, alone, "{name}");
            for nested in sub.get_subcommands().filter(|s| s.get_name() != "help") {
                let (whole, alone) = both(&format!("capsa {name} {} --help", nested.get_name()));
                assert_eq!(whole, alone, "{name} {}", nested.get_name());
            }
        }
        assert!(Command::parser("help").is_none());
    }

    #[test]
    fn one_subcommand_parses_as_the_whole_tree() {
        for line in [
            "capsa --root /r --log-format json create --bundle /b --pid-file /p c1",
            "capsa exec -t --cwd /tmp -e A=1 --user 1000:1000 c1 sh -c true",
            "capsa state c1 --root /r --debug",
            "capsa -v state c1",
            "capsa delete --force c1",
            "capsa kill --all c1 KILL",
            "capsa pod create --share-pid p1",
            "capsa list -q",
            // Errors: the same message, usage line and exit kind.
            "capsa create",
            "capsa start --bogus c1",
            "capsa kill c1 TERM extra",
            "capsa --log-format xml state c1",
            // Not a subcommand: the whole tree answers both ways.
            "capsa stat c1",
            "capsa --help",
        ] {
            let (whole, alone) = both(line);
            assert_eq!(whole, alone, "{line}");
        }
    }

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
