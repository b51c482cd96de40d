//! Containers through the CRI, as kubelet drives them: a pod with a log directory, a
//! container of a pulled image, and the calls around it.

use super::{Clients, Server};
use k8s_cri::v1::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A pod config with its logs under `log_dir` and its cgroup under the test parent.
pub fn pod_config(name: &str, uid: &str, log_dir: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: "capsa-test".into(),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        log_directory: log_dir.to_string_lossy().into(),
        labels: HashMap::from([("app".into(), name.into())]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("/capsa-cri-test/pod{uid}"),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(kubelet_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container of `image` running `args` (through the image's entrypoint-less busybox:
/// `command` is the whole command line), logging to `<name>.log`.
pub fn container_config(name: &str, image: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: super::spec(image),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        labels: HashMap::from([("container".into(), name.into())]),
        annotations: HashMap::from([("note".into(), format!("{name} annotation"))]),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(kubelet_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What kubelet sends for a pod without shareProcessNamespace: the pod's network and IPC,
/// a pid namespace per container (CRI's zero value would be the pod's).
pub fn kubelet_namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// The container's Linux security context, created with kubelet's namespaces.
pub fn security(config: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(|| LinuxContainerSecurityContext {
            namespace_options: Some(kubelet_namespaces()),
            ..Default::default()
        })
}

/// The container's resources.
pub fn resources(config: &mut ContainerConfig) -> &mut LinuxContainerResources {
    config
        .linux
        .get_or_insert_with(Default::default)
        .resources
        .get_or_insert_with(Default::default)
}

/// A pod on `server` whose containers kubelet would create: its id and config.
pub struct Pod {
    pub id: String,
    pub config: PodSandboxConfig,
    pub log_dir: PathBuf,
    pub uid: String,
}

impl Pod {
    pub async fn run(c: &mut Clients, server: &Server, name: &str) -> Pod {
        let uid = super::uid();
        let log_dir = server.dir.join("logs").join(&uid);
        let config = pod_config(name, &uid, &log_dir);
        let (id, _) = super::start_pod(c, server, &config).await;
        Pod {
            id,
            config,
            log_dir,
            uid,
        }
    }

    /// CreateContainer: the id, or the server's error.
    pub async fn create(
        &self,
        c: &mut Clients,
        config: &ContainerConfig,
    ) -> Result<String, tonic::Status> {
        c.runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: self.id.clone(),
                config: Some(config.clone()),
                sandbox_config: Some(self.config.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    /// CreateContainer and StartContainer, panicking with the server's log on failure.
    pub async fn start(
        &self,
        c: &mut Clients,
        server: &Server,
        config: &ContainerConfig,
    ) -> String {
        let id = self
            .create(c, config)
            .await
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", server.log()));
        start(c, &id)
            .await
            .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", server.log()));
        id
    }

    /// StopPodSandbox and RemovePodSandbox.
    pub async fn remove(&self, c: &mut Clients) {
        c.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: self.id.clone(),
            })
            .await
            .unwrap();
        c.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: self.id.clone(),
            })
            .await
            .unwrap();
        super::assert_pod_cgroups_gone(&self.uid);
    }
}

pub async fn start(c: &mut Clients, id: &str) -> Result<(), tonic::Status> {
    c.runtime
        .start_container(StartContainerRequest {
            container_id: id.into(),
        })
        .await
        .map(|_| ())
}

pub async fn stop(c: &mut Clients, id: &str, timeout: i64) -> Result<(), tonic::Status> {
    c.runtime
        .stop_container(StopContainerRequest {
            container_id: id.into(),
            timeout,
        })
        .await
        .map(|_| ())
}

pub async fn remove(c: &mut Clients, id: &str) -> Result<(), tonic::Status> {
    c.runtime
        .remove_container(RemoveContainerRequest {
            container_id: id.into(),
        })
        .await
        .map(|_| ())
}

/// ContainerStatus, verbose.
pub async fn container_status(
    c: &mut Clients,
    id: &str,
) -> Result<ContainerStatusResponse, tonic::Status> {
    c.runtime
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .map(|r| r.into_inner())
}

/// The status of a container the server must know.
pub async fn state_of(c: &mut Clients, id: &str) -> ContainerStatus {
    container_status(c, id)
        .await
        .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}"))
        .status
        .unwrap()
}

/// Waits (bounded: 30 s) for the container to have exited; its status.
pub async fn wait_exited(c: &mut Clients, id: &str) -> ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = state_of(c, id).await;
        if s.state == ContainerState::ContainerExited as i32 {
            return s;
        }
        assert!(Instant::now() < deadline, "{id} did not exit: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The init pid of a running container, from the verbose info both servers give.
pub fn container_pid(s: &ContainerStatusResponse) -> i32 {
    let info: serde_json::Value = serde_json::from_str(&s.info["info"]).unwrap();
    info["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("no pid in {info}")) as i32
}

/// A line of kubelet's log format: time, stream, tag, text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub time: String,
    pub stream: String,
    pub tag: String,
    pub text: String,
}

/// The lines of a CRI log file, each checked for the format.
pub fn log_lines(path: &Path) -> Vec<LogLine> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let mut f = l.splitn(4, ' ');
            let (time, stream, tag) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
            assert!(
                time.len() >= 20 && time.as_bytes()[10] == b'T',
                "not RFC3339Nano: {l:?}"
            );
            assert!(matches!(stream, "stdout" | "stderr"), "stream in {l:?}");
            assert!(matches!(tag, "P" | "F"), "tag in {l:?}");
            LogLine {
                time: time.into(),
                stream: stream.into(),
                tag: tag.into(),
                text: f.next().unwrap_or("").into(),
            }
        })
        .collect()
}

/// ExecSync: (stdout, stderr, exit code), or the server's error.
pub async fn exec_sync(
    c: &mut Clients,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<(String, String, i32), tonic::Status> {
    c.runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        })
        .await
        .map(|r| {
            let r = r.into_inner();
            (
                String::from_utf8_lossy(&r.stdout).into_owned(),
                String::from_utf8_lossy(&r.stderr).into_owned(),
                r.exit_code,
            )
        })
}

