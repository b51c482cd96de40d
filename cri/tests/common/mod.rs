//! The CRI test harness: a kubelet's side of the socket. Every scenario runs against
//! capsa-cri and against Debian's containerd 1.6 with its CRI plugin, each started privately
//! by the test (own socket, root, state and config under a scratch directory), through the
//! k8s-cri clients. A scenario containerd fails is a wrong test unless the difference is
//! deliberate and written down where the test branches on [`Kind`].
#![allow(dead_code)]

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

pub const CAPSA_CRI: &str = env!("CARGO_BIN_EXE_capsa-cri");
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Which CRI server a scenario talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Capsa,
    Containerd,
}

/// Both servers, in the order scenarios run them.
pub const KINDS: [Kind; 2] = [Kind::Capsa, Kind::Containerd];

/// A unique scratch directory under /tmp/capsa-cri-tests (short: socket paths must fit).
pub fn scratch(prefix: &str) -> PathBuf {
    let d = PathBuf::from("/tmp/capsa-cri-tests").join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The k8s-cri clients of one server.
pub struct Clients {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
}

/// Connects to a CRI server's unix socket, as kubelet does (16 MiB messages both ways).
pub async fn connect(socket: &Path) -> Result<Clients, tonic::transport::Error> {
    let path = socket.to_path_buf();
    let channel = Endpoint::try_from("http://[::]:50051")
        .expect("a static URI")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await?;
    const MAX: usize = 16 * 1024 * 1024;
    Ok(Clients {
        runtime: RuntimeServiceClient::new(channel.clone())
            .max_decoding_message_size(MAX)
            .max_encoding_message_size(MAX),
        images: ImageServiceClient::new(channel)
            .max_decoding_message_size(MAX)
            .max_encoding_message_size(MAX),
    })
}

/// A running CRI server the test started; stopped (SIGTERM, then SIGKILL) and its scratch
/// directory removed on drop.
pub struct Server {
    pub kind: Kind,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub cni_conf_dir: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// Starts a server of `kind` with an empty CNI config dir, and waits until it answers
    /// Version.
    pub async fn start(kind: Kind) -> Server {
        let dir = scratch(match kind {
            Kind::Capsa => "capsa",
            Kind::Containerd => "ctrd",
        });
        let cni_conf_dir = dir.join("net.d");
        std::fs::create_dir_all(&cni_conf_dir).unwrap();
        let mut s = Server {
            kind,
            socket: dir.join("cri.sock"),
            dir,
            cni_conf_dir,
            child: None,
        };
        s.spawn();
        s.wait_ready().await;
        s
    }

    /// The command line that starts this server (without spawning it).
    pub fn command(&self) -> Command {
        match self.kind {
            Kind::Capsa => {
                let mut c = Command::new(CAPSA_CRI);
                c.arg("--config")
                    .arg(self.dir.join("none.toml"))
                    .arg("--listen")
                    .arg(&self.socket)
                    .arg("--state-dir")
                    .arg(self.dir.join("state"))
                    .arg("--runtime-root")
                    .arg(self.dir.join("run"))
                    .arg("--cni-conf-dir")
                    .arg(&self.cni_conf_dir)
                    .args(["--cni-plugin-dir", "/usr/lib/cni", "--log-level", "debug"]);
                if !self.dir.join("none.toml").exists() {
                    std::fs::write(self.dir.join("none.toml"), "").unwrap();
                }
                c
            }
            Kind::Containerd => {
                let d = self.dir.display();
                let config = format!(
                    r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{d}/t.sock"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{net}"
"#,
                    sock = self.socket.display(),
                    net = self.cni_conf_dir.display(),
                );
                std::fs::write(self.dir.join("config.toml"), config).unwrap();
                let mut c = Command::new("containerd");
                c.arg("--config").arg(self.dir.join("config.toml"));
                c
            }
        }
    }

    fn spawn(&mut self) {
        let log = |name: &str| std::fs::File::create(self.dir.join(name)).unwrap();
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(log("stdout.log"))
            .stderr(log("stderr.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?}: {e}", self.kind));
        self.child = Some(child);
    }

    /// The server's own log (stderr), for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = connect(&self.socket).await {
                if c.runtime
                    .version(k8s_cri::v1::VersionRequest::default())
                    .await
                    .is_ok()
                {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("{:?} exited with {status}: {}", self.kind, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{:?} did not answer Version within 30 s: {}",
                self.kind,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn clients(&self) -> Clients {
        connect(&self.socket)
            .await
            .unwrap_or_else(|e| panic!("connecting to {:?}: {e}", self.kind))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` and waits (bounded) for the server to exit; returns its status.
    pub fn stop_with(&mut self, signal: nix::sys::signal::Signal) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the server is running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{:?} did not exit within 20 s of {signal}", self.kind);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the same server again on the same directories (after a stop or a kill).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running server");
        self.spawn();
        self.wait_ready().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop_with(nix::sys::signal::Signal::SIGTERM);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Writes a CNI config file into a server's config dir.
pub fn write_cni_config(server: &Server, name: &str, json: &serde_json::Value) {
    std::fs::write(server.cni_conf_dir.join(name), json.to_string()).unwrap();
}

/// Waits (bounded) for `cond`, polling; panics naming `what` at the deadline.
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
