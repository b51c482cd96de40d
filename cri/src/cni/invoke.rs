//! One plugin run by the CNI exec contract: the executable `type` found in the plugin dirs,
//! `CNI_*` in the environment, the config on stdin, the result (or an error object) on stdout.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::config::PluginConf;
use super::result::PluginErrorJson;
use super::CniError;

/// The CNI command of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    Add,
    Del,
}

impl CniCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
        }
    }
}

impl std::fmt::Display for CniCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Transport protocol of a port mapping, written lowercase as portmap expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

/// A sandbox port mapping, given to plugins with the `portMappings` capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// Empty: every host address.
    #[serde(rename = "hostIP")]
    pub host_ip: String,
}

/// What is attached: the pod's netns and its Kubernetes identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The sandbox id (`CNI_CONTAINERID`, `K8S_POD_INFRA_CONTAINER_ID`).
    pub container_id: String,
    /// The pinned netns path (`CNI_NETNS`).
    pub netns: PathBuf,
    /// The interface name in the pod (`CNI_IFNAME`), normally [`DEFAULT_IFNAME`].
    pub ifname: String,
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    /// Injected as `runtimeConfig.portMappings`; mappings with host port 0 are left out
    /// (no host port to map, as containerd does).
    pub port_mappings: Vec<PortMapping>,
    /// Pod CIDRs, injected as `runtimeConfig.ipRanges` (one range set each) for plugins
    /// with the `ipRanges` capability; empty: not injected.
    pub ip_ranges: Vec<String>,
}

/// The pod interface name kubelet and containerd use.
pub const DEFAULT_IFNAME: &str = "eth0";

impl Attachment {
    /// Checks the fields that reach file names and `CNI_ARGS`.
    pub(crate) fn validate(&self) -> Result<(), CniError> {
        let invalid =
            |field: &'static str, value: &str, reason: &str| CniError::InvalidAttachment {
                field,
                value: value.to_string(),
                reason: reason.to_string(),
            };
        if !super::config::is_safe_id(&self.container_id) {
            return Err(invalid(
                "container_id",
                &self.container_id,
                "must match [a-zA-Z0-9][a-zA-Z0-9_.-]*",
            ));
        }
        // libcni's ValidateInterfaceName.
        let ifname = &self.ifname;
        if ifname.is_empty()
            || ifname.len() > 15
            || ifname == "."
            || ifname == ".."
            || ifname
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace())
        {
            return Err(invalid("ifname", ifname, "not a valid interface name"));
        }
        for (field, value) in [
            ("pod_name", &self.pod_name),
            ("pod_namespace", &self.pod_namespace),
            ("pod_uid", &self.pod_uid),
        ] {
            if value.contains([';', '=', '\0']) {
                return Err(invalid(
                    field,
                    value,
                    "';', '=' or NUL would break CNI_ARGS",
                ));
            }
        }
        Ok(())
    }

    /// `CNI_ARGS`, in ocicni/containerd's order.
    pub fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.pod_namespace, self.pod_name, self.container_id, self.pod_uid
        )
    }

    /// The capability arguments libcni calls `CapabilityArgs`.
    fn capability_args(&self) -> Map<String, Value> {
        let mut args = Map::new();
        let mappings: Vec<&PortMapping> = self
            .port_mappings
            .iter()
            .filter(|m| m.host_port != 0)
            .collect();
        if !mappings.is_empty() {
            args.insert("portMappings".into(), json!(mappings));
        }
        if !self.ip_ranges.is_empty() {
            let sets: Vec<Value> = self
                .ip_ranges
                .iter()
                .map(|cidr| json!([{ "subnet": cidr }]))
                .collect();
            args.insert("ipRanges".into(), Value::Array(sets));
        }
        args
    }
}

/// The `CNI_*` environment of one run. `netns` is empty when DEL finds no live netns.
pub fn plugin_env(
    command: CniCommand,
    att: &Attachment,
    netns: &Path,
    plugin_dirs: &[PathBuf],
) -> Vec<(&'static str, OsString)> {
    let mut path = OsString::new();
    for (i, dir) in plugin_dirs.iter().enumerate() {
        if i > 0 {
            path.push(":");
        }
        path.push(dir);
    }
    vec![
        ("CNI_COMMAND", command.as_str().into()),
        ("CNI_CONTAINERID", att.container_id.clone().into()),
        ("CNI_NETNS", netns.as_os_str().to_owned()),
        ("CNI_IFNAME", att.ifname.clone().into()),
        ("CNI_ARGS", att.cni_args().into()),
        ("CNI_PATH", path),
    ]
}

