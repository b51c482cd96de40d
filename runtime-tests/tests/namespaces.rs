//! Namespaces: new ones differ from the host's, joined ones are shared, user ids are mapped.

mod common;
use common::*;
use serde_json::json;
use std::collections::HashMap;

const KINDS: &[&str] = &["mnt", "uts", "ipc", "pid", "net", "cgroup", "user", "time"];

fn host_ns(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// "kind:[inode]" lines printed by a container, as a map.
fn parse_ns(out: &str) -> HashMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn print_ns_script() -> String {
    KINDS
        .iter()
        .map(|k| format!("echo {k} $(readlink /proc/self/ns/{k})"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn userns_bundle(w: &mut World, args: &[&str]) -> Bundle {
    let mut b = w.bundle(args);
    b.in_user_namespace(&["cgroup", "time"]);
    b
}

#[test]
fn every_new_namespace_differs_from_the_hosts() {
    let mut w = World::new();
    let script = print_ns_script();
    let b = userns_bundle(&mut w, &["sh", "-c", &script]);
    let out = w.run_ok(&b);
    let inside = parse_ns(&out);
    for kind in KINDS {
        let ns = inside
            .get(*kind)
            .unwrap_or_else(|| panic!("no {kind} in {out}"));
        assert!(ns.starts_with(&format!("{kind}:[")), "{ns}");
        assert_ne!(*ns, host_ns(kind), "{kind} namespace is the host's");
    }
}

#[test]
fn without_a_network_namespace_the_hosts_is_shared() {
    let mut w = World::new();
    let mut b = w.bundle(&["readlink", "/proc/self/ns/net"]);
    b.set(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "network");
    });
    assert_eq!(w.run_ok(&b).trim(), host_ns("net"));
}

#[test]
fn hostname_and_domainname_are_set() {
    let mut w = World::new();
    let mut b = w.bundle(&["sh", "-c", "hostname; cat /proc/sys/kernel/domainname"]);
    b.set(|c| {
        c["hostname"] = json!("box-one");
        c["domainname"] = json!("example.test");
    });
    assert_eq!(w.run_ok(&b), "box-one\nexample.test\n");
}

#[test]
fn the_container_process_is_pid_1() {
    let mut w = World::new();
    let b = w.bundle(&["sh", "-c", "echo $$; ps -o pid,comm | tail -n +2 | wc -l"]);
    let out = w.run_ok(&b);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1");
}

#[test]
fn host_files_are_invisible_after_pivot_root() {
    let mut w = World::new();
    let marker = scratch().join(unique("host-marker"));
    std::fs::write(&marker, "host secret").unwrap();
    let path = marker.to_str().unwrap().to_string();
    let script = format!("cat /etc/motd; test -e {path} && echo VISIBLE || echo hidden; ls /proc/1/root/ | head -1; awk '$5 == \"/\"' /proc/self/mountinfo | wc -l");
    let b = w.bundle(&["sh", "-c", &script]);
    let out = w.run_ok(&b);
    std::fs::remove_file(&marker).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "capsa busybox fixture");
    assert_eq!(lines[1], "hidden");
    assert_eq!(
        lines[3], "1",
        "exactly one mount at / (old root unmounted): {out}"
    );
}

#[test]
fn no_pivot_also_hides_the_host() {
    let mut w = World::new();
    let b = w.bundle(&[
        "sh",
        "-c",
        "cat /etc/motd; test -e /work && echo VISIBLE || echo hidden",
    ]);
    let id = w.id("nopivot");
    let out = w.capsa(&["run", "--no-pivot", "--bundle", b.dir_str(), &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "capsa busybox fixture\nhidden\n"
    );
}

#[test]
fn a_second_container_joins_the_firsts_namespaces_by_path() {
    let mut w = World::new();
    let mut first = w.bundle(&["sleep", "100"]);
    first.set(|c| c["hostname"] = json!("pod-host"));
    let a = w.id("infra");
    let pid = w.create(&a, &first);
    w.ok(&["start", &a]);
    let mut second = w.bundle(&[
        "sh",
        "-c",
        "hostname; for k in net ipc uts mnt pid; do echo $k $(readlink /proc/self/ns/$k); done",
    ]);
    second.set(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        for n in ns.iter_mut() {
            let t = n["type"].as_str().unwrap().to_string();
            let kind = match t.as_str() {
                "network" => "net",
                "ipc" => "ipc",
                "uts" => "uts",
                _ => continue,
            };
            n["path"] = json!(format!("/proc/{pid}/ns/{kind}"));
        }
        c.as_object_mut().unwrap().remove("hostname");
    });
    let out = w.run_ok(&second);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("pod-host"));
    let joined = parse_ns(&lines.collect::<Vec<_>>().join("\n"));
    for kind in ["net", "ipc", "uts"] {
        let first_ns = std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
        assert_eq!(
            joined[kind],
            first_ns.to_string_lossy(),
            "{kind} not shared"
        );
    }
    for kind in ["mnt", "pid"] {
        let first_ns = std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
        assert_ne!(
            joined[kind],
            first_ns.to_string_lossy(),
            "{kind} should be private"
        );
    }
    w.ok(&["delete", "--force", &a]);
}

#[test]
fn user_namespace_maps_root_inside_to_the_mapped_uid_outside() {
    let mut w = World::new();
    let b = userns_bundle(
        &mut w,
        &["sh", "-c", "id -u; id -g; cat /proc/self/uid_map; read x"],
    );
    let id = w.id("userns");
    let pidfile = b.dir.join("pid");
    let out_path = b.dir.join("out");
    let mut create = w
        .cmd()
        .args([
            "create",
            "--bundle",
            b.dir_str(),
            "--pid-file",
            pidfile.to_str().unwrap(),
            &id,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .spawn()
        .unwrap();
    let stdin = create.stdin.take().unwrap();
    assert!(create.wait().unwrap().success());
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    w.pids.push(pid);
    w.ok(&["start", &id]);
    // Outside, the container's root is uid 100000.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some("100000"),
        "{uid_line}"
    );
    drop(stdin);
    wait_exit(pid);
    let out = std::fs::read_to_string(&out_path).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0");
    assert_eq!(lines[1], "0");
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"]
    );
    w.ok(&["delete", &id]);
}

#[test]
fn time_namespace_offsets_shift_the_monotonic_clock() {
    let mut w = World::new();
    let mut b = w.bundle(&["cat", "/proc/uptime"]);
    b.set(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "time"}));
        c["linux"]["timeOffsets"] = json!({"boottime": {"secs": 86400 * 365, "nanosecs": 0}});
    });
    let out = w.run_ok(&b);
    let uptime: f64 = out.split_whitespace().next().unwrap().parse().unwrap();
    let host: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        uptime - host > 86400.0 * 364.0,
        "container uptime {uptime}, host {host}"
    );
}
