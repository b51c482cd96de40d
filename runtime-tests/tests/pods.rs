//! Pods: containers joining an infra process's namespaces (`capsa pod create`,
//! `capsa create/run --pod`, `capsa pod list`, `capsa pod rm`), checked from inside the
//! containers and from the host.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn pod_info(w: &World, pod: &str) -> Value {
    let list: Value = serde_json::from_str(&w.ok(&["pod", "list", "--format", "json"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == pod)
        .cloned()
        .unwrap_or_else(|| panic!("pod {pod} not listed: {list}"))
}

/// Creates a pod and registers its infra process with the World (reaped and checked gone).
fn create_pod(w: &mut World, share: &str) -> (String, i32) {
    let pod = unique("pod");
    w.pods.push(pod.clone());
    w.ok(&["pod", "create", "--share", share, &pod]);
    let pid = pod_info(w, &pod)["pid"].as_i64().unwrap() as i32;
    w.pids.push(pid);
    (pod, pid)
}

/// Every v1 hierarchy (or the v2 root) where the pod's cgroup could be left behind.
fn pod_cgroups(pod: &str) -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let mut out = vec![base.join("capsa-pods").join(pod)];
    for e in std::fs::read_dir(base).unwrap().flatten() {
        out.push(e.path().join("capsa-pods").join(pod));
    }
    out.into_iter().filter(|d| d.exists()).collect()
}

fn assert_pod_gone(w: &World, pod: &str, infra: i32) {
    wait_exit(infra);
    reap(infra);
    assert!(
        !Path::new(&format!("/proc/{infra}")).exists(),
        "infra process left"
    );
    assert_eq!(pod_cgroups(pod), Vec::<PathBuf>::new(), "pod cgroups left");
    assert!(!w.root.join(".pods").join(pod).exists(), "pod state left");
}

/// Creates and starts `id` in `pod` (stdio null); returns its init pid.
fn start_in_pod(w: &mut World, pod: &str, id: &str, bundle: &Bundle) -> i32 {
    let pidfile = bundle.dir.join("init.pid");
    w.ok(&[
        "create",
        "--pod",
        pod,
        "--bundle",
        bundle.dir_str(),
        "--pid-file",
        pidfile.to_str().unwrap(),
        id,
    ]);
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    w.pids.push(pid);
    w.ok(&["start", id]);
    pid
}

/// `capsa run --pod` in the foreground: (exit code, stdout, stderr).
fn run_in_pod(w: &mut World, pod: &str, bundle: &Bundle) -> (i32, String, String) {
    w.run_with(&["--pod", pod], bundle)
}

fn ns(pid: i32, kind: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap()
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .unwrap()
}

