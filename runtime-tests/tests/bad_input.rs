//! Bad input: one clear line naming the field or object, a non-zero exit, nothing left.

mod common;
use common::*;
use serde_json::json;

fn create_fails(w: &mut World, b: &Bundle) -> String {
    let id = w.id("bad");
    let err = w.fails(&["create", "--bundle", b.dir_str(), &id]);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(w.fails(&["state", &id]).contains("does not exist"));
    err
}

#[test]
fn malformed_json_names_the_file_and_position() {
    let mut w = World::new();
    let b = w.bundle(&["true"]);
    std::fs::write(
        b.dir.join("config.json"),
        "{\"ociVersion\": \"1.0.2\", \"process\": ",
    )
    .unwrap();
    let err = create_fails(&mut w, &b);
    assert!(
        err.contains("config.json") && err.contains("line 1"),
        "{err}"
    );
}

#[test]
fn a_wrong_type_names_the_field() {
    let mut w = World::new();
    let mut b = w.bundle(&["true"]);
    b.set(|c| c["process"]["user"]["uid"] = json!("root"));
    let err = create_fails(&mut w, &b);
    assert!(
        err.contains("process.user.uid") && err.contains("invalid type"),
        "{err}"
    );
}

#[test]
fn incomplete_configs_name_what_is_missing() {
    let mut w = World::new();
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "process.args",
            Box::new(|c| c["process"]["args"] = json!([])),
        ),
        (
            "process",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("process");
            }),
        ),
        (
            "root",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("root");
            }),
        ),
        (
            "ociVersion",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("ociVersion");
            }),
        ),
        (
            "process.cwd",
            Box::new(|c| c["process"]["cwd"] = json!("relative/dir")),
        ),
        (
            "linux.namespaces[5]",
            Box::new(|c| {
                c["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"type": "pid"}))
            }),
        ),
        (
            "hostname",
            Box::new(|c| {
                c["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|n| n["type"] != "uts");
            }),
        ),
        (
            "linux.sysctl.kernel.panic",
            Box::new(|c| c["linux"]["sysctl"] = json!({"kernel.panic": "1"})),
        ),
        (
            "process.rlimits[0]",
            Box::new(|c| {
                c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5}])
            }),
        ),
        (
            "process.capabilities",
            Box::new(|c| c["process"]["capabilities"]["bounding"] = json!(["CAP_FLY"])),
        ),
        (
            "linux.uidMappings",
            Box::new(|c| {
                c["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"type": "user"}))
            }),
        ),
        (
            "linux.namespaces[0].path",
            Box::new(|c| c["linux"]["namespaces"][0]["path"] = json!("/proc/999999999/ns/pid")),
        ),
        (
            "linux.cgroupsPath",
            Box::new(|c| c["linux"]["cgroupsPath"] = json!("/a/../../etc")),
        ),
        (
            "hooks.poststart[0].path",
            Box::new(|c| c["hooks"] = json!({"poststart": [{"path": "relative"}]})),
        ),
    ];
    for (field, edit) in cases {
        let mut b = w.bundle(&["true"]);
        b.set(|c| edit(c));
        let err = create_fails(&mut w, &b);
        assert!(err.contains(field), "expected {field:?} in: {err}");
    }
}

