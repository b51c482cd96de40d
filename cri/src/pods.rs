//! The sandbox RPCs (see [`crate::sandbox`] for the sequence and what each step makes).

use crate::daemon::Daemon;
use crate::sandbox::{self, SandboxRecord};
use k8s_cri::v1::*;
use std::collections::HashMap;
use tonic::Status;

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn cni_chain(e: &crate::cni::CniError) -> String {
    crate::cni::error_chain(e)
}

pub(crate) fn internal(what: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what}: {e}"))
}

/// capsa's error, with its whole cause chain, as a gRPC status of its kind.
pub(crate) fn capsa_status(what: &str, e: &capsa::Error) -> Status {
    let chain = crate::cni::error_chain(e);
    let message = format!("{what}: {chain}");
    match e.kind() {
        capsa::ErrorKind::NotFound => Status::not_found(message),
        capsa::ErrorKind::AlreadyExists => Status::already_exists(message),
        capsa::ErrorKind::InvalidInput => Status::invalid_argument(message),
        capsa::ErrorKind::WrongState => Status::failed_precondition(message),
        capsa::ErrorKind::Other => Status::internal(message),
    }
}

/// A RunPodSandbox under way: its pending record, undone when a later step fails.
struct Undo<'a> {
    daemon: &'a Daemon,
    record: SandboxRecord,
    /// CNI ADD succeeded: the undo runs a DEL (a failed ADD has undone itself).
    added: bool,
    armed: bool,
}

impl Undo<'_> {
    async fn run(mut self) {
        self.armed = false;
        if let Err(e) = self
            .daemon
            .tear_down_unfinished(&self.record, self.added)
            .await
        {
            // The pending record stays: the next startup tries again.
            log::warn!(
                "undoing RunPodSandbox of {}: {}; its pending record stays for the next start",
                self.record.id,
                e.message()
            );
        }
        self.daemon
            .release_name(&sandbox::name_key(&self.record.metadata()));
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if self.armed {
            // Only reached if the RPC's future was dropped mid-way (the client went away):
            // release the name; the pending record makes the next startup tear it down.
            log::warn!(
                "RunPodSandbox of {} abandoned mid-way; its name is released",
                self.record.id
            );
            self.daemon
                .release_name(&sandbox::name_key(&self.record.metadata()));
        }
    }
}

impl Daemon {
    pub async fn run_pod_sandbox(
        &self,
        req: RunPodSandboxRequest,
    ) -> Result<RunPodSandboxResponse, Status> {
        let config = sandbox::validate(req.config.as_ref())?.clone();
        if !req.runtime_handler.is_empty() {
            return Err(Status::invalid_argument(format!(
                "runtime_handler {:?}: capsa-cri has only the default handler (\"\")",
                req.runtime_handler
            )));
        }
        let id = crate::store::new_id().map_err(|e| internal("making a sandbox id", e))?;
        let key = sandbox::name_key(config.metadata.as_ref().expect("validated"));
        self.reserve_name(&key, &id)?;
        let shares = sandbox::shares(&config);
        let mut undo = Undo {
            daemon: self,
            record: SandboxRecord {
                id: id.clone(),
                config: config.clone(),
                runtime_handler: req.runtime_handler.clone(),
                created_at: now_ns(),
                stopped: false,
                host_network: shares.host_network,
                host_ipc: shares.host_ipc,
                netns: None,
                ips: Vec::new(),
                shm: None,
                network: None,
                pending: true,
                cni_config: None,
            },
            added: false,
            armed: true,
        };
        // On disk before anything is made: a daemon killed from here on finds it at startup.
        if let Err(e) = self.save_pending(&undo.record) {
            undo.armed = false;
            self.release_name(&key);
            return Err(e);
        }
        match self.set_up(&mut undo, &shares).await {
            Ok(()) => {
                undo.armed = false;
                log::info!("sandbox {id} ({key}) is ready");
                for kind in [
                    ContainerEventType::ContainerCreatedEvent,
                    ContainerEventType::ContainerStartedEvent,
                ] {
                    self.events().push(&id, &id, kind);
                }
                Ok(RunPodSandboxResponse { pod_sandbox_id: id })
            }
            Err(e) => {
                log::warn!("RunPodSandbox {key}: {}", e.message());
                undo.run().await;
                Err(e)
            }
        }
    }

