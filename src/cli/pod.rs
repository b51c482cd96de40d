//! `capsa pod`: pods whose containers share an infra process's namespaces.

use clap::Subcommand;
use std::path::PathBuf;

/// Create, list and remove pods (containers sharing net, ipc, uts and optionally pid)
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: PodCommand,
}

#[derive(Debug, Subcommand)]
pub enum PodCommand {
    /// Create a pod: start its infra process holding the shared namespaces
    Create {
        /// The pod's id
        id: String,
        /// Namespaces the pod's containers share (comma-separated: net, ipc, uts, pid)
        #[arg(long, value_delimiter = ',', default_value = "net,ipc,uts")]
        share: Vec<String>,
        /// Parent of the pod's cgroup (the pod's is PARENT/ID)
        #[arg(long = "cgroup-parent", default_value = capsa::pod::DEFAULT_CGROUP_PARENT, value_name = "PATH")]
        cgroup_parent: PathBuf,
        /// The pod's hostname (default: its id)
        #[arg(long)]
        hostname: Option<String>,
        /// The pause program to run as the infra process (default: capsa-pause next to capsa)
        #[arg(long = "pause-binary", value_name = "PATH")]
        pause_binary: Option<PathBuf>,
        /// A namespaced sysctl set in the pod's shared namespaces (KEY=VALUE; repeatable)
        #[arg(long = "sysctl", value_name = "KEY=VALUE")]
        sysctls: Vec<String>,
    },
    /// List pods
    #[command(visible_alias = "ls")]
    List {
        /// Output format: table or json
        #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
    /// Remove a pod: its containers, then its infra process
    Rm {
        /// The pod's id
        id: String,
        /// Also kill and delete containers that are still running
        #[arg(short, long)]
        force: bool,
    },
}

pub fn run(runtime: &capsa::Runtime, args: &Args) -> anyhow::Result<i32> {
    match &args.command {
        PodCommand::Create {
            id,
            share,
            cgroup_parent,
            hostname,
            pause_binary,
            sysctls,
        } => {
            let share = share
                .iter()
                .map(|s| capsa::pod::parse_share(s))
                .collect::<Result<Vec<_>, _>>()?;
            let mut opts = capsa::PodOptions::new()
                .share(share)
                .cgroup_parent(cgroup_parent.clone());
            opts.hostname = hostname.clone();
            opts.pause_binary = pause_binary.clone();
            for kv in sysctls {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--sysctl {kv:?}: want KEY=VALUE"))?;
                opts = opts.sysctl(k, v);
            }
            runtime.create_pod(id, &opts)?;
        }
        PodCommand::List { format } => list(runtime, format == "json")?,
        PodCommand::Rm { id, force } => runtime.remove_pod(id, *force)?,
    }
    Ok(0)
}

fn list(runtime: &capsa::Runtime, json: bool) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for pod in runtime.list_pods()? {
        let containers: Vec<String> = runtime
            .pod_containers(pod.id())?
            .iter()
            .map(|c| c.id().to_string())
            .collect();
        let s = pod.state();
        rows.push(serde_json::json!({
            "id": s.id,
            "pid": s.pid,
            "status": if pod.live_pid().is_some() { "running" } else { "stopped" },
            "shares": s.shares,
            "cgroupsPath": s.cgroup_path,
            "hostname": s.hostname,
            "containers": containers,
            "created": s.created,
        }));
    }
    if json {
        outln!("{}", serde_json::Value::Array(rows))?;
        return Ok(());
    }
    outln!(
        "{:<20} {:<8} {:<8} {:<31} CONTAINERS",
        "ID",
        "PID",
        "STATUS",
        "CREATED"
    )?;
    for r in rows {
        let containers: Vec<&str> = r["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str())
            .collect();
        outln!(
            "{:<20} {:<8} {:<8} {:<31} {}",
            r["id"].as_str().unwrap_or(""),
            r["pid"],
            r["status"].as_str().unwrap_or(""),
            r["created"].as_str().unwrap_or(""),
            containers.join(",")
        )?;
    }
    Ok(())
}