/// The stdin config of one plugin, as libcni's `buildOneConfig`: the plugin's own config
/// with the list's `name` and `cniVersion`, `prevResult` when there is one, and
/// `runtimeConfig` holding only the capability arguments the plugin declared.
pub fn plugin_stdin(
    name: &str,
    cni_version: &str,
    plugin: &PluginConf,
    prev_result: Option<&Value>,
    att: &Attachment,
) -> Value {
    let mut conf = plugin.raw().clone();
    conf.insert("name".into(), Value::String(name.to_string()));
    conf.insert("cniVersion".into(), Value::String(cni_version.to_string()));
    match prev_result {
        Some(prev) => conf.insert("prevResult".into(), prev.clone()),
        None => conf.remove("prevResult"),
    };
    let runtime_config: Map<String, Value> = att
        .capability_args()
        .into_iter()
        .filter(|(cap, _)| plugin.has_capability(cap))
        .collect();
    if runtime_config.is_empty() {
        conf.remove("runtimeConfig");
    } else {
        conf.insert("runtimeConfig".into(), Value::Object(runtime_config));
    }
    Value::Object(conf)
}

/// Finds the executable `plugin_type` in the plugin dirs, in order.
pub fn find_plugin(plugin_type: &str, plugin_dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
    for dir in plugin_dirs {
        let path = dir.join(plugin_type);
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(path);
            }
        }
    }
    Err(CniError::PluginNotFound {
        plugin: plugin_type.to_string(),
        dirs: plugin_dirs.to_vec(),
    })
}

/// Where a failure happened, for the error message.
pub struct Site<'a> {
    pub network: &'a str,
    pub plugin: &'a str,
    pub command: CniCommand,
}

impl Site<'_> {
    pub fn bad_result(&self, reason: String) -> CniError {
        self.error(PluginFailure::BadResult(reason))
    }

    fn error(&self, reason: PluginFailure) -> CniError {
        CniError::Plugin {
            network: self.network.to_string(),
            plugin: self.plugin.to_string(),
            command: self.command,
            reason,
        }
    }
}

/// Why a plugin run failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginFailure {
    #[error("{}", plugin_error_text(.0))]
    Reported(PluginErrorJson),
    #[error("{status}{}", stderr_suffix(.stderr))]
    Exited {
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("timed out after {0:?}; killed")]
    Timeout(Duration),
    #[error("starting {}", .path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the plugin")]
    Io(#[source] std::io::Error),
    #[error("printed an invalid result: {0}")]
    BadResult(String),
}

