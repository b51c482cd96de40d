//! The per-container monitor (`capsa-cri-monitor`) with real busybox containers: kubelet's
//! log format (stream tags, long lines split P,P,F, a terminal's output), a log reopened
//! after kubelet's rename, attach, exit codes and signals in exit.json, a spawning process
//! SIGKILLed right after the spawn, 20 containers printing and exiting while no daemon is
//! around; each test checks nothing is left (processes, mounts, cgroups, state, fds).

mod common;
use capsa_cri::monitor::{exit_status, Attach, Monitor, MonitorHandle, MonitorSpec, Output};
use common::bundles::{case, chain, sh, wait_gone, Case, MONITOR};
use common::{sandbox_pid, start_pod};
use nix::sys::signal::Signal;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// One parsed log record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    stream: String,
    tag: String,
    text: String,
}

fn rec(stream: &str, tag: &str, text: &str) -> Rec {
    Rec {
        stream: stream.into(),
        tag: tag.into(),
        text: text.into(),
    }
}

/// The records of a CRI log file, each line checked the way kubelet's parser reads it.
fn records(path: &Path) -> Vec<Rec> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "log ends mid-record"
    );
    text.lines()
        .map(|line| {
            let mut f = line.splitn(4, ' ');
            let (time, stream, tag, body) = (
                f.next().unwrap(),
                f.next().unwrap_or_default(),
                f.next().unwrap_or_default(),
                f.next()
                    .unwrap_or_else(|| panic!("record {line:?} has no text field")),
            );
            assert!(
                time.len() >= 20 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
                "time {time:?} is not RFC3339Nano UTC"
            );
            assert!(["stdout", "stderr"].contains(&stream), "stream {stream:?}");
            assert!(["P", "F"].contains(&tag), "tag {tag:?}");
            rec(stream, tag, body)
        })
        .collect()
}

fn of(records: &[Rec], stream: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.stream == stream)
        .map(|r| r.text.clone())
        .collect()
}

impl Case {
    fn records(&self) -> Vec<Rec> {
        records(&self.spec.log_path)
    }
}

fn signal(pid: i32, sig: Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
}

/// Reads attach output until `want` has appeared on stdout (a terminal's or the pipe's).
fn read_until(a: &mut Attach, want: &str) -> String {
    let mut seen = String::new();
    while !seen.contains(want) {
        match a.read().unwrap() {
            Some(Output::Stdout(b)) => seen.push_str(&String::from_utf8_lossy(&b)),
            Some(Output::Stderr(_)) => {}
            Some(Output::Exit(e)) => panic!("exited ({e:?}) before {want:?}; saw {seen:?}"),
            None => panic!("attach ended before {want:?}; saw {seen:?}"),
        }
    }
    seen
}

#[test]
fn stdout_and_stderr_lines_keep_their_order_and_stream() {
    let c = sh(
        "mon-order",
        "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done; printf 'cr\\r\\n\\nlast'",
        false,
        false,
    );
    let exit = c.run();
    assert_eq!((exit.code, exit.signal, exit.oom_killed), (0, None, false));
    assert!(
        exit.started_ns > 0 && exit.finished_ns >= exit.started_ns,
        "{exit:?}"
    );
    let recs = c.records();
    let mut want_out: Vec<String> = (1..=5).map(|i| format!("out{i}")).collect();
    want_out.extend(["cr".into(), "".into(), "last".into()]);
    assert_eq!(of(&recs, "stdout"), want_out);
    assert_eq!(
        of(&recs, "stderr"),
        (1..=5).map(|i| format!("err{i}")).collect::<Vec<_>>()
    );
    // Every line full but the one the container ended without a newline.
    for r in &recs {
        let want = if r.text == "last" { "P" } else { "F" };
        assert_eq!(r.tag, want, "{r:?}");
    }
}

#[test]
fn a_40_kib_line_is_split_p_p_f() {
    let c = sh(
        "mon-long",
        "head -c 40960 /dev/zero | tr '\\0' a; echo; echo after",
        false,
        false,
    );
    assert_eq!(c.run().code, 0);
    let recs = c.records();
    let shape: Vec<(String, usize)> = recs.iter().map(|r| (r.tag.clone(), r.text.len())).collect();
    assert_eq!(
        shape,
        vec![
            ("P".into(), 16384),
            ("P".into(), 16384),
            ("F".into(), 8192),
            ("F".into(), 5)
        ]
    );
    assert!(recs[..3].iter().all(|r| r.text.bytes().all(|b| b == b'a')));
}

