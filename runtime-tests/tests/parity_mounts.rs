//! runc parity for mounts and the rootfs: the same bundle run with capsa and with runc 1.1.5
//! (`on_both`) where runc knows the feature; capsa alone, said so in the test's comment,
//! where runc 1.1.5 does not (the reference is then the runtime-spec and runc 1.2).

mod common;
use common::*;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A directory of the test's own under scratch, removed (with any mount the test made in it)
/// when the guard goes.
struct HostDir {
    path: PathBuf,
    mounts: Vec<PathBuf>,
}

impl HostDir {
    fn new(prefix: &str) -> Self {
        let path = scratch().join(unique(prefix));
        std::fs::create_dir_all(&path).unwrap();
        HostDir {
            path,
            mounts: Vec::new(),
        }
    }

    /// A tmpfs on `rel` (made), unmounted by the guard.
    fn tmpfs(&mut self, rel: &str) -> PathBuf {
        let p = self.path.join(rel);
        std::fs::create_dir_all(&p).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &p,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=8m"),
        )
        .unwrap();
        self.mounts.push(p.clone());
        p
    }

    fn str(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn add_mount(c: &mut Value, mount: Value) {
    c["mounts"].as_array_mut().unwrap().push(mount);
}

/// A bundle whose container has a user namespace mapping root to an unprivileged range.
fn userns_bundle(w: &mut World, args: &[&str]) -> Bundle {
    let mut b = w.bundle(args);
    b.in_user_namespace(&[]);
    b
}

const WRITE_PROBE: &str = "touch /mnt/a 2>/dev/null && echo top-rw || echo top-ro; \
                           touch /mnt/sub/b 2>/dev/null && echo sub-rw || echo sub-ro";

/// `rro` (Kubernetes' RecursiveReadOnlyMounts, Docker 25+): an rbind whose submounts are
/// read-only too, where `ro` leaves them writable. runc 1.1 knows it (mount_setattr).
#[test]
fn rro_makes_every_mount_of_an_rbind_read_only() {
    let mut host = HostDir::new("rro");
    host.tmpfs("sub");
    on_both(|w| {
        let mut b = w.bundle(&["sh", "-c", WRITE_PROBE]);
        b.set(|c| {
            add_mount(
                c,
                json!({"destination": "/mnt", "type": "bind", "source": host.str(),
                       "options": ["rbind", "rro"]}),
            )
        });
        assert_eq!(w.run_ok(&b), "top-ro\nsub-ro\n");
        // Plain "ro" only reaches the top mount: the difference rro makes.
        b.set(|c| {
            c["mounts"].as_array_mut().unwrap().last_mut().unwrap()["options"] =
                json!(["rbind", "ro"])
        });
        assert_eq!(w.run_ok(&b), "top-ro\nsub-rw\n");
    });
}

/// The other recursive options go the same way: `rnoexec` reaches a submount.
#[test]
fn rnoexec_reaches_the_submounts_of_an_rbind() {
    let mut host = HostDir::new("rnoexec");
    let sub = host.tmpfs("sub");
    std::fs::copy(setup().join("bin/busybox"), sub.join("busybox")).unwrap();
    on_both(|w| {
        let mut b = w.bundle(&[
            "sh",
            "-c",
            "/mnt/sub/busybox true 2>/dev/null && echo exec || echo noexec",
        ]);
        b.set(|c| {
            add_mount(
                c,
                json!({"destination": "/mnt", "type": "bind", "source": host.str(),
                       "options": ["rbind", "rnoexec"]}),
            )
        });
        assert_eq!(w.run_ok(&b), "noexec\n");
    });
}

/// `idmap`: the bind shows the host's files with ids shifted by the container's mappings, so
/// host root's files are root's inside a user namespace (and what it creates is host root's).
/// capsa only: runc 1.1.5 has no idmap (runc 1.2 does it with MOUNT_ATTR_IDMAP, as capsa).
#[test]
fn an_idmap_bind_shows_host_roots_files_as_the_containers_root() {
    let host = HostDir::new("idmap");
    std::fs::write(host.path.join("f"), "x").unwrap();
    let mut w = World::new();
    let mut b = userns_bundle(
        &mut w,
        &[
            "sh",
            "-c",
            "stat -c %u /mnt/f; touch /mnt/new && echo wrote",
        ],
    );
    b.set(|c| {
        add_mount(
            c,
            json!({"destination": "/mnt", "type": "bind", "source": host.str(),
                   "options": ["bind", "idmap"]}),
        )
    });
    assert_eq!(w.run_ok(&b), "0\nwrote\n");
    let owner =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(host.path.join("new")).unwrap());
    assert_eq!(owner, 0, "created through the id-mapped mount as host root");
    // Without it, host root is unmapped there: nobody, and read-only to the container.
    b.set(|c| c["mounts"].as_array_mut().unwrap().last_mut().unwrap()["options"] = json!(["bind"]));
    std::fs::remove_file(host.path.join("new")).unwrap();
    assert_eq!(w.run(&b).1, "65534\n");
}

