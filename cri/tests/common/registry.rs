//! A private image registry for the CRI tests: Debian's `docker-registry` (distribution 2.8)
//! on 127.0.0.1 of the test's network namespace (or the machine's, without one), at a port
//! the kernel picks, storing under a scratch directory, fed by skopeo from the fixture
//! archives. Killed and removed on drop.

use super::images::Fixture;
use super::{in_netns, run_ok, scratch, with_netns};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the registry may take to listen, or to answer a request: a bound on a hang, not
/// a measure.
const READY: Duration = Duration::from_secs(30);

/// The manifest format skopeo pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// As the archive has it (OCI manifests and indexes).
    Oci,
    /// Docker v2 schema 2 (`application/vnd.docker.distribution.manifest.v2+json`).
    V2s2,
}

/// An image the registry now holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The reference a server pulls it by through its docker.io mirror:
    /// `docker.io/<repo_tag>`, e.g. `docker.io/library/busybox:latest`.
    pub image: String,
    /// The digest of the manifest (or index) as stored: `sha256:…`.
    pub digest: String,
}

impl Pushed {
    /// The reference by digest: `docker.io/library/busybox@sha256:…`.
    pub fn by_digest(&self) -> String {
        let repo = self.image.rsplit_once(':').map_or(&*self.image, |(r, _)| r);
        format!("{repo}@{}", self.digest)
    }
}

pub struct Registry {
    dir: PathBuf,
    addr: String,
    netns: Option<PathBuf>,
    creds: Option<(String, String)>,
    child: Child,
    /// Copies the registry's log to `dir/registry.log` until it exits.
    logger: Option<JoinHandle<()>>,
    /// Fixtures already pushed, by repo_tag: each once per registry.
    pushed: Mutex<Vec<(Fixture, String, Pushed)>>,
}

impl Registry {
    /// Starts an open registry (no auth) inside `netns` when given; returns once `/v2/`
    /// answers.
    pub fn start(netns: Option<&super::Netns>) -> Registry {
        Self::spawn(netns, None)
    }

    /// Starts a registry that wants HTTP basic auth as `user`/`pass` (htpasswd, bcrypt).
    pub fn start_with_auth(netns: Option<&super::Netns>, user: &str, pass: &str) -> Registry {
        Self::spawn(netns, Some((user.to_string(), pass.to_string())))
    }

    fn spawn(netns: Option<&super::Netns>, creds: Option<(String, String)>) -> Registry {
        let dir = scratch("reg");
        let d = dir.display();
        let mut auth = String::new();
        if let Some((user, pass)) = &creds {
            let entry = run_ok(Command::new("htpasswd").args(["-Bbn", user, pass]));
            std::fs::write(dir.join("htpasswd"), entry).unwrap();
            auth = format!("auth:\n  htpasswd:\n    realm: capsa-test\n    path: {d}/htpasswd\n");
        }
        // Port 0: the kernel picks a free one, which the registry logs as it listens.
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n  secret: capsa-test\n{auth}"
        );
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(dir.join("config.yml"));
        let netns = netns.map(|n| n.path.clone());
        let mut child = with_netns(netns.as_deref(), cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting docker-registry (apt-get install docker-registry)");
        // Its log goes to a file, line by line; the line that names the address it listens
        // on is sent here as well.
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let mut log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let (tx, rx) = mpsc::channel();
        let logger = std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.split('"').next().unwrap_or_default().to_string());
                }
            }
        });
        let mut registry = Registry {
            addr: String::new(),
            dir,
            netns,
            creds,
            child,
            logger: Some(logger),
            pushed: Mutex::new(Vec::new()),
        };
        registry.addr = rx
            .recv_timeout(READY)
            .unwrap_or_else(|e| panic!("docker-registry did not listen ({e}): {}", registry.log()));
        // The listener is bound: the first request waits for the server behind it.
        let (status, _) = registry.get("/v2/");
        let expected = if registry.creds.is_some() { 401 } else { 200 };
        assert_eq!(status, expected, "GET /v2/: {}", registry.log());
        registry
    }

    /// `127.0.0.1:PORT`, reachable from the network namespace it was started in.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `http://127.0.0.1:PORT`, a mirror endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The registry process (nsenter's, which execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its scratch directory: config, storage, log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The registry's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// A plain GET (no credentials) from inside the registry's network namespace: the
    /// status code and the body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        let addr = self.addr.clone();
        let response = in_netns(self.netns.as_deref(), move || {
            let mut s = std::net::TcpStream::connect(&addr)?;
            s.set_read_timeout(Some(READY))?;
            s.write_all(request.as_bytes())?;
            let mut response = String::new();
            s.read_to_string(&mut response)?;
            Ok::<_, std::io::Error>(response)
        })
        .unwrap_or_else(|e| panic!("GET http://{}{path}: {e}", self.addr));
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("GET {path}: not HTTP: {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        (status, body)
    }

    /// Pushes `fixture` as `repo_tag` (a path in this registry, e.g.
    /// `library/busybox:latest`) in its own format, once per registry: a second push of the
    /// same fixture and tag answers what the first did.
    pub fn push(&self, fixture: Fixture, repo_tag: &str) -> Pushed {
        let mut pushed = self.pushed.lock().unwrap();
        if let Some((_, _, p)) = pushed
            .iter()
            .find(|(f, t, _)| *f == fixture && t == repo_tag)
        {
            return p.clone();
        }
        let p = self.push_archive(&fixture.archive(), repo_tag, Format::Oci);
        pushed.push((fixture, repo_tag.to_string(), p.clone()));
        p
    }

    /// The manifest (or index) `reference` (`library/busybox:latest`, `…@sha256:…`) names,
    /// as the registry serves it.
    pub fn raw_manifest(&self, reference: &str) -> String {
        let mut cmd = self.skopeo(&["inspect", "--raw", "--tls-verify=false"], "--creds");
        cmd.arg(format!("docker://{}/{reference}", self.addr));
        run_ok(&mut with_netns(self.netns.as_deref(), cmd))
    }

    /// skopeo with `args` and, for a registry that wants them, the credentials after
    /// `creds_flag`.
    fn skopeo(&self, args: &[&str], creds_flag: &str) -> Command {
        let mut cmd = Command::new("skopeo");
        cmd.arg("--insecure-policy").args(args);
        if let Some((user, pass)) = &self.creds {
            cmd.arg(creds_flag).arg(format!("{user}:{pass}"));
        }
        cmd
    }

    /// Copies the OCI archive at `archive` (all of an index's images) to `repo_tag` in
    /// `format`, with skopeo, from inside the registry's network namespace.
    pub fn push_archive(&self, archive: &Path, repo_tag: &str, format: Format) -> Pushed {
        let digest_file = self.dir.join(format!(
            "digest-{}",
            super::COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let mut cmd = self.skopeo(
            &["copy", "--quiet", "--all", "--dest-tls-verify=false"],
            "--dest-creds",
        );
        cmd.arg("--digestfile").arg(&digest_file);
        if format == Format::V2s2 {
            cmd.args(["--format", "v2s2"]);
        }
        cmd.arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{}/{repo_tag}", self.addr));
        run_ok(&mut with_netns(self.netns.as_deref(), cmd));
        let digest = std::fs::read_to_string(&digest_file).unwrap();
        std::fs::remove_file(&digest_file).unwrap();
        Pushed {
            image: format!("docker.io/{repo_tag}"),
            digest: digest.trim().to_string(),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(logger) = self.logger.take() {
            let _ = logger.join();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
