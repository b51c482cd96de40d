//! The test images (`rootfs-fixtures/images.sh`), built offline from busybox-static as OCI
//! archives once per test binary, and what each is known to contain, for the image tests to
//! check a puller against.

use super::{run_ok, CAPSA_CRI};
use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

/// Where built archives are kept between test binaries and runs (rebuilt when a script or
/// capsa-pause is newer).
const DIR: &str = "/tmp/capsa-cri-tests/images";

/// What `web` serves as /www/index.html, on port 80.
pub const WEB_INDEX: &str = "capsa web fixture\n";

/// One image of `rootfs-fixtures/images.sh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fixture {
    /// busybox-static's rootfs as `busybox-rootfs.sh` makes it; Cmd ["sh"].
    Busybox,
    /// capsa-pause alone as /pause; Entrypoint ["/pause"]. containerd's sandbox image.
    Pause,
    /// busybox + /www/index.html ([`WEB_INDEX`]); Cmd httpd -f -p 80 -h /www.
    Web,
    /// busybox with User "1002".
    User1002,
    /// busybox + a www-data user (33:33); User "www-data".
    UserWwwData,
    /// busybox + three layers (gzip, zstd, plain tar) with whiteouts, an opaque directory
    /// and type changes under /data: see [`Fixture::expected_view`].
    Layered,
    /// An image index: busybox for this machine's platform and a bogus image for another
    /// architecture (whose /ARCH names it).
    MultiArch,
    /// The pull benchmark's image: busybox + 49 gzip layers, 200 MiB of incompressible data.
    Bench,
}

impl Fixture {
    /// Every fixture the suite pushes (the benchmark's is built only when asked for).
    pub const ALL: [Fixture; 7] = [
        Fixture::Busybox,
        Fixture::Pause,
        Fixture::Web,
        Fixture::User1002,
        Fixture::UserWwwData,
        Fixture::Layered,
        Fixture::MultiArch,
    ];

