//! Pod sandboxes: a capsa pod (its infra process holds net, ipc and uts, and pid when the
//! pod shares it), the pod's network namespace pinned to a file and attached by CNI, and the
//! files its containers will mount (hostname, resolv.conf, hosts, a /dev/shm tmpfs).
//!
//! ```text
//! RunPodSandbox     validate -> reserve the name -> pending record -> files, shm
//!                   -> capsa pod (+ sysctls) -> pin <runtime root>/netns/<id>
//!                   -> pending record + CNI config -> CNI ADD -> record (READY)
//!                   any failure undoes what was done, in reverse; a daemon killed
//!                   mid-way finds the pending record at startup and tears it all down
//! StopPodSandbox    CNI DEL -> unpin -> pod removed (infra, cgroups) -> shm -> NOTREADY
//! RemovePodSandbox  stop -> files -> record -> name released
//! ```
//! Stop and Remove succeed for an unknown or already removed sandbox: kubelet repeats them.
//! The record says what was made, so a restarted daemon finds every sandbox as it was, and
//! a Stop after a restart still tears down what a Run before it set up.

use crate::cni::{self, Attachment, CniOptions, Network};
use k8s_cri::v1::*;
use oci_spec::runtime::LinuxNamespaceType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tonic::Status;

/// Where pod cgroups go when kubelet sends no cgroup_parent.
pub const DEFAULT_CGROUP_PARENT: &str = "/capsa-cri";

/// What a sandbox is and what was made for it; saved whole after every change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub config: PodSandboxConfig,
    pub runtime_handler: String,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    /// Set by StopPodSandbox; a stopped sandbox is NOTREADY until removed.
    pub stopped: bool,
    pub host_network: bool,
    pub host_ipc: bool,
    /// The pinned network namespace (none for host network).
    pub netns: Option<PathBuf>,
    /// The pod IPs from CNI, IPv4 first.
    pub ips: Vec<String>,
    /// The mounted /dev/shm tmpfs (none with host IPC).
    pub shm: Option<PathBuf>,
    /// The CNI network that was attached (DEL uses its cached config).
    pub network: Option<String>,
    /// True from before RunPodSandbox's first side effect until the sandbox is complete: a
    /// daemon that finds such a record at startup was killed mid-way, and tears down
    /// whatever of the sandbox exists. Such a record is never served.
    #[serde(default)]
    pub pending: bool,
    /// The network config a CNI ADD was started with: what a DEL runs when the ADD never got
    /// as far as its cache entry (plugins that did run may hold an address, a veth).
    #[serde(default)]
    pub cni_config: Option<serde_json::Value>,
}

impl SandboxRecord {
    pub fn metadata(&self) -> PodSandboxMetadata {
        self.config.metadata.clone().unwrap_or_default()
    }
}

/// The (name, namespace, uid, attempt) of a sandbox: kubelet never creates two alike.
pub fn name_key(m: &PodSandboxMetadata) -> String {
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

/// What the pod shares with the node, from the namespace options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shares {
    pub host_network: bool,
    pub host_ipc: bool,
    pub host_pid: bool,
    /// The namespaces the capsa pod's infra holds.
    pub pod: Vec<LinuxNamespaceType>,
}

/// NODE network also means the node's uts namespace (kubelet gives host-network pods the
/// node's hostname); pid is shared only when POD (CONTAINER is each container's own).
pub fn shares(config: &PodSandboxConfig) -> Shares {
    let ns = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let node = NamespaceMode::Node as i32;
    let host_network = ns.network == node;
    let host_ipc = ns.ipc == node;
    let host_pid = ns.pid == node;
    let mut pod = Vec::new();
    if !host_network {
        pod.push(LinuxNamespaceType::Network);
        pod.push(LinuxNamespaceType::Uts);
    }
    if !host_ipc {
        pod.push(LinuxNamespaceType::Ipc);
    }
    if ns.pid == NamespaceMode::Pod as i32 {
        pod.push(LinuxNamespaceType::Pid);
    }
    Shares {
        host_network,
        host_ipc,
        host_pid,
        pod,
    }
}

/// resolv.conf from the sandbox's DNS config (containerd's layout).
pub fn resolv_conf(dns: &DnsConfig) -> String {
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for s in &dns.servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    out
}