#[test]
fn pod_containers_share_net_ipc_uts_but_not_filesystems() {
    let mut w = World::new();
    let (pod, infra) = create_pod(&mut w, "net,ipc,uts");
    assert!(rss_kib(infra) < 1024, "infra RSS {} KiB", rss_kib(infra));
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{infra}/comm")).unwrap(),
        "capsa-pause\n"
    );

    // A serves HTTP on the pod's loopback.
    let mut a = w.bundle(&["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/www"]);
    std::fs::create_dir(a.rootfs().join("www")).unwrap();
    std::fs::write(a.rootfs().join("www/index.html"), "hello from a\n").unwrap();
    a.set(|c| c["hostname"] = serde_json::json!("ignored-in-a-pod"));
    let a_id = w.id("a");
    let a_pid = start_in_pod(&mut w, &pod, &a_id, &a);
    for kind in ["net", "ipc", "uts"] {
        assert_eq!(ns(a_pid, kind), ns(infra, kind), "{kind} is the pod's");
    }
    assert_ne!(ns(a_pid, "mnt"), ns(infra, "mnt"));
    let cgroup = std::fs::read_to_string(format!("/proc/{a_pid}/cgroup")).unwrap();
    assert!(
        cgroup.contains(&format!("/capsa-pods/{pod}/{a_id}")),
        "{cgroup}"
    );
    wait_until("httpd listening", || {
        std::fs::read_to_string(format!("/proc/{a_pid}/net/tcp"))
            .unwrap()
            .lines()
            .any(|l| l.contains(":1F90 ") && l.split_whitespace().nth(3) == Some("0A"))
    });
    // A System V message queue made in A's IPC namespace...
    let out = Command::new("nsenter")
        .args(["-t", &a_pid.to_string(), "-i", "ipcmk", "-Q"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let msqid = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .last()
        .unwrap()
        .to_string();
    let queue_keys = |table: &str| -> Vec<(String, String)> {
        table
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[0].to_string(), f[1].to_string())
            })
            .collect()
    };

    // ... B sees it, reaches A over 127.0.0.1, shares the pod's hostname, and has a root of
    // its own (A's www directory is not there).
    let mut b = w.bundle(&[
        "sh",
        "-c",
        "wget -q -O - http://127.0.0.1:8080/index.html; hostname; \
         cat /proc/sysvipc/msg; ls /www 2>&1 || true",
    ]);
    b.set(|c| c["hostname"] = serde_json::json!("ignored-in-a-pod"));
    let (code, out, err) = run_in_pod(&mut w, &pod, &b);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "hello from a");
    assert_eq!(lines[1], pod);
    // The queue ipcmk made (its id) is in B's table; its key is not in the host's.
    let in_b = queue_keys(&lines[2..4].join("\n"));
    assert_eq!(in_b.len(), 1, "{out}");
    assert_eq!(in_b[0].1, msqid);
    let host = queue_keys(&std::fs::read_to_string("/proc/sysvipc/msg").unwrap());
    assert!(host.iter().all(|(key, _)| *key != in_b[0].0));
    assert!(lines[4].contains("No such file"), "{out}");

    let info = pod_info(&w, &pod);
    assert_eq!(info["containers"], serde_json::json!([a_id]));
    assert_eq!(info["pid"], infra);
    assert_eq!(info["status"], "running");

    // A running container keeps the pod; --force removes both.
    let err = w.fails(&["pod", "rm", &pod]);
    assert!(err.contains(&a_id) && err.contains("--force"), "{err}");
    w.ok(&["pod", "rm", "--force", &pod]);
    wait_exit(a_pid);
    reap(a_pid);
    assert_pod_gone(&w, &pod, infra);
}

#[test]
fn shared_pid_namespace_sees_all_and_infra_reaps_orphans() {
    let mut w = World::new();
    let (pod, infra) = create_pod(&mut w, "net,ipc,uts,pid");
    let a = w.bundle(&["sleep", "1000"]);
    let a_id = w.id("a");
    let a_pid = start_in_pod(&mut w, &pod, &a_id, &a);
    assert_eq!(ns(a_pid, "pid"), ns(infra, "pid"));

    // B sees A's sleep and the infra process as pid 1.
    let b = w.bundle(&["ps", "-o", "pid,comm"]);
    let (code, out, err) = run_in_pod(&mut w, &pod, &b);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.trim() == "1 capsa-pause"), "{out}");
    assert!(out.lines().any(|l| l.trim().ends_with("sleep")), "{out}");

    // C's init leaves an orphan: it is re-parented to the infra process (pid 1 of the
    // pod's namespace), which reaps it when it dies instead of leaving a zombie.
    let c = w.bundle(&["sh", "-c", "sleep 1000 & exit 0"]);
    let c_id = w.id("c");
    let c_pid = start_in_pod(&mut w, &pod, &c_id, &c);
    wait_exit(c_pid);
    reap(c_pid);
    let procs = PathBuf::from(format!(
        "/sys/fs/cgroup/pids/capsa-pods/{pod}/{c_id}/cgroup.procs"
    ));
    let procs = if procs.exists() {
        procs
    } else {
        PathBuf::from(format!(
            "/sys/fs/cgroup/capsa-pods/{pod}/{c_id}/cgroup.procs"
        ))
    };
    let orphan: i32 = std::fs::read_to_string(&procs)
        .unwrap()
        .trim()
        .parse()
        .expect("the orphaned sleep");
    let ppid = std::fs::read_to_string(format!("/proc/{orphan}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("PPid:")
                .map(|v| v.trim().parse::<i32>().unwrap())
        })
        .unwrap();
    assert_eq!(ppid, infra, "the orphan's parent is the infra process");
    w.ok(&["delete", "--force", &c_id]);
    wait_until("the infra process to reap the orphan", || {
        !Path::new(&format!("/proc/{orphan}")).exists()
    });

    // Killing the infra process (pid 1 of the shared namespace) kills every process in it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(infra),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_exit(a_pid);
    reap(a_pid);
    assert_eq!(w.status(&a_id), "stopped");
    assert_eq!(pod_info(&w, &pod)["status"], "stopped");
    // Everything is stopped: rm needs no --force.
    w.ok(&["pod", "rm", &pod]);
    assert_pod_gone(&w, &pod, infra);
}

