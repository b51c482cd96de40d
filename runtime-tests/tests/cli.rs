//! The command line itself: version, spec, features, runc's flag spellings.

mod common;
use common::*;

#[test]
fn version_prints_three_lines_like_runc() {
    let w = World::new();
    let out = w.ok(&["--version"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("capsa version "));
    assert!(lines[1].starts_with("commit: "));
    assert!(lines[2].starts_with("spec: 1."));
}

#[test]
fn spec_writes_a_config_and_refuses_to_overwrite_it() {
    let w = World::new();
    let dir = scratch().join(unique("spec"));
    std::fs::create_dir_all(&dir).unwrap();
    w.ok(&["spec", "--bundle", dir.to_str().unwrap()]);
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(c["process"]["args"][0], "sh");
    assert_eq!(c["root"]["path"], "rootfs");
    let err = w.fails(&["spec", "--bundle", dir.to_str().unwrap()]);
    assert!(err.contains("exists"), "{err}");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    // A dangling link planted at config.json is not followed to create its target.
    let target = dir.join("planted-target");
    std::os::unix::fs::symlink(&target, dir.join("config.json")).unwrap();
    let err = w.fails(&["spec", "--bundle", dir.to_str().unwrap()]);
    assert!(err.contains("exists"), "{err}");
    assert!(!target.exists(), "the link was followed");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    w.ok(&["spec", "--rootless", "-b", dir.to_str().unwrap()]);
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let ns: Vec<&str> = c["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert!(ns.contains(&"user") && !ns.contains(&"network"), "{ns:?}");
    assert_eq!(c["linux"]["uidMappings"][0]["containerID"], 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn features_is_an_oci_features_document() {
    let w = World::new();
    let f: serde_json::Value = serde_json::from_str(&w.ok(&["features"])).unwrap();
    assert_eq!(f["ociVersionMin"], "1.0.0");
    let hooks = f["hooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 6);
    let ns = f["linux"]["namespaces"].as_array().unwrap();
    assert!(ns.iter().any(|n| n == "time"));
    assert!(f["linux"]["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "CAP_SYS_ADMIN"));
    assert!(f["mountOptions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o == "rbind"));
}

#[test]
fn flags_go_before_or_after_the_id_with_space_or_equals() {
    let mut w = World::new();
    let b = w.bundle(&["sleep", "100"]);
    let id = w.id("flags");
    let pidfile = b.dir.join("p");
    // runc style: the id first, flags after it, both `--flag value` and `--flag=value`.
    w.ok(&[
        "create",
        &id,
        &format!("--bundle={}", b.dir_str()),
        "--pid-file",
        pidfile.to_str().unwrap(),
    ]);
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    w.pids.push(pid);
    let out = w.ok(&["--log-format=json", "state", &id]);
    assert!(out.contains("\"created\""));
    w.ok(&["kill", &id, "SIGKILL"]);
    wait_exit(pid);
    w.ok(&["delete", &id, "--force"]);
}

#[test]
fn a_relative_pid_file_is_relative_to_the_callers_directory() {
    let mut w = World::new();
    let b = w.bundle(&["sleep", "100"]);
    let id = w.id("relpid");
    let out = w
        .cmd()
        .current_dir(&b.dir)
        .args(["create", "--pid-file", "rel.pid", "--bundle", ".", &id])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(out.success());
    let pid: i32 = std::fs::read_to_string(b.dir.join("rel.pid"))
        .unwrap()
        .parse()
        .unwrap();
    w.pids.push(pid);
    w.ok(&["delete", &id]);
    wait_exit(pid);
}

#[test]
fn output_to_a_closed_pipe_ends_capsa_quietly_by_sigpipe_as_runc() {
    use std::os::unix::process::ExitStatusExt;
    let mut w = World::new();
    let b = w.bundle(&["sleep", "100"]);
    let id = w.id("pipe");
    let pid = w.create(&id, &b);
    for args in [
        vec!["list"],
        vec!["list", "-q"],
        vec!["state", &id],
        vec!["ps", &id],
        vec!["ps", "--format", "json", &id],
        vec!["events", "--stats", &id],
        vec!["events", "--interval", "50ms", &id],
        vec!["features"],
        vec!["--version"],
    ] {
        // A pipe whose read end is closed before capsa writes a byte: every write is EPIPE.
        let (read, write) = nix::unistd::pipe().unwrap();
        drop(read);
        let out = w
            .cmd()
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::from(write))
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "capsa {args:?}: {}; stderr: {stderr}",
            out.status
        );
        assert_eq!(stderr, "", "capsa {args:?}");
    }
    w.ok(&["delete", "--force", &id]);
    wait_exit(pid);
}
