//! The ImageService, held against containerd's: both servers pull from one private registry
//! (in a network namespace the test made) and must answer alike, but where a test says why
//! they differ.

mod common;
use common::*;
use k8s_cri::v1::*;
use std::path::Path;
use std::sync::Arc;

/// Both servers on one registry in one network namespace.
async fn both() -> (Netns, Arc<Registry>, Vec<Server>) {
    let netns = Netns::new();
    let registry = Arc::new(Registry::start(Some(&netns)));
    let mut servers = Vec::new();
    for kind in KINDS {
        servers.push(Server::start_with(kind, Some(&netns), registry.clone()).await);
    }
    (netns, registry, servers)
}

async fn remove(c: &mut Clients, image: &str) {
    c.images
        .remove_image(RemoveImageRequest { image: spec(image) })
        .await
        .unwrap_or_else(|e| panic!("RemoveImage {image}: {e}"));
}

async fn list(c: &mut Clients, filter: Option<&str>) -> Vec<Image> {
    c.images
        .list_images(ListImagesRequest {
            filter: filter.map(|f| ImageFilter { image: spec(f) }),
        })
        .await
        .unwrap()
        .into_inner()
        .images
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Pull by tag, without a tag, by digest; three tags on one image; ImageStatus of every
/// reference form; uid and username images; ListImages; RemoveImage by each form (the whole
/// image goes whichever name is given); removing what is absent; ImageFsInfo.
#[tokio::test]
async fn images_are_pulled_named_listed_and_removed_as_containerd_does() {
    let (_netns, registry, servers) = both().await;
    let busybox = registry.push(Fixture::Busybox, "library/busybox:latest");
    registry.push(Fixture::Busybox, "library/busybox:1");
    registry.push(Fixture::Busybox, "library/busybox:2");
    let web = registry.push(Fixture::Web, "library/web:latest");
    registry.push(Fixture::User1002, "library/user-1002:latest");
    registry.push(Fixture::UserWwwData, "team/www:v1");
    let bb_id = Fixture::Busybox.image_id();
    let tags = sorted(
        ["latest", "1", "2"]
            .iter()
            .map(|t| format!("docker.io/library/busybox:{t}"))
            .collect(),
    );

    for server in &servers {
        let kind = server.kind;
        let mut c = server.clients().await;
        assert!(status(&mut c, "busybox", false).await.0.is_none());
        assert_eq!(
            pull(&mut c, "busybox", None).await.unwrap(),
            bb_id,
            "{kind:?}"
        );
        assert_eq!(pull(&mut c, "busybox:1", None).await.unwrap(), bb_id);
        assert_eq!(
            pull(&mut c, "docker.io/library/busybox:2", None)
                .await
                .unwrap(),
            bb_id
        );
        let forms = [
            "busybox",
            "busybox:latest",
            "library/busybox:1",
            "docker.io/library/busybox:2",
            &busybox.by_digest(),
            &bb_id,
            bb_id.trim_start_matches("sha256:"),
        ];
        for form in forms {
            let image = image_status(&mut c, form).await;
            assert_eq!(image.id, bb_id, "{kind:?} {form}");
            assert_eq!(sorted(image.repo_tags.clone()), tags, "{kind:?} {form}");
            assert_eq!(image.repo_digests, vec![busybox.by_digest()], "{kind:?}");
            assert!(image.size > 0);
            assert_eq!(
                image.uid.map(|u| u.value),
                Fixture::Busybox.uid(),
                "{kind:?}"
            );
        }
        // A pull by digest names the image by digest only.
        assert_eq!(
            pull(&mut c, &web.by_digest(), None).await.unwrap(),
            Fixture::Web.image_id()
        );
        let w = image_status(&mut c, &web.by_digest()).await;
        assert!(w.repo_tags.is_empty(), "{kind:?} {w:?}");
        assert_eq!(w.repo_digests, vec![web.by_digest()]);
        assert!(status(&mut c, "web:latest", false).await.0.is_none());

        pull(&mut c, "user-1002", None).await.unwrap();
        pull(&mut c, "team/www:v1", None).await.unwrap();
        let u = image_status(&mut c, "user-1002").await;
        assert_eq!(
            (u.uid.map(|u| u.value), u.username.as_str()),
            (Some(1002), "")
        );
        let u = image_status(&mut c, "docker.io/team/www:v1").await;
        assert_eq!((u.uid, u.username.as_str()), (None, "www-data"));

        let all = list(&mut c, None).await;
        let mut ids: Vec<_> = all.iter().map(|i| i.id.clone()).collect();
        ids.sort();
        let mut want = vec![
            bb_id.clone(),
            Fixture::Web.image_id(),
            Fixture::User1002.image_id(),
            Fixture::UserWwwData.image_id(),
        ];
        want.sort();
        assert_eq!(ids, want, "{kind:?}");
        let filtered = list(&mut c, Some("busybox:1")).await;
        match kind {
            Kind::Capsa => assert_eq!(
                filtered.iter().map(|i| &i.id).collect::<Vec<_>>(),
                vec![&bb_id]
            ),
            // containerd 1.6 ignores ListImages' filter (a TODO in its CRI plugin): kubelet
            // never sends one.
            Kind::Containerd => assert_eq!(filtered.len(), 4),
        }

        let fs = c
            .images
            .image_fs_info(ImageFsInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        let images = &fs.image_filesystems[0];
        assert!(images.timestamp > 0);
        assert!(!images.fs_id.as_ref().unwrap().mountpoint.is_empty());
        assert!(images.used_bytes.is_some() && images.inodes_used.is_some());
        if kind == Kind::Capsa {
            // containerd samples its snapshotter's usage every 10 s (0 until then); capsa-cri
            // measures at the call.
            assert!(images.used_bytes.unwrap().value > 1_000_000, "{fs:?}");
            assert!(images.inodes_used.unwrap().value > 10, "{fs:?}");
            // containerd 1.6 predates container_filesystems (split image filesystems).
            assert_eq!(fs.container_filesystems.len(), 1);
        }

        // Removal by a tag takes every tag: the whole image goes.
        remove(&mut c, "busybox:1").await;
        for form in forms {
            assert!(
                status(&mut c, form, false).await.0.is_none(),
                "{kind:?} {form}"
            );
        }
        remove(&mut c, "busybox:1").await;
        remove(&mut c, &web.by_digest()).await;
        remove(&mut c, &Fixture::User1002.image_id()).await;
        remove(&mut c, "team/www").await;
        assert!(
            status(&mut c, "team/www:v1", false).await.0.is_some(),
            "{kind:?}: team/www means team/www:latest"
        );
        remove(&mut c, "team/www:v1").await;
        assert!(list(&mut c, None).await.is_empty(), "{kind:?}");
    }
    let capsa_store = servers[0].dir.join("state/images");
    for d in ["blobs/sha256", "layers", "tmp"] {
        let left: Vec<_> = std::fs::read_dir(capsa_store.join(d)).unwrap().collect();
        assert!(left.is_empty(), "{d}: {left:?}");
    }
}

/// The overlay of an image's layers as capsa-cri unpacked them (ImageStatus verbose lists
/// them), mounted read-only by the test; unmounted on drop.
struct LayerView {
    target: std::path::PathBuf,
}

impl LayerView {
    async fn mount(c: &mut Clients, image: &str, at: &Path) -> LayerView {
        let (_, info) = status(c, image, true).await;
        let info: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
        let mut lower: Vec<String> = info["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect();
        lower.reverse();
        std::fs::create_dir_all(at).unwrap();
        let options = format!("lowerdir={}", lower.join(":"));
        run_ok(
            std::process::Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o", &options])
                .arg(at),
        );
        LayerView {
            target: at.to_path_buf(),
        }
    }
}

impl Drop for LayerView {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.target)
            .status();
    }
}

/// A multi-layer image with whiteouts, an opaque directory and type changes, in gzip, zstd
/// and plain layers, unpacks to exactly the merged view it was built to have; a Docker v2
/// schema 2 push is the same image; an index yields this host's platform. (containerd's
/// own merged view of the layered image is checked in images_fixtures.rs.)
#[tokio::test]
async fn layers_merge_as_built_and_every_manifest_kind_pulls() {
    let (_netns, registry, servers) = both().await;
    registry.push(Fixture::Layered, "library/layered:latest");
    registry.push(Fixture::MultiArch, "library/multiarch:latest");
    registry.push_archive(
        &Fixture::Busybox.archive(),
        "library/busybox-v2s2:latest",
        Format::V2s2,
    );
    for server in &servers {
        let mut c = server.clients().await;
        let kind = server.kind;
        assert_eq!(
            pull(&mut c, "layered", None).await.unwrap(),
            Fixture::Layered.image_id()
        );
        assert_eq!(
            pull(&mut c, "multiarch", None).await.unwrap(),
            Fixture::MultiArch.image_id(),
            "{kind:?}"
        );
        assert_eq!(
            pull(&mut c, "busybox-v2s2", None).await.unwrap(),
            Fixture::Busybox.image_id(),
            "{kind:?}"
        );
        if kind == Kind::Capsa {
            let view_dir = server.dir.join("view");
            let v = LayerView::mount(&mut c, "layered", &view_dir).await;
            assert_eq!(
                view(&v.target, "/data"),
                Fixture::Layered.expected_view().unwrap()
            );
        }
    }
}

/// What cannot be pulled says what and why: an unknown tag, an unreachable registry, a
/// malformed reference; nothing is kept.
#[tokio::test]
async fn bad_pulls_name_the_reference_and_keep_nothing() {
    let (_netns, registry, servers) = both().await;
    registry.push(Fixture::Busybox, "library/busybox:latest");
    for server in &servers {
        let kind = server.kind;
        let mut c = server.clients().await;
        let e = pull(&mut c, "busybox:nosuch", None).await.unwrap_err();
        assert!(e.message().contains("busybox:nosuch"), "{kind:?} {e:?}");
        let e = pull(&mut c, "127.0.0.1:1/x/y:z", None).await.unwrap_err();
        assert!(e.message().contains("127.0.0.1:1"), "{kind:?} {e:?}");
        let e = pull(&mut c, "Upper/Case", None).await.unwrap_err();
        assert!(e.message().contains("Upper/Case"), "{kind:?} {e:?}");
        if kind == Kind::Capsa {
            // containerd 1.6 answers Unknown to all three.
            let codes = [
                pull(&mut c, "busybox:nosuch", None)
                    .await
                    .unwrap_err()
                    .code(),
                pull(&mut c, "127.0.0.1:1/x/y:z", None)
                    .await
                    .unwrap_err()
                    .code(),
                pull(&mut c, "Upper/Case", None).await.unwrap_err().code(),
            ];
            assert_eq!(
                codes,
                [
                    tonic::Code::NotFound,
                    tonic::Code::Unavailable,
                    tonic::Code::InvalidArgument
                ]
            );
        }
        assert!(list(&mut c, None).await.is_empty(), "{kind:?}");
    }
}

/// A registry that wants credentials: none or wrong ones fail, username/password and the
/// `auth` form (base64 of user:password) succeed.
#[tokio::test]
async fn credentials_from_the_request_reach_the_registry() {
    let registry = Arc::new(Registry::start_with_auth(None, "capsa", "s3cret"));
    registry.push(Fixture::Busybox, "library/busybox:latest");
    for kind in KINDS {
        let server = Server::start_with(kind, None, registry.clone()).await;
        let mut c = server.clients().await;
        assert!(pull(&mut c, "busybox", None).await.is_err(), "{kind:?}");
        let wrong = AuthConfig {
            username: "capsa".into(),
            password: "wrong".into(),
            ..Default::default()
        };
        assert!(pull(&mut c, "busybox", Some(wrong)).await.is_err());
        let basic = AuthConfig {
            username: "capsa".into(),
            password: "s3cret".into(),
            ..Default::default()
        };
        assert_eq!(
            pull(&mut c, "busybox", Some(basic)).await.unwrap(),
            Fixture::Busybox.image_id()
        );
        remove(&mut c, "busybox").await;
        let encoded = AuthConfig {
            // base64("capsa:s3cret")
            auth: "Y2Fwc2E6czNjcmV0".into(),
            ..Default::default()
        };
        assert_eq!(
            pull(&mut c, "busybox", Some(encoded)).await.unwrap(),
            Fixture::Busybox.image_id(),
            "{kind:?}"
        );
    }
}

/// Six pulls at once of two images that share their base layer: all succeed, and each blob
/// crosses the network once (the registry's log counts the GETs).
#[tokio::test]
async fn concurrent_pulls_fetch_each_layer_once() {
    let netns = Netns::new();
    let registry = Arc::new(Registry::start(Some(&netns)));
    registry.push(Fixture::Busybox, "library/busybox:latest");
    registry.push(Fixture::Web, "library/web:latest");
    let server = Server::start_with(Kind::Capsa, Some(&netns), registry.clone()).await;
    let mut pulls = tokio::task::JoinSet::new();
    for i in 0..6 {
        let mut c = server.clients().await;
        let image = if i % 2 == 0 { "busybox" } else { "web" };
        pulls.spawn(async move { (image, pull(&mut c, image, None).await) });
    }
    while let Some(done) = pulls.join_next().await {
        let (image, r) = done.unwrap();
        let id = r.unwrap_or_else(|e| panic!("{image}: {e}"));
        let want = match image {
            "busybox" => Fixture::Busybox.image_id(),
            _ => Fixture::Web.image_id(),
        };
        assert_eq!(id, want);
    }
    let log = registry.log();
    let blob_gets: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("msg=\"response completed\"") && l.contains("method=GET"))
        .filter_map(|l| l.split("/blobs/").nth(1)?.split([' ', '"']).next())
        .collect();
    let mut unique = blob_gets.clone();
    unique.sort();
    unique.dedup();
    assert!(
        !unique.is_empty(),
        "no blob GETs in the registry's log: {log}"
    );
    // Configs are fetched by each resolve; layers (the larger blobs) once each.
    let layer_gets = |d: &&&str| {
        !d.starts_with(Fixture::Busybox.image_id().as_str())
            && !d.starts_with(Fixture::Web.image_id().as_str())
    };
    let layers: Vec<_> = blob_gets.iter().filter(layer_gets).collect();
    let mut layers_unique = layers.clone();
    layers_unique.sort();
    layers_unique.dedup();
    assert_eq!(layers.len(), layers_unique.len(), "{blob_gets:#?}");
    let layer_dirs = std::fs::read_dir(server.dir.join("state/images/layers"))
        .unwrap()
        .count();
    assert_eq!(layer_dirs, layers_unique.len());
}
