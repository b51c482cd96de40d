//! The registry client against a real registry: Debian's docker-registry on 127.0.0.1 at a
//! port the kernel picks, fed by skopeo from images `rootfs-fixtures/oci-image.sh` packs;
//! and against a hostile one (a few canned HTTP answers) for what a real registry never
//! sends.

mod common;

use capsa_cri::config::RegistryConfig;
use capsa_cri::images::reference::Reference;
use capsa_cri::images::registry::platform::Platform;
use capsa_cri::images::registry::{Auth, Compression, Registry, RegistryError, Resolved};
use sha2::Digest;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A docker-registry the test started; killed, reaped and its directory removed on drop.
struct TestRegistry {
    dir: PathBuf,
    addr: String,
    child: Child,
    log: Option<std::thread::JoinHandle<()>>,
}

impl TestRegistry {
    /// Starts it (with HTTP basic auth as `creds` when given); returns once it listens.
    fn start(creds: Option<(&str, &str)>) -> TestRegistry {
        let dir = common::scratch("reg");
        let auth = match creds {
            Some((user, pass)) => {
                let line = run(Command::new("htpasswd").args(["-Bbn", user, pass]));
                std::fs::write(dir.join("htpasswd"), line).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                    dir.join("htpasswd").display()
                )
            }
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\n{auth}",
            dir.join("data").display()
        );
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // It logs `listening on 127.0.0.1:PORT` once the socket is bound.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| {
                let at = l.find("listening on ")?;
                let rest = &l[at + "listening on ".len()..];
                Some(rest.split(['"', ' ']).next()?.to_string())
            })
            .expect("docker-registry exited before listening");
        // Keep draining its log so it never blocks on a full pipe.
        let log = std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        TestRegistry {
            dir,
            addr,
            child,
            log: Some(log),
        }
    }

    /// Pushes a one-layer fixture image (see [`archive`]) as `repo:tag`; returns its digest.
    fn push_fixture(&self, repo_tag: &str, extra: &[&str]) -> String {
        let source = format!("oci-archive:{}", archive(&self.dir).display());
        self.push(&source, repo_tag, extra)
    }

    /// Pushes `source` (a skopeo transport:path) as `repo:tag`; returns the pushed manifest's
    /// digest.
    fn push(&self, source: &str, repo_tag: &str, extra: &[&str]) -> String {
        let digest = self.dir.join("digest");
        run(Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
            ])
            .args(extra)
            .arg("--digestfile")
            .arg(&digest)
            .arg(source)
            .arg(format!("docker://{}/{repo_tag}", self.addr)));
        std::fs::read_to_string(digest).unwrap().trim().to_string()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(t) = self.log.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A one-layer OCI archive of a tiny root (one file) under `dir`.
fn archive(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hello"), "hello from the registry test\n").unwrap();
    let out = dir.join("image.tar");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../rootfs-fixtures/oci-image.sh"
    );
    run(Command::new("bash").arg(script).arg(&root).arg(&out).arg("test/one:v1").arg(
        r#"{"Env":["PATH=/bin"],"Entrypoint":["/bin/sh"],"Cmd":["-c","true"],"User":"1000","WorkingDir":"/etc","StopSignal":"SIGINT"}"#,
    ));
    out
}

fn insecure(addr: &str) -> RegistryConfig {
    RegistryConfig {
        insecure: vec![addr.to_string()],
        ..Default::default()
    }
}