/// Checks what kubelet always sends; the error names the field.
pub fn validate(config: Option<&PodSandboxConfig>) -> Result<&PodSandboxConfig, Status> {
    let config = config.ok_or_else(|| Status::invalid_argument("config is required"))?;
    let m = config
        .metadata
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("config.metadata is required"))?;
    for (field, value) in [
        ("config.metadata.name", &m.name),
        ("config.metadata.namespace", &m.namespace),
        ("config.metadata.uid", &m.uid),
    ] {
        if value.is_empty() {
            return Err(Status::invalid_argument(format!("{field} is empty")));
        }
        if value.contains(['/', '\0']) {
            return Err(Status::invalid_argument(format!(
                "{field} {value:?} holds '/' or a NUL byte"
            )));
        }
    }
    if config.hostname.len() > 64 || config.hostname.contains(['/', '\0', ' ']) {
        return Err(Status::invalid_argument(format!(
            "config.hostname {:?} is not a hostname",
            config.hostname
        )));
    }
    for (i, p) in config.port_mappings.iter().enumerate() {
        let ok = |n: i32| (0..=65535).contains(&n);
        if !ok(p.container_port) || !ok(p.host_port) {
            return Err(Status::invalid_argument(format!(
                "config.port_mappings[{i}]: ports must be 0..=65535 (container {}, host {})",
                p.container_port, p.host_port
            )));
        }
    }
    if let Some(parent) = config.linux.as_ref().map(|l| &l.cgroup_parent) {
        if !parent.is_empty() && (!parent.starts_with('/') || parent.split('/').any(|c| c == ".."))
        {
            return Err(Status::invalid_argument(format!(
                "config.linux.cgroup_parent {parent:?} is not an absolute cgroupfs path \
                 (capsa-cri uses the cgroupfs driver)"
            )));
        }
    }
    Ok(config)
}

/// Whether a record passes ListPodSandbox's filter. The id matches by prefix (as
/// containerd's truncated ids do); every selector label must be present and equal.
pub fn matches(record: &SandboxRecord, ready: bool, filter: &PodSandboxFilter) -> bool {
    if !filter.id.is_empty() && !record.id.starts_with(&filter.id) {
        return false;
    }
    if let Some(s) = &filter.state {
        let state = if ready {
            PodSandboxState::SandboxReady
        } else {
            PodSandboxState::SandboxNotready
        };
        if s.state != state as i32 {
            return false;
        }
    }
    filter
        .label_selector
        .iter()
        .all(|(k, v)| record.config.labels.get(k) == Some(v))
}

/// The CNI view of a sandbox.
pub fn attachment(record: &SandboxRecord, pod_cidr: &str) -> Attachment {
    let m = record.metadata();
    Attachment {
        container_id: record.id.clone(),
        netns: record.netns.clone().unwrap_or_default(),
        ifname: cni::DEFAULT_IFNAME.into(),
        pod_name: m.name,
        pod_namespace: m.namespace,
        pod_uid: m.uid,
        port_mappings: record
            .config
            .port_mappings
            .iter()
            .map(|p| cni::PortMapping {
                host_port: p.host_port as u16,
                container_port: p.container_port as u16,
                protocol: match Protocol::try_from(p.protocol) {
                    Ok(Protocol::Udp) => cni::Protocol::Udp,
                    Ok(Protocol::Sctp) => cni::Protocol::Sctp,
                    _ => cni::Protocol::Tcp,
                },
                host_ip: p.host_ip.clone(),
            })
            .collect(),
        ip_ranges: pod_cidr
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    }
}

/// Pins the network namespace of `pid` at `path` (a bind mount on an empty file), so the
/// namespace outlives the infra process and CNI DEL can run after it died.
pub fn pin_netns(pid: i32, path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o444)
        .open(path)?;
    let source = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let mounted = nix::mount::mount(
        Some(&source),
        path,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    );
    if let Err(e) = mounted {
        let _ = std::fs::remove_file(path);
        return Err(e.into());
    }
    Ok(())
}

/// Where the network namespace of sandbox `id` is pinned, under the daemon's runtime dir.
pub fn netns_path(runtime_dir: &Path, id: &str) -> PathBuf {
    runtime_dir.join("netns").join(id)
}

/// Where the /dev/shm of sandbox `id` is mounted, under the daemon's runtime dir.
pub fn shm_path(runtime_dir: &Path, id: &str) -> PathBuf {
    runtime_dir.join("sandboxes").join(id).join("shm")
}

/// Undoes [`pin_netns`]; an absent pin is fine.
pub fn unpin_netns(path: &Path) -> std::io::Result<()> {
    unmount_and_remove(path, |p| std::fs::remove_file(p))
}

