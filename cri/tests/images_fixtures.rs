//! The image fixtures and the registry the image tests pull from, proven against containerd's
//! CRI image service: every fixture pushed to the local registry comes back through PullImage
//! with the image id, digest and user it was built with; the layered image's merged tree is
//! the one its expected view describes; a Docker v2 schema 2 push, a multi-platform index and
//! a registry that wants credentials work as the image tests will use them.

mod common;
use common::*;
use k8s_cri::v1::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// An image's root mounted by containerd itself (`ctr images mount`: its own unpacker and
/// overlay snapshotter); unmounted, and its snapshot removed, on drop.
struct Mounted<'a> {
    server: &'a Server,
    target: PathBuf,
}

impl<'a> Mounted<'a> {
    fn new(server: &'a Server, image: &str) -> Mounted<'a> {
        let target = server
            .dir
            .join(format!("mnt-{}", image.replace(['/', ':'], "_")));
        std::fs::create_dir_all(&target).unwrap();
        let m = Mounted { server, target };
        run_ok(m.ctr(&["images", "mount", image]).arg(&m.target));
        m
    }

    fn ctr(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&self.server.socket)
            .args(["-n", "k8s.io"])
            .args(args);
        c
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.target.join(path.trim_start_matches('/'))).unwrap()
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = self
            .ctr(&["images", "unmount", "--rm"])
            .arg(&self.target)
            .output();
        let _ = std::fs::remove_dir(&self.target);
    }
}

fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = path.to_str().unwrap();
    mounts.lines().any(|l| l.split(' ').nth(4) == Some(path))
}

/// Every fixture, pushed to a registry in the test's network namespace, is pulled back by
/// containerd (in the same namespace) with the image id it was built with, its manifest
/// digest, and the uid or user name its config names; the layered image unpacks to exactly
/// its expected view, the web and www-data images hold what they serve and name.
#[tokio::test]
async fn every_fixture_comes_back_through_containerd_pull_image() {
    let netns = Netns::new();
    let server = Server::start_in(Kind::Containerd, Some(&netns)).await;
    let mut c = server.clients().await;
    for fixture in Fixture::ALL {
        let tag = format!("library/{}:latest", fixture.name());
        let pushed = server.registry.push(fixture, &tag);
        let image_ref = pull(&mut c, &pushed.image, None)
            .await
            .unwrap_or_else(|e| panic!("pulling {}: {e}", pushed.image));
        assert_eq!(image_ref, fixture.image_id(), "{fixture:?}");
        let image = image_status(&mut c, &pushed.image).await;
        assert_eq!(image.id, fixture.image_id(), "{fixture:?}");
        assert!(image.repo_tags.contains(&pushed.image), "{image:?}");
        assert!(
            image.repo_digests.contains(&pushed.by_digest()),
            "{image:?}"
        );
        assert_eq!(image.uid.map(|u| u.value), fixture.uid(), "{fixture:?}");
        assert_eq!(image.username, fixture.username(), "{fixture:?}");
    }

    let layered = Mounted::new(&server, "docker.io/library/layered:latest");
    assert_eq!(
        view(&layered.target, "/data"),
        Fixture::Layered.expected_view().unwrap()
    );
    let web = Mounted::new(&server, "docker.io/library/web:latest");
    assert_eq!(web.read("/www/index.html"), WEB_INDEX);
    let www = Mounted::new(&server, "docker.io/library/user-www-data:latest");
    assert!(www
        .read("/etc/passwd")
        .lines()
        .any(|l| l.starts_with("www-data:x:33:33:")));
    // The index's other platform is a bogus image with only /ARCH: the mount has busybox.
    let multi = Mounted::new(&server, "docker.io/library/multiarch:latest");
    assert!(multi.target.join("bin/busybox").exists());
    assert!(!multi.target.join("ARCH").exists());

    let targets: Vec<PathBuf> = [&layered, &web, &www, &multi]
        .iter()
        .map(|m| m.target.clone())
        .collect();
    drop((layered, web, www, multi));
    for t in targets {
        assert!(!is_mounted(&t) && !t.exists(), "{} left", t.display());
    }
}