fn reference(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

/// Reads every layer of `r` through fetch_blob, checking each against its descriptor.
async fn fetch_layers(registry: &Registry, r: &Reference, resolved: &Resolved, auth: &Auth) {
    for layer in &resolved.layers {
        let mut blob = registry
            .fetch_blob(r, &layer.descriptor, auth)
            .await
            .unwrap();
        let mut bytes = Vec::new();
        blob.read_to_end(&mut bytes).await.unwrap();
        assert_eq!(bytes.len() as u64, layer.descriptor.size);
        assert_eq!(sha256(&bytes), layer.descriptor.digest);
    }
}

#[tokio::test]
async fn pull_by_tag_and_by_digest() {
    let reg = TestRegistry::start(None);
    let pushed = reg.push_fixture("test/one:v1", &[]);
    let registry = Registry::new(&insecure(&reg.addr)).unwrap();

    let by_tag = reference(&format!("{}/test/one:v1", reg.addr));
    let r = registry.resolve(&by_tag, &Auth::anonymous()).await.unwrap();
    assert_eq!(r.manifest_digest, pushed);
    assert_eq!(r.digest, pushed);
    assert_eq!(sha256(&r.manifest), pushed);
    assert!(r.index.is_none());
    assert_eq!(
        r.manifest_media_type,
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(sha256(&r.config_bytes), r.config_descriptor.digest);
    assert_eq!(r.config.config.entrypoint, vec!["/bin/sh"]);
    assert_eq!(r.config.config.cmd, vec!["-c", "true"]);
    assert_eq!(r.config.config.env, vec!["PATH=/bin"]);
    assert_eq!(r.config.config.user, "1000");
    assert_eq!(r.config.config.working_dir, "/etc");
    assert_eq!(r.config.config.stop_signal, "SIGINT");
    assert_eq!(r.layers.len(), 1);
    assert_eq!(r.layers[0].compression, Compression::Gzip);
    assert_eq!(r.layers[0].diff_id, r.config.diff_ids[0]);
    fetch_layers(&registry, &by_tag, &r, &Auth::anonymous()).await;

    let by_digest = by_tag.with_digest(&pushed).unwrap();
    let r2 = registry
        .resolve(&by_digest, &Auth::anonymous())
        .await
        .unwrap();
    assert_eq!(r2.manifest_digest, pushed);
    assert_eq!(r2.config_descriptor, r.config_descriptor);
}

#[tokio::test]
async fn docker_v2_schema_2_images() {
    let reg = TestRegistry::start(None);
    let pushed = reg.push_fixture("test/v2s2:v1", &["--format", "v2s2"]);
    let registry = Registry::new(&insecure(&reg.addr)).unwrap();
    let r = reference(&format!("{}/test/v2s2:v1", reg.addr));
    let resolved = registry.resolve(&r, &Auth::anonymous()).await.unwrap();
    assert_eq!(resolved.manifest_digest, pushed);
    assert_eq!(
        resolved.manifest_media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        resolved.layers[0].descriptor.media_type,
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    assert_eq!(resolved.config.config.entrypoint, vec!["/bin/sh"]);
    fetch_layers(&registry, &r, &resolved, &Auth::anonymous()).await;
}

/// Writes `value` as a blob of the OCI layout `layout`; returns its descriptor fields.
fn put_blob(layout: &Path, value: &serde_json::Value) -> (String, usize) {
    let bytes = serde_json::to_vec(value).unwrap();
    let digest = sha256(&bytes);
    std::fs::write(layout.join("blobs/sha256").join(&digest[7..]), &bytes).unwrap();
    (digest, bytes.len())
}

fn read_blob(layout: &Path, digest: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(&digest[7..])).unwrap())
        .unwrap()
}

#[tokio::test]
async fn an_index_with_two_platforms_gives_this_hosts_image() {
    let reg = TestRegistry::start(None);
    let layout = reg.dir.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive(&reg.dir))
        .arg("-C")
        .arg(&layout));
    // The fixture's image is this host's; a copy whose config says another architecture
    // goes first in the index.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let host_manifest = index["manifests"][0].clone();
    let mut manifest = read_blob(&layout, host_manifest["digest"].as_str().unwrap());
    let mut config = read_blob(&layout, manifest["config"]["digest"].as_str().unwrap());
    let host = Platform::host();
    let other = if host.architecture == "s390x" {
        "ppc64le"
    } else {
        "s390x"
    };
    config["architecture"] = other.into();
    let (config_digest, config_size) = put_blob(&layout, &config);
    manifest["config"]["digest"] = config_digest.into();
    manifest["config"]["size"] = config_size.into();
    let (other_digest, other_size) = put_blob(&layout, &manifest);
    let oci_manifest = "application/vnd.oci.image.manifest.v1+json";
    let image_index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": oci_manifest, "digest": other_digest, "size": other_size,
             "platform": {"os": "linux", "architecture": other}},
            {"mediaType": oci_manifest, "digest": host_manifest["digest"], "size": host_manifest["size"],
             "platform": {"os": "linux", "architecture": host.architecture}},
        ]
    });
    let (index_digest, index_size) = put_blob(&layout, &image_index);
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest, "size": index_size}
    ]});
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    let pushed = reg.push(
        &format!("oci:{}", layout.display()),
        "test/multi:v1",
        &["--all"],
    );
    assert_eq!(pushed, index_digest);

    let registry = Registry::new(&insecure(&reg.addr)).unwrap();
    let r = reference(&format!("{}/test/multi:v1", reg.addr));
    let resolved = registry.resolve(&r, &Auth::anonymous()).await.unwrap();
    assert_eq!(resolved.digest, index_digest);
    assert_eq!(
        resolved.manifest_digest,
        host_manifest["digest"].as_str().unwrap()
    );
    assert_eq!(sha256(resolved.index.as_ref().unwrap()), index_digest);
    assert_eq!(resolved.config.architecture, host.architecture);
    // By the index's digest too.
    let by_digest = r.with_digest(&index_digest).unwrap();
    let again = registry
        .resolve(&by_digest, &Auth::anonymous())
        .await
        .unwrap();
    assert_eq!(again.manifest_digest, resolved.manifest_digest);
}