#[test]
fn a_terminal_logs_as_stdout_and_resizes() {
    let c = sh(
        "mon-tty",
        "[ -t 1 ] && echo is-a-tty; echo err-too >&2; read x; stty size",
        true,
        true,
    );
    let (h, mut a) = c.start_attached();
    read_until(&mut a, "err-too");
    h.resize(50, 132).unwrap();
    a.write_stdin(b"\n").unwrap();
    read_until(&mut a, "50 132");
    let exit = c.wait(&h);
    assert_eq!(exit.code, 0);
    let recs = c.records();
    assert!(recs.iter().all(|r| r.stream == "stdout"), "{recs:?}");
    let texts = of(&recs, "stdout");
    for want in ["is-a-tty", "err-too", "50 132"] {
        assert!(texts.iter().any(|t| t == want), "{want:?} not in {texts:?}");
    }
}

#[test]
fn resize_without_a_terminal_is_refused() {
    let c = sh("mon-notty", "read x", false, true);
    let h = c.spawn();
    let e = h.resize(10, 10).unwrap_err();
    assert!(chain(&e).contains("no terminal"), "{}", chain(&e));
    h.start().unwrap();
    let mut a = h.attach(true).unwrap();
    a.write_stdin(b"\n").unwrap();
    assert_eq!(c.wait(&h).code, 0);
}

#[test]
fn reopen_after_rename_loses_no_line() {
    let c = sh(
        "mon-reopen",
        "echo one; read x; echo two; read y; echo three",
        false,
        true,
    );
    let (h, mut a) = c.start_attached();
    read_until(&mut a, "one");
    // kubelet's rotation: rename, then ReopenContainerLog.
    let rotated = c.spec.log_path.with_extension("log.20261203-074500");
    std::fs::rename(&c.spec.log_path, &rotated).unwrap();
    h.reopen_log().unwrap();
    assert!(c.spec.log_path.exists(), "reopen made the file anew");
    a.write_stdin(b"\n").unwrap();
    read_until(&mut a, "two");
    a.write_stdin(b"\n").unwrap();
    assert_eq!(c.wait(&h).code, 0);
    assert_eq!(of(&records(&rotated), "stdout"), vec!["one"]);
    assert_eq!(of(&c.records(), "stdout"), vec!["two", "three"]);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&c.spec.log_path).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o640);
}

#[test]
fn attach_clients_see_output_and_stdin_reaches_the_container() {
    let c = sh(
        "mon-attach",
        "echo ready; while read l; do echo e-$l >&2; echo got-$l; done; exit 4",
        false,
        true,
    );
    let h = c.spawn();
    let mut a = h.attach(true).unwrap();
    let mut watcher = h.attach(false).unwrap();
    h.start().unwrap();
    read_until(&mut a, "ready");
    // A client attached without stdin that writes some is dropped, its input never used.
    let mut intruder = h.attach(false).unwrap();
    intruder.write_stdin(b"evil\n").unwrap();
    assert_eq!(intruder.read().unwrap(), None);
    a.write_stdin(b"x\ny\n").unwrap();
    read_until(&mut a, "got-y");
    read_until(&mut watcher, "got-y");
    // Without stdin_once the container's stdin outlives a client's: the next one writes it.
    a.close_stdin().unwrap();
    drop(a);
    let mut b = h.attach(true).unwrap();
    b.write_stdin(b"z\n").unwrap();
    read_until(&mut b, "got-z");
    drop(b);
    // Nothing more comes; kill it and see the exit frame.
    c.kill_container();
    let exit = loop {
        match watcher.read().unwrap() {
            Some(Output::Exit(e)) => break e,
            Some(_) => {}
            None => panic!("attach ended without the exit"),
        }
    };
    assert_eq!((exit.code, exit.signal), (137, Some(9)));
    assert_eq!(c.wait(&h), exit);
    assert_eq!(of(&c.records(), "stderr"), vec!["e-x", "e-y", "e-z"]);
}

#[test]
fn stdin_once_closes_stdin_when_the_first_client_leaves() {
    let mut c = sh("mon-once", "cat; echo stdin-closed; exit 5", false, true);
    c.spec.stdin_once = true;
    let h = c.spawn();
    h.start().unwrap();
    let mut a = h.attach(true).unwrap();
    a.write_stdin(b"hello\n").unwrap();
    read_until(&mut a, "hello");
    a.close_stdin().unwrap();
    read_until(&mut a, "stdin-closed");
    assert_eq!(c.wait(&h).code, 5);
}

