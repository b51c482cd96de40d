//! The CNI client against Debian's real plugins (/usr/lib/cni: bridge, host-local, portmap,
//! loopback). Each test makes its own "host" and "pod" network namespaces and runs the
//! plugins from a thread that entered the test host netns (a child inherits its spawning
//! thread's netns), so the bridge, veth, routes and iptables rules all live in the test's
//! namespaces, never in the machine's.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use capsa_cri::cni::{
    error_chain, Attachment, CniOptions, CniResult, Network, PortMapping, Protocol, DEFAULT_IFNAME,
};
use nix::sched::CloneFlags;
use serde_json::{json, Value};

const PLUGIN_DIR: &str = "/usr/lib/cni";
const NETWORK: &str = "capsa-cni-test";
const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// A named netns (`ip netns add`), deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str, role: &str) -> Netns {
        let name = format!("capsa-cni-{}-{tag}-{role}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    fn ip_json(&self, args: &[&str]) -> Option<Value> {
        let out = Command::new("ip")
            .args(["-j", "-n", &self.name])
            .args(args)
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    fn iptables_nat(&self) -> String {
        run(
            "ip",
            &["netns", "exec", &self.name, "iptables", "-t", "nat", "-S"],
        )
    }

    fn veths(&self) -> Vec<Value> {
        let links = self.ip_json(&["link", "show", "type", "veth"]).unwrap();
        links.as_array().unwrap().clone()
    }

    /// Runs `f` on a thread that entered this netns.
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = File::open(self.path()).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// Runs a future on a fresh runtime, on a thread inside this netns.
    fn block_on<T: Send>(&self, fut: impl std::future::Future<Output = T> + Send) -> T {
        self.enter(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(fut)
        })
    }

    fn delete(&self) {
        run("ip", &["netns", "del", &self.name]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("capsa-cni-it-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One test's world: a host netns with a "host address", a pod
/// netns, and a temp dir holding the config dir, the cache and host-local's data.
struct World {
    host: Netns,
    pod: Netns,
    dir: TempDir,
    container_id: String,
}

impl World {
    fn new(tag: &str) -> World {
        let host = Netns::new(tag, "host");
        // The kernel here has no dummy links: the host address goes on lo.
        host.ip(&["addr", "add", &format!("{HOST_ADDR}/32"), "dev", "lo"]);
        World {
            host,
            pod: Netns::new(tag, "pod"),
            dir: TempDir::new(tag),
            container_id: format!("sandbox{tag}"),
        }
    }

    fn ipam_dir(&self) -> PathBuf {
        self.dir.0.join("ipam")
    }

    /// bridge (+ host-local) with `subnet`, then the `rest` of the plugins.
    fn network(&self, subnet: &str, rest: &[Value]) -> Network {
        let conf_dir = self.dir.0.join("net.d");
        std::fs::create_dir_all(&conf_dir).unwrap();
        let mut plugins = vec![json!({
            "type": "bridge",
            "bridge": "cnitest0",
            "isGateway": true,
            "ipMasq": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.ipam_dir(),
            }
        })];
        plugins.extend_from_slice(rest);
        let list = json!({"cniVersion": "1.0.0", "name": NETWORK, "plugins": plugins});
        std::fs::write(
            conf_dir.join("10-test.conflist"),
            serde_json::to_vec_pretty(&list).unwrap(),
        )
        .unwrap();
        Network::load(&conf_dir).unwrap().expect("the test network")
    }

    fn standard_network(&self) -> Network {
        self.network(
            "10.99.0.0/24",
            &[
                json!({"type": "portmap", "capabilities": {"portMappings": true}}),
                json!({"type": "loopback"}),
            ],
        )
    }

    fn attachment(&self) -> Attachment {
        Attachment {
            container_id: self.container_id.clone(),
            netns: self.pod.path(),
            ifname: DEFAULT_IFNAME.into(),
            pod_name: "web".into(),
            pod_namespace: "default".into(),
            pod_uid: "00000000-0000-0000-0000-000000000001".into(),
            port_mappings: vec![PortMapping {
                host_port: 18080,
                container_port: 8080,
                protocol: Protocol::Tcp,
                host_ip: String::new(),
            }],
            ip_ranges: vec![],
        }
    }

    fn opts(&self) -> CniOptions {
        CniOptions::new(vec![PLUGIN_DIR.into()], self.dir.0.join("cache"))
    }

    fn add(&self, net: &Network) -> Result<CniResult, String> {
        let (att, opts) = (self.attachment(), self.opts());
        self.host
            .block_on(net.add(&att, &opts))
            .map_err(|e| error_chain(&e))
    }

    fn del(&self, net: &Network) -> Result<(), String> {
        let (att, opts) = (self.attachment(), self.opts());
        self.host
            .block_on(net.del(&att, &opts))
            .map_err(|e| error_chain(&e))
    }

    fn cache_entry(&self) -> PathBuf {
        self.dir
            .0
            .join("cache")
            .join(format!("{NETWORK}-{}-eth0", self.container_id))
    }

    /// host-local's allocation files (one per IP, named by it).
    fn allocations(&self) -> Vec<String> {
        match std::fs::read_dir(self.ipam_dir().join(NETWORK)) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.parse::<IpAddr>().is_ok())
                .collect(),
            Err(_) => vec![],
        }
    }

    fn pod_has_eth0(&self) -> bool {
        self.pod.ip_json(&["link", "show", "dev", "eth0"]).is_some()
    }

    /// Nothing of the attachment is left: no allocation, no cache entry, no veth.
    fn assert_detached(&self) {
        assert_eq!(
            self.allocations(),
            Vec::<String>::new(),
            "IP allocations left"
        );
        assert!(!self.cache_entry().exists(), "cache entry left");
        assert_eq!(self.host.veths(), Vec::<Value>::new(), "host veth left");
    }
}