#[tokio::test]
async fn unknown_tags_digests_and_repositories_are_not_found() {
    let reg = TestRegistry::start(None);
    reg.push_fixture("test/one:v1", &[]);
    let registry = Registry::new(&insecure(&reg.addr)).unwrap();
    let wrong_digest = format!("sha256:{}", "0".repeat(64));
    for name in [
        format!("{}/test/one:nope", reg.addr),
        format!("{}/test/one@{wrong_digest}", reg.addr),
        format!("{}/test/none:v1", reg.addr),
    ] {
        let r = reference(&name);
        let e = registry.resolve(&r, &Auth::anonymous()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{name}: {e}");
        assert!(e.to_string().contains(&r.to_string()), "{e}");
    }
}

#[tokio::test]
async fn a_closed_port_is_unavailable_naming_the_host() {
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("127.0.0.1:{port}");
    let registry = Registry::new(&insecure(&host)).unwrap();
    let e = registry
        .resolve(&reference(&format!("{host}/x:v1")), &Auth::anonymous())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
    assert!(e.to_string().contains(&host), "{e}");
}

#[tokio::test]
async fn htpasswd_basic_auth_right_and_wrong_credentials() {
    let reg = TestRegistry::start(Some(("alice", "s3cret")));
    reg.push_fixture("test/private:v1", &["--dest-creds", "alice:s3cret"]);
    let registry = Registry::new(&insecure(&reg.addr)).unwrap();
    let r = reference(&format!("{}/test/private:v1", reg.addr));

    for wrong in [Auth::anonymous(), Auth::basic("alice", "wrong")] {
        let e = registry.resolve(&r, &wrong).await.unwrap_err();
        assert!(
            matches!(e, RegistryError::Unauthorized { .. }),
            "{wrong:?}: {e}"
        );
        assert_eq!(e.code(), tonic::Code::Unknown);
        assert!(e.to_string().contains(&r.to_string()), "{e}");
    }
    // CRI's `auth` field form of the right credentials.
    let cri = k8s_cri::v1::AuthConfig {
        auth: "YWxpY2U6czNjcmV0".into(),
        ..Default::default()
    };
    let right = Auth::from_cri(Some(&cri)).unwrap();
    let resolved = registry.resolve(&r, &right).await.unwrap();
    fetch_layers(&registry, &r, &resolved, &right).await;
    // A token or login cached for the right credentials serves no one else.
    let e = registry
        .fetch_blob(
            &r,
            &resolved.layers[0].descriptor,
            &Auth::basic("alice", "wrong"),
        )
        .await
        .err()
        .expect("a blob fetched with wrong credentials");
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
    assert!(registry
        .resolve(&r, &Auth::basic("alice", "wrong"))
        .await
        .is_err());
}

#[tokio::test]
async fn a_docker_io_mirror_serves_short_names() {
    let reg = TestRegistry::start(None);
    let pushed = reg.push_fixture("library/mirrored:v1", &[]);
    // An unreachable mirror first: the next one answers.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = RegistryConfig {
        mirrors: [(
            "docker.io".to_string(),
            vec![
                format!("http://127.0.0.1:{closed}"),
                format!("http://{}", reg.addr),
            ],
        )]
        .into(),
        ..Default::default()
    };
    let registry = Registry::new(&config).unwrap();
    let r = reference("mirrored:v1");
    assert_eq!(r.to_string(), "docker.io/library/mirrored:v1");
    let resolved = registry.resolve(&r, &Auth::anonymous()).await.unwrap();
    assert_eq!(resolved.manifest_digest, pushed);
    fetch_layers(&registry, &r, &resolved, &Auth::anonymous()).await;
}