#[test]
fn output_written_right_before_the_exit_is_all_logged() {
    // 500 lines of 100 bytes: more than one read's worth, less than the pipe holds.
    let c = sh(
        "mon-drain",
        "cat /go; i=0; while [ $i -lt 500 ]; do printf '%099d\\n' $i; i=$((i+1)); done",
        false,
        false,
    );
    let go = c.spec.bundle.join("rootfs/go");
    nix::unistd::mkfifo(&go, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let h = c.spawn();
    h.start().unwrap();
    // The monitor stopped, the container prints everything and exits: the monitor wakes to
    // its exit and all the output at once.
    signal(h.monitor_pid(), Signal::SIGSTOP);
    drop(std::fs::File::create(&go).unwrap());
    wait_gone(h.pid());
    signal(h.monitor_pid(), Signal::SIGCONT);
    assert_eq!(c.wait(&h).code, 0);
    let got = of(&c.records(), "stdout");
    assert_eq!(got.len(), 500, "lines logged");
    for (i, line) in got.iter().enumerate() {
        assert_eq!(*line, format!("{i:099}"));
    }
}

#[test]
fn exit_code_3_is_recorded() {
    let c = sh("mon-exit3", "exit 3", false, false);
    let exit = c.run();
    assert_eq!((exit.code, exit.signal, exit.oom_killed), (3, None, false));
    assert!(!c.spec.dir.join("ctl").exists(), "the control socket goes");
    let e = MonitorHandle::connect(&c.spec.dir).unwrap_err();
    assert!(
        chain(&e).contains("connecting to the monitor"),
        "{}",
        chain(&e)
    );
}

#[test]
fn an_oom_kill_is_recorded() {
    let c = sh(
        "mon-oom",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
        false,
        false,
    );
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.spec.bundle.join("config.json")).unwrap()).unwrap();
    config["linux"]["resources"]["memory"] =
        serde_json::json!({"limit": 16 << 20, "swap": 16 << 20});
    std::fs::write(c.spec.bundle.join("config.json"), config.to_string()).unwrap();
    let exit = c.run();
    assert!(exit.oom_killed, "{exit:?}");
    assert_eq!((exit.code, exit.signal), (137, Some(9)));
    assert!(!of(&c.records(), "stdout").contains(&"survived".to_string()));
}

#[test]
fn killed_by_sigkill_is_137() {
    let c = case("mon-kill", &["sleep", "1000"], false, false);
    let h = c.spawn();
    let e = h.attach(true).err().unwrap();
    assert!(
        chain(&e).contains("not created with stdin"),
        "{}",
        chain(&e)
    );
    h.start().unwrap();
    assert!(h.status().unwrap().started_ns > 0);
    c.kill_container();
    let exit = c.wait(&h);
    assert_eq!((exit.code, exit.signal), (137, Some(9)));
}

#[test]
fn sigterm_to_the_monitor_goes_to_the_container_and_its_exit_is_recorded() {
    let c = case("mon-term", &["sleep", "1000"], false, false);
    let h = c.spawn();
    h.start().unwrap();
    signal(h.monitor_pid(), Signal::SIGTERM);
    // sleep as pid 1 of its namespace ignores SIGTERM unless it handles it: busybox sleep
    // does not, so the kernel drops it; a SIGKILL through capsa ends it.
    let status = h.status().unwrap();
    assert_eq!(status.pid, h.pid(), "the monitor still serves");
    c.kill_container();
    assert_eq!(c.wait(&h).code, 137);
}

#[test]
fn sigterm_reaches_a_container_that_handles_it() {
    let c = sh(
        "mon-term2",
        "trap 'echo got-term; exit 9' TERM; echo ready; while :; do sleep 1; done",
        false,
        false,
    );
    let (h, mut a) = c.start_attached();
    read_until(&mut a, "ready");
    signal(h.monitor_pid(), Signal::SIGTERM);
    assert_eq!(c.wait(&h).code, 9);
    assert!(of(&c.records(), "stdout").contains(&"got-term".to_string()));
}