/// A container of `pod`, from `image`, that counts into its /tmp/count every 0.1 s: the
/// subject of a checkpoint, which must keep counting.
pub async fn start_counter(c: &mut Clients, server: &Server, pod: &Pod, image: &str) -> String {
    let script = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done";
    pod.start(
        c,
        server,
        &container_config("ck", image, &["sh", "-c", script]),
    )
    .await
}

/// CheckpointContainer of `id` to `location`, with `timeout` seconds (0: none).
pub fn checkpoint_request(id: &str, location: &Path, timeout: i64) -> CheckpointContainerRequest {
    CheckpointContainerRequest {
        container_id: id.into(),
        location: location.to_string_lossy().into_owned(),
        timeout,
    }
}

/// Asserts that the counter container `id` is running and counts on from where it is.
pub async fn assert_counts_on(c: &mut Clients, id: &str) {
    let status = container_status(c, id).await.unwrap();
    assert_eq!(
        status.status.as_ref().unwrap().state(),
        ContainerState::ContainerRunning
    );
    let count = format!("/proc/{}/root/tmp/count", container_pid(&status));
    let read = || {
        std::fs::read_to_string(&count)
            .unwrap_or_default()
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
    };
    let before = read();
    super::eventually("the container counts on after the checkpoint", || {
        let now = read();
        async move { now > before }
    })
    .await;
}

/// No mount of the server's scratch directory left (the test's netns pins aside).
pub fn assert_nothing_left(server: &Server) {
    let dir = server.dir.to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let left: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(&dir) && !l.contains("/netns/"))
        .collect();
    assert!(left.is_empty(), "mounts left: {left:#?}");
}
