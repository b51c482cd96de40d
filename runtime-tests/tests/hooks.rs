//! OCI hooks: order, the state on stdin, failures and timeouts.

mod common;
use common::*;
use serde_json::{json, Value};

/// A hook that appends "<name> <state JSON>" to `log` (a path valid where the hook runs).
fn hook(name: &str, log: &str) -> Value {
    json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("read -r s; echo \"{name} $s\" >> {log}")],
        "env": ["PATH=/bin:/usr/bin"]
    })
}

#[test]
fn hooks_run_in_order_with_the_state_on_stdin() {
    let mut w = World::new();
    let logdir = scratch().join(unique("hooklog"));
    std::fs::create_dir_all(&logdir).unwrap();
    let host_log = logdir.join("log");
    let hl = host_log.to_str().unwrap().to_string();
    let mut b = w.bundle(&["sh", "-c", "echo ran >> /hooklog/log"]);
    let ld = logdir.to_str().unwrap().to_string();
    b.set(|c| {
        c["mounts"].as_array_mut().unwrap().push(
            json!({"destination": "/hooklog", "type": "bind", "source": ld, "options": ["rbind"]}),
        );
        c["annotations"] = json!({"org.example": "yes"});
        c["hooks"] = json!({
            "prestart": [hook("prestart", &hl)],
            "createRuntime": [hook("createRuntime", &hl)],
            // createContainer runs in the container's mount namespace before pivot_root:
            // host paths still resolve. startContainer runs after it: container paths.
            "createContainer": [hook("createContainer", &hl)],
            "startContainer": [hook("startContainer", "/hooklog/log")],
            "poststart": [hook("poststart", &hl)],
            "poststop": [hook("poststop", &hl)]
        });
    });
    let id = w.id("hooks");
    w.ok(&["run", "--bundle", b.dir_str(), &id]);
    let log = std::fs::read_to_string(&host_log).unwrap();
    std::fs::remove_dir_all(&logdir).unwrap();
    let names: Vec<&str> = log.lines().map(|l| l.split(' ').next().unwrap()).collect();
    // poststart runs after start returns, so it may land before or after the container's line.
    let without_ran: Vec<&str> = names.iter().copied().filter(|n| *n != "ran").collect();
    assert_eq!(
        without_ran,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ],
        "{log}"
    );
    let ran_at = names.iter().position(|n| *n == "ran").unwrap();
    assert!(
        ran_at > 3,
        "container ran before its startContainer hook: {log}"
    );
    for line in log.lines().filter(|l| !l.starts_with("ran")) {
        let (name, state) = line.split_once(' ').unwrap();
        let state: Value =
            serde_json::from_str(state).unwrap_or_else(|e| panic!("{name}: {e}: {state}"));
        assert_eq!(state["id"], id.as_str(), "{name}");
        assert_eq!(state["bundle"], b.dir_str(), "{name}");
        assert_eq!(state["annotations"]["org.example"], "yes", "{name}");
        assert!(state["pid"].as_i64().unwrap() > 0, "{name}");
        let expected = match name {
            "poststart" => "running",
            "poststop" => "stopped",
            _ => "creating",
        };
        assert_eq!(state["status"], expected, "{name}");
    }
}

#[test]
fn a_failing_hook_aborts_create_and_cleans_up() {
    let mut w = World::new();
    for kind in ["prestart", "createRuntime", "createContainer"] {
        let mut b = w.bundle(&["true"]);
        b.set(|c| {
            c["hooks"] = json!({ kind: [{"path": "/bin/sh", "args": ["sh", "-c", "echo hook-said-no >&2; exit 3"]}] });
        });
        let id = w.id("hookfail");
        let err = w.fails(&["create", "--bundle", b.dir_str(), &id]);
        assert!(
            err.contains(&format!(
                "{kind} hook #0 (/bin/sh): exit status 3, stderr: hook-said-no"
            )),
            "{err}"
        );
        assert!(w.fails(&["state", &id]).contains("does not exist"));
    }
}

#[test]
fn a_hook_past_its_timeout_is_killed_and_fails_the_create() {
    let mut w = World::new();
    let mut b = w.bundle(&["true"]);
    b.set(|c| {
        c["hooks"] = json!({"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]});
    });
    let id = w.id("hooktimeout");
    let started = std::time::Instant::now();
    let err = w.fails(&["create", "--bundle", b.dir_str(), &id]);
    assert!(
        err.contains("createRuntime hook #0 (/bin/sleep): timed out after 1s"),
        "{err}"
    );
    assert!(
        started.elapsed().as_secs() < 20,
        "the hook was not killed at its timeout"
    );
}

#[test]
fn a_failing_poststop_hook_does_not_stop_the_delete() {
    let mut w = World::new();
    let mut b = w.bundle(&["true"]);
    b.set(|c| c["hooks"] = json!({"poststop": [{"path": "/bin/false"}]}));
    let id = w.id("poststop");
    let out = w.capsa(&["run", "--bundle", b.dir_str(), &id]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("level=warning")
            && err.contains("poststop hook #0 (/bin/false): exit status 1"),
        "{err}"
    );
}
