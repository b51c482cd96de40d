//! The ADD/DEL sequencing against fake plugins (shell scripts that log what they were given).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("capsa-cni-fake-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        Dir(dir)
    }

    fn plugin(&self, name: &str, add_body: &str) {
        let log = self.0.join("log");
        let script = format!(
            "#!/bin/sh\ncat > {dir}/stdin-{name}-$CNI_COMMAND\n\
             echo \"$CNI_COMMAND {name} netns=$CNI_NETNS\" >> {log}\n\
             if [ \"$CNI_COMMAND\" = ADD ]; then\n{add_body}\nfi\n",
            dir = self.0.display(),
            log = log.display(),
        );
        let path = self.0.join("bin").join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.0.join("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn stdin(&self, name: &str, command: &str) -> Value {
        serde_json::from_slice(
            &std::fs::read(self.0.join(format!("stdin-{name}-{command}"))).unwrap(),
        )
        .unwrap()
    }

    fn opts(&self) -> CniOptions {
        let mut opts = CniOptions::new(
            vec![self.0.join("nothing-here"), self.0.join("bin")],
            self.0.join("cache"),
        );
        // Far above what a loaded CI machine needs to start a shell; the hang test
        // sets its own.
        opts.timeout = Duration::from_secs(30);
        opts
    }

    fn network(&self, plugins: &[&str]) -> Network {
        let plugins: Vec<Value> = plugins.iter().map(|p| json!({"type": p})).collect();
        let list = json!({"cniVersion": "1.0.0", "name": "fake", "plugins": plugins});
        Network::from_conflist(
            &serde_json::to_vec(&list).unwrap(),
            &self.0.join("x.conflist"),
        )
        .unwrap()
    }

    fn cache_files(&self) -> Vec<String> {
        match std::fs::read_dir(self.0.join("cache")) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => vec![],
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn attachment() -> Attachment {
    Attachment {
        container_id: "c1".into(),
        netns: "/proc/self/ns/net".into(),
        ifname: DEFAULT_IFNAME.into(),
        pod_name: "p".into(),
        pod_namespace: "ns".into(),
        pod_uid: "u".into(),
        port_mappings: vec![],
        ip_ranges: vec![],
    }
}

fn result(ip: &str) -> String {
    format!("echo '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"{ip}\"}}]}}'")
}

#[tokio::test]
async fn add_chains_results_and_del_runs_in_reverse_with_the_cache() {
    let d = Dir::new("chain");
    d.plugin("first", &result("10.1.0.2/24"));
    d.plugin("second", &result("10.1.0.3/24"));
    let net = d.network(&["first", "second"]);
    let r = net.add(&attachment(), &d.opts()).await.unwrap();
    assert_eq!(
        r.pod_ips(),
        vec!["10.1.0.3".parse::<std::net::IpAddr>().unwrap()]
    );
    assert!(d.stdin("first", "ADD").get("prevResult").is_none());
    assert_eq!(
        d.stdin("second", "ADD")["prevResult"]["ips"][0]["address"],
        "10.1.0.2/24"
    );
    assert_eq!(d.cache_files(), vec!["fake-c1-eth0"]);

    // DEL uses the cached config even though this Network now lists other plugins.
    let changed = d.network(&["other"]);
    changed.del(&attachment(), &d.opts()).await.unwrap();
    assert_eq!(
        d.log(),
        [
            "ADD first netns=/proc/self/ns/net",
            "ADD second netns=/proc/self/ns/net",
            "DEL second netns=/proc/self/ns/net",
            "DEL first netns=/proc/self/ns/net",
        ]
    );
    assert_eq!(
        d.stdin("first", "DEL")["prevResult"]["ips"][0]["address"],
        "10.1.0.3/24"
    );
    assert!(d.cache_files().is_empty());

    // Repeatable: no cache entry, the current config, no prevResult; a gone netns is "".
    let gone = Attachment {
        netns: d.0.join("gone"),
        ..attachment()
    };
    net.del(&gone, &d.opts()).await.unwrap();
    assert_eq!(d.log()[4..], ["DEL second netns=", "DEL first netns="]);
    assert!(d.stdin("first", "DEL").get("prevResult").is_none());
}

#[tokio::test]
async fn failed_add_reports_the_plugin_error_and_dels_what_ran() {
    let d = Dir::new("fail");
    d.plugin("first", &result("10.1.0.2/24"));
    d.plugin(
        "broken",
        "echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"no addresses\",\"details\":\"range full\"}'; exit 1",
    );
    d.plugin("never", &result("10.1.0.9/24"));
    let err = d
        .network(&["first", "broken", "never"])
        .add(&attachment(), &d.opts())
        .await
        .unwrap_err();
    assert_eq!(
        error_chain(&err),
        "network \"fake\": CNI plugin \"broken\" ADD failed: (code 11) no addresses: range full"
    );
    let log = d.log();
    assert_eq!(
        log[2..],
        [
            "DEL broken netns=/proc/self/ns/net",
            "DEL first netns=/proc/self/ns/net"
        ]
    );
    assert!(d.cache_files().is_empty());
}

#[tokio::test]
async fn stderr_is_the_message_when_stdout_is_not_an_error_object() {
    let d = Dir::new("stderr");
    d.plugin("crash", "echo 'panic: nil map' >&2; exit 2");
    let err = d
        .network(&["crash"])
        .add(&attachment(), &d.opts())
        .await
        .unwrap_err();
    let msg = error_chain(&err);
    assert!(msg.ends_with("exit status: 2: panic: nil map"), "{msg}");
}

#[tokio::test]
async fn missing_plugin_is_named_and_earlier_plugins_are_deleted() {
    let d = Dir::new("missing");
    d.plugin("first", &result("10.1.0.2/24"));
    let err = d
        .network(&["first", "absent"])
        .add(&attachment(), &d.opts())
        .await
        .unwrap_err();
    let msg = error_chain(&err);
    assert!(
        msg.starts_with("CNI plugin \"absent\" not found in "),
        "{msg}"
    );
    assert!(
        msg.contains(&d.0.join("bin").display().to_string()),
        "{msg}"
    );
    assert_eq!(d.log()[1..], ["DEL first netns=/proc/self/ns/net"]);
    assert!(d.cache_files().is_empty());
}

#[tokio::test]
async fn a_hung_plugin_and_its_children_are_killed_at_the_timeout() {
    let d = Dir::new("hang");
    let pidfile = d.0.join("sleep.pid");
    d.plugin(
        "hang",
        &format!("sleep 100 & echo $! > {}; wait", pidfile.display()),
    );
    let mut opts = d.opts();
    opts.timeout = Duration::from_secs(2);
    let started = Instant::now();
    let err = d
        .network(&["hang"])
        .add(&attachment(), &opts)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(20));
    let msg = error_chain(&err);
    assert!(
        msg.ends_with("ADD failed: timed out after 2s; killed"),
        "{msg}"
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The grandchild got the group's SIGKILL: gone, or a zombie awaiting init.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = state.rsplit(") ").next().unwrap_or("").chars().next();
        if matches!(state, None | Some('Z')) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sleep {pid} survived the timeout"
        );
        std::thread::yield_now();
    }
}

#[test]
fn error_chain_joins_causes() {
    let e = CniError::Cache {
        path: Path::new("/c/x").into(),
        source: std::io::Error::other("disk on fire"),
    };
    assert_eq!(error_chain(&e), "CNI cache entry /c/x: disk on fire");
}
