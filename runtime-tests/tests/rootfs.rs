//! The container's filesystem: mounts, devices, masked and read-only paths, read-only root.

mod common;
use common::*;
use serde_json::json;

#[test]
fn default_devices_exist_with_the_right_numbers() {
    let mut w = World::new();
    let script = "for d in null zero full random urandom tty; do echo $d $(stat -c '%F %t:%T %a' /dev/$d); done; \
                  for l in fd stdin stdout stderr ptmx; do readlink /dev/$l; done; test -d /dev/shm && echo shm";
    let b = w.bundle(&["sh", "-c", script]);
    let out = w.run_ok(&b);
    let expect = [
        ("null", "1:3"),
        ("zero", "1:5"),
        ("full", "1:7"),
        ("random", "1:8"),
        ("urandom", "1:9"),
        ("tty", "5:0"),
    ];
    for (name, nums) in expect {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap();
        assert_eq!(
            line,
            format!("{name} character special file {nums} 666"),
            "{out}"
        );
    }
    for link in [
        "/proc/self/fd",
        "/proc/self/fd/0",
        "/proc/self/fd/1",
        "/proc/self/fd/2",
        "pts/ptmx",
    ] {
        assert!(out.lines().any(|l| l == link), "missing link {link}: {out}");
    }
    assert!(out.ends_with("shm\n"));
}

#[test]
fn spec_devices_are_created_with_mode_and_owner() {
    let mut w = World::new();
    let mut b = w.bundle(&["stat", "-c", "%F %t:%T %a %u:%g", "/dev/mydev"]);
    b.set(|c| {
        c["linux"]["devices"] = json!([{"path": "/dev/mydev", "type": "c", "major": 1, "minor": 5,
                                        "fileMode": 0o640, "uid": 1000, "gid": 5}]);
    });
    assert_eq!(w.run_ok(&b).trim(), "character special file 1:5 640 1000:5");
}

#[test]
fn masked_paths_read_empty_and_readonly_paths_refuse_writes() {
    let mut w = World::new();
    let script = "wc -c < /proc/timer_list; wc -c < /proc/keys; ls /sys/firmware | wc -l; \
                  echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo WRITABLE || echo ro; \
                  grep ' /proc/sys ' /proc/self/mountinfo | grep -c ' ro,'";
    let b = w.bundle(&["sh", "-c", script]);
    let lines: Vec<String> = w.run_ok(&b).lines().map(str::to_string).collect();
    assert_eq!(lines, ["0", "0", "0", "ro", "1"]);
}

#[test]
fn readonly_root_refuses_writes_but_tmpfs_mounts_accept_them() {
    let mut w = World::new();
    let b = w.bundle(&[
        "sh",
        "-c",
        "touch /newfile 2>/dev/null && echo WRITABLE || echo ro; touch /dev/shm/x && echo shm-ok",
    ]);
    assert_eq!(w.run_ok(&b), "ro\nshm-ok\n");
}

#[test]
fn tmpfs_bind_and_propagation_options_take_effect() {
    let mut w = World::new();
    let host_dir = scratch().join(unique("hostdir"));
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("data"), "from host\n").unwrap();
    let mut b = w.bundle(&[
        "sh",
        "-c",
        "stat -c %a /scratch; grep ' /scratch ' /proc/self/mountinfo | grep -o 'size=[0-9]*k'; \
         cat /data/data; touch /data/x 2>/dev/null && echo WRITABLE || echo ro; \
         grep ' /data ' /proc/self/mountinfo | grep -o 'nosuid' | head -1",
    ]);
    let hd = host_dir.to_str().unwrap().to_string();
    b.set(|c| {
        let m = c["mounts"].as_array_mut().unwrap();
        m.push(
            json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                      "options": ["nosuid", "mode=710", "size=2048k"]}),
        );
        m.push(json!({"destination": "/data", "type": "bind", "source": hd,
                      "options": ["rbind", "ro", "nosuid", "rprivate"]}));
    });
    let out = w.run_ok(&b);
    std::fs::remove_dir_all(&host_dir).unwrap();
    assert_eq!(out, "710\nsize=2048k\nfrom host\nro\nnosuid\n");
}