#[test]
fn a_missing_rootfs_is_named() {
    let mut w = World::new();
    let mut b = w.bundle(&["true"]);
    b.set(|c| c["root"]["path"] = json!("no-such-rootfs"));
    let err = create_fails(&mut w, &b);
    assert!(
        err.contains("root.path") && err.contains("no-such-rootfs") && err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn a_missing_bundle_or_config_is_named() {
    let mut w = World::new();
    let id = w.id("nobundle");
    let err = w.fails(&["create", "--bundle", "/nonexistent/bundle", &id]);
    assert!(
        err.contains("bundle /nonexistent/bundle") && err.contains("No such file"),
        "{err}"
    );
    let b = w.bundle(&["true"]);
    std::fs::remove_file(b.dir.join("config.json")).unwrap();
    let err = create_fails(&mut w, &b);
    assert!(err.contains("config.json not found"), "{err}");
}

#[test]
fn unsupported_mount_types_and_options_are_refused() {
    let mut w = World::new();
    for (mount, field) in [
        (
            json!({"destination": "/x", "type": "nosuchfs", "source": "x"}),
            "mounts[7].type",
        ),
        (
            json!({"destination": "/x", "type": "tmpfs", "source": "tmpfs", "options": ["idmap"]}),
            "mounts[7].options",
        ),
        (
            json!({"destination": "x", "type": "tmpfs", "source": "tmpfs"}),
            "mounts[7].destination",
        ),
    ] {
        let mut b = w.bundle(&["true"]);
        b.set(|c| c["mounts"].as_array_mut().unwrap().push(mount.clone()));
        let err = create_fails(&mut w, &b);
        assert!(err.contains(field), "expected {field} in: {err}");
    }
    // An option the kernel rejects fails inside init; the message names the mount.
    let mut b = w.bundle(&["true"]);
    b.set(|c| c["mounts"].as_array_mut().unwrap().push(json!({"destination": "/x", "type": "tmpfs", "source": "tmpfs", "options": ["size=banana"]})));
    let err = create_fails(&mut w, &b);
    assert!(
        err.contains("mounting tmpfs on /x (type tmpfs): Invalid argument"),
        "{err}"
    );
}

#[test]
fn ids_are_validated_before_any_path_is_built() {
    let mut w = World::new();
    let b = w.bundle(&["true"]);
    for bad in ["a/b", "..", ".", "../escape", "a b"] {
        let err = w.fails(&["create", "--bundle", b.dir_str(), bad]);
        assert!(err.contains("invalid container id"), "{bad}: {err}");
        assert!(w.fails(&["state", bad]).contains("invalid container id"));
    }
    assert!(!w.root.join("..").join("escape").exists());
}

#[test]
fn a_duplicate_id_is_refused_and_the_first_container_is_untouched() {
    let mut w = World::new();
    let b = w.bundle(&["sleep", "100"]);
    let id = w.id("dup");
    let pid = w.create(&id, &b);
    let err = w.fails(&["create", "--bundle", b.dir_str(), &id]);
    assert!(
        err.contains(&format!("container with id {id} already exists")),
        "{err}"
    );
    assert_eq!(w.status(&id), "created");
    w.ok(&["delete", &id]);
    wait_exit(pid);
}

#[test]
fn unknown_ids_say_does_not_exist_for_every_command() {
    let w = World::new();
    for args in [
        vec!["state", "ghost"],
        vec!["start", "ghost"],
        vec!["kill", "ghost"],
        vec!["delete", "ghost"],
    ] {
        let err = w.fails(&args);
        assert!(
            err.contains("container ghost does not exist"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn json_log_lines_are_what_containerd_reads() {
    let w = World::new();
    let log = scratch().join(unique("log.json"));
    let out = w.capsa(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "state",
        "ghost",
    ]);
    assert_eq!(out.status.code(), Some(1));
    // with --log, stderr gets the bare message (as runc)
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "container ghost does not exist\n"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_file(&log).unwrap();
    let line = text.lines().last().unwrap();
    let keys: Vec<&str> = line
        .trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .map(|kv| kv.split(':').next().unwrap())
        .collect();
    assert_eq!(keys, ["\"level\"", "\"msg\"", "\"time\""], "{line}");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["level"], "error");
    assert_eq!(v["msg"], "container ghost does not exist");
    assert!(v["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn terminal_and_console_socket_must_agree() {
    let mut w = World::new();
    let mut b = w.bundle(&["true"]);
    b.set(|c| c["process"]["terminal"] = json!(true));
    let err = create_fails(&mut w, &b);
    assert!(
        err.contains("cannot allocate a tty") && err.contains("--console-socket"),
        "{err}"
    );
    let b = w.bundle(&["true"]);
    let id = w.id("sock");
    let err = w.fails(&[
        "create",
        "--console-socket",
        "/tmp/x.sock",
        "--bundle",
        b.dir_str(),
        &id,
    ]);
    assert!(err.contains("process.terminal is false"), "{err}");
}

#[test]
fn an_argument_with_a_nul_byte_is_named() {
    let mut w = World::new();
    let mut b = w.bundle(&["echo", "a\u{0}b"]);
    b.set(|_| {});
    let err = create_fails(&mut w, &b);
    assert!(err.contains("process.args[1] holds a NUL byte"), "{err}");
}

#[test]
fn an_init_error_longer_than_the_channel_still_arrives() {
    // 70000 additional gids: setgroups fails (EINVAL, over NGROUPS_MAX), and the error names
    // every one of them, about 470 KB of text: it arrives, cut, with its cause.
    let mut w = World::new();
    let mut b = w.bundle(&["true"]);
    b.set(|c| c["process"]["user"]["additionalGids"] = json!((1..=70000).collect::<Vec<u32>>()));
    let err = create_fails(&mut w, &b);
    assert!(
        err.contains("setting additional gids [1, 2, 3")
            && err.contains("truncated")
            && err.contains("Invalid argument"),
        "{err}"
    );
    assert!(err.len() < 16 * 1024, "{} bytes", err.len());
}

#[test]
fn a_rootfs_reached_through_a_symlink_is_refused() {
    let mut w = World::new();
    let b = w.bundle(&["true"]);
    // The link points at a directory holding only a shell: if it were followed, create would
    // make dev/, proc/, sys/ (and device nodes) in it.
    let elsewhere = b.dir.join("elsewhere");
    std::fs::create_dir_all(elsewhere.join("bin")).unwrap();
    std::fs::copy(b.rootfs().join("bin/busybox"), elsewhere.join("bin/sh")).unwrap();
    let listing = |d: &std::path::Path| {
        let mut names: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let before = listing(&elsewhere);
    let real_rootfs = b.dir.join("real-rootfs");
    std::fs::rename(b.rootfs(), &real_rootfs).unwrap();
    std::os::unix::fs::symlink(&elsewhere, b.rootfs()).unwrap();
    let err = create_fails(&mut w, &b);
    assert!(
        err.contains("root.path") && err.contains("symlink") && err.contains("rootfs"),
        "{err}"
    );
    assert_eq!(
        listing(&elsewhere),
        before,
        "create wrote into the link's target"
    );

    // The bundle itself may be reached through a link (runc chdirs into it): only what
    // root.path names below it is checked.
    std::fs::remove_file(b.rootfs()).unwrap();
    std::fs::rename(&real_rootfs, b.rootfs()).unwrap();
    let link = b.dir.with_extension("link");
    std::os::unix::fs::symlink(&b.dir, &link).unwrap();
    let id = w.id("linked-bundle");
    let out = w.capsa(&["run", "--bundle", link.to_str().unwrap(), &id]);
    let _ = std::fs::remove_file(&link);
    succeeded(out, format_args!("run through a linked bundle"));
}

#[test]
fn a_device_path_holding_a_file_of_the_image_is_refused_and_the_file_kept() {
    let mut w = World::new();
    let mut b = w.bundle(&["true"]);
    // No tmpfs on /dev: the image's own /dev is where nodes are made.
    b.set(|c| {
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.retain(|m| m["destination"] != "/dev");
        c["linux"]["devices"] =
            json!([{"path": "/dev/mydev", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666}]);
    });
    let dev = b.rootfs().join("dev");

    // Nothing in the way: the nodes are made in the image's /dev; a second run finds the
    // same nodes there and keeps them.
    for _ in 0..2 {
        w.run_ok(&b);
    }
    let meta = std::fs::metadata(dev.join("mydev")).unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(meta.file_type().is_char_device() && meta.rdev() == nix::sys::stat::makedev(1, 3));

    for (name, spec_entry) in [("mydev", "/dev/mydev"), ("ptmx", "/dev/ptmx")] {
        let path = dev.join(name);
        std::fs::remove_file(&path).ok();
        std::fs::write(&path, "image data").unwrap();
        let err = create_fails(&mut w, &b);
        assert!(
            err.contains(&format!("creating device {spec_entry}"))
                && err.contains("the rootfs holds a regular file there"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "image data");
        std::fs::remove_file(&path).unwrap();
    }
}
