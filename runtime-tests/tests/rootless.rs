//! Rootless: capsa run by an ordinary user (one this test creates), with `capsa spec
//! --rootless`: a user namespace mapping the user to root, state under $XDG_RUNTIME_DIR/capsa,
//! no cgroup (none is delegated here), and clear errors for what needs one.

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const USER: &str = "capsa-rootless";

/// The test's user, created for it and removed with it.
struct TestUser {
    uid: u32,
    gid: u32,
    created: bool,
}

impl TestUser {
    fn create() -> Self {
        let exists = Command::new("id")
            .arg(USER)
            .output()
            .unwrap()
            .status
            .success();
        if !exists {
            let st = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    USER,
                ])
                .status()
                .unwrap();
            assert!(st.success(), "useradd {USER}");
        }
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, USER]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        TestUser {
            uid: id("-u"),
            gid: id("-g"),
            created: !exists,
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if self.created {
            let _ = Command::new("userdel").arg(USER).status();
        }
    }
}

struct Rootless {
    user: TestUser,
    xdg: PathBuf,
    bundle: PathBuf,
}

impl Rootless {
    /// capsa as the user, with only XDG_RUNTIME_DIR set (so the default state root is used).
    fn capsa(&self, args: &[&str]) -> Output {
        let out = scratch().join(unique("rl-out"));
        let err = out.with_extension("err");
        let status = Command::new("setpriv")
            .arg(format!("--reuid={}", self.user.uid))
            .arg(format!("--regid={}", self.user.gid))
            .arg("--clear-groups")
            .arg("env")
            .arg("-i")
            .arg(format!("XDG_RUNTIME_DIR={}", self.xdg.display()))
            .arg("PATH=/usr/bin:/bin")
            .arg(BIN)
            .args(args)
            .current_dir(&self.bundle)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .status()
            .unwrap();
        let o = Output {
            status,
            stdout: std::fs::read(&out).unwrap_or_default(),
            stderr: std::fs::read(&err).unwrap_or_default(),
        };
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_file(&err);
        o
    }

    fn ok(&self, args: &[&str]) -> String {
        succeeded(self.capsa(args), format_args!("capsa {args:?} as {USER}"))
    }

    fn config(&self, f: impl FnOnce(&mut Value)) {
        let path = self.bundle.join("config.json");
        let mut c: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        f(&mut c);
        std::fs::write(&path, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
    }
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

#[test]
fn an_ordinary_user_runs_creates_and_deletes_a_rootless_container() {
    let mut w = World::new();
    let user = TestUser::create();
    let dir = scratch().join(unique("rootless"));
    let (xdg, bundle) = (dir.join("xdg"), dir.join("bundle"));
    std::fs::create_dir_all(&xdg).unwrap();
    std::fs::create_dir_all(&bundle).unwrap();
    w.dirs.push(dir.clone());
    for d in [&dir, &xdg, &bundle] {
        chown(d, user.uid, user.gid);
    }
    std::fs::set_permissions(&xdg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(setup())
        .arg(bundle.join("rootfs"))
        .status()
        .unwrap();
    assert!(st.success());
    let r = Rootless { user, xdg, bundle };

    // The user's own spec maps the user to root in a user namespace.
    r.ok(&["spec", "--rootless"]);
    r.config(|c| {
        c["process"]["terminal"] = json!(false);
        c["process"]["args"] = json!(["sh", "-c", "id -u; cat /proc/self/uid_map; exit 3"]);
    });
    let out = r.capsa(&["run", "r1"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    assert_eq!(fields, ["0", "0", &r.user.uid.to_string(), "1"], "{stdout}");

    // The full lifecycle, state under $XDG_RUNTIME_DIR/capsa.
    r.config(|c| c["process"]["args"] = json!(["sleep", "1000"]));
    r.ok(&["create", "r2"]);
    let state: Value = serde_json::from_str(&r.ok(&["state", "r2"])).unwrap();
    assert_eq!(state["status"], "created");
    let pid = state["pid"].as_i64().unwrap() as i32;
    w.pids.push(pid);
    assert!(r.xdg.join("capsa/r2/state.json").exists());
    r.ok(&["start", "r2"]);
    assert!(r.ok(&["list"]).contains("running"));
    let owner = std::fs::metadata(format!("/proc/{pid}")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&owner), r.user.uid);
    // No cgroup is delegated to this user: none was made, and pause says why it cannot.
    for h in ["memory", "pids", "freezer"] {
        assert!(!Path::new(&format!("/sys/fs/cgroup/{h}/capsa/r2")).exists());
    }
    let err = r.capsa(&["pause", "r2"]);
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("needs a cgroup"));
    r.ok(&["kill", "r2", "KILL"]);
    wait_exit(pid);
    reap(pid);
    r.ok(&["delete", "r2"]);
    assert_eq!(std::fs::read_dir(r.xdg.join("capsa")).unwrap().count(), 0);

    // Limits need a cgroup: a clear error, and nothing is left.
    r.config(|c| c["linux"]["resources"] = json!({"memory": {"limit": 67108864}}));
    let out = r.capsa(&["run", "r3"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cgroup"), "{err}");
    assert_eq!(std::fs::read_dir(r.xdg.join("capsa")).unwrap().count(), 0);
}