/// A bind source inside a directory only host root may search: the container's root, mapped
/// to an unprivileged range, could not reach it; the runtime opens it for init (as runc does).
#[test]
fn a_bind_source_behind_a_root_only_directory_reaches_a_user_namespace() {
    let host = HostDir::new("private");
    let data = host.path.join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("file"), "secret-ok\n").unwrap();
    std::fs::set_permissions(&host.path, std::fs::Permissions::from_mode(0o700)).unwrap();
    on_both(|w| {
        let mut b = userns_bundle(w, &["cat", "/mnt/file"]);
        b.set(|c| {
            add_mount(
                c,
                json!({"destination": "/mnt", "type": "bind", "source": data,
                       "options": ["rbind", "ro"]}),
            )
        });
        assert_eq!(w.run_ok(&b), "secret-ok\n");
    });
}

/// /proc or /sys as a symlink in the image: refused (CVE-2019-19921, CVE-2023-27561), and the
/// link's target is not created in the image on the host.
#[test]
fn proc_or_sys_through_a_symlink_in_the_rootfs_is_refused() {
    on_both(|w| {
        for dir in ["proc", "sys"] {
            let b = w.bundle(&["true"]);
            let link = b.rootfs().join(dir);
            std::fs::remove_dir_all(&link).unwrap();
            std::os::unix::fs::symlink("/elsewhere", &link).unwrap();
            let (code, _, err) = w.run(&b);
            assert_ne!(code, 0, "/{dir} through a symlink was mounted");
            assert!(err.contains("ordinary directory"), "{err}");
            assert!(
                !b.rootfs().join("elsewhere").exists(),
                "/{dir}: link target made"
            );
        }
    });
}

/// The mounts of a process's mount namespace as its mountinfo lists them: (id, parent, root,
/// mount point, fstype).
fn mount_table(pid: i32) -> Vec<(u32, u32, String, String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-").unwrap();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[3].to_string(),
                f[4].to_string(),
                f[sep + 1].to_string(),
            )
        })
        .collect()
}

/// `--no-pivot` leaves the old root under the rootfs in the container's mount namespace;
/// its whole procfs and sysfs mounts go first (runc's msMoveRoot), or, where a user
/// namespace locks them, are covered with a tmpfs. Seen from a process the createContainer
/// hook leaves in that namespace with the old root as its root: every procfs or sysfs it
/// can see belongs to the container's rootfs mount, or is covered.
fn no_pivot_scenario(w: &mut World, user_ns: bool) {
    let marker = format!("9{}", unique("").replace('-', ""));
    let mut b = w.bundle(&["true"]);
    if user_ns {
        b.in_user_namespace(&[]);
    }
    // runc hands hooks its own descriptors (sync socket, log pipe, exec.fifo) and waits
    // for whoever holds them: the watcher keeps none.
    let line = format!(
        "exec 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-; setsid sleep {marker} </dev/null >/dev/null 2>&1 &"
    );
    b.set(|c| {
        c["hooks"] = json!({"createContainer": [{"path": "/bin/sh", "args": ["sh", "-c", line]}]})
    });
    let id = w.id("nopivot");
    w.ok(&["create", "--no-pivot", "--bundle", b.dir_str(), &id]);
    let pid = w.state(&id)["pid"].as_i64().unwrap() as i32;
    w.pids.push(pid);
    // The hook has returned, its child lives on (it may not have reached `sleep` yet: its
    // command line is then the hook's, and it is in the namespace all the same).
    let watcher = processes_mentioning(&marker)
        .first()
        .expect("the hook's sleep")
        .0;
    let table = mount_table(watcher);
    w.ok(&["delete", "--force", &id]);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(watcher),
        nix::sys::signal::Signal::SIGKILL,
    );
    let rootfs = b.rootfs();
    let top = table
        .iter()
        .find(|m| m.3 == "/" && Path::new(&m.2) == rootfs)
        .unwrap_or_else(|| panic!("no rootfs mount at / in {table:#?}"));
    let under_rootfs = |mut id: u32| loop {
        if id == top.0 {
            return true;
        }
        match table.iter().find(|m| m.0 == id) {
            Some(m) if m.1 != m.0 => id = m.1,
            _ => return false,
        }
    };
    let covered = |id: u32, at: &str| {
        table
            .iter()
            .any(|m| m.1 == id && m.3 == at && m.4 == "tmpfs")
    };
    let left: Vec<_> = table
        .iter()
        .filter(|m| (m.4 == "proc" || m.4 == "sysfs") && m.2 == "/")
        .filter(|m| !under_rootfs(m.0) && !covered(m.0, &m.3))
        .collect();
    assert!(left.is_empty(), "host procfs/sysfs left: {left:#?}");
    if !user_ns {
        let pseudo_parent = |m: &&(u32, u32, String, String, String)| {
            table
                .iter()
                .any(|p| p.0 == m.1 && p.3 == m.3 && (p.4 == "proc" || p.4 == "sysfs"))
        };
        let covers: Vec<_> = table
            .iter()
            .filter(|m| m.4 == "tmpfs")
            .filter(pseudo_parent)
            .collect();
        assert!(covers.is_empty(), "covered, not unmounted: {covers:#?}");
    }
}

