//! The programs in examples/ run as documented: built by cargo as a user would build them,
//! run as root against a busybox root filesystem, their output checked, and nothing left
//! behind (state, cgroups, processes, mounts, their temporary bundles).

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;

/// The examples' executables by name, built once per test binary with `cargo build
/// --examples`, as a user would build them.
fn examples() -> &'static BTreeMap<String, PathBuf> {
    static BUILT: OnceLock<BTreeMap<String, PathBuf>> = OnceLock::new();
    BUILT.get_or_init(|| cargo_executables(&["build", "--examples"], "example"))
}

/// Runs example `name` with `args` and the world's state root.
fn example(w: &World, name: &str, args: &[&str]) -> std::process::Output {
    let exe = examples()
        .get(name)
        .unwrap_or_else(|| panic!("cargo built no example {name}: {:?}", examples()));
    let out = bounded_command(exe.to_str().unwrap())
        .args(args)
        .env("CAPSA_ROOT", &w.root)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    // Its containers' inits were re-parented to us (a subreaper) if it left any: reap the
    // dead, and the leak check reports the living.
    reap_all();
    out
}

/// Runs example `name`, which must succeed; its stdout lines.
fn run_example(w: &World, name: &str, args: &[&str]) -> Vec<String> {
    let out = example(w, name, args);
    let text = succeeded(out, format_args!("example {name} {args:?}"));
    text.lines().map(String::from).collect()
}

/// The value after `key: ` in the example's output.
fn field<'a>(lines: &'a [String], key: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key:?} in {lines:#?}"))
}

/// The example's temporary bundles (under the temporary directory) for `id`.
fn bundles_left(id: &str) -> Vec<PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains(&format!("capsa-example-{id}")))
        .collect()
}

#[test]
fn run_captured_prints_the_containers_stdout_stderr_and_exit_code() {
    let mut w = World::new();
    let b = w.bundle(&["true"]);
    let rootfs = b.rootfs();
    let lines = run_example(
        &w,
        "run_captured",
        &[
            rootfs.to_str().unwrap(),
            "sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; echo second line; exit 3",
        ],
    );
    let id = field(&lines, "id").to_string();
    w.ids.push(id.clone());
    assert_eq!(
        lines[1..],
        [
            "status: created",
            "stdout: to-stdout",
            "stdout: second line",
            "stderr: to-stderr",
            "exit code: 3",
        ],
        "{lines:#?}"
    );
    assert_eq!(bundles_left(&id), Vec::<PathBuf>::new());

    // A command that is not there fails the create, which says why; nothing is left.
    let out = example(
        &w,
        "run_captured",
        &[rootfs.to_str().unwrap(), "/nonexistent"],
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    let id = field(&lines, "id").to_string();
    w.ids.push(id.clone());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("/nonexistent"), "{err}");
    assert_eq!(bundles_left(&id), Vec::<PathBuf>::new());
}

#[test]
fn pod_runs_two_containers_in_the_pods_namespaces() {
    let mut w = World::new();
    let b = w.bundle(&["true"]);
    let lines = run_example(&w, "pod", &[b.rootfs().to_str().unwrap()]);
    let pod = field(&lines, "pod").to_string();
    w.ids.extend([format!("{pod}-a"), format!("{pod}-b")]);
    let value = |name: &str, key: &str| -> String {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name}: {key} ")))
            .unwrap_or_else(|| panic!("no {name} {key} in {lines:#?}"))
            .to_string()
    };
    for name in ["a", "b"] {
        assert_eq!(value(name, "hostname"), pod, "{lines:#?}");
        assert_eq!(value(name, "exit"), "code 0", "{lines:#?}");
    }
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(
        value("a", "net"),
        value("b", "net"),
        "one network namespace"
    );
    assert_ne!(
        value("a", "net"),
        host_net.to_string_lossy(),
        "not the host's"
    );
    assert_ne!(value("a", "mnt"), value("b", "mnt"), "a root each");
    assert_eq!(lines.last().unwrap(), "pod removed");
    // The pod's cgroup, its infra process and the bundles went with it.
    for e in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let left = e.path().join("capsa-pods").join(&pod);
        assert!(!left.exists(), "{} left", left.display());
    }
    assert!(!std::path::Path::new("/sys/fs/cgroup/capsa-pods")
        .join(&pod)
        .exists());
    assert_eq!(processes_mentioning(&pod), Vec::new());
    for name in ["a", "b"] {
        assert_eq!(
            bundles_left(&format!("{pod}-{name}")),
            Vec::<PathBuf>::new()
        );
    }
}