    async fn set_up(&self, undo: &mut Undo<'_>, shares: &sandbox::Shares) -> Result<(), Status> {
        let id = undo.record.id.clone();
        let config = undo.record.config.clone();
        // The files the pod's containers will mount.
        let files = self.sandbox_files(&id);
        std::fs::create_dir_all(&files).map_err(|e| internal("creating sandbox files", e))?;
        let hostname = if shares.host_network {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else if config.hostname.is_empty() {
            config
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default()
        } else {
            config.hostname.clone()
        };
        let resolv = match &config.dns_config {
            Some(dns) => sandbox::resolv_conf(dns),
            None => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        };
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        for (name, text) in [
            ("hostname", format!("{hostname}\n")),
            ("resolv.conf", resolv),
            ("hosts", hosts),
        ] {
            let path = files.join(name);
            capsa::internal::write_atomic(&path, text.as_bytes(), 0o644)
                .map_err(|e| internal(&format!("writing {}", path.display()), e))?;
        }
        if !shares.host_ipc {
            let shm = sandbox::shm_path(&self.runtime_dir(), &id);
            sandbox::mount_shm(&shm)
                .map_err(|e| internal(&format!("mounting /dev/shm at {}", shm.display()), e))?;
            undo.record.shm = Some(shm);
        }
        // The pod: its infra process holds the shared namespaces.
        let parent = config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| sandbox::DEFAULT_CGROUP_PARENT.into());
        let mut opts = capsa::PodOptions::new()
            .share(shares.pod.clone())
            .cgroup_parent(parent);
        opts.hostname = (!shares.host_network).then(|| hostname.clone());
        opts.pause_binary = self.config().pause_binary.clone();
        opts.sysctls = sandbox::sysctls(&config);
        let rt = self.runtime().clone();
        let pod_id = id.clone();
        let created = tokio::task::spawn_blocking(move || rt.create_pod(&pod_id, &opts))
            .await
            .map_err(|e| internal("creating the pod", e))?;
        let pod = created.map_err(|e| capsa_status("creating the pod", &e))?;
        if !shares.host_network {
            let pid = pod.live_pid().ok_or_else(|| {
                Status::internal(format!("the infra process of sandbox {id} exited at start"))
            })?;
            let netns = sandbox::netns_path(&self.runtime_dir(), &id);
            sandbox::pin_netns(pid.as_raw(), &netns)
                .map_err(|e| internal(&format!("pinning the netns at {}", netns.display()), e))?;
            undo.record.netns = Some(netns);
            let network = sandbox::load_network(&self.config().cni_conf_dir)?;
            let name = network.name().to_string();
            // What a DEL needs if the daemon dies before the ADD has cached its result.
            undo.record.cni_config = Some(network.raw().clone());
            self.save_pending(&undo.record)?;
            let attachment = sandbox::attachment(&undo.record, &self.pod_cidr());
            let opts = sandbox::cni_options(self.config());
            // Not cancelled with the RPC: a dropped ADD would skip its own rollback.
            let added = tokio::spawn(async move { network.add(&attachment, &opts).await })
                .await
                .map_err(|e| internal("running CNI ADD", e))?;
            let result = added.map_err(|e| {
                Status::unknown(format!(
                    "setting up the pod network of sandbox {id}: {}",
                    crate::cni::error_chain(&e)
                ))
            })?;
            undo.added = true;
            undo.record.ips = result.pod_ips().iter().map(|ip| ip.to_string()).collect();
            undo.record.network = Some(name);
        }
        undo.record.pending = false;
        self.save_sandbox(undo.record.clone())
    }