/// Detaches what is mounted at `path` and removes it with `remove`; nothing mounted, or
/// nothing there at all, is fine (teardown is repeated by design).
fn unmount_and_remove(
    path: &Path,
    remove: fn(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match remove(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Mounts the pod's /dev/shm: a tmpfs of 64 MiB, as containerd's.
pub fn mount_shm(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(path)?;
    use nix::mount::MsFlags;
    nix::mount::mount(
        Some("shm"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;
    Ok(())
}

/// Undoes [`mount_shm`]; an absent one is fine.
pub fn unmount_shm(path: &Path) -> std::io::Result<()> {
    unmount_and_remove(path, |p| std::fs::remove_dir(p))
}

use std::os::unix::fs::OpenOptionsExt;

/// The sysctls as capsa's pod options take them.
pub fn sysctls(config: &PodSandboxConfig) -> BTreeMap<String, String> {
    config
        .linux
        .as_ref()
        .map(|l| {
            l.sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// CNI options of the daemon's configuration.
pub fn cni_options(config: &crate::config::Config) -> CniOptions {
    CniOptions::new(
        config.cni_plugin_dirs.clone(),
        config.state_dir.join("cni-cache"),
    )
}

/// Loads the network for an ADD: a missing configuration fails the sandbox (a pod network
/// needs one), naming the directory.
pub fn load_network(dir: &Path) -> Result<Network, Status> {
    match Network::load(dir) {
        Ok(Some(n)) => Ok(n),
        Ok(None) => Err(Status::failed_precondition(format!(
            "setting up the pod network: no CNI network config in {} (NetworkReady is false)",
            dir.display()
        ))),
        Err(e) => Err(Status::failed_precondition(format!(
            "setting up the pod network: {}",
            cni::error_chain(&e)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(network: NamespaceMode, ipc: NamespaceMode, pid: NamespaceMode) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "web".into(),
                uid: "u1".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: network as i32,
                        ipc: ipc as i32,
                        pid: pid as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn namespace_options_become_what_the_pod_shares() {
        use LinuxNamespaceType::*;
        use NamespaceMode::*;
        let s = shares(&config(Pod, Pod, Container));
        assert_eq!(s.pod, vec![Network, Uts, Ipc]);
        assert!(!s.host_network && !s.host_ipc && !s.host_pid);
        let s = shares(&config(Node, Pod, Pod));
        assert_eq!(s.pod, vec![Ipc, Pid]);
        assert!(s.host_network);
        let s = shares(&config(Node, Node, Node));
        assert!(s.pod.is_empty() && s.host_ipc && s.host_pid);
    }

    #[test]
    fn resolv_conf_is_containerds_layout() {
        let dns = DnsConfig {
            servers: vec!["10.96.0.10".into(), "10.96.0.11".into()],
            searches: vec!["default.svc.cluster.local".into(), "cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(&dns),
            "search default.svc.cluster.local cluster.local\nnameserver 10.96.0.10\n\
             nameserver 10.96.0.11\noptions ndots:5\n"
        );
    }

    #[test]
    fn bad_configs_name_the_field() {
        let e = validate(None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let mut c = config(NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Pod);
        c.metadata.as_mut().unwrap().uid.clear();
        assert!(validate(Some(&c))
            .unwrap_err()
            .message()
            .contains("config.metadata.uid"));
        let mut c = config(NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Pod);
        c.linux.as_mut().unwrap().cgroup_parent = "kubepods.slice".into();
        assert!(validate(Some(&c))
            .unwrap_err()
            .message()
            .contains("cgroup_parent"));
        let mut c = config(NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Pod);
        c.port_mappings.push(k8s_cri::v1::PortMapping {
            container_port: 70000,
            ..Default::default()
        });
        assert!(validate(Some(&c))
            .unwrap_err()
            .message()
            .contains("port_mappings[0]"));
    }

    #[test]
    fn filters_match_id_prefix_state_and_labels() {
        let mut c = config(NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Pod);
        c.labels.insert("app".into(), "web".into());
        let r = SandboxRecord {
            id: "abcdef".into(),
            config: c,
            runtime_handler: String::new(),
            created_at: 1,
            stopped: false,
            host_network: false,
            host_ipc: false,
            netns: None,
            ips: vec![],
            shm: None,
            network: None,
            pending: false,
            cni_config: None,
        };
        let f = |id: &str, state: Option<PodSandboxState>, label: Option<(&str, &str)>| {
            PodSandboxFilter {
                id: id.into(),
                state: state.map(|s| PodSandboxStateValue { state: s as i32 }),
                label_selector: label
                    .map(|(k, v)| [(k.to_string(), v.to_string())].into())
                    .unwrap_or_default(),
            }
        };
        assert!(matches(&r, true, &f("", None, None)));
        assert!(matches(&r, true, &f("abc", None, None)));
        assert!(!matches(&r, true, &f("abd", None, None)));
        assert!(matches(
            &r,
            true,
            &f("", Some(PodSandboxState::SandboxReady), None)
        ));
        assert!(!matches(
            &r,
            false,
            &f("", Some(PodSandboxState::SandboxReady), None)
        ));
        assert!(matches(&r, true, &f("", None, Some(("app", "web")))));
        assert!(!matches(&r, true, &f("", None, Some(("app", "db")))));
    }
}
