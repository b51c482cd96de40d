//! `capsa exec`: run a process in a running container.

use anyhow::Context;
use oci_spec::runtime::Process;
use serde_json::{json, Value};
use std::path::PathBuf;

/// Run a new process inside a running container
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A process JSON (the OCI process object) instead of a command line
    #[arg(short = 'p', long, value_name = "FILE")]
    pub process: Option<PathBuf>,
    /// Allocate a terminal: its master goes to --console-socket, or, in the foreground
    /// without one, capsa relays it to its own stdio
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Unix socket that receives the pty master
    #[arg(long = "console-socket", value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Return once the process has started
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// File to write the process's host pid to
    #[arg(long = "pid-file", value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Working directory inside the container
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// Extra environment variables (KEY=VALUE)
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// User as uid[:gid]
    #[arg(short = 'u', long, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Additional group ids
    #[arg(short = 'g', long = "additional-gids", value_name = "GID")]
    pub additional_gids: Vec<u32>,
    /// Add a capability (bounding, effective and permitted)
    #[arg(short = 'c', long = "cap", value_name = "CAP")]
    pub cap: Vec<String>,
    /// Set no_new_privs for the process
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// Pass N additional file descriptors (3 .. 3+N-1) to the process
    #[arg(long = "preserve-fds", default_value_t = 0, value_name = "N")]
    pub preserve_fds: u32,
    /// SELinux label for the process (an error when SELinux is not enabled)
    #[arg(long = "process-label", value_name = "LABEL")]
    pub process_label: Option<String>,
    /// AppArmor profile for the process (an error when AppArmor is not enabled)
    #[arg(long, value_name = "PROFILE")]
    pub apparmor: Option<String>,
    /// Run the process in an existing sub-cgroup of the container's: PATH (every
    /// hierarchy) or CONTROLLER[,CONTROLLER]:PATH, repeated
    #[arg(long = "cgroup", value_name = "[CONTROLLER:]PATH")]
    pub cgroup: Vec<String>,
    /// Run the process even if the container is paused (it stays frozen until resume)
    #[arg(long = "ignore-paused")]
    pub ignore_paused: bool,
    /// The container's id
    pub id: String,
    /// The command and its arguments (unless --process)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn parse_process(v: Value) -> anyhow::Result<Process> {
    serde_path_to_error::deserialize(v)
        .map_err(|e| anyhow::anyhow!("process: {}: {}", e.path(), e.inner()))
}

/// The process to run: --process, or the container's own process with the command and the
/// flags applied (what runc does).
fn build(args: &Args, template: Option<&Process>) -> anyhow::Result<Process> {
    if let Some(path) = &args.process {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut v: Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        // runc reads the file into Go's zero values: a process without a user runs as 0:0.
        if let Some(p) = v.as_object_mut() {
            p.entry("user")
                .or_insert_with(|| json!({"uid": 0, "gid": 0}));
        }
        return parse_process(v);
    }
    anyhow::ensure!(
        !args.command.is_empty(),
        "exec: a command (or --process) is required"
    );
    let mut v = match template {
        Some(p) => serde_json::to_value(p)?,
        None => json!({"user": {"uid": 0, "gid": 0}, "cwd": "/"}),
    };
    v["args"] = json!(args.command);
    v["terminal"] = json!(args.tty);
    if let Some(cwd) = &args.cwd {
        v["cwd"] = json!(cwd);
    }
    if !args.env.is_empty() {
        let mut env: Vec<Value> = v["env"].as_array().cloned().unwrap_or_default();
        env.extend(args.env.iter().map(|e| json!(e)));
        v["env"] = Value::Array(env);
    }
    if let Some(user) = &args.user {
        let (uid, gid) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user.as_str(), None),
        };
        let uid: u32 = uid
            .parse()
            .with_context(|| format!("--user {user}: uid must be a number"))?;
        v["user"]["uid"] = json!(uid);
        if let Some(g) = gid {
            let gid: u32 = g
                .parse()
                .with_context(|| format!("--user {user}: gid must be a number"))?;
            v["user"]["gid"] = json!(gid);
        }
    }
    if !args.additional_gids.is_empty() {
        v["user"]["additionalGids"] = json!(args.additional_gids);
    }
    for cap in &args.cap {
        let name = capsa::security::parse_capability(cap)?.to_string();
        for set in ["bounding", "effective", "permitted"] {
            let list = &mut v["capabilities"][set];
            if !list.is_array() {
                *list = json!([]);
            }
            if let Some(a) = list.as_array_mut() {
                if !a.iter().any(|c| c == &json!(name)) {
                    a.push(json!(name));
                }
            }
        }
    }
    if args.no_new_privs {
        v["noNewPrivileges"] = json!(true);
    }
    if let Some(label) = &args.process_label {
        v["selinuxLabel"] = json!(label);
    }
    if let Some(profile) = &args.apparmor {
        v["apparmorProfile"] = json!(profile);
    }
    parse_process(v)
}

pub fn run(runtime: &capsa::Runtime, args: &Args) -> anyhow::Result<i32> {
    let container = runtime.load(&args.id)?;
    let process = build(args, container.process())?;
    let cwd = std::env::current_dir()?;
    let mut opts = capsa::ExecOptions::new().preserve_fds(args.preserve_fds);
    opts.console_socket = args.console_socket.as_ref().map(|p| cwd.join(p));
    opts.ignore_paused = args.ignore_paused;
    opts.sub_cgroups = capsa::cgroups::SubCgroups::parse(&args.cgroup)?;
    let pid_file = args.pid_file.as_ref().map(|p| cwd.join(p));
    let write_pid = |pid: nix::unistd::Pid| -> capsa::Result<()> {
        if let Some(p) = &pid_file {
            capsa::internal::write_pid_file(p, pid)?;
        }
        Ok(())
    };
    if args.detach {
        let pid = container.exec_detached(&process, &opts)?;
        write_pid(pid)?;
        return Ok(0);
    }
    Ok(container.exec_wait(&process, &opts, &mut |pid| write_pid(pid))?)
}