    /// Its name in `images.sh`.
    pub fn name(self) -> &'static str {
        match self {
            Fixture::Busybox => "busybox",
            Fixture::Pause => "pause",
            Fixture::Web => "web",
            Fixture::User1002 => "user-1002",
            Fixture::UserWwwData => "user-www-data",
            Fixture::Layered => "layered",
            Fixture::MultiArch => "multiarch",
            Fixture::Bench => "bench",
        }
    }

    /// The OCI archive, built on first use in this test binary (under a lock shared with
    /// the other test binaries, which run in parallel), or reused while fresh.
    pub fn archive(self) -> PathBuf {
        static BUILT: OnceLock<Mutex<HashMap<Fixture, PathBuf>>> = OnceLock::new();
        let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
        built.entry(self).or_insert_with(|| self.build()).clone()
    }

    /// Builds every fixture but the benchmark's in one `images.sh all` (one busybox tree
    /// for all), or the benchmark's alone.
    fn build(self) -> PathBuf {
        std::fs::create_dir_all(DIR).unwrap();
        let lock = std::fs::File::create(Path::new(DIR).join("lock")).unwrap();
        let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .unwrap();
        let tar = Path::new(DIR).join(format!("{}.tar", self.name()));
        let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rootfs-fixtures");
        let pause = Path::new(CAPSA_CRI).with_file_name("capsa-pause");
        let mut inputs = ["images.sh", "oci-lib.sh", "busybox-rootfs.sh"]
            .map(|s| scripts.join(s))
            .to_vec();
        if self != Fixture::Bench {
            inputs.push(pause.clone());
        }
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified());
        let newest = inputs
            .iter()
            .map(|p| modified(p).unwrap())
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if modified(&tar).is_ok_and(|t| t >= newest) {
            return tar;
        }
        // Built beside, then renamed into place, each archive after its .id and .view: a
        // build killed midway is never taken as fresh.
        let tmp = Path::new(DIR).join("build.tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).unwrap();
        let mut cmd = Command::new("bash");
        cmd.arg(scripts.join("images.sh"));
        if self == Fixture::Bench {
            cmd.args(["bench"])
                .arg(tmp.join("bench.tar"))
                .arg("docker.io/library/bench:latest");
        } else {
            cmd.arg("all").arg(&tmp).arg(&pause);
        }
        run_ok(&mut cmd);
        let mut built: Vec<PathBuf> = std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        built.sort_by_key(|p| p.extension().is_some_and(|e| e == "tar"));
        for path in built {
            std::fs::rename(&path, Path::new(DIR).join(path.file_name().unwrap())).unwrap();
        }
        std::fs::remove_dir(&tmp).unwrap();
        tar
    }

    /// The image id a puller must answer: the digest of the config of this machine's
    /// platform (`sha256:…`).
    pub fn image_id(self) -> String {
        let id = self.archive().with_extension("tar.id");
        std::fs::read_to_string(&id)
            .unwrap_or_else(|e| panic!("{}: {e}", id.display()))
            .trim()
            .to_string()
    }

    /// `Image.uid` as CRI reports it: the config's User when it is numeric.
    pub fn uid(self) -> Option<i64> {
        (self == Fixture::User1002).then_some(1002)
    }

    /// `Image.username` as CRI reports it: the config's User when it is a name.
    pub fn username(self) -> &'static str {
        if self == Fixture::UserWwwData {
            "www-data"
        } else {
            ""
        }
    }

    /// Whether the archive holds an image index rather than one manifest.
    pub fn is_index(self) -> bool {
        self == Fixture::MultiArch
    }

    /// For [`Fixture::Layered`], the merged /data a correct unpacker shows; for
    /// [`Fixture::Web`], its volume /www as a container sees it: in [`view`]'s form; None for
    /// the others.
    pub fn expected_view(self) -> Option<String> {
        matches!(self, Fixture::Layered | Fixture::Web).then(|| {
            let path = self.archive().with_extension("tar.view");
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
    }
}

/// The tree under `root`/`under` (`under` absolute, e.g. "/data") as `images.sh` writes an
/// expected view: one line per entry, sorted by path, `PATH TYPE UID:GID MODE [DETAIL]`, TYPE
/// dir, file (DETAIL its content without the final newline) or link (DETAIL its target).
pub fn view(root: &Path, under: &str) -> String {
    let mut lines = Vec::new();
    walk(root, Path::new(under), &mut lines);
    lines.sort();
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn walk(root: &Path, path: &Path, lines: &mut Vec<String>) {
    let full = root.join(path.strip_prefix("/").unwrap_or(path));
    let meta = std::fs::symlink_metadata(&full).unwrap_or_else(|e| panic!("{full:?}: {e}"));
    let (kind, detail) = if meta.is_dir() {
        ("dir", None)
    } else if meta.file_type().is_symlink() {
        let target = std::fs::read_link(&full).unwrap();
        ("link", Some(target.display().to_string()))
    } else if meta.is_file() {
        let content = std::fs::read_to_string(&full).unwrap();
        let content = content.strip_suffix('\n').unwrap_or(&content).to_string();
        ("file", Some(content))
    } else {
        ("other", None)
    };
    let mut line = format!(
        "{} {kind} {}:{} {:04o}",
        path.display(),
        meta.uid(),
        meta.gid(),
        meta.permissions().mode() & 0o7777
    );
    if let Some(detail) = detail {
        line = format!("{line} {detail}");
    }
    lines.push(line);
    if meta.is_dir() {
        for entry in std::fs::read_dir(&full).unwrap() {
            walk(root, &path.join(entry.unwrap().file_name()), lines);
        }
    }
}

/// An ImageSpec naming `image`.
pub fn spec(image: &str) -> Option<k8s_cri::v1::ImageSpec> {
    Some(k8s_cri::v1::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

/// PullImage: the image_ref, or the server's error.
pub async fn pull(
    c: &mut super::Clients,
    image: &str,
    auth: Option<k8s_cri::v1::AuthConfig>,
) -> Result<String, tonic::Status> {
    c.images
        .pull_image(k8s_cri::v1::PullImageRequest {
            image: spec(image),
            auth,
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

/// ImageStatus (None for an image the server does not have), with its verbose info.
pub async fn status(
    c: &mut super::Clients,
    image: &str,
    verbose: bool,
) -> (Option<k8s_cri::v1::Image>, HashMap<String, String>) {
    let r = c
        .images
        .image_status(k8s_cri::v1::ImageStatusRequest {
            image: spec(image),
            verbose,
        })
        .await
        .unwrap_or_else(|e| panic!("ImageStatus {image}: {e}"))
        .into_inner();
    (r.image, r.info)
}

/// ImageStatus of an image the server must have.
pub async fn image_status(c: &mut super::Clients, image: &str) -> k8s_cri::v1::Image {
    status(c, image, false)
        .await
        .0
        .unwrap_or_else(|| panic!("no image {image}"))
}
