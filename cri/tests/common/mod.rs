//! The CRI test harness: a kubelet's side of the socket. Every scenario runs against
//! capsa-cri and against Debian's containerd 1.6 with its CRI plugin, each started privately
//! by the test (own socket, root, state and config under a scratch directory), through the
//! k8s-cri clients. A scenario containerd fails is a wrong test unless the difference is
//! deliberate and written down where the test branches on [`Kind`].
#![allow(dead_code)]

pub mod bundles;
pub mod containers;
pub mod forward;
pub mod host_backend;
pub mod images;
pub mod registry;
pub mod stream_client;
pub use images::*;
pub use registry::*;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

pub const CAPSA_CRI: &str = env!("CARGO_BIN_EXE_capsa-cri");
/// The image containerd runs as each sandbox's pause container: capsa-pause alone
/// ([`Fixture::Pause`]), pulled from the server's registry through its docker.io mirror.
pub const PAUSE_IMAGE: &str = "docker.io/library/capsa-pause:test";
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Which CRI server a scenario talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Capsa,
    Containerd,
}

/// Both servers, in the order scenarios run them.
pub const KINDS: [Kind; 2] = [Kind::Capsa, Kind::Containerd];

/// A unique scratch directory under /tmp/capsa-cri-tests, or `$CAPSA_CRI_TEST_DIR` (the
/// VM's tests, whose /tmp is an overlay) (short: socket paths must fit).
pub fn scratch(prefix: &str) -> PathBuf {
    let base = std::env::var_os("CAPSA_CRI_TEST_DIR").unwrap_or("/tmp/capsa-cri-tests".into());
    let d = PathBuf::from(base).join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The k8s-cri clients of one server.
#[derive(Clone)]
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
    /// The network namespace the server (and so its CNI plugins) runs in.
    pub netns: Option<PathBuf>,
    /// The registry its docker.io pulls go to (its only one: nothing reaches out).
    pub registry: Arc<Registry>,
    /// docker.io's mirror in its config: the registry's URL, or a proxy's in front of it.
    pub mirror: String,
    /// Plugin directories searched before /usr/lib/cni (capsa-cri only): a test's own plugins.
    pub plugin_dirs: Vec<PathBuf>,
    child: Option<Child>,
}

impl Server {
    /// Starts a server of `kind` with an empty CNI config dir, and waits until it answers
    /// Version.
    pub async fn start(kind: Kind) -> Server {
        Self::start_in(kind, None).await
    }

    /// Starts a server inside the network namespace at `netns` (see [`Netns`]): pod
    /// networks, bridges and NAT rules then live there, never in the machine's own. A
    /// registry of its own starts there too.
    pub async fn start_in(kind: Kind, netns: Option<&Netns>) -> Server {
        Self::start_with(kind, netns, Arc::new(Registry::start(netns))).await
    }

    /// As [`Server::start_in`], with CNI plugins also searched in `plugin_dirs` (capsa-cri).
    pub async fn start_with_plugins(
        kind: Kind,
        netns: Option<&Netns>,
        plugin_dirs: Vec<PathBuf>,
    ) -> Server {
        Self::launch(
            kind,
            netns,
            Arc::new(Registry::start(netns)),
            plugin_dirs,
            None,
        )
        .await
    }

    /// Starts a server whose pulls of `docker.io/…` (and of `registry.addr()/…`) go to
    /// `registry`, over plain HTTP, which must have been started in the same `netns`: two
    /// servers held against each other on the same images. containerd's sandbox image is
    /// pushed there first.
    pub async fn start_with(kind: Kind, netns: Option<&Netns>, registry: Arc<Registry>) -> Server {
        Self::launch(kind, netns, registry, Vec::new(), None).await
    }

    /// As [`Server::start_with`], with docker.io's mirror at `mirror` (`http://host:port`,
    /// e.g. a proxy the test puts in front of `registry`) instead of the registry itself.
    pub async fn start_via(
        kind: Kind,
        netns: Option<&Netns>,
        registry: Arc<Registry>,
        mirror: String,
    ) -> Server {
        Self::launch(kind, netns, registry, Vec::new(), Some(mirror)).await
    }