#[test]
fn a_file_can_be_bind_mounted_onto_a_path_that_does_not_exist_yet() {
    let mut w = World::new();
    let host_file = scratch().join(unique("hostfile"));
    std::fs::write(&host_file, "one file\n").unwrap();
    let mut b = w.bundle(&["cat", "/etc/extra/config.txt"]);
    let hf = host_file.to_str().unwrap().to_string();
    b.set(|c| {
        c["mounts"].as_array_mut().unwrap().push(
            json!({"destination": "/etc/extra/config.txt", "type": "none", "source": hf, "options": ["bind", "ro"]}));
    });
    let out = w.run_ok(&b);
    std::fs::remove_file(&host_file).unwrap();
    assert_eq!(out, "one file\n");
}

#[test]
fn tmpcopyup_keeps_the_image_content_in_the_new_tmpfs() {
    let mut w = World::new();
    let mut b = w.bundle(&["sh", "-c", "cat /etc/motd; ls -l /etc/passwd | cut -c1-10; awk '$5 == \"/etc\"' /proc/self/mountinfo | wc -l; readlink /etc/link"]);
    std::os::unix::fs::symlink("motd", b.rootfs().join("etc/link")).unwrap();
    b.set(|c| {
        c["root"]["readonly"] = json!(false);
        c["mounts"].as_array_mut().unwrap().push(
            json!({"destination": "/etc", "type": "tmpfs", "source": "tmpfs", "options": ["tmpcopyup", "mode=755"]}));
    });
    assert_eq!(w.run_ok(&b), "capsa busybox fixture\n-rw-r--r--\n1\nmotd\n");
}

#[test]
fn cgroup_mount_shows_the_containers_own_cgroup() {
    let mut w = World::new();
    let b = w.bundle(&["sh", "-c", "ls /sys/fs/cgroup | sort | tr '\\n' ' '; echo; cat /sys/fs/cgroup/pids/cgroup.procs; touch /sys/fs/cgroup/pids/x 2>/dev/null || echo ro"]);
    let out = w.run_ok(&b);
    let mut lines = out.lines();
    let listing = lines.next().unwrap();
    for ctrl in ["cpu", "memory", "pids", "freezer", "devices"] {
        assert!(
            listing.split_whitespace().any(|d| d == ctrl),
            "{ctrl} missing in {listing}"
        );
    }
    // Only the container's processes are in the cgroup it sees (sh, cat: pids in its namespace).
    assert_eq!(lines.next(), Some("1"));
    assert_eq!(lines.last(), Some("ro"));
}

#[test]
fn a_mount_destination_symlinked_to_a_host_path_stays_inside_the_rootfs() {
    let mut w = World::new();
    let victim = scratch().join(unique("victim"));
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("keep"), "host data").unwrap();
    let mut b = w.bundle(&["sh", "-c", "touch /evil/inside && echo done"]);
    // An absolute symlink in the image pointing at a host directory.
    std::os::unix::fs::symlink(&victim, b.rootfs().join("evil")).unwrap();
    b.set(|c| {
        c["mounts"].as_array_mut().unwrap().push(
            json!({"destination": "/evil", "type": "tmpfs", "source": "tmpfs", "options": ["mode=777"]}));
    });
    assert_eq!(w.run_ok(&b), "done\n");
    // The host directory got no mount and no file; the tmpfs went to rootfs/<victim path>.
    assert!(!victim.join("inside").exists());
    assert_eq!(
        std::fs::read_to_string(victim.join("keep")).unwrap(),
        "host data"
    );
    assert!(b.rootfs().join(victim.strip_prefix("/").unwrap()).is_dir());
    std::fs::remove_dir_all(&victim).unwrap();
}

#[test]
fn sysctls_are_written_in_the_containers_namespace() {
    let mut w = World::new();
    let mut b = w.bundle(&[
        "sh",
        "-c",
        "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni",
    ]);
    b.set(|c| {
        c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1", "kernel.shmmni": "1234"});
        c["linux"]["readonlyPaths"] = json!([]);
    });
    let host_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    assert_eq!(w.run_ok(&b), "1\n1234\n");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_forward
    );
}

/// rootfsPropagation "rshared" (CRI's bidirectional volumes): "/" of the container is
/// shared, which made the rootfs's parent mount shared and pivot_root refuse it (EINVAL)
/// until that mount alone is made private first, as runc does.
#[test]
fn rshared_rootfs_propagation_runs_and_the_root_is_shared() {
    let mut w = World::new();
    let mut b = w.bundle(&[
        "sh",
        "-c",
        "grep -E '^[0-9]+ [0-9]+ [^ ]+ [^ ]+ / ' /proc/self/mountinfo",
    ]);
    b.set(|c| c["linux"]["rootfsPropagation"] = json!("rshared"));
    let out = w.run_ok(&b);
    assert!(out.contains(" shared:"), "{out}");
}
