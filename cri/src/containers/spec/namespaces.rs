//! The container's namespaces: its own mount namespace; the pod's net, ipc and uts (the
//! host's when the pod has none of its own); pid by the container's mode; a cgroup
//! namespace on cgroup v2 unless privileged (containerd 1.6: none on v1).
//!
//! net, ipc and uts always follow the sandbox, whatever the container's options say (as
//! containerd joins the pause container's): a container cannot leave its pod for the host's
//! network. pid: CONTAINER is a new one; POD the pod's, NODE the host's, each only when the
//! sandbox was made so — a capsa pod that does not share pid keeps its infra in the host's
//! pid namespace, so joining "the pod's" there would be joining the host's; TARGET joins
//! another running container of the same sandbox (ephemeral debug containers).

use super::{sc_field, SpecError, SpecInput};
use k8s_cri::v1::{LinuxContainerSecurityContext, NamespaceMode};
use serde_json::{json, Value};

fn mode(value: i32, field: &str) -> Result<NamespaceMode, SpecError> {
    NamespaceMode::try_from(value).map_err(|_| SpecError::Invalid {
        field: field.into(),
        value: value.to_string(),
        reason: "not a NamespaceMode value",
    })
}

pub(super) fn build(
    input: &SpecInput,
    sc: &LinuxContainerSecurityContext,
) -> Result<Vec<Value>, SpecError> {
    let pod = crate::sandbox::shares(input.sandbox_config);
    let infra = input.sandbox.infra_pid;
    let join =
        |kind: &str, file: &str| json!({"type": kind, "path": format!("/proc/{infra}/ns/{file}")});
    let mut out = vec![json!({"type": "mount"})];
    if !pod.host_network {
        out.push(join("network", "net"));
        out.push(join("uts", "uts"));
    }
    if !pod.host_ipc {
        out.push(join("ipc", "ipc"));
    }
    let ns = sc.namespace_options.clone().unwrap_or_default();
    let field = sc_field("namespace_options.pid");
    let pod_shares_pid = pod
        .pod
        .contains(&oci_spec::runtime::LinuxNamespaceType::Pid);
    match mode(ns.pid, &field)? {
        NamespaceMode::Container => out.push(json!({"type": "pid"})),
        NamespaceMode::Pod if pod_shares_pid => out.push(join("pid", "pid")),
        NamespaceMode::Node if pod.host_pid => {}
        NamespaceMode::Target => {
            let sandbox = input.sandbox.id.clone();
            let pid = input
                .host
                .target_pid(&sandbox, &ns.target_id)
                .filter(|_| !ns.target_id.is_empty())
                .ok_or(SpecError::Target {
                    target: ns.target_id.clone(),
                    sandbox,
                })?;
            out.push(json!({"type": "pid", "path": format!("/proc/{pid}/ns/pid")}));
        }
        other => {
            return Err(SpecError::Invalid {
                field,
                value: other.as_str_name().into(),
                reason: "the sandbox's pid namespace mode differs",
            })
        }
    }
    if let Some(userns) = &ns.userns_options {
        if mode(
            userns.mode,
            &sc_field("namespace_options.userns_options.mode"),
        )? != NamespaceMode::Node
        {
            return Err(SpecError::Unsupported {
                field: sc_field("namespace_options.userns_options"),
                what: "a user namespace",
            });
        }
    }
    if input.host.cgroup_v2() && !sc.privileged {
        out.push(json!({"type": "cgroup"}));
    }
    Ok(out)
}