    /// Tears down what a RunPodSandbox that did not finish may have made of `record`'s
    /// sandbox, in reverse order, each step tolerant of what is not there: a CNI DEL (when
    /// `del_network` and an ADD was started, from its cache entry or else the config it was
    /// started with), the netns pin, the capsa pod, the /dev/shm mount, the files, and last
    /// the pending record. The first failure stops it: the record stays for a retry.
    pub(crate) async fn tear_down_unfinished(
        &self,
        record: &SandboxRecord,
        del_network: bool,
    ) -> Result<(), Status> {
        let id = record.id.clone();
        let netns = sandbox::netns_path(&self.runtime_dir(), &id);
        if let (true, Some(config)) = (del_network, &record.cni_config) {
            let mut attached = record.clone();
            attached.netns = Some(netns.clone());
            let attachment = sandbox::attachment(&attached, &self.pod_cidr());
            let opts = sandbox::cni_options(self.config());
            let source = self.sandbox_record_path(&id);
            let network = serde_json::to_vec(config)
                .map_err(|e| internal("the pending record's CNI config", e))
                .and_then(|bytes| {
                    crate::cni::Network::from_conflist(&bytes, &source)
                        .map_err(|e| internal("the pending record's CNI config", cni_chain(&e)))
                })?;
            let deleted = tokio::spawn(async move { network.del(&attachment, &opts).await })
                .await
                .map_err(|e| internal("running CNI DEL", e))?;
            deleted.map_err(|e| internal("CNI DEL", cni_chain(&e)))?;
        }
        sandbox::unpin_netns(&netns).map_err(|e| internal("unpinning the netns", e))?;
        self.remove_capsa_pod(&id).await?;
        let shm = sandbox::shm_path(&self.runtime_dir(), &id);
        sandbox::unmount_shm(&shm).map_err(|e| internal("unmounting /dev/shm", e))?;
        self.remove_sandbox_dirs(&id)?;
        self.forget_pending(&id)
    }

    /// Removes the capsa pod of sandbox `id` (its infra process and cgroups); one that does
    /// not exist is fine.
    async fn remove_capsa_pod(&self, id: &str) -> Result<(), Status> {
        let rt = self.runtime().clone();
        let pod_id = id.to_string();
        let removed = tokio::task::spawn_blocking(move || match rt.remove_pod(&pod_id, true) {
            Err(capsa::Error::Pod(capsa::pod::PodError::NotExist { .. })) => Ok(()),
            other => other,
        })
        .await
        .map_err(|e| internal("stopping the pod", e))?;
        removed.map_err(|e| capsa_status("stopping the pod", &e))
    }

