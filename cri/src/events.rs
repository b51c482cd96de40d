//! GetContainerEvents: the lifecycle events kubelet's evented PLEG reads instead of
//! relisting, as containerd sends them.
//!
//! ```text
//! RunPodSandbox      CREATED, STARTED   (container_id = the sandbox's id)
//! StopPodSandbox     STOPPED            (the first Stop only)
//! RemovePodSandbox   DELETED
//! CreateContainer    CREATED
//! StartContainer     STARTED
//! a container exits  STOPPED            (its monitor's pidfd turns readable)
//! RemoveContainer    DELETED
//! ```
//!
//! Each event carries the sandbox's status and the statuses of all its containers at the
//! time it is sent. Events are queued in order (one queue, one task that sends them) and
//! broadcast to every GetContainerEvents stream; a stream that falls more than
//! [`CAPACITY`] events behind loses the oldest, which is logged (kubelet relists then).
//! A STOPPED event whose container is gone by the time it is sent (removed meanwhile) or
//! is not seen exited (only its monitor died) is not sent.

use k8s_cri::v1::{ContainerEventResponse, ContainerEventType};
use std::sync::{Mutex, Weak};
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

/// Events a slow stream may be behind before it loses some.
pub const CAPACITY: usize = 1024;

/// One event to send: what happened to which container (or sandbox) of which sandbox.
#[derive(Debug, Clone)]
pub struct Pending {
    pub container_id: String,
    pub sandbox_id: String,
    pub kind: ContainerEventType,
}

/// The queue the daemon's calls and watches push to.
#[derive(Debug, Clone)]
pub struct Queue(mpsc::UnboundedSender<Pending>);

impl Queue {
    pub fn push(&self, container_id: &str, sandbox_id: &str, kind: ContainerEventType) {
        let _ = self.0.send(Pending {
            container_id: container_id.into(),
            sandbox_id: sandbox_id.into(),
            kind,
        });
    }
}

/// The stream one GetContainerEvents call gets.
pub type EventStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<ContainerEventResponse, Status>> + Send>,
>;

/// The queue's receiving end and the broadcast its events go out on.
pub struct Events {
    queue: Queue,
    pending: Mutex<Option<mpsc::UnboundedReceiver<Pending>>>,
    out: broadcast::Sender<ContainerEventResponse>,
}

impl Default for Events {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Events {
            queue: Queue(tx),
            pending: Mutex::new(Some(rx)),
            out: broadcast::channel(CAPACITY).0,
        }
    }
}

/// What turns a queued event into the one sent: the statuses at sending time.
pub trait Describe: Send + Sync + 'static {
    /// The event with its statuses; None when it is not to be sent.
    fn describe(
        &self,
        p: &Pending,
    ) -> impl std::future::Future<Output = Option<ContainerEventResponse>> + Send;
}

impl Events {
    pub fn queue(&self) -> Queue {
        self.queue.clone()
    }

    /// A stream of every event sent from now on.
    pub fn subscribe(&self) -> EventStream {
        let rx = self.out.subscribe();
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx);
        Box::pin(tokio_stream::StreamExt::filter_map(stream, |r| match r {
            Ok(ev) => Some(Ok(ev)),
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                log::warn!("GetContainerEvents: a slow client lost {n} event(s)");
                None
            }
        }))
    }

    /// Starts the task that sends queued events (once; later calls do nothing). It holds
    /// the daemon weakly and ends with it.
    pub fn start<D: Describe>(&self, daemon: Weak<D>) {
        let Some(mut rx) = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let out = self.out.clone();
        tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                // Nobody listens: nothing to describe.
                if out.receiver_count() == 0 {
                    continue;
                }
                let Some(daemon) = daemon.upgrade() else {
                    return;
                };
                if let Some(ev) = daemon.describe(&p).await {
                    let _ = out.send(ev);
                }
            }
        });
    }
}

impl Describe for crate::daemon::Daemon {
    async fn describe(&self, p: &Pending) -> Option<ContainerEventResponse> {
        use k8s_cri::v1::{ContainerState, ContainerStatusRequest, PodSandboxStatusRequest};
        let container = p.container_id != p.sandbox_id;
        if container && p.kind == ContainerEventType::ContainerStoppedEvent {
            let r = self.containers().get(&p.container_id)?;
            if self.observe(&r).state != ContainerState::ContainerExited {
                return None;
            }
        }
        let sandbox = self
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: p.sandbox_id.clone(),
                verbose: false,
            })
            .await
            .ok()
            .and_then(|r| r.status);
        let mut members: Vec<_> = self
            .containers()
            .all()
            .into_iter()
            .filter(|r| r.sandbox_id == p.sandbox_id)
            .collect();
        members.sort_by_key(|r| r.created_at);
        let mut statuses = Vec::new();
        for r in members {
            let req = ContainerStatusRequest {
                container_id: r.id,
                verbose: false,
            };
            if let Some(s) = self.container_status(req).await.ok().and_then(|r| r.status) {
                statuses.push(s);
            }
        }
        Some(ContainerEventResponse {
            container_id: p.container_id.clone(),
            container_event_type: p.kind as i32,
            created_at: crate::pods::now_ns(),
            pod_sandbox_status: sandbox,
            containers_statuses: statuses,
        })
    }
}