/// Connects to `addr` (5 s bound) and reads what the server says.
fn fetch(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

#[test]
fn add_attaches_the_pod_and_del_releases_everything() {
    let w = World::new("full");
    let net = w.standard_network();
    assert_eq!(net.name(), NETWORK);

    let result = w.add(&net).unwrap();
    let ips = result.pod_ips();
    let [IpAddr::V4(pod_ip)] = ips[..] else {
        panic!("one IPv4 address expected: {result:?}")
    };
    assert_eq!(
        pod_ip.octets()[..3],
        [10, 99, 0],
        "{pod_ip} not in 10.99.0.0/24"
    );
    assert_eq!(result.ips[0].gateway, Some(IpAddr::from([10, 99, 0, 1])));
    assert_eq!(w.allocations(), vec![pod_ip.to_string()]);
    assert!(w.cache_entry().is_file());

    // The pod side: eth0 holds the IP, lo is up (the loopback plugin).
    let eth0 = w.pod.ip_json(&["addr", "show", "dev", "eth0"]).unwrap();
    let addrs: Vec<&str> = eth0[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["local"].as_str())
        .collect();
    assert!(addrs.contains(&pod_ip.to_string().as_str()), "{eth0}");
    let lo = w.pod.ip_json(&["link", "show", "dev", "lo"]).unwrap();
    assert!(
        lo[0]["flags"].as_array().unwrap().contains(&json!("UP")),
        "{lo}"
    );
    assert_eq!(w.host.veths().len(), 1);
    assert!(w.host.iptables_nat().contains("--dport 18080"));

    // A server in the pod, reachable from the host netns directly and through the
    // portmap DNAT of the host's own address.
    let listener: TcpListener = w
        .pod
        .enter(|| TcpListener::bind(("0.0.0.0", 8080)).unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(2) {
            let _ = stream.unwrap().write_all(b"hello from the pod\n");
        }
    });
    let direct = w.host.enter(|| fetch(SocketAddr::from((pod_ip, 8080))));
    assert_eq!(direct.unwrap(), "hello from the pod\n");
    let mapped = w.host.enter(|| fetch(SocketAddr::from((HOST_ADDR, 18080))));
    assert_eq!(mapped.unwrap(), "hello from the pod\n");

    w.del(&net).unwrap();
    w.assert_detached();
    assert!(!w.pod_has_eth0());
    assert!(!w.host.iptables_nat().contains("--dport 18080"));
    // DEL is repeatable.
    w.del(&net).unwrap();
    w.assert_detached();
}

#[test]
fn del_succeeds_after_the_pod_netns_is_gone() {
    let w = World::new("gone");
    let net = w.standard_network();
    w.add(&net).unwrap();
    assert_eq!(w.allocations().len(), 1);
    w.pod.delete();
    // What an unmounted pin leaves: a plain file where the netns was. Plugins reject it
    // ("not a network namespace"), so the DEL must not hand it to them.
    let stale = StaleFile::new(w.pod.path());
    w.del(&net).unwrap();
    assert_eq!(w.allocations(), Vec::<String>::new());
    assert!(!w.cache_entry().exists());
    drop(stale);
    // And no file at all.
    w.del(&net).unwrap();
}

/// A plain file at `path`, removed on drop.
struct StaleFile(PathBuf);

impl StaleFile {
    fn new(path: PathBuf) -> StaleFile {
        File::create(&path).unwrap();
        StaleFile(path)
    }
}

impl Drop for StaleFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_failing_ipam_fails_add_with_its_message_and_leaves_nothing() {
    let w = World::new("badnet");
    let net = w.network("10.99.0.0/33", &[]);
    let err = w.add(&net).unwrap_err();
    assert!(
        err.starts_with(&format!(
            "network \"{NETWORK}\": CNI plugin \"bridge\" ADD failed: "
        )),
        "{err}"
    );
    assert!(err.contains("10.99.0.0/33"), "the plugin's message: {err}");
    w.assert_detached();
    assert!(!w.pod_has_eth0(), "pod eth0 left");
}

#[test]
fn a_missing_plugin_fails_add_naming_it_and_undoes_the_bridge() {
    let w = World::new("noplugin");
    let net = w.network("10.99.0.0/24", &[json!({"type": "capsa-no-such-plugin"})]);
    let err = w.add(&net).unwrap_err();
    assert_eq!(
        err,
        format!("CNI plugin \"capsa-no-such-plugin\" not found in {PLUGIN_DIR}")
    );
    w.assert_detached();
    assert!(!w.pod_has_eth0(), "pod eth0 left");
}