/// A fake registry that answers every request with `answer(path, request head)`, a whole
/// HTTP response, then closes the connection. Runs until the test's runtime ends.
async fn fake(answer: fn(&str, &str) -> Vec<u8>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read_exact(&mut byte).await.is_ok() {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let path = head.split(' ').nth(1).unwrap_or_default().to_string();
                let _ = conn.write_all(&answer(&path, &head)).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    addr
}

fn response(status: &str, headers: &str, body: &[u8], length: bool) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 {status}\r\n{headers}Connection: close\r\n");
    if length {
        r += &format!("Content-Length: {}\r\n", body.len());
    }
    r += "\r\n";
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

fn ok(content_type: &str, body: &[u8], length: bool) -> Vec<u8> {
    response(
        "200 OK",
        &format!("Content-Type: {content_type}\r\n"),
        body,
        length,
    )
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const LAYER: &[u8] = b"twelve bytes";
const CONFIG: &[u8] = br#"{"rootfs":{"diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}}"#;

/// An OCI manifest of CONFIG and one 12-byte layer (LAYER's digest).
fn fake_manifest() -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{MANIFEST}",
           "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},
           "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":12}}]}}"#,
        sha256(CONFIG),
        CONFIG.len(),
        sha256(LAYER)
    )
    .into_bytes()
}

fn not_found() -> Vec<u8> {
    response("404 Not Found", "", b"", true)
}

fn evil(path: &str, _head: &str) -> Vec<u8> {
    match path {
        "/v2/" => ok("application/json", b"{}", true),
        // Any digest asked for gets this body, whose digest is another.
        p if p.starts_with("/v2/evil/manifests/sha256:") => ok(MANIFEST, &fake_manifest(), true),
        "/v2/evil/manifests/huge" => ok(MANIFEST, &vec![b' '; 5 << 20], false),
        "/v2/evil/manifests/long-layer" => ok(MANIFEST, &fake_manifest(), true),
        p if p == format!("/v2/evil/blobs/{}", sha256(CONFIG)) => {
            ok("application/octet-stream", CONFIG, true)
        }
        // The layer, then more than its descriptor says, without a Content-Length.
        p if p.starts_with("/v2/evil/blobs/") => ok(
            "application/octet-stream",
            &[LAYER, b"and more"].concat(),
            false,
        ),
        _ => not_found(),
    }
}