    /// Starts it: docker.io's mirror is `mirror`, or else the registry itself.
    async fn launch(
        kind: Kind,
        netns: Option<&Netns>,
        registry: Arc<Registry>,
        plugin_dirs: Vec<PathBuf>,
        mirror: Option<String>,
    ) -> Server {
        remove_the_pods_parent_at_exit();
        let mirror = mirror.unwrap_or_else(|| registry.url());
        let dir = scratch(match kind {
            Kind::Capsa => "capsa",
            Kind::Containerd => "ctrd",
        });
        let cni_conf_dir = dir.join("net.d");
        std::fs::create_dir_all(&cni_conf_dir).unwrap();
        if kind == Kind::Containerd {
            registry.push(Fixture::Pause, PAUSE_IMAGE.trim_start_matches("docker.io/"));
        }
        let mut s = Server {
            kind,
            socket: dir.join("cri.sock"),
            dir,
            cni_conf_dir,
            netns: netns.map(|n| n.path.clone()),
            registry,
            mirror,
            plugin_dirs,
            child: None,
        };
        s.write_config();
        s.spawn();
        s.wait_ready().await;
        s
    }

    /// The command line that starts this server (without spawning it).
    pub fn command(&self) -> Command {
        let mut c;
        match self.kind {
            Kind::Capsa => {
                c = Command::new(CAPSA_CRI);
                c.arg("--config")
                    .arg(self.dir.join("cri.toml"))
                    .arg("--listen")
                    .arg(&self.socket)
                    .arg("--state-dir")
                    .arg(self.dir.join("state"))
                    .arg("--runtime-root")
                    .arg(self.dir.join("run"))
                    .arg("--cni-conf-dir")
                    .arg(&self.cni_conf_dir);
                for d in &self.plugin_dirs {
                    c.arg("--cni-plugin-dir").arg(d);
                }
                c.args(["--cni-plugin-dir", "/usr/lib/cni", "--log-level", "debug"]);
            }
            Kind::Containerd => {
                c = Command::new("containerd");
                c.arg("--config").arg(self.dir.join("config.toml"));
            }
        }
        with_netns(self.netns.as_deref(), c)
    }

    /// The server's configuration file: the mirror is docker.io's, and the registry is
    /// reached over plain HTTP (as itself too).
    fn write_config(&self) {
        let registry = self.registry.addr();
        let url = &self.mirror;
        match self.kind {
            Kind::Capsa => {
                let config = format!(
                    "[registry]\ninsecure = [\"{registry}\"]\n[registry.mirrors]\n\"docker.io\" = [\"{url}\"]\n"
                );
                std::fs::write(self.dir.join("cri.toml"), config).unwrap();
            }
            Kind::Containerd => {
                // containerd 1.6's hosts.toml directory. The registry is both the mirror and
                // the server, so that a pull never falls back to the real docker.io (1.6
                // refuses a file without a host table).
                let hosts = format!(
                    "server = \"{url}\"\n[host.\"{url}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
                );
                for host in ["docker.io", registry] {
                    let d = self.dir.join("certs.d").join(host);
                    std::fs::create_dir_all(&d).unwrap();
                    std::fs::write(d.join("hosts.toml"), &hosts).unwrap();
                }
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
  sandbox_image = "{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{net}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{d}/certs.d"
"#,
                    sock = self.socket.display(),
                    net = self.cni_conf_dir.display(),
                    pause = PAUSE_IMAGE,
                );
                std::fs::write(self.dir.join("config.toml"), config).unwrap();
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
            return;
        }
        // A failing test keeps the directory (the daemon's log is there), but not what its
        // pods and containers hold: capsa-cri's outlive the daemon by design, and
        // containerd's shims outlive a daemon that did not get to remove them.
        self.remove_what_runs();
    }
}