    /// Removes the files of sandbox `id` and its directory under the runtime dir (emptied
    /// of the shm mount by then); absent ones are fine.
    fn remove_sandbox_dirs(&self, id: &str) -> Result<(), Status> {
        let files = self.sandbox_files(id);
        match std::fs::remove_dir_all(&files) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(internal(&format!("removing {}", files.display()), e)),
        }
        let _ = std::fs::remove_dir(self.runtime_dir().join("sandboxes").join(id));
        Ok(())
    }

    /// Tears down every sandbox a previous run of the daemon left pending (killed in the
    /// middle of its RunPodSandbox). Runs once, at startup, before serving.
    pub async fn sweep_unfinished(&self) {
        self.sweep_unfinished_containers().await;
        for record in self.take_unfinished() {
            match self.tear_down_unfinished(&record, true).await {
                Ok(()) => log::info!(
                    "sandbox {} ({}) was left unfinished by a killed daemon: torn down",
                    record.id,
                    sandbox::name_key(&record.metadata())
                ),
                Err(e) => log::error!(
                    "sandbox {} was left unfinished by a killed daemon; tearing it down: {}",
                    record.id,
                    e.message()
                ),
            }
        }
    }

    pub async fn stop_pod_sandbox(
        &self,
        req: StopPodSandboxRequest,
    ) -> Result<StopPodSandboxResponse, Status> {
        let Some(mut record) = self.sandbox(&req.pod_sandbox_id) else {
            // kubelet repeats Stop; an unknown sandbox is already stopped.
            return Ok(StopPodSandboxResponse {});
        };
        let _op = self.sandbox_lock(&record.id).await;
        if let Some(netns) = record.netns.clone() {
            if let Some(name) = record.network.clone() {
                let attachment = sandbox::attachment(&record, &self.pod_cidr());
                let opts = sandbox::cni_options(self.config());
                // DEL from the ADD's cache entry (the config dir may have changed since).
                // Not cancelled with the RPC, like ADD.
                let deleted = tokio::spawn(async move {
                    crate::cni::Network::del_cached(&name, &attachment, &opts)
                        .await
                        .map(|_| ())
                })
                .await
                .map_err(|e| internal("running CNI DEL", e))?;
                deleted.map_err(|e| {
                    Status::unknown(format!(
                        "tearing down the pod network of sandbox {}: {}",
                        record.id,
                        crate::cni::error_chain(&e)
                    ))
                })?;
                record.network = None;
            }
            sandbox::unpin_netns(&netns).map_err(|e| internal("unpinning the netns", e))?;
            record.netns = None;
        }
        self.remove_capsa_pod(&record.id).await?;
        if let Some(shm) = record.shm.take() {
            sandbox::unmount_shm(&shm).map_err(|e| internal("unmounting /dev/shm", e))?;
        }
        let was_stopped = std::mem::replace(&mut record.stopped, true);
        let id = record.id.clone();
        self.save_sandbox(record)?;
        // kubelet repeats Stop: the first one is the event.
        if !was_stopped {
            self.events()
                .push(&id, &id, ContainerEventType::ContainerStoppedEvent);
        }
        Ok(StopPodSandboxResponse {})
    }

    pub async fn remove_pod_sandbox(
        &self,
        req: RemovePodSandboxRequest,
    ) -> Result<RemovePodSandboxResponse, Status> {
        let Some(record) = self.sandbox(&req.pod_sandbox_id) else {
            return Ok(RemovePodSandboxResponse {});
        };
        // Its containers go first (kubelet removes them itself, but need not), then the
        // sandbox stops, as containerd does for a sandbox kubelet did not stop.
        self.remove_sandbox_containers(&record.id).await?;
        self.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: record.id.clone(),
        })
        .await?;
        let _op = self.sandbox_lock(&record.id).await;
        self.remove_sandbox_dirs(&record.id)?;
        self.forget_sandbox(&record)?;
        self.events().push(
            &record.id,
            &record.id,
            ContainerEventType::ContainerDeletedEvent,
        );
        Ok(RemovePodSandboxResponse {})
    }

    pub async fn pod_sandbox_status(
        &self,
        req: PodSandboxStatusRequest,
    ) -> Result<PodSandboxStatusResponse, Status> {
        let record = self.sandbox(&req.pod_sandbox_id).ok_or_else(|| {
            Status::not_found(format!(
                "an error occurred when try to find sandbox {:?}: not found",
                req.pod_sandbox_id
            ))
        })?;
        let ready = self.is_ready(&record);
        let mut ips = record.ips.iter();
        let network = (!record.host_network).then(|| PodSandboxNetworkStatus {
            ip: ips.next().cloned().unwrap_or_default(),
            additional_ips: ips.map(|ip| PodIp { ip: ip.clone() }).collect(),
        });
        let ns = record
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default();
        let mut info = HashMap::new();
        if req.verbose {
            let pid = self.infra_pid(&record.id);
            let verbose = serde_json::json!({
                "pid": pid,
                "netns": record.netns,
                "shm": record.shm,
                "hostNetwork": record.host_network,
                "runtimeRoot": self.config().capsa_root(),
                "config": record.config,
            });
            info.insert("info".to_string(), verbose.to_string());
        }
        Ok(PodSandboxStatusResponse {
            status: Some(PodSandboxStatus {
                id: record.id.clone(),
                metadata: record.config.metadata.clone(),
                state: state(ready),
                created_at: record.created_at,
                network,
                linux: Some(LinuxPodSandboxStatus {
                    namespaces: Some(Namespace { options: Some(ns) }),
                }),
                labels: record.config.labels.clone(),
                annotations: record.config.annotations.clone(),
                runtime_handler: record.runtime_handler.clone(),
            }),
            info,
            containers_statuses: Vec::new(),
            timestamp: now_ns(),
        })
    }

    pub async fn list_pod_sandbox(
        &self,
        req: ListPodSandboxRequest,
    ) -> Result<ListPodSandboxResponse, Status> {
        let filter = req.filter.unwrap_or_default();
        let mut items: Vec<PodSandbox> = self
            .sandboxes()
            .into_iter()
            .filter_map(|r| {
                let ready = self.is_ready(&r);
                sandbox::matches(&r, ready, &filter).then(|| PodSandbox {
                    id: r.id.clone(),
                    metadata: r.config.metadata.clone(),
                    state: state(ready),
                    created_at: r.created_at,
                    labels: r.config.labels.clone(),
                    annotations: r.config.annotations.clone(),
                    runtime_handler: r.runtime_handler.clone(),
                })
            })
            .collect();
        items.sort_by_key(|p| p.created_at);
        Ok(ListPodSandboxResponse { items })
    }

    pub async fn pod_sandbox_stats(
        &self,
        req: PodSandboxStatsRequest,
    ) -> Result<PodSandboxStatsResponse, Status> {
        let record = self.sandbox(&req.pod_sandbox_id).ok_or_else(|| {
            Status::not_found(format!("sandbox {:?} not found", req.pod_sandbox_id))
        })?;
        if !self.is_ready(&record) {
            return Err(Status::failed_precondition(format!(
                "sandbox {} is not ready: it has no processes to measure",
                record.id
            )));
        }
        Ok(PodSandboxStatsResponse {
            stats: Some(self.sandbox_stats(&record)?),
        })
    }

    pub async fn list_pod_sandbox_stats(
        &self,
        req: ListPodSandboxStatsRequest,
    ) -> Result<ListPodSandboxStatsResponse, Status> {
        let filter = req.filter.unwrap_or_default();
        let list_filter = PodSandboxFilter {
            id: filter.id,
            state: None,
            label_selector: filter.label_selector,
        };
        let mut stats = Vec::new();
        for r in self.sandboxes() {
            if self.is_ready(&r) && sandbox::matches(&r, true, &list_filter) {
                stats.push(self.sandbox_stats(&r)?);
            }
        }
        Ok(ListPodSandboxStatsResponse { stats })
    }

    fn sandbox_stats(&self, record: &SandboxRecord) -> Result<PodSandboxStats, Status> {
        let pod = self
            .runtime()
            .load_pod(&record.id)
            .map_err(|e| capsa_status("loading the pod", &e))?;
        let cgroup = capsa::cgroups::Manager::new(&pod.state().cgroup_path)
            .map_err(|e| internal("the pod's cgroup", crate::cni::error_chain(&e)))?;
        let st = cgroup
            .stats()
            .map_err(|e| internal("reading the pod's cgroup", crate::cni::error_chain(&e)))?;
        let now = now_ns();
        let cpu_total = st.cpu.usage.total;
        let network = match (record.host_network, pod.live_pid()) {
            (false, Some(pid)) => std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
                .ok()
                .map(|t| crate::stats::network(&t, now)),
            _ => None,
        };
        Ok(PodSandboxStats {
            attributes: Some(PodSandboxAttributes {
                id: record.id.clone(),
                metadata: record.config.metadata.clone(),
                labels: record.config.labels.clone(),
                annotations: record.config.annotations.clone(),
            }),
            linux: Some(LinuxPodSandboxStats {
                cpu: Some(CpuUsage {
                    timestamp: now,
                    usage_core_nano_seconds: Some(UInt64Value { value: cpu_total }),
                    usage_nano_cores: self
                        .cpu_samples
                        .rate(&record.id, now, cpu_total)
                        .map(|value| UInt64Value { value }),
                }),
                memory: Some(crate::stats::memory(&st, now)),
                network,
                process: Some(ProcessUsage {
                    timestamp: now,
                    process_count: Some(UInt64Value {
                        value: st.pids.current,
                    }),
                }),
                containers: Vec::new(),
            }),
            windows: None,
        })
    }

    /// READY while not stopped and the infra process this sandbox started still runs.
    pub(crate) fn is_ready(&self, record: &SandboxRecord) -> bool {
        !record.stopped && self.infra_pid(&record.id).is_some()
    }

    pub(crate) fn infra_pid(&self, id: &str) -> Option<i32> {
        self.runtime()
            .load_pod(id)
            .ok()
            .and_then(|p| p.live_pid())
            .map(|p| p.as_raw())
    }
}

fn state(ready: bool) -> i32 {
    if ready {
        PodSandboxState::SandboxReady as i32
    } else {
        PodSandboxState::SandboxNotready as i32
    }
}
