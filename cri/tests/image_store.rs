//! The image store on the real filesystem and kernel: blobs verified and capped, layers
//! unpacked once and refused when hostile, records with tags moving, removal and garbage,
//! leases and overlay roots, a daemon killed mid-pull, a full disk.

mod common;

use capsa_cri::cni::error_chain;
use capsa_cri::images::store::{Descriptor, Digest, ImageConfig, ImageRecord, Store, StoreError};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// One entry of a test layer.
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Link(&'a str, &'a str),
    /// A raw header, for what well-behaved tar writers refuse: (name, type, link target).
    Raw(&'a str, tar::EntryType, &'a str),
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

fn layer(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            E::Dir(p) => {
                let mut h = header(tar::EntryType::Directory, 0, 0o755);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            E::File(p, data) => {
                let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644);
                b.append_data(&mut h, p, *data).unwrap();
            }
            E::Link(p, target) => {
                let mut h = header(tar::EntryType::Symlink, 0, 0o777);
                b.append_link(&mut h, p, target).unwrap();
            }
            E::Raw(name, kind, target) => {
                let mut h = header(*kind, 0, 0o600);
                let old = h.as_old_mut();
                old.name = [0; 100];
                old.name[..name.len()].copy_from_slice(name.as_bytes());
                old.linkname[..target.len()].copy_from_slice(target.as_bytes());
                if matches!(kind, tar::EntryType::Block | tar::EntryType::Char) {
                    h.set_device_major(8).unwrap();
                    h.set_device_minor(0).unwrap();
                }
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(plain: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(plain).unwrap();
    gz.finish().unwrap()
}

fn zstd(plain: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(plain, ruzstd::encoding::CompressionLevel::Fastest)
}

fn desc(blob: &[u8], media_type: &str) -> Descriptor {
    Descriptor {
        digest: Digest::of(blob),
        size: blob.len() as u64,
        media_type: media_type.into(),
    }
}

/// A layer ready to ingest: (diff id, descriptor, blob).
fn blob(plain: &[u8], media_type: &str) -> (Digest, Descriptor, Vec<u8>) {
    let bytes = match media_type {
        GZIP => gzip(plain),
        ZSTD => zstd(plain),
        _ => plain.to_vec(),
    };
    (Digest::of(plain), desc(&bytes, media_type), bytes)
}

/// What a pull does: ingest config and layers, unpack, record.
async fn pull(store: &Store, tags: &[&str], user: &str, layers: &[Vec<u8>]) -> ImageRecord {
    let config = ImageConfig {
        user: user.into(),
        cmd: vec!["/bin/sh".into()],
        ..Default::default()
    };
    let cbytes = serde_json::to_vec(&(&config, tags, layers.len())).unwrap();
    let cdesc = desc(&cbytes, CONFIG);
    store.ingest(&cdesc, &cbytes[..]).await.unwrap();
    let mut stack = Vec::new();
    let mut blobs = vec![cdesc.digest.clone()];
    let mut size = cdesc.size;
    for (i, plain) in layers.iter().enumerate() {
        let media = [GZIP, ZSTD, TAR][i % 3];
        let (diff_id, d, bytes) = blob(plain, media);
        store.ingest(&d, &bytes[..]).await.unwrap();
        size += d.size;
        blobs.push(d.digest.clone());
        stack.push((diff_id, d));
    }
    let chain_ids = store.unpack_layers(&stack).await.unwrap();
    let record = ImageRecord {
        id: cdesc.digest.clone(),
        repo_tags: tags.iter().map(|t| t.to_string()).collect(),
        repo_digests: vec![],
        size,
        config,
        chain_ids,
        blobs,
    };
    store.put_image(record.clone()).await.unwrap();
    record
}

/// A scratch directory holding a store root; removed on drop.
struct Scratch {
    dir: PathBuf,
    root: PathBuf,
}

impl Scratch {
    fn new(prefix: &str) -> Scratch {
        let dir = common::scratch(prefix);
        Scratch {
            root: dir.join("images"),
            dir,
        }
    }

    fn open(&self) -> Store {
        Store::open(&self.root).unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An image of one layer holding one small file.
async fn pull_small(store: &Store, tag: &str) -> ImageRecord {
    pull(store, &[tag], "", &[layer(&[E::File("f", tag.as_bytes())])]).await
}

/// The error, with its causes, says each of `parts`.
fn says(e: &StoreError, parts: &[&str]) {
    let msg = error_chain(e);
    for p in parts {
        assert!(msg.contains(p), "{p:?} not in: {msg}");
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The store holds nothing but what its records and leases need: no temp, no half layer.
fn assert_clean(root: &Path, blobs: usize, layers: usize) {
    assert_eq!(
        listing(&root.join("tmp")),
        Vec::<String>::new(),
        "temps left"
    );
    assert_eq!(listing(&root.join("blobs/sha256")).len(), blobs, "blobs");
    assert_eq!(listing(&root.join("layers")).len(), layers, "layers");
}

/// Unmounts a container root on drop, so a failing assertion leaves no mount behind.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if mounted(&self.0) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn mounts(path: &Path) -> usize {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_str().unwrap();
    info.lines()
        .filter(|l| l.split(' ').nth(4) == Some(p))
        .count()
}

fn mounted(path: &Path) -> bool {
    mounts(path) > 0
}

/// Ingests `bytes`, counting how often the source is opened (a registry request).
async fn ingest_counting(store: &Store, d: &Descriptor, bytes: &[u8], opened: &AtomicUsize) {
    store
        .ingest_with(d, || async {
            opened.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(bytes)
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn ingest_verifies_digest_and_size_and_keeps_nothing_on_mismatch() {
    let s = Scratch::new("imgs-ingest");
    let (root, store) = (s.root.clone(), s.open());
    let data = b"some blob content".to_vec();
    let good = desc(&data, CONFIG);

    let mut wrong = good.clone();
    wrong.digest = Digest::of(b"other");
    let e = store.ingest(&wrong, &data[..]).await.unwrap_err();
    let msg = error_chain(&e);
    assert!(
        matches!(e, StoreError::DigestMismatch { .. }) && msg.contains(wrong.digest.as_str()),
        "{msg}"
    );
    assert_clean(&root, 0, 0);

    let mut short = good.clone();
    short.size += 1;
    let e = store.ingest(&short, &data[..]).await.unwrap_err();
    assert!(error_chain(&e).contains("the content is 17"), "{e}");
    assert_clean(&root, 0, 0);

    // A registry that streams forever is cut off one byte past the descriptor's size.
    let e = store
        .ingest(&good, tokio::io::repeat(b'x'))
        .await
        .unwrap_err();
    says(&e, &["more than 17", good.digest.as_str()]);
    assert_clean(&root, 0, 0);

    let path = store.ingest(&good, &data[..]).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), data);
    assert!(store.has_blob(&good.digest));
    // Already there: the source is not even opened.
    let opened = AtomicUsize::new(0);
    ingest_counting(&store, &good, &data, &opened).await;
    assert_eq!(opened.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pulls_fetch_and_unpack_each_layer_once() {
    let s = Scratch::new("imgs-flight");
    let store = s.open();
    let files: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| (format!("usr/share/f{i}"), vec![i as u8; 4096]))
        .collect();
    let entries: Vec<E> = files.iter().map(|(p, d)| E::File(p, d)).collect();
    let base = layer(&entries);
    let (diff, d, bytes) = blob(&base, GZIP);
    let opened = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (store, d, bytes, diff, opened) = (
            store.clone(),
            d.clone(),
            bytes.clone(),
            diff.clone(),
            opened.clone(),
        );
        tasks.push(tokio::spawn(async move {
            ingest_counting(&store, &d, &bytes, &opened).await;
            // Half the pulls share only the base, half the whole stack: both unpack the
            // base at the same time. Without single flight the second rename of the same
            // layer directory fails (ENOTEMPTY).
            let top = layer(&[E::File("top", format!("{}", i % 2).as_bytes())]);
            let (tdiff, td, tbytes) = blob(&top, TAR);
            store.ingest(&td, &tbytes[..]).await.unwrap();
            store
                .unpack_layers(&[(diff, d), (tdiff, td)])
                .await
                .unwrap()
        }));
    }
    let mut chains = Vec::new();
    for t in tasks {
        chains.push(t.await.unwrap());
    }
    assert_eq!(
        opened.load(Ordering::SeqCst),
        1,
        "the blob was fetched more than once"
    );
    assert!(chains.iter().all(|c| c[0] == chains[0][0]));
    assert_eq!(chains[0][0], diff, "a base layer's chain id is its diff id");
    assert_ne!(chains[0][1], chains[1][1]);
    assert_clean(store.root(), 3, 3);
    let fs = store.layer_path(&chains[0][0]);
    assert_eq!(
        std::fs::read(fs.join("usr/share/f7")).unwrap(),
        vec![7u8; 4096]
    );
}

#[tokio::test]
async fn hostile_layers_are_refused_name_the_blob_and_leave_nothing() {
    use tar::EntryType::{Block, Link, Regular, Symlink};
    let s = Scratch::new("imgs-hostile");
    // A state directory others may read: the store makes its own root private anyway.
    std::fs::create_dir(&s.root).unwrap();
    std::fs::set_permissions(&s.root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let outside = s.dir.join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), "host").unwrap();
    let o = outside.to_str().unwrap().to_string();
    let (pwned_abs, secret_abs) = (format!("{o}/pwned"), format!("{o}/secret"));
    let store = s.open();
    let cases: Vec<(&str, Vec<E>, &str)> = vec![
        (
            "dotdot",
            vec![E::Raw("../outside/pwned", Regular, "")],
            "\"..\" escapes",
        ),
        (
            "absolute",
            vec![E::Raw(&pwned_abs, Regular, "")],
            "absolute path",
        ),
        (
            "symlinked-parent",
            vec![E::Raw("l", Symlink, &o), E::Raw("l/pwned", Regular, "")],
            "symlink",
        ),
        (
            "hardlink-out",
            vec![E::Raw("h", Link, "../outside/secret")],
            "hard link",
        ),
        (
            "hardlink-abs",
            vec![E::Raw("h", Link, &secret_abs)],
            "hard link",
        ),
        (
            "device-out",
            vec![E::Raw("../outside/sda", Block, "")],
            "\"..\" escapes",
        ),
    ];
    for (name, entries, expect) in cases {
        let (diff, d, bytes) = blob(&layer(&entries), GZIP);
        store.ingest(&d, &bytes[..]).await.unwrap();
        let e = store.unpack_layers(&[(diff, d.clone())]).await.unwrap_err();
        let msg = error_chain(&e);
        assert!(
            msg.contains(d.digest.as_str()) && msg.contains(expect),
            "{name}: {msg}"
        );
        assert_eq!(listing(&outside), vec!["secret"], "{name} wrote outside");
        assert_eq!(
            std::fs::read_to_string(outside.join("secret")).unwrap(),
            "host"
        );
        assert_eq!(
            listing(&store.root().join("layers")),
            Vec::<String>::new(),
            "{name}"
        );
        assert_eq!(
            listing(&store.root().join("tmp")),
            Vec::<String>::new(),
            "{name}"
        );
    }
    // A device node stays inside its layer, in a store only root can enter.
    let (diff, d, bytes) = blob(&layer(&[E::Raw("dev/sda", Block, "")]), TAR);
    store.ingest(&d, &bytes[..]).await.unwrap();
    let c = store.unpack_layers(&[(diff, d)]).await.unwrap();
    use std::os::unix::fs::FileTypeExt;
    let node = std::fs::symlink_metadata(store.layer_path(&c[0]).join("dev/sda")).unwrap();
    assert!(node.file_type().is_block_device());
    for p in [store.root(), &store.root().join("layers")] {
        assert_eq!(p.metadata().unwrap().permissions().mode() & 0o777, 0o700);
    }
}

#[tokio::test]
async fn a_layer_must_match_its_diff_id_and_media_type() {
    let s = Scratch::new("imgs-diffid");
    let store = s.open();
    let real = layer(&[E::File("etc/os-release", b"real")]);
    let evil = layer(&[E::File("etc/os-release", b"evil")]);
    // An image claiming the real layer's diff id for other content must not plant it
    // under the real layer's chain id.
    let (_, d, bytes) = blob(&evil, GZIP);
    store.ingest(&d, &bytes[..]).await.unwrap();
    let e = store
        .unpack_layers(&[(Digest::of(&real), d.clone())])
        .await
        .unwrap_err();
    says(&e, &["diff id mismatch", d.digest.as_str()]);
    assert!(!store.layer_path(&Digest::of(&real)).exists());

    // gzip content declared as a plain tar.
    let (diff, mut d2, bytes) = blob(&real, GZIP);
    d2.media_type = TAR.into();
    d2.digest = Digest::of(&bytes);
    store.ingest(&d2, &bytes[..]).await.unwrap();
    let e = store
        .unpack_layers(&[(diff.clone(), d2.clone())])
        .await
        .unwrap_err();
    assert!(
        error_chain(&e).contains("says plain tar, the content is gzip"),
        "{e}"
    );
    d2.media_type = "application/vnd.oci.image.layer.v1.tar+encrypted".into();
    let e = store.unpack_layers(&[(diff, d2)]).await.unwrap_err();
    assert!(error_chain(&e).contains("tar+encrypted"), "{e}");
    // A layer whose blob was never ingested.
    let (diff, d3, _) = blob(&layer(&[E::Dir("x")]), TAR);
    let e = store
        .unpack_layers(&[(diff, d3.clone())])
        .await
        .unwrap_err();
    assert!(
        error_chain(&e).contains(&format!("blob {} is not in", d3.digest)),
        "{e}"
    );
    assert_eq!(listing(&store.root().join("layers")), Vec::<String>::new());
    assert_eq!(listing(&store.root().join("tmp")), Vec::<String>::new());
}

#[tokio::test]
async fn tags_lookups_removal_and_garbage() {
    let s = Scratch::new("imgs-records");
    let (root, store) = (s.root.clone(), s.open());
    let base = layer(&[E::File("bin/sh", b"shell")]);
    let a_top = layer(&[E::File("a", b"a")]);
    let b_top = layer(&[E::File("b", b"b")]);
    let a = pull(
        &store,
        &["docker.io/library/a:1", "docker.io/library/a:2"],
        "1000:1000",
        &[base.clone(), a_top],
    )
    .await;
    let mut with_digest = a.clone();
    with_digest.repo_tags = vec![];
    with_digest.repo_digests = vec![format!("docker.io/library/a@{}", Digest::of(b"manifest"))];
    store.put_image(with_digest).await.unwrap();
    let b = pull(&store, &["docker.io/library/b:1"], "nobody", &[base, b_top]).await;
    assert_clean(&root, 5, 3);

    let by = |r: &str| store.get(r).map(|i| i.id);
    assert_eq!(by(a.id.as_str()), Some(a.id.clone()));
    assert_eq!(by(&a.id.hex()[..12]), Some(a.id.clone()));
    assert_eq!(by("docker.io/library/a:2"), Some(a.id.clone()));
    assert_eq!(
        by(&format!("docker.io/library/a@{}", Digest::of(b"manifest"))),
        Some(a.id.clone())
    );
    assert_eq!(by("docker.io/library/a:3"), None);
    let got = store.get("docker.io/library/a:1").unwrap();
    assert_eq!((got.uid(), got.username()), (Some(1000), ""));
    assert_eq!(got.repo_tags.len() + got.repo_digests.len(), 3);
    let got = store.get(b.id.as_str()).unwrap();
    assert_eq!((got.uid(), got.username()), (None, "nobody"));
    assert_eq!(got.size, b.size);

    // A record naming a layer the store does not have is refused, and changes nothing.
    let mut broken = b.clone();
    broken.repo_tags = vec!["docker.io/library/broken:1".into()];
    broken.chain_ids.push(Digest::of(b"never unpacked"));
    let e = store.put_image(broken).await.unwrap_err();
    says(
        &e,
        &["is not unpacked", Digest::of(b"never unpacked").as_str()],
    );
    assert_eq!(by("docker.io/library/broken:1"), None);

    // A tag names one image: pulling b as a:2 moves it.
    let mut moved = b.clone();
    moved.repo_tags = vec!["docker.io/library/a:2".into()];
    store.put_image(moved).await.unwrap();
    assert_eq!(by("docker.io/library/a:2"), Some(b.id.clone()));
    assert_eq!(
        store.get(a.id.as_str()).unwrap().repo_tags,
        vec!["docker.io/library/a:1"]
    );

    // Records survive a restart.
    let before = store.list();
    drop(store);
    let store = s.open();
    assert_eq!(store.list(), before);
    let by = |r: &str| store.get(r).map(|i| i.id);

    // Removing by one tag removes the whole image (containerd's CRI) and what only it used;
    // the shared base layer stays for b.
    store.remove("docker.io/library/a:1").await.unwrap();
    assert_eq!(by(a.id.as_str()), None);
    assert_eq!(
        by(&format!("docker.io/library/a@{}", Digest::of(b"manifest"))),
        None
    );
    assert_clean(&root, 3, 2);
    assert!(store.layer_path(&b.chain_ids[0]).is_dir());
    // Absent images: removing succeeds.
    store.remove("docker.io/library/a:1").await.unwrap();
    store.remove(a.id.as_str()).await.unwrap();
    store.remove(&b.id.hex()[..8]).await.unwrap();
    assert!(store.list().is_empty());
    assert_clean(&root, 0, 0);
}

#[tokio::test]
async fn a_second_daemon_cannot_open_the_store() {
    let s = Scratch::new("imgs-lock");
    let store = s.open();
    let e = Store::open(&s.root).unwrap_err();
    assert!(
        matches!(e, StoreError::Locked { .. }) && e.to_string().contains("locked"),
        "{e}"
    );
    drop(store);
    s.open();
}

#[tokio::test]
async fn a_container_root_is_the_merged_view_and_its_lease_outlives_the_image() {
    let s = Scratch::new("imgs-rootfs");
    let (root, store) = (s.root.clone(), s.open());
    let l1 = layer(&[
        E::Dir("etc"),
        E::File("etc/passwd", b"root:x:0:0"),
        E::File("etc/gone", b"x"),
        E::Dir("var"),
        E::File("var/old", b"old"),
        E::Link("bin", "usr/bin"),
    ]);
    let l2 = layer(&[
        E::File("etc/.wh.gone", b""),
        E::Dir("var"),
        E::File("var/.wh..wh..opq", b""),
        E::File("var/new", b"new"),
    ]);
    let l3 = layer(&[E::File("etc/passwd", b"root:x:0:0\nwww:x:33:33")]);
    let img = pull(&store, &["docker.io/library/web:1"], "www", &[l1, l2, l3]).await;
    let cdir = s.dir.join("containers/c1");
    let _unmount = Unmount(cdir.join("rootfs"));
    let m = store
        .prepare_rootfs("c1", "docker.io/library/web:1", &cdir)
        .await
        .unwrap();
    assert!(mounted(&m.rootfs));
    let r = &m.rootfs;
    assert_eq!(
        std::fs::read_to_string(r.join("etc/passwd")).unwrap(),
        "root:x:0:0\nwww:x:33:33"
    );
    assert!(!r.join("etc/gone").exists(), "whiteout");
    assert_eq!(listing(&r.join("var")), vec!["new"], "opaque directory");
    assert_eq!(
        std::fs::read_link(r.join("bin")).unwrap(),
        PathBuf::from("usr/bin")
    );
    // Preparing again (a restarted daemon) mounts nothing more.
    store
        .prepare_rootfs("c1", img.id.as_str(), &cdir)
        .await
        .unwrap();
    assert_eq!(mounts(&m.rootfs), 1);
    // ... and a lease cannot switch images under a mounted root.
    let other = pull_small(&store, "docker.io/library/other:1").await;
    let e = store
        .prepare_rootfs("c1", other.id.as_str(), &cdir)
        .await
        .unwrap_err();
    says(&e, &["container c1 already holds image", img.id.as_str()]);
    assert!(mounted(&m.rootfs));
    store.remove(other.id.as_str()).await.unwrap();
    // A root that cannot be made leaves no lease and no directory.
    let blocker = s.dir.join("file");
    std::fs::write(&blocker, "").unwrap();
    let e = store
        .prepare_rootfs("c3", img.id.as_str(), &blocker.join("c3"))
        .await
        .unwrap_err();
    says(&e, &["creating", "file/c3"]);
    assert_eq!(listing(&root.join("leases")), vec!["c1.json"]);

    // Writes land in the container's upper dir and show in its usage.
    let empty = store.rootfs_usage("c1").await.unwrap().unwrap();
    std::fs::write(r.join("data"), vec![1u8; 64 * 1024]).unwrap();
    let used = store.rootfs_usage("c1").await.unwrap().unwrap();
    assert!(
        used.bytes >= empty.bytes + 64 * 1024 && used.inodes == empty.inodes + 1,
        "{used:?}"
    );
    let fs = store.fs_info().await.unwrap();
    assert_eq!(fs.containers.usage, used);
    assert_eq!(fs.images.mountpoint, root);
    assert!(
        fs.images.usage.bytes > 0 && fs.images.usage.inodes > 10,
        "{fs:?}"
    );
    assert!(cdir.starts_with(&fs.containers.mountpoint), "{fs:?}");

    // The image goes; the container keeps its layers and still reads them.
    store.remove("docker.io/library/web:1").await.unwrap();
    assert!(store.get(img.id.as_str()).is_none());
    assert_clean(&root, 4, 3);
    assert_eq!(std::fs::read_to_string(r.join("var/new")).unwrap(), "new");
    // ... across a restart, too.
    drop(store);
    let store = s.open();
    assert_clean(&root, 4, 3);

    store.remove_rootfs("c1").await.unwrap();
    assert!(!mounted(&m.rootfs));
    assert_eq!(listing(&cdir), Vec::<String>::new());
    assert_clean(&root, 0, 0);
    assert_eq!(listing(&root.join("leases")), Vec::<String>::new());
    // Unknown containers and images.
    store.remove_rootfs("c1").await.unwrap();
    let e = store
        .prepare_rootfs("c2", "docker.io/library/web:1", &cdir)
        .await
        .unwrap_err();
    assert!(
        error_chain(&e).contains("\"docker.io/library/web:1\" not found"),
        "{e}"
    );
    let e = store
        .prepare_rootfs("../c2", img.id.as_str(), &cdir)
        .await
        .unwrap_err();
    assert!(error_chain(&e).contains("not a container id"), "{e}");
    assert_eq!(listing(&root.join("leases")), Vec::<String>::new());
}

/// A reader that gives `data`, then prints a line and never gives more: a registry that
/// stalls mid-blob while the test kills the process.
struct Stalls {
    data: Vec<u8>,
    at: usize,
}

impl AsyncRead for Stalls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.at == self.data.len() {
            println!("stalled");
            return Poll::Pending;
        }
        let n = buf.remaining().min(self.data.len() - self.at);
        let at = self.at;
        buf.put_slice(&self.data[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

fn big_blob() -> Vec<u8> {
    (0..3 << 20).map(|i: u32| (i % 251) as u8).collect()
}

/// A layer of many small files, the same in parent and child.
fn many_files_layer() -> Vec<u8> {
    let files: Vec<(String, Vec<u8>)> = (0..800)
        .map(|i| (format!("usr/share/f{i}"), vec![i as u8; 4096]))
        .collect();
    let entries: Vec<E> = files.iter().map(|(p, d)| E::File(p, d)).collect();
    layer(&entries)
}

/// Runs only as the child of `a_killed_unpack_leaves_nothing_and_the_next_pull_completes`.
#[tokio::test]
async fn child_unpack_until_killed() {
    let Ok(root) = std::env::var("CAPSA_IMAGE_STORE_CHILD") else {
        return;
    };
    let store = Store::open(Path::new(&root)).unwrap();
    println!("open");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let (diff, d, _) = blob(&many_files_layer(), TAR);
    store.unpack_layers(&[(diff, d)]).await.unwrap();
    unreachable!("the parent kills this process while the layer is half unpacked");
}

#[tokio::test]
async fn a_killed_unpack_leaves_nothing_and_the_next_pull_completes() {
    let s = Scratch::new("imgs-kill-unpack");
    let root = s.root.clone();
    let (mut killed, mut out) = spawn_child("child_unpack_until_killed", &root);
    wait_for(&mut out, "open");
    // The child holds the store; its layer blob is a FIFO this test feeds, so that the
    // unpack stops where the test wants it to.
    let plain = many_files_layer();
    let (diff, d, _) = blob(&plain, TAR);
    let fifo = store_fifo(&root, &d.digest);
    writeln!(killed.0.stdin.as_mut().unwrap(), "go").unwrap();
    let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    // Returns once the child has read all but a pipe's worth: half the files are out.
    w.write_all(&plain[..plain.len() / 2]).unwrap();
    let temps = listing(&root.join("tmp"));
    assert_eq!(temps.len(), 1, "{temps:?}");
    assert!(temps[0].starts_with("layer-"), "{temps:?}");
    let half = listing(&root.join("tmp").join(&temps[0]).join("usr/share")).len();
    assert!(half > 100 && half < 800, "{half} files unpacked");
    assert_eq!(listing(&root.join("layers")), Vec::<String>::new());
    drop(killed);
    drop(w);

    let store = s.open();
    assert_clean(&root, 0, 0);
    let bytes = plain.clone();
    store.ingest(&d, &bytes[..]).await.unwrap();
    let c = store.unpack_layers(&[(diff, d)]).await.unwrap();
    assert_eq!(
        listing(&store.layer_path(&c[0]).join("usr/share")).len(),
        800
    );
}

/// Makes a FIFO stand for blob `d` in the store at `root`.
fn store_fifo(root: &Path, d: &Digest) -> PathBuf {
    let fifo = root.join("blobs/sha256").join(d.hex());
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    fifo
}

/// Runs only as the child of `a_killed_ingest_leaves_nothing_and_the_next_pull_completes`.
#[tokio::test]
async fn child_ingest_until_killed() {
    let Ok(root) = std::env::var("CAPSA_IMAGE_STORE_CHILD") else {
        return;
    };
    let store = Store::open(Path::new(&root)).unwrap();
    let data = big_blob();
    let d = desc(&data, GZIP);
    let stalls = Stalls {
        data: data[..2 << 20].to_vec(),
        at: 0,
    };
    store.ingest(&d, stalls).await.unwrap();
    unreachable!("the parent kills this process while the blob is half written");
}

/// SIGKILLs and reaps the child on drop (also when an assertion fails first).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// This test binary again, running only the child test `name` on the store at `root`.
fn spawn_child(name: &str, root: &Path) -> (Killed, std::io::BufReader<std::process::ChildStdout>) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("CAPSA_IMAGE_STORE_CHILD", root)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    (Killed(child), out)
}

/// Reads the child's output up to a line containing `word`.
fn wait_for(out: &mut impl std::io::BufRead, word: &str) {
    let mut line = String::new();
    while !line.contains(word) {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child ended first"
        );
    }
}

#[tokio::test]
async fn a_killed_ingest_leaves_nothing_and_the_next_pull_completes() {
    let s = Scratch::new("imgs-kill");
    let root = s.root.clone();
    let (killed, mut out) = spawn_child("child_ingest_until_killed", &root);
    wait_for(&mut out, "stalled");
    // The first megabyte is on disk under a temp name; SIGKILL now.
    let temps = listing(&root.join("tmp"));
    assert_eq!(temps.len(), 1, "{temps:?}");
    assert!(
        std::fs::metadata(root.join("tmp").join(&temps[0]))
            .unwrap()
            .len()
            >= 1 << 20
    );
    drop(killed);
    assert_eq!(listing(&root.join("blobs/sha256")), Vec::<String>::new());

    let store = s.open();
    assert_clean(&root, 0, 0);
    let data = big_blob();
    let d = desc(&data, GZIP);
    assert!(!store.has_blob(&d.digest));
    store.ingest(&d, &data[..]).await.unwrap();
    assert_eq!(std::fs::read(store.blob_path(&d.digest)).unwrap(), data);
}

#[tokio::test]
async fn open_sweeps_what_a_crash_left_and_collects_orphans() {
    let s = Scratch::new("imgs-sweep");
    let (root, store) = (s.root.clone(), s.open());
    let kept = pull_small(&store, "docker.io/library/k:1").await;
    // An orphan from a pull that died before its record: a blob and a layer nothing names
    // (this process still holds them as fresh, so they stay until the next open).
    let orphan = layer(&[E::File("o", b"o")]);
    let (diff, d, bytes) = blob(&orphan, TAR);
    store.ingest(&d, &bytes[..]).await.unwrap();
    store.unpack_layers(&[(diff, d)]).await.unwrap();
    store.collect().unwrap();
    assert_clean(&root, 3, 2);
    drop(store);
    // What a daemon killed mid-unpack and mid-ingest leaves in tmp/.
    std::fs::create_dir_all(root.join("tmp/layer-1-0/usr/bin")).unwrap();
    std::fs::write(root.join("tmp/layer-1-0/usr/bin/half"), b"x").unwrap();
    std::fs::write(root.join("tmp/blob-1-1"), b"partial").unwrap();
    std::fs::write(root.join("tmp/record-1-2"), b"{\"ima").unwrap();

    let store = s.open();
    assert_clean(&root, 2, 1);
    assert!(store.layer_path(&kept.chain_ids[0]).is_dir());
    assert_eq!(store.list(), vec![kept]);
}

/// A small tmpfs the test mounts as the state dir, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},mode=0700").as_str()),
        )
        .unwrap();
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[tokio::test]
async fn a_full_disk_is_a_clear_error_and_the_store_stays_consistent() {
    let mut s = Scratch::new("imgs-enospc");
    let _fs = Tmpfs::mount(&s.dir.join("state"), "2m");
    s.root = s.dir.join("state/images");
    let (root, store) = (s.root.clone(), s.open());
    let no_space = |e: &StoreError| error_chain(e).contains("No space left on device");

    let data = big_blob();
    let d = desc(&data, GZIP);
    let e = store.ingest(&d, &data[..]).await.unwrap_err();
    assert!(
        no_space(&e) && error_chain(&e).contains(d.digest.as_str()),
        "{e}"
    );
    assert_clean(&root, 0, 0);

    // A small blob that unpacks to more than the disk holds.
    let big = vec![0u8; 4 << 20];
    let (diff, d, bytes) = blob(&layer(&[E::File("zeros", &big)]), GZIP);
    store.ingest(&d, &bytes[..]).await.unwrap();
    let e = store.unpack_layers(&[(diff, d.clone())]).await.unwrap_err();
    let msg = error_chain(&e);
    assert!(
        no_space(&e) && msg.contains(d.digest.as_str()) && msg.contains("zeros"),
        "{msg}"
    );
    assert_clean(&root, 1, 0);

    // Still usable: a pull that fits completes and survives a restart.
    let ok = pull_small(&store, "docker.io/library/small:1").await;
    drop(store);
    let store = s.open();
    assert_eq!(store.list(), vec![ok]);
    assert_clean(&root, 2, 1);
}