#[test]
fn a_sigkilled_monitor_leaves_its_container_running() {
    let c = case("mon-killmon", &["sleep", "1000"], false, false);
    let h = c.spawn();
    h.start().unwrap();
    signal(h.monitor_pid(), Signal::SIGKILL);
    wait_gone(h.monitor_pid());
    let container = c.runtime().load(&c.spec.id).unwrap();
    assert_eq!(container.status(), capsa::Status::Running);
    assert!(MonitorHandle::connect(&c.spec.dir).is_err());
    assert_eq!(exit_status(&c.spec.dir).unwrap(), None);
    // Its init went to the nearest subreaper (pid 1 here); delete --force ends it.
    container.delete(true).unwrap();
    wait_gone(h.pid());
}

#[test]
fn a_bad_bundle_fails_the_spawn_with_its_cause_and_leaves_nothing() {
    let c = case("mon-bad", &["/no/such/binary"], false, false);
    let e = Monitor::spawn(&c.spec).unwrap_err();
    let text = chain(&e);
    assert!(text.contains("/no/such/binary"), "{text}");
    assert!(!c.spec.dir.join("ctl").exists());
    let mut missing = case("mon-bad2", &["true"], false, false);
    missing.spec.log_path = missing.base.join("no-dir/0.log");
    let text = chain(&Monitor::spawn(&missing.spec).unwrap_err());
    assert!(text.contains("no-dir/0.log"), "{text}");
}

