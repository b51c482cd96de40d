//! The daemon: its configuration and state, the RPCs it serves, and the server loop.
//!
//! ```text
//! kubelet --gRPC over <listen>--> tonic server (tokio, multithreaded)
//!            RuntimeService / ImageService  ->  Daemon methods  ->  capsa library
//! SIGTERM/SIGINT: stop accepting, finish the calls in flight, remove the socket, exit 0;
//!                 pods and containers keep running (they are not children of the daemon).
//! ```

use crate::config::Config;
use crate::sandbox::SandboxRecord;
use crate::service::Services;
use crate::store::Store;
use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use k8s_cri::v1::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tonic::Status;

/// kubelet's CRI client sends and accepts messages up to 16 MiB; tonic's default is 4 MiB.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// The runtime name kubelet shows in node status (`capsa://0.1.0`).
pub const RUNTIME_NAME: &str = "capsa";
/// The CRI version this daemon speaks.
pub const API_VERSION: &str = "v1";

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Socket(#[from] crate::socket::SocketError),
    #[error("{step} {}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Images(#[from] crate::images::service::ImagesError),
    #[error("serving the CRI")]
    Serve(#[source] tonic::transport::Error),
    #[error("starting the streaming server")]
    Streaming(#[source] crate::streaming::server::ServerError),
    #[error("the server task ended: {0}")]
    ServerTask(String),
}

/// Everything the RPCs share.
pub struct Daemon {
    config: Config,
    /// The node's pod CIDR from UpdateRuntimeConfig, kept on disk across restarts.
    pod_cidr: Mutex<String>,
    runtime: capsa::Runtime,
    images: crate::images::service::Images,
    sandbox_store: Store<SandboxRecord>,
    containers: crate::containers::service::Containers,
    table: Mutex<Table>,
    /// One async lock per sandbox: Stop and Remove of one sandbox do not interleave.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The previous CPU sample of each sandbox, for usage in nano-cores.
    pub(crate) cpu_samples: crate::stats::CpuSamples,
    /// The streaming server (Exec, Attach, PortForward URLs), started by [`serve`].
    streaming: std::sync::OnceLock<crate::streaming::server::StreamingServer>,
    /// Pending records found at startup: sandboxes a killed daemon left half made, for
    /// [`Daemon::sweep_unfinished`]. Never served, and their names are not reserved.
    unfinished: Mutex<Vec<SandboxRecord>>,
    /// GetContainerEvents: the queue the calls push to and the streams it feeds.
    events: crate::events::Events,
}

/// The sandboxes by id, and their names (kubelet's name_namespace_uid_attempt) by id.
#[derive(Default)]
struct Table {
    sandboxes: HashMap<String, SandboxRecord>,
    names: HashMap<String, String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

const POD_CIDR_FILE: &str = "pod-cidr";

impl Daemon {
    /// Prepares the state directory and reads back what a previous run kept there.
    pub fn new(config: Config) -> Result<Daemon, DaemonError> {
        std::fs::create_dir_all(&config.state_dir).map_err(|source| DaemonError::Io {
            step: "creating the state directory",
            path: config.state_dir.clone(),
            source,
        })?;
        let cidr_file = config.state_dir.join(POD_CIDR_FILE);
        let pod_cidr = match std::fs::read_to_string(&cidr_file) {
            Ok(s) => s.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(DaemonError::Io {
                    step: "reading",
                    path: cidr_file,
                    source,
                })
            }
        };
        let sandbox_store: Store<SandboxRecord> = Store::open(&config.state_dir.join("sandboxes"))?;
        let loaded = sandbox_store.load_all()?;
        for e in &loaded.broken {
            log::error!("skipping a sandbox record: {}", crate::cni::error_chain(e));
        }
        let mut table = Table::default();
        let mut unfinished = Vec::new();
        for (id, record) in loaded.records {
            if record.pending {
                unfinished.push(record);
                continue;
            }
            table
                .names
                .insert(crate::sandbox::name_key(&record.metadata()), id.clone());
            table.sandboxes.insert(id, record);
        }
        log::info!(
            "{} sandbox(es) found in {}",
            table.sandboxes.len(),
            config.state_dir.display()
        );
        let images = crate::images::service::Images::open(&config.state_dir, &config.registry)?;
        let events = crate::events::Events::default();
        let containers =
            crate::containers::service::Containers::open(&config.state_dir, events.queue())?;
        Ok(Daemon {
            runtime: capsa::Runtime::new(config.capsa_root()),
            images,
            containers,
            config,
            pod_cidr: Mutex::new(pod_cidr),
            sandbox_store,
            table: Mutex::new(table),
            locks: Mutex::new(HashMap::new()),
            cpu_samples: Default::default(),
            streaming: std::sync::OnceLock::new(),
            unfinished: Mutex::new(unfinished),
            events,
        })
    }

    /// Where lifecycle events are pushed (see [`crate::events`]).
    pub(crate) fn events(&self) -> crate::events::Queue {
        self.events.queue()
    }

    /// CRI GetContainerEvents: every event from now on, until the client goes.
    pub async fn get_container_events(
        &self,
        _req: GetEventsRequest,
    ) -> Result<crate::events::EventStream, Status> {
        Ok(self.events.subscribe())
    }

    /// The pending records found at startup, once.
    pub(crate) fn take_unfinished(&self) -> Vec<SandboxRecord> {
        std::mem::take(&mut *lock(&self.unfinished))
    }

    /// Saves the pending record of a RunPodSandbox under way: on disk only, never served.
    pub fn save_pending(&self, record: &SandboxRecord) -> Result<(), Status> {
        self.sandbox_store
            .save(&record.id, record)
            .map_err(|e| Status::internal(crate::cni::error_chain(&e)))
    }

    /// Removes the pending record of sandbox `id` (an absent one is fine).
    pub fn forget_pending(&self, id: &str) -> Result<(), Status> {
        self.sandbox_store
            .remove(id)
            .map_err(|e| Status::internal(crate::cni::error_chain(&e)))
    }

    /// The file of sandbox `id`'s record (for messages).
    pub fn sandbox_record_path(&self, id: &str) -> PathBuf {
        self.config
            .state_dir
            .join("sandboxes")
            .join(format!("{id}.json"))
    }

    pub fn images(&self) -> &crate::images::service::Images {
        &self.images
    }

    pub fn containers(&self) -> &crate::containers::service::Containers {
        &self.containers
    }

    pub fn runtime(&self) -> &capsa::Runtime {
        &self.runtime
    }

    /// This daemon's directory under the runtime root, beside capsa's (netns pins, shm
    /// mounts, monitors).
    pub fn runtime_dir(&self) -> PathBuf {
        self.config.runtime_root.join("cri")
    }

    /// A sandbox's files (hostname, resolv.conf, hosts) under the state dir.
    pub fn sandbox_files(&self, id: &str) -> PathBuf {
        self.config.state_dir.join("sandbox-files").join(id)
    }

    /// Reserves a sandbox name for `id`; a name in use is AlreadyExists, naming its owner.
    pub fn reserve_name(&self, key: &str, id: &str) -> Result<(), Status> {
        let mut t = lock(&self.table);
        if let Some(owner) = t.names.get(key) {
            return Err(Status::already_exists(format!(
                "the sandbox name {key:?} is already reserved for {owner}"
            )));
        }
        t.names.insert(key.to_string(), id.to_string());
        Ok(())
    }

    pub fn release_name(&self, key: &str) {
        lock(&self.table).names.remove(key);
    }

    /// Saves a sandbox record (disk first, then the table).
    pub fn save_sandbox(&self, record: SandboxRecord) -> Result<(), Status> {
        self.sandbox_store
            .save(&record.id, &record)
            .map_err(|e| Status::internal(crate::cni::error_chain(&e)))?;
        lock(&self.table)
            .sandboxes
            .insert(record.id.clone(), record);
        Ok(())
    }

    /// Removes a sandbox record and releases its name.
    pub fn forget_sandbox(&self, record: &SandboxRecord) -> Result<(), Status> {
        self.sandbox_store
            .remove(&record.id)
            .map_err(|e| Status::internal(crate::cni::error_chain(&e)))?;
        let mut t = lock(&self.table);
        t.sandboxes.remove(&record.id);
        t.names
            .remove(&crate::sandbox::name_key(&record.metadata()));
        drop(t);
        lock(&self.locks).remove(&record.id);
        self.cpu_samples.forget(&record.id);
        Ok(())
    }

    pub fn sandbox(&self, id: &str) -> Option<SandboxRecord> {
        lock(&self.table).sandboxes.get(id).cloned()
    }

    pub fn sandboxes(&self) -> Vec<SandboxRecord> {
        lock(&self.table).sandboxes.values().cloned().collect()
    }

    /// Serialises the state-changing RPCs of one sandbox.
    pub async fn sandbox_lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = lock(&self.locks)
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone();
        m.lock_owned().await
    }

    /// Starts the streaming server on the configured address (once).
    pub async fn start_streaming(self: &Arc<Self>) -> Result<(), DaemonError> {
        if self.streaming.get().is_some() {
            return Ok(());
        }
        let addr: std::net::SocketAddr = self.config.stream_address.parse().map_err(|e| {
            DaemonError::Streaming(crate::streaming::server::ServerError::Bind {
                addr: ([127, 0, 0, 1], 0).into(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
            })
        })?;
        let tls = match (&self.config.stream_tls_cert, &self.config.stream_tls_key) {
            (Some(cert), Some(key)) => Some(crate::streaming::server::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        let backend = Arc::new(crate::containers::streams::DaemonBackend(Arc::downgrade(
            self,
        )));
        // Validated with the configuration.
        let idle = self.config.idle_timeout().unwrap_or(None);
        let server = crate::streaming::server::StreamingServer::start_with(
            addr,
            tls,
            backend,
            Default::default(),
            idle,
        )
        .await
        .map_err(DaemonError::Streaming)?;
        log::info!("streaming on {}", server.addr());
        let _ = self.streaming.set(server);
        Ok(())
    }

    fn streaming(&self) -> Result<&crate::streaming::server::StreamingServer, Status> {
        self.streaming
            .get()
            .ok_or_else(|| Status::unavailable("the streaming server is not running"))
    }

    pub async fn exec(&self, req: ExecRequest) -> Result<ExecResponse, Status> {
        self.streaming()?.get_exec(&req).await
    }

    pub async fn attach(&self, req: AttachRequest) -> Result<AttachResponse, Status> {
        self.streaming()?.get_attach(&req).await
    }

    pub async fn port_forward(
        &self,
        req: PortForwardRequest,
    ) -> Result<PortForwardResponse, Status> {
        self.streaming()?.get_port_forward(&req).await
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The pod CIDR kubelet last sent ("" before it has).
    pub fn pod_cidr(&self) -> String {
        self.pod_cidr
            .lock()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub async fn version(&self, _: VersionRequest) -> Result<VersionResponse, Status> {
        Ok(VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: API_VERSION.into(),
        })
    }

    pub async fn status(&self, req: StatusRequest) -> Result<StatusResponse, Status> {
        let network = network_status(&self.config.cni_conf_dir);
        let conditions = vec![
            RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            match &network {
                Ok(_) => RuntimeCondition {
                    r#type: "NetworkReady".into(),
                    status: true,
                    reason: String::new(),
                    message: String::new(),
                },
                Err(why) => RuntimeCondition {
                    r#type: "NetworkReady".into(),
                    status: false,
                    reason: "NetworkPluginNotReady".into(),
                    message: format!("Network plugin returns error: {why}"),
                },
            },
        ];
        let mut info = HashMap::new();
        if req.verbose {
            let json = |v: serde_json::Value| v.to_string();
            info.insert(
                "config".to_string(),
                json(serde_json::to_value(&self.config).unwrap_or_default()),
            );
            info.insert(
                "lastCNILoadStatus".to_string(),
                match &network {
                    Ok(path) => format!("OK: {}", path.display()),
                    Err(why) => why.clone(),
                },
            );
            info.insert("podCIDR".to_string(), self.pod_cidr());
        }
        Ok(StatusResponse {
            status: Some(RuntimeStatus { conditions }),
            info,
            runtime_handlers: vec![RuntimeHandler {
                name: String::new(),
                features: Some(RuntimeHandlerFeatures {
                    recursive_read_only_mounts: false,
                    user_namespaces: false,
                }),
            }],
            features: Some(RuntimeFeatures {
                supplemental_groups_policy: false,
            }),
        })
    }

    pub async fn runtime_config(
        &self,
        _: RuntimeConfigRequest,
    ) -> Result<RuntimeConfigResponse, Status> {
        Ok(RuntimeConfigResponse {
            linux: Some(LinuxRuntimeConfiguration {
                cgroup_driver: CgroupDriver::Cgroupfs as i32,
            }),
        })
    }

    pub async fn update_runtime_config(
        &self,
        req: UpdateRuntimeConfigRequest,
    ) -> Result<UpdateRuntimeConfigResponse, Status> {
        let cidr = req
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        if cidr.is_empty() {
            return Ok(UpdateRuntimeConfigResponse {});
        }
        validate_cidr(&cidr).map_err(Status::invalid_argument)?;
        let path = self.config.state_dir.join(POD_CIDR_FILE);
        capsa::internal::write_atomic(&path, cidr.as_bytes(), 0o644)
            .map_err(|e| Status::internal(format!("writing {}: {e}", path.display())))?;
        match self.pod_cidr.lock() {
            Ok(mut c) => *c = cidr,
            Err(p) => *p.into_inner() = cidr,
        }
        Ok(UpdateRuntimeConfigResponse {})
    }
}

/// "10.244.1.0/24" or "fd00::/64", possibly two of them separated by a comma (dual stack).
fn validate_cidr(cidr: &str) -> Result<(), String> {
    for part in cidr.split(',') {
        let part = part.trim();
        let (ip, len) = part.split_once('/').ok_or_else(|| {
            format!("runtime_config.network_config.pod_cidr: {part:?} is not IP/LENGTH")
        })?;
        let ip: std::net::IpAddr = ip.parse().map_err(|_| {
            format!("runtime_config.network_config.pod_cidr: {ip:?} is not an IP address")
        })?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match len.parse::<u8>() {
            Ok(l) if l <= max => {}
            _ => {
                return Err(format!(
                    "runtime_config.network_config.pod_cidr: prefix length {len:?} is not 0..={max}"
                ))
            }
        }
    }
    Ok(())
}

/// The CNI configuration the network would use (the first valid `*.conflist`, `*.conf` or
/// `*.json` of the directory, in lexical order), or why there is none.
pub fn network_status(dir: &Path) -> Result<PathBuf, String> {
    match crate::cni::Network::load(dir) {
        Ok(Some(network)) => Ok(network.source().to_path_buf()),
        Ok(None) => Err(format!(
            "cni config load failed: no network config found in {}",
            dir.display()
        )),
        Err(e) => Err(format!(
            "cni config load failed: {}",
            crate::cni::error_chain(&e)
        )),
    }
}

/// Serves the CRI on the configured socket until SIGTERM or SIGINT.
pub async fn serve(daemon: Arc<Daemon>) -> Result<(), DaemonError> {
    let listen = daemon.config.listen.clone();
    daemon.start_streaming().await?;
    daemon.events.start(Arc::downgrade(&daemon));
    let listener = crate::socket::bind(&listen)?;
    let services = Services(daemon);
    let runtime = RuntimeServiceServer::new(services.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let images = ImageServiceServer::new(services)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    log::info!("serving the CRI on {}", listen.display());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(runtime)
            .add_service(images)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                async {
                    let _ = stop_rx.await;
                },
            ),
    );
    let result = tokio::select! {
        r = &mut server => flatten(r),
        () = stop_signal() => {
            // Stop accepting; calls in flight get a grace period. kubelet keeps its
            // connection open for ever, so the server does not wait for it to close.
            let _ = stop_tx.send(());
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(r) => flatten(r),
                Err(_) => {
                    log::info!("connections still open after {SHUTDOWN_GRACE:?}: closing them");
                    server.abort();
                    Ok(())
                }
            }
        }
    };
    // Ours to remove: we bound it, and no other daemon can have replaced a live socket.
    let _ = std::fs::remove_file(&listen);
    log::info!("stopped serving the CRI on {}", listen.display());
    result
}

/// How long calls in flight may run on after SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

fn flatten(
    r: Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>,
) -> Result<(), DaemonError> {
    match r {
        Ok(inner) => inner.map_err(DaemonError::Serve),
        Err(e) => Err(DaemonError::ServerTask(e.to_string())),
    }
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => log::info!("SIGTERM: stopping"),
                _ = int.recv() => log::info!("SIGINT: stopping"),
            }
        }
        _ => {
            log::error!("cannot watch SIGTERM/SIGINT; serving until killed");
            std::future::pending::<()>().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cidrs_are_checked() {
        assert!(validate_cidr("10.244.1.0/24").is_ok());
        assert!(validate_cidr("10.244.1.0/24,fd00::/64").is_ok());
        assert!(validate_cidr("10.244.1.0")
            .unwrap_err()
            .contains("IP/LENGTH"));
        assert!(validate_cidr("10.244.1.0/33")
            .unwrap_err()
            .contains("0..=32"));
        assert!(validate_cidr("x/8").unwrap_err().contains("not an IP"));
    }

    #[test]
    fn the_first_valid_config_in_lexical_order_is_the_network() {
        let d = std::env::temp_dir().join(format!("capsa-cri-net-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let e = network_status(&d).unwrap_err();
        assert!(e.contains("no network config found"), "{e}");
        std::fs::write(d.join("00-bad.conflist"), "{").unwrap();
        std::fs::write(d.join("05-ignored.txt"), r#"{"name":"c"}"#).unwrap();
        let conflist = r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"bridge"}]}"#;
        std::fs::write(d.join("10-net.conflist"), conflist).unwrap();
        let conf = r#"{"cniVersion":"1.0.0","name":"b","type":"bridge"}"#;
        std::fs::write(d.join("20-net.conf"), conf).unwrap();
        assert_eq!(network_status(&d).unwrap(), d.join("10-net.conflist"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
