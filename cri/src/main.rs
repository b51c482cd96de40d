//! `capsa-cri [--config FILE] [flags]`: flags override the file's settings.

use anyhow::Context;
use capsa_cri::config::{Config, LogFormat, DEFAULT_CONFIG};
use clap::Parser;
use std::path::PathBuf;

/// A Kubernetes CRI v1 server (RuntimeService and ImageService) on top of capsa.
#[derive(Parser, Debug)]
#[command(
    name = "capsa-cri",
    version,
    after_long_help = "\
kubelet connects with --container-runtime-endpoint unix:///run/capsa/cri.sock and the cgroupfs
cgroup driver. Pod sandboxes are capsa pods (the infra process is capsa-pause, next to this
program); their networks come from the first CNI config of --cni-conf-dir.

The configuration file (TOML) takes the same settings as the flags: listen, state_dir,
runtime_root, cni_conf_dir, cni_plugin_dirs, stream_address, stream_tls_cert, stream_tls_key,
stream_idle_timeout, pause_binary, log_level, log_format, and [registry] mirrors and insecure.
Unknown keys are refused.

SIGTERM and SIGINT stop serving (calls in flight get 2 seconds) and remove the socket; pods
and containers keep running, and a daemon started again finds them from its state dir."
)]
struct Args {
    /// The configuration file (TOML); flags override what it says.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The CRI socket to listen on [default: /run/capsa/cri.sock].
    #[arg(long, value_name = "PATH")]
    listen: Option<PathBuf>,
    /// Sandbox and container records [default: /var/lib/capsa-cri].
    #[arg(long = "state-dir", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Runtime state: capsa's root (DIR/capsa) and the daemon's own (DIR/cri) [default:
    /// /run/capsa-cri].
    #[arg(long = "runtime-root", value_name = "DIR")]
    runtime_root: Option<PathBuf>,
    /// CNI network configurations [default: /etc/cni/net.d].
    #[arg(long = "cni-conf-dir", value_name = "DIR")]
    cni_conf_dir: Option<PathBuf>,
    /// A CNI plugin directory; repeat for several, searched in order
    /// [default: /opt/cni/bin, /usr/lib/cni].
    #[arg(long = "cni-plugin-dir", value_name = "DIR")]
    cni_plugin_dirs: Vec<PathBuf>,
    /// The streaming server's address [default: 127.0.0.1:0].
    #[arg(long = "stream-address", value_name = "IP:PORT")]
    stream_address: Option<String>,
    /// Serve streaming over HTTPS with this certificate chain (PEM); needs --stream-tls-key.
    #[arg(long = "stream-tls-cert", value_name = "FILE")]
    stream_tls_cert: Option<PathBuf>,
    /// The streaming server's private key (PEM).
    #[arg(long = "stream-tls-key", value_name = "FILE")]
    stream_tls_key: Option<PathBuf>,
    /// Close a streaming connection idle this long (e.g. 4h0m0s, 30m; 0: never)
    /// [default: 4h0m0s].
    #[arg(long = "stream-idle-timeout", value_name = "DURATION")]
    stream_idle_timeout: Option<String>,
    /// A registry mirror, HOST=URL (e.g. docker.io=http://127.0.0.1:5000); repeatable.
    #[arg(long = "registry-mirror", value_name = "HOST=URL")]
    registry_mirrors: Vec<String>,
    /// A registry reached over plain HTTP (HOST[:PORT]); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registries: Vec<String>,
    /// error, warn, info, debug or trace [default: info].
    #[arg(long = "log-level", value_name = "LEVEL")]
    log_level: Option<String>,
    /// text or json [default: text].
    #[arg(long = "log-format", value_name = "FORMAT")]
    log_format: Option<String>,
}

/// The file's configuration with the flags laid over it.
fn configure(args: Args) -> anyhow::Result<Config> {
    let mut c = match &args.config {
        Some(path) => Config::load(path, true)?,
        None => Config::load(DEFAULT_CONFIG.as_ref(), false)?,
    };
    if let Some(v) = args.listen {
        c.listen = v;
    }
    if let Some(v) = args.state_dir {
        c.state_dir = v;
    }
    if let Some(v) = args.runtime_root {
        c.runtime_root = v;
    }
    if let Some(v) = args.cni_conf_dir {
        c.cni_conf_dir = v;
    }
    if !args.cni_plugin_dirs.is_empty() {
        c.cni_plugin_dirs = args.cni_plugin_dirs;
    }
    if let Some(v) = args.stream_address {
        c.stream_address = v;
    }
    if let Some(v) = args.stream_tls_cert {
        c.stream_tls_cert = Some(v);
    }
    if let Some(v) = args.stream_tls_key {
        c.stream_tls_key = Some(v);
    }
    if let Some(v) = args.stream_idle_timeout {
        c.stream_idle_timeout = v;
    }
    for m in args.registry_mirrors {
        let (host, url) = m
            .split_once('=')
            .with_context(|| format!("--registry-mirror {m:?}: want HOST=URL"))?;
        c.registry
            .mirrors
            .entry(host.to_string())
            .or_default()
            .push(url.to_string());
    }
    c.registry.insecure.extend(args.insecure_registries);
    if let Some(v) = args.log_level {
        c.log_level = v;
    }
    if let Some(v) = args.log_format {
        c.log_format = match v.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => anyhow::bail!("--log-format {other:?}: want text or json"),
        };
    }
    c.validate()?;
    Ok(c)
}

fn run() -> anyhow::Result<()> {
    let config = configure(Args::parse())?;
    capsa_cri::logger::init(config.log_format, config.level()?);
    capsa_cri::socket::refuse_live(&config.listen)?;
    let daemon = std::sync::Arc::new(capsa_cri::daemon::Daemon::new(config)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async {
        // What a daemon killed in a RunPodSandbox left half made goes before serving.
        daemon.sweep_unfinished().await;
        capsa_cri::daemon::serve(daemon).await
    })?;
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("capsa-cri: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// man/capsa-cri.8 is generated from the flags; regenerate with
    /// `CAPSA_UPDATE_MAN=1 cargo test -p capsa-cri --bin capsa-cri man_page`.
    #[test]
    fn man_page() {
        let mut out = Vec::new();
        clap_mangen::Man::new(super::Args::command())
            .section("8")
            .manual("capsa manual")
            .render(&mut out)
            .expect("rendering to a Vec cannot fail");
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../man/capsa-cri.8");
        if std::env::var_os("CAPSA_UPDATE_MAN").is_some() {
            std::fs::write(&path, &out).expect("writing the man page");
            return;
        }
        assert!(
            std::fs::read(&path).unwrap_or_default() == out,
            "man/capsa-cri.8 is out of date with the flags; run \
             CAPSA_UPDATE_MAN=1 cargo test -p capsa-cri --bin capsa-cri man_page"
        );
    }
}