#[test]
fn pod_containers_with_own_pid_namespaces_outlive_each_other() {
    let mut w = World::new();
    let (pod, infra) = create_pod(&mut w, "net,ipc,uts");
    let a = w.bundle(&["sleep", "1000"]);
    let b = w.bundle(&["sleep", "1000"]);
    let (a_id, b_id) = (w.id("a"), w.id("b"));
    let a_pid = start_in_pod(&mut w, &pod, &a_id, &a);
    let b_pid = start_in_pod(&mut w, &pod, &b_id, &b);
    assert_ne!(ns(a_pid, "pid"), ns(b_pid, "pid"));
    w.ok(&["kill", &a_id, "KILL"]);
    wait_exit(a_pid);
    reap(a_pid);
    assert_eq!(w.status(&a_id), "stopped");
    assert_eq!(w.status(&b_id), "running");
    let mut listed = pod_info(&w, &pod)["containers"].clone();
    listed
        .as_array_mut()
        .unwrap()
        .sort_by_key(|v| v.to_string());
    let mut expected = vec![a_id.clone(), b_id.clone()];
    expected.sort();
    assert_eq!(listed, serde_json::json!(expected));
    w.ok(&["pod", "rm", "-f", &pod]);
    wait_exit(b_pid);
    reap(b_pid);
    assert_pod_gone(&w, &pod, infra);
    let err = w.fails(&["state", &a_id]);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn pod_errors_are_clear_and_leave_nothing() {
    let mut w = World::new();
    let b = w.bundle(&["true"]);
    let id = w.id("nopod");
    let err = w.fails(&[
        "create",
        "--pod",
        "no-such-pod",
        "--bundle",
        b.dir_str(),
        &id,
    ]);
    assert!(err.contains("pod no-such-pod does not exist"), "{err}");
    let err = w.fails(&["pod", "rm", "no-such-pod"]);
    assert!(err.contains("pod no-such-pod does not exist"), "{err}");
    let err = w.fails(&["pod", "create", "--share", "net,mnt", "x"]);
    assert!(err.contains("mnt") && err.contains("shares only"), "{err}");
    let err = w.fails(&["pod", "create", "--pause-binary", "/nonexistent/pause", "y"]);
    assert!(err.contains("/nonexistent/pause"), "{err}");
    assert!(
        pod_cgroups("y").is_empty(),
        "a failed create leaves no cgroup"
    );
    let (pod, infra) = create_pod(&mut w, "net,ipc,uts");
    let err = w.fails(&["pod", "create", &pod]);
    assert!(err.contains("already exists"), "{err}");
    let err = w.fails(&["create", "--pod", &pod, "--bundle", b.dir_str(), "infra"]);
    assert!(err.contains("reserved"), "{err}");
    w.ok(&["pod", "rm", &pod]);
    assert_pod_gone(&w, &pod, infra);
    assert!(
        !w.root.join(".pods").exists(),
        "the last pod takes .pods with it"
    );
}

/// Namespaced sysctls are set by the infra process in the pod's own namespaces before any
/// container joins; one that is not namespaced, or whose namespace the pod does not share,
/// is refused naming it (it would change the host), and nothing is left.
#[test]
fn pod_sysctls_land_in_the_pods_namespaces_only() {
    let mut w = World::new();
    let host_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let host_shmmni = std::fs::read_to_string("/proc/sys/kernel/shmmni").unwrap();
    let pod = unique("pod");
    w.pods.push(pod.clone());
    let want_forward = if host_forward.trim() == "1" { "0" } else { "1" };
    w.ok(&[
        "pod",
        "create",
        "--sysctl",
        &format!("net.ipv4.ip_forward={want_forward}"),
        "--sysctl",
        "kernel.shmmni=1234",
        &pod,
    ]);
    let infra = pod_info(&w, &pod)["pid"].as_i64().unwrap() as i32;
    w.pids.push(infra);
    let b = w.bundle(&[
        "sh",
        "-c",
        "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni",
    ]);
    let (code, out, err) = run_in_pod(&mut w, &pod, &b);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{want_forward}\n1234\n"));
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_forward
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/shmmni").unwrap(),
        host_shmmni
    );
    w.ok(&["pod", "rm", &pod]);
    assert_pod_gone(&w, &pod, infra);

    for (share, sysctl, says) in [
        ("net,ipc,uts", "kernel.panic=5", "not a namespaced sysctl"),
        (
            "ipc,uts",
            "net.ipv4.ip_forward=1",
            "net namespace, which this pod does not share",
        ),
        (
            "net,ipc,uts",
            "net/../kernel.panic=1",
            "not a valid sysctl name",
        ),
    ] {
        let id = unique("badsysctl");
        let err = w.fails(&["pod", "create", "--share", share, "--sysctl", sysctl, &id]);
        let key = sysctl.split('=').next().unwrap();
        assert!(err.contains(key) && err.contains(says), "{sysctl}: {err}");
        assert!(pod_cgroups(&id).is_empty(), "{sysctl}: cgroup left");
        assert!(
            !w.root.join(".pods").join(&id).exists(),
            "{sysctl}: state left"
        );
    }
}