#[test]
fn the_container_gets_only_its_stdio_and_the_monitor_few_fds() {
    let c = sh("mon-fds", "read x", false, true);
    let h = c.spawn();
    // stdio, the log, ctl, the signalfd, the container's stdout, stderr and stdin: the
    // ready pipe and everything of the create are closed.
    let fds = |pid: i32| {
        let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(fds(h.monitor_pid()).len(), 9, "the monitor's descriptors");
    h.start().unwrap();
    // Started: init has exec'd sh, which waits on its stdin.
    assert_eq!(
        fds(h.pid()),
        vec!["0", "1", "2"],
        "the container's descriptors"
    );
    let mut a = h.attach(true).unwrap();
    a.write_stdin(b"\n").unwrap();
    assert_eq!(c.wait(&h).code, 0);
}

/// The "daemon" of the restart tests: this test binary run again, with the monitors to
/// spawn in its environment. It spawns them (and starts them unless told not to), says so
/// on stdout, and waits to be killed.
#[test]
#[ignore = "run by other tests as a separate process"]
fn helper_daemon() {
    let Ok(specs) = std::env::var("CAPSA_MONITOR_HELPER") else {
        return;
    };
    let start = std::env::var("CAPSA_MONITOR_HELPER_START").is_ok();
    let argvs: Vec<Vec<String>> = serde_json::from_str(&specs).unwrap();
    let mut out = std::io::stdout();
    for argv in argvs {
        let (mut spec, _) = MonitorSpec::from_argv(argv.into_iter().map(Into::into)).unwrap();
        spec.program = MONITOR.into();
        let h = Monitor::spawn(&spec).unwrap();
        if start {
            h.start().unwrap();
        }
        writeln!(out, "\nhelper: spawned {}", h.monitor_pid()).unwrap();
        out.flush().unwrap();
    }
    writeln!(out, "\nhelper: done").unwrap();
    out.flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// Runs the helper daemon for `cases`, waits until it has spawned them all, SIGKILLs it.
/// Returns the monitors' pids.
fn spawn_then_kill_the_spawner(cases: &[Case], start: bool) -> Vec<i32> {
    let argvs: Vec<Vec<String>> = cases
        .iter()
        .map(|c| {
            c.spec
                .argv(None)
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect()
        })
        .collect();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "helper_daemon",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(
        "CAPSA_MONITOR_HELPER",
        serde_json::to_string(&argvs).unwrap(),
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped());
    if start {
        cmd.env("CAPSA_MONITOR_HELPER_START", "1");
    }
    let mut child = cmd.spawn().unwrap();
    let mut pids = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(pid) = line.strip_prefix("helper: spawned ") {
            pids.push(pid.parse().unwrap());
        }
        if line == "helper: done" {
            break;
        }
    }
    assert_eq!(pids.len(), cases.len(), "the helper spawned them all");
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    pids
}

#[test]
fn the_spawner_sigkilled_right_after_spawn_changes_nothing() {
    let c = sh("mon-orphan", "echo started-later; exit 6", false, false);
    let pids = spawn_then_kill_the_spawner(std::slice::from_ref(&c), false);
    // A restarted daemon finds the monitor and its created container, and starts it.
    let h = MonitorHandle::connect(&c.spec.dir).unwrap();
    assert_eq!(h.monitor_pid(), pids[0]);
    assert_eq!(h.status().unwrap().started_ns, 0);
    h.start().unwrap();
    let exit = c.wait(&h);
    assert_eq!(exit.code, 6);
    assert_eq!(of(&c.records(), "stdout"), vec!["started-later"]);
}

#[test]
fn twenty_containers_print_and_exit_with_no_daemon_around() {
    const N: usize = 20;
    const LINES: usize = 200;
    let script = format!(
        "cat /go; i=0; while [ $i -lt {LINES} ]; do echo out-$i; echo err-$i >&2; \
         i=$((i+1)); done; exit 7"
    );
    let cases: Vec<Case> = (0..N)
        .map(|_| {
            let c = sh("mon-many", &script, false, false);
            nix::unistd::mkfifo(
                &c.spec.bundle.join("rootfs/go"),
                nix::sys::stat::Mode::from_bits_truncate(0o600),
            )
            .unwrap();
            c
        })
        .collect();
    let pids = spawn_then_kill_the_spawner(&cases, true);
    // The daemon is dead; now every container prints and exits.
    for c in &cases {
        drop(std::fs::File::create(c.spec.bundle.join("rootfs/go")).unwrap());
    }
    let want_out: Vec<String> = (0..LINES).map(|i| format!("out-{i}")).collect();
    let want_err: Vec<String> = (0..LINES).map(|i| format!("err-{i}")).collect();
    for (c, pid) in cases.iter().zip(pids) {
        wait_gone(pid);
        let exit = exit_status(&c.spec.dir).unwrap().expect("exit recorded");
        assert_eq!(exit.code, 7);
        let recs = c.records();
        assert_eq!(of(&recs, "stdout"), want_out);
        assert_eq!(of(&recs, "stderr"), want_err);
    }
}

/// A "Key:   N kB" value of /proc/PID/<file>, in KiB.
fn kib(pid: i32, file: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/{file}"))
}

/// The memory a container costs: its monitor's VmRSS (and Pss: most of it is the binary's
/// pages, shared by every monitor) with a running container, printed beside containerd's
/// shim + pause for one pod (`containerds_shim_and_pause_for_one_pod`).
#[test]
fn monitor_memory_per_running_container() {
    let c = sh("mon-rss", "echo up; read x", false, true);
    let (h, mut a) = c.start_attached();
    read_until(&mut a, "up");
    let pid = h.monitor_pid();
    eprintln!(
        "capsa-cri-monitor with a running container: VmRSS {} KiB, Pss {} KiB",
        kib(pid, "status", "VmRSS:"),
        kib(pid, "smaps_rollup", "Pss:")
    );
    a.write_stdin(b"\n").unwrap();
    assert_eq!(c.wait(&h).code, 0);
}

/// containerd's cost of one pod: containerd-shim-runc-v2 and the pause process it runs
/// (host network, so no CNI is involved), VmRSS and Pss, for the comparison above.
#[tokio::test]
async fn containerds_shim_and_pause_for_one_pod() {
    use k8s_cri::v1::*;
    let server = common::Server::start(common::Kind::Containerd).await;
    let mut c = server.clients().await;
    let parent = format!("capsa-cri-test/rss-{}", std::process::id());
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "rss".into(),
            uid: format!("rss-{}", std::process::id()),
            namespace: "capsa-test".into(),
            attempt: 0,
        }),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("/{parent}"),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (id, status) = start_pod(&mut c, &server, &config).await;
    let pause = sandbox_pid(&status);
    let stat = std::fs::read_to_string(format!("/proc/{pause}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let shim: i32 = after_comm.split(' ').nth(1).unwrap().parse().unwrap();
    let cmdline = std::fs::read(format!("/proc/{shim}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("containerd-shim-runc-v2"),
        "pause's parent is the shim"
    );
    let (rss, pss) = (
        kib(shim, "status", "VmRSS:") + kib(pause, "status", "VmRSS:"),
        kib(shim, "smaps_rollup", "Pss:") + kib(pause, "smaps_rollup", "Pss:"),
    );
    eprintln!("containerd-shim-runc-v2 + pause for one pod: VmRSS {rss} KiB, Pss {pss} KiB");
    c.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
    c.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .unwrap();
    wait_gone(shim);
    // containerd leaves the parent kubelet would have made.
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(h.path().join(&parent));
    }
}