impl Server {
    /// Best effort, after a failure: with capsa-cri, every container and pod in capsa's
    /// root is deleted with force (their cgroups go with them); then, for either server,
    /// what still runs from the directory (containerd's shims) or in this server's pod
    /// cgroups (containerd's containers) is killed, the network namespaces those
    /// containers had are deleted, the mounts under the directory are detached and the pod
    /// cgroups are removed, deepest first.
    fn remove_what_runs(&self) {
        use std::os::unix::fs::MetadataExt;
        // The ids of this server's sandboxes and containers: each names a cgroup below its
        // pod's, which is how this server's pod cgroups are told from those of the tests
        // running beside it.
        let mut ids: Vec<String> =
            std::fs::read_dir(self.dir.join("state/io.containerd.runtime.v2.task/k8s.io"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
        let runtime = capsa::Runtime::new(self.dir.join("run/capsa"));
        let (containers, pods) = match self.kind {
            Kind::Capsa => (
                runtime.list().unwrap_or_default(),
                runtime.list_pods().unwrap_or_default(),
            ),
            Kind::Containerd => Default::default(),
        };
        ids.extend(containers.iter().map(|c| c.id().to_string()));
        ids.extend(pods.iter().map(|p| p.id().to_string()));
        let pod_dirs: Vec<PathBuf> = our_pod_cgroups()
            .into_iter()
            .filter(|d| ids.iter().any(|id| d.join(id).is_dir()))
            .collect();
        for c in containers {
            let _ = c.delete(true);
        }
        for p in pods {
            let _ = runtime.remove_pod(p.id(), true);
        }
        let kill = |pid: i32| {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        };
        bundles::processes_mentioning(&self.dir)
            .into_iter()
            .for_each(kill);
        // What is left in this server's pod cgroups (containerd's containers, whose shims
        // were just killed), and the network namespaces those processes had.
        let mut procs = Vec::new();
        for d in &pod_dirs {
            procs.extend(procs_in_cgroup_tree(d));
        }
        procs.sort_unstable();
        procs.dedup();
        let pod_netns: Vec<u64> = procs
            .iter()
            .filter_map(|pid| std::fs::metadata(format!("/proc/{pid}/ns/net")).ok())
            .map(|m| m.ino())
            .collect();
        procs.iter().copied().for_each(kill);
        let deadline = Instant::now() + Duration::from_secs(10);
        while procs
            .iter()
            .any(|p| Path::new(&format!("/proc/{p}")).exists())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        for e in std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
        {
            if std::fs::metadata(e.path()).is_ok_and(|m| pod_netns.contains(&m.ino())) {
                let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
                let _ = std::fs::remove_file(e.path());
            }
        }
        let dir = self.dir.to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&dir))
            .collect();
        // Deepest first.
        points.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in points {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        // The pods' parents (kubelet's cgroups, see pod_config) of this server, with what
        // containerd left below them.
        for d in &pod_dirs {
            remove_cgroup_tree(d);
        }
    }
}

/// `capsa-cri-test`, the parent of every test pod's cgroup parent (see pod_config), is
/// shared by the tests of this process, which run in parallel: removing it when one test
/// ends would race with a runtime's mkdir of another test's pod cgroup below it (runc's
/// MkdirAll does not retry). It is removed, where empty, when the test process exits.
fn remove_the_pods_parent_at_exit() {
    extern "C" fn remove() {
        for parent in pods_parents() {
            let _ = std::fs::remove_dir(parent);
        }
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a function that takes no arguments and does not unwind (every
        // error is ignored); libc runs it once at exit, after the tests.
        unsafe { libc::atexit(remove) };
    });
}

/// `capsa-cri-test`, the parent of the test pods' cgroup parents, in every hierarchy (each
/// v1 controller, the unified one of a hybrid host) and at the v2 root.
fn pods_parents() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    std::iter::once(base.to_path_buf())
        .chain(
            std::fs::read_dir(base)
                .into_iter()
                .flatten()
                .flatten()
                .map(|h| h.path()),
        )
        .map(|h| h.join("capsa-cri-test"))
        .collect()
}