/// Whether a process waits for the flock of the file with inode `ino` (/proc/locks lists
/// each blocked waiter after "->").
fn flock_waited_for(ino: u64) -> bool {
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .any(|l| l.contains("->") && l.contains(&format!(":{ino} ")))
}

#[test]
fn removing_a_pod_whose_create_is_under_way_waits_for_it() {
    use std::os::unix::fs::MetadataExt;
    let mut w = World::new();
    let (pod, infra) = create_pod(&mut w, "net");
    // The pod as a create under way leaves it: its directory locked, no record in it yet.
    let dir = w.root.join(".pods").join(&pod);
    std::fs::rename(dir.join("pod.json"), dir.join("pod.json.later")).unwrap();
    let lock = nix::fcntl::Flock::lock(
        std::fs::File::open(&dir).unwrap(),
        nix::fcntl::FlockArg::LockExclusive,
    )
    .map_err(|(_, e)| e)
    .unwrap();
    let mut rm = w
        .cmd()
        .args(["pod", "rm", "--force", &pod])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ino = std::fs::metadata(&dir).unwrap().ino();
    // Either it waits for the create, or (wrongly) it has already answered.
    wait_until("pod rm to wait or answer", || {
        flock_waited_for(ino) || rm.try_wait().unwrap().is_some()
    });
    // The create finishes: its record appears, its lock goes.
    std::fs::rename(dir.join("pod.json.later"), dir.join("pod.json")).unwrap();
    drop(lock);
    let out = rm.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "pod rm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_pod_gone(&w, &pod, infra);
    w.pods.clear();
}