#[test]
fn no_pivot_leaves_no_procfs_or_sysfs_of_the_host_in_the_namespace() {
    on_both(|w| no_pivot_scenario(w, false));
}

#[test]
fn no_pivot_in_a_user_namespace_covers_the_hosts_procfs_and_sysfs() {
    on_both(|w| no_pivot_scenario(w, true));
}

/// A read-only tmpfs on /dev: devices and /dev/pts go in first, then it is made read-only
/// (as runc does), instead of failing on "creating /dev/pts: Read-only file system".
#[test]
fn a_read_only_dev_is_populated_before_it_is_made_read_only() {
    on_both(|w| {
        let mut b = w.bundle(&[
            "sh",
            "-c",
            "test -c /dev/null && test -d /dev/pts && echo populated; \
             touch /dev/x 2>/dev/null && echo rw || echo ro",
        ]);
        b.set(|c| {
            for m in c["mounts"].as_array_mut().unwrap() {
                if m["destination"] == "/dev" {
                    m["options"].as_array_mut().unwrap().push(json!("ro"));
                }
            }
        });
        assert_eq!(w.run_ok(&b), "populated\nro\n");
    });
}

/// Filesystem options on a bind (`mode=755`, as a tmpfs entry copied to a bind has them) mean
/// nothing to a bind: dropped, as runc drops them.
#[test]
fn filesystem_options_on_a_bind_are_ignored() {
    let host = HostDir::new("bindopts");
    std::fs::write(host.path.join("f"), "bound\n").unwrap();
    on_both(|w| {
        let mut b = w.bundle(&["cat", "/mnt/f"]);
        b.set(|c| {
            add_mount(
                c,
                json!({"destination": "/mnt", "type": "bind", "source": host.str(),
                       "options": ["rbind", "mode=755", "size=65536k"]}),
            )
        });
        assert_eq!(w.run_ok(&b), "bound\n");
    });
}

fn root_mount_line() -> String {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .unwrap()
        .to_string()
}

/// No mount namespace in the config: the container shares the host's (the spec allows it),
/// chrooted into its rootfs, and nothing of the host's mount table changes: no propagation
/// change of "/", no bind of the rootfs. capsa only: runc 1.1.5 makes the host's "/" a slave
/// and leaves a bind of the rootfs on the host (seen in a private namespace made for the
/// purpose), which the leak check would rightly report. An exec there runs chrooted too.
#[test]
fn without_a_mount_namespace_the_container_runs_in_the_hosts_and_mounts_nothing() {
    let mut w = World::new();
    let mut b = w.bundle(&["sleep", "100"]);
    b.set(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "mount");
        c["mounts"] = json!([]);
        c["linux"]["maskedPaths"] = json!([]);
        c["linux"]["readonlyPaths"] = json!([]);
        c["root"]["readonly"] = json!(false);
    });
    let before = root_mount_line();
    let id = w.id("nomntns");
    let pid = w.create(&id, &b);
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap(),
        std::fs::read_link("/proc/self/ns/mnt").unwrap()
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/root")).unwrap(),
        b.rootfs()
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(b.dir_str()), "{mountinfo}");
    assert_eq!(root_mount_line(), before);
    // An exec joins it there, chrooted as init is, not at the host's root.
    w.ok(&["start", &id]);
    assert_eq!(
        w.ok(&["exec", &id, "cat", "/etc/motd"]),
        "capsa busybox fixture\n"
    );
    w.ok(&["delete", "--force", &id]);
    b.set(|c| c["process"]["args"] = json!(["sh", "-c", "ls /proc | wc -l; cat /etc/motd"]));
    // A run shows the unmounted /proc of the image.
    assert_eq!(w.run_ok(&b), "0\ncapsa busybox fixture\n");
    assert_eq!(root_mount_line(), before);
    // Something that would need a mount is refused, naming it.
    b.set(|c| c["mounts"] = json!([{"destination": "/proc", "type": "proc", "source": "proc"}]));
    let (code, _, err) = w.run(&b);
    assert_ne!(code, 0);
    assert!(err.contains("mounts: needs a mount namespace"), "{err}");
}

/// A masked path the image has behind a symlink loop resolves to nothing to hide: the create
/// goes on, and the container meets the same loop. capsa only: runc 1.1.5 fails the create
/// ("too many levels of symbolic links"); capsa skips it as it skips a missing path.
#[test]
fn a_masked_path_behind_a_symlink_loop_does_not_fail_the_create() {
    let mut w = World::new();
    let mut b = w.bundle(&["sh", "-c", "cat /a1/x 2>/dev/null || echo unreachable"]);
    std::os::unix::fs::symlink("a2", b.rootfs().join("a1")).unwrap();
    std::os::unix::fs::symlink("a1", b.rootfs().join("a2")).unwrap();
    b.set(|c| {
        c["linux"]["maskedPaths"]
            .as_array_mut()
            .unwrap()
            .push(json!("/a1/x"))
    });
    assert_eq!(w.run_ok(&b), "unreachable\n");
}