/// The pod cgroups (kubelet's parents, see pod_config) of this test process's servers, in
/// every hierarchy.
fn our_pod_cgroups() -> Vec<PathBuf> {
    let ours = format!("pod{}-", std::process::id());
    let mut out = Vec::new();
    for parent in pods_parents() {
        for e in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(&ours) {
                out.push(e.path());
            }
        }
    }
    out
}

/// The pids in the cgroup `dir` and every one below it.
fn procs_in_cgroup_tree(dir: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            pids.extend(procs_in_cgroup_tree(&e.path()));
        }
    }
    pids
}

/// Removes the cgroup directory `dir` and every one below it, deepest first (best effort).
fn remove_cgroup_tree(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&e.path());
        }
    }
    // A cgroup whose last process was just killed can be busy for a moment.
    for _ in 0..50 {
        match std::fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => return,
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

/// A network namespace the test made (`ip netns add`), with lo up and 198.51.100.1/32 on it
/// (a documentation address, for port mappings to land on); deleted on drop.
pub struct Netns {
    pub name: String,
    pub path: PathBuf,
}

impl Netns {
    pub fn new() -> Netns {
        let name = format!(
            "capsa-cri-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["netns", "add", &name]);
        let n = Netns {
            path: PathBuf::from("/run/netns").join(&name),
            name,
        };
        ip(&["-n", &n.name, "link", "set", "lo", "up"]);
        ip(&["-n", &n.name, "addr", "add", "198.51.100.1/32", "dev", "lo"]);
        n
    }

    /// Runs `cmd` inside this namespace (nsenter --net): its output, asserting success.
    pub fn run(&self, cmd: &[&str]) -> String {
        let mut c = Command::new(cmd[0]);
        c.args(&cmd[1..]);
        run_ok(&mut with_netns(Some(&self.path), c))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs a command, asserting success; returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `cmd` run inside the network namespace at `netns` (through nsenter), or as it is.
pub fn with_netns(netns: Option<&Path>, cmd: Command) -> Command {
    let Some(netns) = netns else { return cmd };
    let mut n = Command::new("nsenter");
    n.arg(format!("--net={}", netns.display()))
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    n
}

/// Runs `f` on a thread of its own inside the network namespace at `netns` (setns moves
/// only the calling thread), or on this one without.
pub fn in_netns<T: Send>(netns: Option<&Path>, f: impl FnOnce() -> T + Send) -> T {
    let Some(netns) = netns else { return f() };
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = std::fs::File::open(netns).unwrap();
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

// Pods on a bridge network, for the scenarios that need one.

/// A CNI config: a bridge with host-local addresses in 10.89.0.0/24, portmap, the host-local
/// data kept in the server's scratch directory.
pub fn network(server: &Server, plugin: &str) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "capsa-test",
        "plugins": [
            {"type": plugin, "bridge": "capsatest0", "isGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "subnet": "10.89.0.0/24",
                      "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": server.dir.join("ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
}

/// The infra (capsa) or pause (containerd) pid, from the verbose info both give.
pub fn sandbox_pid(s: &k8s_cri::v1::PodSandboxStatusResponse) -> i32 {
    let info: serde_json::Value = serde_json::from_str(&s.info["info"]).unwrap();
    info["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("no pid in {info}")) as i32
}

/// No cgroup left under the test's parent for `uid`, no process left from the server dir.
pub fn assert_pod_cgroups_gone(uid: &str) {
    let left = pod_cgroups_left(uid);
    assert!(left.is_empty(), "cgroups left: {left:?}");
}

/// The cgroups of the pod `uid` still there, in every hierarchy (its parent, which kubelet
/// would have made, removed when empty; their shared parent goes at exit).
pub fn pod_cgroups_left(uid: &str) -> Vec<PathBuf> {
    let mut left = Vec::new();
    for parent in pods_parents() {
        let d = parent.join(format!("pod{uid}"));
        if d.exists() {
            // containerd leaves the (empty) parent kubelet would have made; a pod's own
            // cgroup below it must be gone.
            left.extend(
                std::fs::read_dir(&d)
                    .unwrap()
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path()),
            );
            let _ = std::fs::remove_dir(&d);
        }
    }
    left
}

/// A pod uid unique to this test process and call.
pub fn uid() -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("{}-{n}", std::process::id())
}

/// A server of `kind` in a network namespace of its own with the test network (its bridge
/// plugin `plugin`), and its clients.
pub async fn networked(kind: Kind, plugin: &str) -> (Netns, Server, Clients) {
    let netns = Netns::new();
    let server = Server::start_in(kind, Some(&netns)).await;
    write_cni_config(&server, "10-test.conflist", &network(&server, plugin));
    let c = server.clients().await;
    (netns, server, c)
}

/// busybox as pods' containers name it (pushed to the test registry by [`with_busybox`]).
pub const BUSYBOX: &str = "docker.io/library/busybox:latest";

/// [`networked`] with a bridge network, busybox pushed to the server's registry and pulled.
pub async fn with_busybox(kind: Kind) -> (Netns, Server, Clients, Pushed) {
    let (netns, server, mut c) = networked(kind, "bridge").await;
    let pushed = server
        .registry
        .push(Fixture::Busybox, "library/busybox:latest");
    images::pull(&mut c, BUSYBOX, None)
        .await
        .unwrap_or_else(|e| panic!("{kind:?} PullImage: {e}\n{}", server.log()));
    (netns, server, c, pushed)
}

/// Enters the network namespace at `path` on this (a fresh) thread.
pub fn enter_netns(path: &str) {
    let f = std::fs::File::open(path).unwrap();
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
}

/// `/tmp/capsa-cri-tests/images/<name>`, built by `build(tmp)` into a temporary path and
/// renamed into place unless `fresh` says the one there will do; under one lock for all
/// fixtures, since test binaries run in parallel.
fn fixture(name: &str, fresh: impl FnOnce(&Path) -> bool, build: impl FnOnce(&Path)) -> PathBuf {
    let dir = PathBuf::from("/tmp/capsa-cri-tests/images");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join("lock")).unwrap();
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    let path = dir.join(name);
    if !fresh(&path) {
        let tmp = dir.join(format!("{name}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        let _ = std::fs::remove_file(&tmp);
        build(&tmp);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../rootfs-fixtures")
        .join(name)
}

/// The busybox root filesystem, built once by `rootfs-fixtures/busybox-rootfs.sh` from
/// Debian's busybox-static.
pub fn busybox_rootfs() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            fixture(
                "busybox",
                |p| p.join("bin/busybox").exists(),
                |tmp| {
                    run_ok(
                        Command::new("bash")
                            .arg(script("busybox-rootfs.sh"))
                            .arg(tmp),
                    );
                },
            )
        })
        .clone()
}

/// RunPodSandbox of `config`: the sandbox id, or the server's error.
pub async fn run_pod(
    c: &mut Clients,
    config: &k8s_cri::v1::PodSandboxConfig,
) -> Result<String, tonic::Status> {
    c.runtime
        .run_pod_sandbox(k8s_cri::v1::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

/// PodSandboxStatus of `id`, verbose.
pub async fn pod_status(
    c: &mut Clients,
    id: &str,
) -> Result<k8s_cri::v1::PodSandboxStatusResponse, tonic::Status> {
    c.runtime
        .pod_sandbox_status(k8s_cri::v1::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await
        .map(|r| r.into_inner())
}

/// Runs a pod of `config` on `server` and reads its verbose status; panics with the
/// server's log when the run fails.
pub async fn start_pod(
    c: &mut Clients,
    server: &Server,
    config: &k8s_cri::v1::PodSandboxConfig,
) -> (String, k8s_cri::v1::PodSandboxStatusResponse) {
    let id = run_pod(c, config)
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", server.log()));
    let status = pod_status(c, &id).await.unwrap();
    (id, status)
}
