//! What kubelet asks first and then every few seconds: Version, Status (RuntimeReady,
//! NetworkReady), RuntimeConfig, UpdateRuntimeConfig; and how the daemon starts, stops and
//! refuses. Each CRI scenario runs against capsa-cri and containerd's CRI plugin.

mod common;
use common::*;
use k8s_cri::v1::*;
use nix::sys::signal::Signal;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};

fn condition(status: &StatusResponse, kind: &str) -> RuntimeCondition {
    status
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.r#type == kind))
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} condition in {status:?}"))
}

async fn status(c: &mut Clients, verbose: bool) -> StatusResponse {
    c.runtime
        .status(StatusRequest { verbose })
        .await
        .unwrap()
        .into_inner()
}

fn bridge_conflist() -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "testnet",
        "plugins": [
            {"type": "bridge", "bridge": "capsatest0", "isGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "subnet": "10.89.0.0/24"}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
}

#[tokio::test]
async fn version_and_status_as_kubelet_reads_them() {
    for kind in KINDS {
        let server = Server::start(kind).await;
        let mut c = server.clients().await;
        let v = c
            .runtime
            .version(VersionRequest {
                version: "v1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(v.runtime_api_version, "v1", "{kind:?}");
        assert!(
            !v.version.is_empty() && !v.runtime_version.is_empty(),
            "{v:?}"
        );
        let name = match kind {
            Kind::Capsa => "capsa",
            Kind::Containerd => "containerd",
        };
        assert_eq!(v.runtime_name, name);

        // No CNI config yet: the runtime is ready, the network is not, and says why.
        let s = status(&mut c, false).await;
        assert!(condition(&s, "RuntimeReady").status, "{kind:?}: {s:?}");
        let net = condition(&s, "NetworkReady");
        assert!(!net.status, "{kind:?}: {net:?}");
        assert_eq!(net.reason, "NetworkPluginNotReady", "{kind:?}");
        // containerd: "cni plugin not initialized"; capsa-cri says which directory it read.
        assert!(
            net.message.starts_with("Network plugin returns error: ") && net.message.len() > 30,
            "{kind:?}: {net:?}"
        );
        assert!(s.info.is_empty(), "{kind:?}: info without verbose");

        // A network config appears: NetworkReady turns true (containerd notices the file
        // through inotify, capsa-cri reads the directory on each Status).
        write_cni_config(&server, "10-test.conflist", &bridge_conflist());
        let mut c2 = server.clients().await;
        eventually("NetworkReady", || {
            let mut c = c2.runtime.clone();
            async move {
                let s = c.status(StatusRequest { verbose: false }).await.unwrap();
                condition(&s.into_inner(), "NetworkReady").status
            }
        })
        .await;

        // verbose adds an info map whose "config" entry is JSON.
        let s = status(&mut c2, true).await;
        let config = s
            .info
            .get("config")
            .unwrap_or_else(|| panic!("{kind:?}: {s:?}"));
        serde_json::from_str::<serde_json::Value>(config)
            .unwrap_or_else(|e| panic!("{kind:?}: info.config is not JSON ({e}): {config}"));
    }
}

#[tokio::test]
async fn runtime_config_and_pod_cidr() {
    for kind in KINDS {
        let mut server = Server::start(kind).await;
        let mut c = server.clients().await;
        match c.runtime.runtime_config(RuntimeConfigRequest {}).await {
            Ok(r) => {
                let linux = r.into_inner().linux.expect("linux runtime config");
                assert_eq!(linux.cgroup_driver, CgroupDriver::Cgroupfs as i32);
            }
            // Deliberate difference: RuntimeConfig came to CRI v1 after containerd 1.6,
            // whose CRI plugin answers Unimplemented; kubelet tolerates that and uses its
            // own cgroupDriver setting.
            Err(e) if kind == Kind::Containerd => {
                assert_eq!(e.code(), tonic::Code::Unimplemented, "{e}")
            }
            Err(e) => panic!("{kind:?}: RuntimeConfig: {e}"),
        }
        let update = |cidr: &str| UpdateRuntimeConfigRequest {
            runtime_config: Some(RuntimeConfig {
                network_config: Some(NetworkConfig {
                    pod_cidr: cidr.into(),
                }),
            }),
        };
        c.runtime
            .update_runtime_config(update("10.244.3.0/24"))
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        // An empty update (kubelet sends one before the node has a CIDR) is fine.
        c.runtime
            .update_runtime_config(UpdateRuntimeConfigRequest::default())
            .await
            .unwrap();
        if kind == Kind::Capsa {
            // capsa-cri keeps the CIDR across a restart and shows it in verbose status;
            // containerd keeps it in memory only (and shows it in no fixed place).
            server.stop_with(Signal::SIGTERM);
            server.restart().await;
            let mut c = server.clients().await;
            let s = status(&mut c, true).await;
            assert_eq!(
                s.info.get("podCIDR").map(String::as_str),
                Some("10.244.3.0/24")
            );
            let e = c
                .runtime
                .update_runtime_config(update("10.244.3.0"))
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains("pod_cidr"), "{e}");
        }
    }
}

/// The socket: mode 0660; a second daemon on a live socket is refused; SIGTERM stops serving
/// and removes it; a daemon killed with SIGKILL leaves a stale socket that the next start
/// replaces. (Daemon behaviour, not CRI: capsa-cri's alone.)
#[tokio::test]
async fn the_socket_is_guarded_and_cleaned_up() {
    let mut server = Server::start(Kind::Capsa).await;
    let meta = std::fs::metadata(&server.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    let second = server.command().output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("already listening") && err.contains(server.socket.to_str().unwrap()),
        "{err}"
    );
    // The first one still serves.
    server
        .clients()
        .await
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap();

    let status = server.stop_with(Signal::SIGTERM);
    assert!(status.success(), "SIGTERM: {status}: {}", server.log());
    assert!(!server.socket.exists(), "socket left after SIGTERM");

    server.restart().await;
    let status = server.stop_with(Signal::SIGKILL);
    assert!(!status.success());
    assert!(server.socket.exists(), "SIGKILL cannot remove the socket");
    server.restart().await;
    server
        .clients()
        .await
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap();
}

#[test]
fn bad_configuration_is_refused_naming_the_key() {
    let dir = scratch("badconf");
    let conf = dir.join("cri.toml");
    std::fs::write(&conf, "listen = \"/tmp/x.sock\"\ncni_conf = \"/etc/cni\"\n").unwrap();
    let out = std::process::Command::new(CAPSA_CRI)
        .arg("--config")
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(conf.to_str().unwrap()) && err.contains("cni_conf"),
        "{err}"
    );
    assert!(!std::path::Path::new("/tmp/x.sock").exists());

    let out = std::process::Command::new(CAPSA_CRI)
        .args(["--config", "/nonexistent/cri.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/cri.toml"));

    let empty = dir.join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let out = std::process::Command::new(CAPSA_CRI)
        .args(["--config", empty.to_str().unwrap(), "--log-format", "xml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-format \"xml\""));
    std::fs::remove_dir_all(&dir).unwrap();
}