#[tokio::test]
async fn a_hostile_registry_is_caught() {
    let addr = fake(evil).await;
    let registry = Registry::new(&insecure(&addr)).unwrap();
    let wanted = format!("sha256:{}", "1".repeat(64));
    let e = registry
        .resolve(
            &reference(&format!("{addr}/evil@{wanted}")),
            &Auth::anonymous(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, RegistryError::DigestMismatch { ref expected, .. } if *expected == wanted),
        "{e}"
    );

    let e = registry
        .resolve(&reference(&format!("{addr}/evil:huge")), &Auth::anonymous())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("larger than 4194304 bytes"), "{e}");

    let r = reference(&format!("{addr}/evil:long-layer"));
    let resolved = registry.resolve(&r, &Auth::anonymous()).await.unwrap();
    let mut blob = registry
        .fetch_blob(&r, &resolved.layers[0].descriptor, &Auth::anonymous())
        .await
        .unwrap();
    let mut got = Vec::new();
    let e = blob.read_to_end(&mut got).await.unwrap_err();
    assert!(
        e.to_string().contains("longer than its descriptor's size"),
        "{e}"
    );
    assert!(got.len() <= LAYER.len());
}

/// A registry behind a token service (docker distribution's token auth): every /v2/ request
/// without `Bearer the-token` gets a 401 challenge naming `/token` on the same host, which
/// hands the token out for alice:s3cret only.
fn token_registry(path: &str, head: &str) -> Vec<u8> {
    if path.starts_with("/token?") {
        // base64("alice:s3cret"), lowercased with the rest of the head.
        return if head.contains("authorization: basic ywxpy2u6cznjcmv0\r\n") && path.contains("tok")
        {
            ok("application/json", br#"{"token":"the-token"}"#, true)
        } else {
            response("401 Unauthorized", "", b"", true)
        };
    }
    if !head.contains("authorization: bearer the-token\r\n") {
        let host = head
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .unwrap_or_default();
        let challenge = format!(
            "WWW-Authenticate: Bearer realm=\"http://{host}/token\",service=\"fake\",scope=\"repository:tok:pull\"\r\n"
        );
        return response("401 Unauthorized", &challenge, b"", true);
    }
    match path {
        "/v2/tok/manifests/v1" => ok(MANIFEST, &fake_manifest(), true),
        p if p == format!("/v2/tok/blobs/{}", sha256(CONFIG)) => {
            ok("application/octet-stream", CONFIG, true)
        }
        p if p == format!("/v2/tok/blobs/{}", sha256(LAYER)) => {
            ok("application/octet-stream", LAYER, true)
        }
        _ => not_found(),
    }
}

#[tokio::test]
async fn a_bearer_token_challenge_is_answered_with_the_credentials() {
    let addr = fake(token_registry).await;
    let registry = Registry::new(&insecure(&addr)).unwrap();
    let r = reference(&format!("{addr}/tok:v1"));
    let registry_token = k8s_cri::v1::AuthConfig {
        registry_token: "the-token".into(),
        ..Default::default()
    };
    for right in [
        Auth::basic("alice", "s3cret"),
        Auth::from_cri(Some(&registry_token)).unwrap(),
    ] {
        let resolved = registry.resolve(&r, &right).await.unwrap();
        let mut blob = registry
            .fetch_blob(&r, &resolved.layers[0].descriptor, &right)
            .await
            .unwrap();
        let mut got = Vec::new();
        blob.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, LAYER);
    }
    for wrong in [Auth::anonymous(), Auth::basic("alice", "nope")] {
        let e = registry.resolve(&r, &wrong).await.unwrap_err();
        assert!(
            matches!(e, RegistryError::Unauthorized { .. }),
            "{wrong:?}: {e}"
        );
    }
}