fn plugin_error_text(e: &PluginErrorJson) -> String {
    let mut s = String::new();
    if let Some(code) = e.code {
        s.push_str(&format!("(code {code}) "));
    }
    s.push_str(&e.msg);
    if !e.details.is_empty() {
        s.push_str(": ");
        s.push_str(&e.details);
    }
    s
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// Runs one plugin and returns its stdout parsed as JSON (`Value::Null` for DEL and for an
/// empty stdout). Bounded by `timeout`: on expiry the plugin's whole process group
/// (it may have started iptables & co.) is killed and the plugin reaped.
pub async fn run_plugin(
    site: &Site<'_>,
    path: &Path,
    env: &[(&'static str, OsString)],
    stdin: &Value,
    timeout: Duration,
) -> Result<Value, CniError> {
    let input = serde_json::to_vec(stdin)
        .map_err(|e| site.error(PluginFailure::BadResult(e.to_string())))?;
    let mut cmd = tokio::process::Command::new(path);
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| {
        site.error(PluginFailure::Spawn {
            path: path.to_path_buf(),
            source,
        })
    })?;
    let (Some(mut child_in), Some(mut child_out), Some(mut child_err)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(site.error(PluginFailure::Io(std::io::Error::other("no stdio pipes"))));
    };
    let pid = child.id();
    let exchange = async {
        let write = async {
            let r = child_in.write_all(&input).await;
            drop(child_in);
            // A plugin may exit without reading its config (e.g. a missing netns): not ours
            // to report, the exit status is.
            match r {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                r => r,
            }
        };
        let mut out = Vec::new();
        let mut err = Vec::new();
        let (w, o, e, status) = tokio::join!(
            write,
            child_out.read_to_end(&mut out),
            child_err.read_to_end(&mut err),
            child.wait()
        );
        w.and(o).and(e)?;
        Ok::<_, std::io::Error>((status?, out, err))
    };
    let (status, out, err) = match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r.map_err(|e| site.error(PluginFailure::Io(e)))?,
        Err(_) => {
            if let Some(pid) = pid {
                // The group is ours: the plugin is its leader and is not reaped yet, so the
                // id cannot have been reused.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.kill().await;
            return Err(site.error(PluginFailure::Timeout(timeout)));
        }
    };
    if !status.success() {
        let reason = match PluginErrorJson::parse(&out) {
            Some(e) => PluginFailure::Reported(e),
            None => PluginFailure::Exited {
                status,
                stderr: String::from_utf8_lossy(&err).trim().to_string(),
            },
        };
        return Err(site.error(reason));
    }
    // DEL prints nothing by the spec; like libcni, whatever it prints is ignored.
    if site.command == CniCommand::Del || out.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&out).map_err(|e| site.error(PluginFailure::BadResult(e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::config::Network;

    fn attachment() -> Attachment {
        Attachment {
            container_id: "abc123".into(),
            netns: "/run/netns/pod".into(),
            ifname: DEFAULT_IFNAME.into(),
            pod_name: "web".into(),
            pod_namespace: "default".into(),
            pod_uid: "1234-5678".into(),
            port_mappings: vec![
                PortMapping {
                    host_port: 8080,
                    container_port: 80,
                    protocol: Protocol::Tcp,
                    host_ip: String::new(),
                },
                PortMapping {
                    host_port: 0,
                    container_port: 53,
                    protocol: Protocol::Udp,
                    host_ip: String::new(),
                },
                PortMapping {
                    host_port: 5353,
                    container_port: 53,
                    protocol: Protocol::Sctp,
                    host_ip: "127.0.0.1".into(),
                },
            ],
            ip_ranges: vec!["10.1.0.0/24".into()],
        }
    }

    fn network() -> Network {
        let list = r#"{"cniVersion":"1.0.0","name":"net","plugins":[
            {"type":"bridge","runtimeConfig":{"stale":1},"prevResult":{"stale":1},
             "ipam":{"type":"host-local"},"capabilities":{"ipRanges":true}},
            {"type":"portmap","capabilities":{"portMappings":true,"ipRanges":false}}]}"#;
        Network::from_conflist(list.as_bytes(), Path::new("x.conflist")).unwrap()
    }

    #[test]
    fn env_has_the_contract_variables() {
        let att = attachment();
        let dirs = [PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")];
        let env = plugin_env(CniCommand::Del, &att, &att.netns, &dirs);
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).unwrap().1.clone();
        assert_eq!(get("CNI_COMMAND"), "DEL");
        assert_eq!(get("CNI_CONTAINERID"), "abc123");
        assert_eq!(get("CNI_NETNS"), "/run/netns/pod");
        assert_eq!(get("CNI_IFNAME"), "eth0");
        assert_eq!(get("CNI_PATH"), "/opt/cni/bin:/usr/lib/cni");
        assert_eq!(
            get("CNI_ARGS"),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;\
             K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=1234-5678"
        );
    }

    #[test]
    fn stdin_injects_runtime_config_only_for_capable_plugins() {
        let net = network();
        let att = attachment();
        let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.2/24"}]});
        let bridge = plugin_stdin("net", "1.0.0", &net.plugins()[0], None, &att);
        assert_eq!(bridge["name"], "net");
        assert_eq!(bridge["cniVersion"], "1.0.0");
        assert_eq!(bridge["type"], "bridge");
        assert!(
            bridge.get("prevResult").is_none(),
            "stale prevResult dropped"
        );
        assert_eq!(
            bridge["runtimeConfig"],
            json!({"ipRanges": [[{"subnet": "10.1.0.0/24"}]]})
        );
        let portmap = plugin_stdin("net", "1.0.0", &net.plugins()[1], Some(&prev), &att);
        assert_eq!(portmap["prevResult"], prev);
        assert_eq!(
            portmap["runtimeConfig"],
            json!({"portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""},
                {"hostPort": 5353, "containerPort": 53, "protocol": "sctp", "hostIP": "127.0.0.1"}
            ]})
        );
        let no_ports = Attachment {
            port_mappings: vec![],
            ..att
        };
        let portmap = plugin_stdin("net", "1.0.0", &net.plugins()[1], None, &no_ports);
        assert!(portmap.get("runtimeConfig").is_none());
    }

    #[test]
    fn attachment_fields_are_checked() {
        assert!(attachment().validate().is_ok());
        let bad = [
            Attachment {
                container_id: "../x".into(),
                ..attachment()
            },
            Attachment {
                ifname: "a-very-long-ifname".into(),
                ..attachment()
            },
            Attachment {
                ifname: "eth/0".into(),
                ..attachment()
            },
            Attachment {
                pod_name: "a;K8S_POD_UID=x".into(),
                ..attachment()
            },
        ];
        for att in bad {
            let err = att.validate().unwrap_err().to_string();
            assert!(err.starts_with("attachment field "), "{err}");
        }
    }

    #[test]
    fn missing_plugin_names_type_and_dirs() {
        let dirs = [
            PathBuf::from("/nonexistent/a"),
            PathBuf::from("/usr/lib/cni"),
        ];
        let err = find_plugin("no-such-plugin", &dirs)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"no-such-plugin\""), "{err}");
        assert!(err.contains("/nonexistent/a, /usr/lib/cni"), "{err}");
    }
}