/// A Docker v2 schema 2 push of the same archive: another manifest digest, the same image
/// id; pulled by tag and by digest through the docker.io mirror, and by the registry's own
/// address, by a server started on a registry the test made first. An index pushed so is a
/// manifest list.
#[tokio::test]
async fn a_docker_v2s2_push_is_the_same_image_under_another_digest() {
    let registry = Arc::new(Registry::start(None));
    let oci = registry.push(Fixture::Busybox, "library/busybox:latest");
    let docker = registry.push_archive(
        &Fixture::Busybox.archive(),
        "library/busybox:v2s2",
        Format::V2s2,
    );
    assert_ne!(oci.digest, docker.digest);
    let manifest = registry.raw_manifest("library/busybox:v2s2");
    assert!(
        manifest.contains(r#""mediaType":"application/vnd.docker.distribution.manifest.v2+json""#),
        "{manifest}"
    );
    let server = Server::start_with(Kind::Containerd, None, registry.clone()).await;
    let mut c = server.clients().await;
    for image in [docker.image.clone(), docker.by_digest()] {
        let image_ref = pull(&mut c, &image, None).await.unwrap();
        assert_eq!(image_ref, Fixture::Busybox.image_id(), "{image}");
    }
    let image = image_status(&mut c, &docker.image).await;
    assert!(
        image.repo_digests.contains(&docker.by_digest()),
        "{image:?}"
    );
    // An index becomes a Docker manifest list, from which this machine's image is chosen.
    let list = registry.push_archive(
        &Fixture::MultiArch.archive(),
        "library/multiarch:v2s2",
        Format::V2s2,
    );
    let manifest = registry.raw_manifest("library/multiarch:v2s2");
    assert!(
        manifest
            .contains(r#""mediaType":"application/vnd.docker.distribution.manifest.list.v2+json""#),
        "{manifest}"
    );
    assert_eq!(
        pull(&mut c, &list.image, None).await.unwrap(),
        Fixture::MultiArch.image_id()
    );
    // A direct reference to the registry (no mirror) reaches the same image.
    let direct = format!("{}/library/busybox:latest", registry.addr());
    assert_eq!(
        pull(&mut c, &direct, None).await.unwrap(),
        Fixture::Busybox.image_id()
    );
}

/// A registry started with credentials refuses an anonymous pull and serves one that
/// carries them in the request.
#[tokio::test]
async fn a_registry_with_basic_auth_wants_the_credentials() {
    let registry = Arc::new(Registry::start_with_auth(None, "capsa", "s3cret"));
    assert_eq!(registry.get("/v2/").0, 401);
    let pushed = registry.push(Fixture::Busybox, "library/busybox:latest");
    let server = Server::start_with(Kind::Containerd, None, registry).await;
    let mut c = server.clients().await;
    let anonymous = pull(&mut c, &pushed.image, None).await.unwrap_err();
    assert!(
        anonymous.message().contains("401") || anonymous.message().contains("nauthorized"),
        "{anonymous:?}"
    );
    let wrong = AuthConfig {
        username: "capsa".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    assert!(pull(&mut c, &pushed.image, Some(wrong)).await.is_err());
    let right = AuthConfig {
        username: "capsa".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    assert_eq!(
        pull(&mut c, &pushed.image, Some(right)).await.unwrap(),
        Fixture::Busybox.image_id()
    );
}

/// A registry started in a network namespace answers there, and leaves no process or
/// directory once dropped.
#[test]
fn a_registry_answers_in_its_namespace_and_leaves_nothing() {
    let netns = Netns::new();
    let registry = Registry::start(Some(&netns));
    assert_eq!(registry.get("/v2/").0, 200);
    let (pid, dir) = (registry.pid(), registry.dir().to_path_buf());
    drop(registry);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "registry {pid} left"
    );
    assert!(!dir.exists(), "{} left", dir.display());
}
