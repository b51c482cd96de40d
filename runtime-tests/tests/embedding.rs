//! The library as a program embeds it: the container's stdio handed over as descriptors,
//! its init's exit status collected through `Container::wait`, and the caller's own
//! descriptors left as they were. Two callers: a single-threaded one (a per-container
//! monitor, here a forked child of the test, which is not a subreaper), where init is the
//! caller's own child; and this multithreaded test process, a child subreaper (see
//! common::setup), which init is re-parented to.

mod common;
use capsa::{CreateOptions, Runtime, StdioFds};
use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;

/// A pipe as (read end, write end), both close-on-exec.
fn pipe() -> (std::fs::File, std::fs::File) {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    (r.into(), w.into())
}

/// /dev/null as a file descriptor.
fn null() -> OwnedFd {
    std::fs::File::open("/dev/null").unwrap().into()
}

/// Stdio that is all /dev/null.
fn null_stdio() -> StdioFds {
    StdioFds::new(null(), null(), null())
}

fn read_all(mut f: std::fs::File) -> String {
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    s
}

/// The number of threads of this process, from /proc/self/status.
fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Runs `f` in a forked child of this process -- single-threaded, as a per-container monitor
/// is, and not a subreaper (fork clears it) -- and returns the JSON it produced. The child
/// only does what the library's own single-threaded helper does after glibc's fork.
fn in_single_threaded_child(f: impl FnOnce() -> Result<Value, String>) -> Value {
    let (mut r, w) = pipe();
    // SAFETY: glibc's fork; the child runs `f`, writes its result and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        drop(r);
        let value = f().unwrap_or_else(|e| json!({ "error": e }));
        let ok = (&w).write_all(value.to_string().as_bytes()).is_ok();
        // SAFETY: _exit ends the forked child without running the test's exit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    drop(w);
    let mut text = String::new();
    r.read_to_string(&mut text).unwrap();
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
    assert_eq!(
        status,
        nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 0)
    );
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(value.get("error").is_none(), "in the child: {value}");
    value
}

/// Descriptor numbers the container's process had open, listed by itself on stderr: `ls`
/// of /proc/self/fd shows ls's own directory descriptor too (the highest).
const LIST_FDS: &str = "ls /proc/self/fd >&2";

#[test]
fn a_single_threaded_monitor_hands_pipes_as_stdio_and_reaps_exit_code_3() {
    let mut w = World::new();
    let mut b = w.bundle(&[
        "sh",
        "-c",
        &format!("read x; echo \"got $x\"; {LIST_FDS}; exit 3"),
    ]);
    // A hook the runtime runs on the host lists its descriptors too.
    let hook_fds = scratch().join(unique("hook-fds"));
    b.set(|c| {
        c["hooks"]["createRuntime"] = json!([{
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("ls /proc/self/fd > {}", hook_fds.display())],
        }])
    });
    let id = w.id("monitor");
    let root = w.root.clone();
    let bundle = b.dir.clone();
    let id2 = id.clone();
    let got = in_single_threaded_child(move || {
        let e = |e: capsa::Error| format!("{e:#}");
        let threads = threads();
        let subreaper = nix::sys::prctl::get_child_subreaper().map_err(|e| e.to_string())?;
        // The monitor's own descriptor, not close-on-exec (it means to pass it on to a
        // program of its own): create must neither change it nor let the container have it.
        let own = std::fs::File::open("/etc/hostname").map_err(|e| e.to_string())?;
        nix::unistd::dup2(own.as_raw_fd(), 50).map_err(|e| e.to_string())?;
        let (in_r, mut in_w) = pipe();
        let (out_r, out_w) = pipe();
        let (err_r, err_w) = pipe();
        let opts = CreateOptions::new(&bundle).stdio(StdioFds::new(in_r, out_w, err_w));
        let runtime = Runtime::new(&root);
        let c = runtime.create(&id2, &opts).map_err(e)?;
        drop(opts);
        // SAFETY: F_GETFD only reads the flags of descriptor 50.
        let flags = unsafe { libc::fcntl(50, libc::F_GETFD) };
        let pid = c.stored().pid;
        let parent_is_us = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                let rest = &s[s.rfind(')').unwrap() + 2..];
                rest.split(' ').nth(1) == Some(&std::process::id().to_string())
            })
            .unwrap_or(false);
        c.start().map_err(e)?;
        in_w.write_all(b"hello\n").map_err(|e| e.to_string())?;
        drop(in_w);
        let out = read_all(out_r);
        let err = read_all(err_r);
        let status = c.wait().map_err(e)?;
        let again = c.wait().map_err(|e| e.to_string()).unwrap_err();
        c.delete(false).map_err(e)?;
        Ok(json!({
            "threads": threads, "subreaper": subreaper, "flags": flags,
            "parent_is_us": parent_is_us, "pid": pid,
            "out": out, "err": err, "code": status.code(), "signal": status.signal(),
            "again": again,
        }))
    });
    w.pids.push(got["pid"].as_i64().unwrap() as i32);
    assert_eq!(got["threads"], 1, "{got}");
    assert_eq!(got["subreaper"], false, "{got}");
    assert_eq!(
        got["parent_is_us"], true,
        "init is the monitor's child: {got}"
    );
    assert_eq!(got["flags"], 0, "the monitor's fd 50 changed: {got}");
    assert_eq!(got["out"], "got hello\n", "{got}");
    let fds: Vec<&str> = got["err"].as_str().unwrap().lines().collect();
    assert_eq!(
        fds,
        ["0", "1", "2", "3"],
        "only stdio (and ls's own fd 3): {got}"
    );
    let hook = std::fs::read_to_string(&hook_fds).unwrap();
    std::fs::remove_file(&hook_fds).unwrap();
    let hook: Vec<&str> = hook.lines().collect();
    assert_eq!(
        hook,
        ["0", "1", "2", "3"],
        "the hook got the monitor's fd 50"
    );
    assert_eq!(got["code"], 3, "{got}");
    assert_eq!(got["signal"], Value::Null, "{got}");
    assert_eq!(
        got["again"],
        format!("container {id}: its init has already been reaped")
    );
}

#[test]
fn a_threaded_subreaper_reads_the_output_and_gets_the_signal_that_killed_init() {
    let mut w = World::new();
    assert!(threads() > 1);
    // stderr first: once "up" is read, the shell has written both, so the kill cannot
    // overtake the second write.
    let b = w.bundle(&["sh", "-c", "echo on-stderr >&2; echo up; exec sleep 1000"]);
    let id = w.id("killed");
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let opts = CreateOptions::new(&b.dir).stdio(StdioFds::new(null(), out_w, err_w));
    let runtime = Runtime::new(&w.root);
    let c = runtime.create(&id, &opts).unwrap();
    drop(opts);
    w.pids.push(c.stored().pid);
    c.start().unwrap();
    let mut out = std::io::BufReader::new(out_r);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "up\n");
    c.kill(nix::sys::signal::Signal::SIGKILL.into(), false)
        .unwrap();
    let status = c.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");
    assert_eq!(status.code(), None);
    // Every copy of the write ends was init's: with it gone, both pipes end.
    assert_eq!(read_all(out.into_inner()), "");
    assert_eq!(read_all(err_r), "on-stderr\n");
    c.delete(false).unwrap();
}

#[test]
fn wait_from_a_process_that_is_not_inits_parent_says_so() {
    let mut w = World::new();
    let b = w.bundle(&["sh", "-c", "exit 3"]);
    let id = w.id("notchild");
    let opts = CreateOptions::new(&b.dir).stdio(null_stdio());
    let runtime = Runtime::new(&w.root);
    let c = runtime.create(&id, &opts).unwrap();
    let pid = c.stored().pid;
    w.pids.push(pid);
    let (root, id2) = (w.root.clone(), id.clone());
    let got = in_single_threaded_child(move || {
        let c = Runtime::new(&root).load(&id2).map_err(|e| e.to_string())?;
        let err = c.wait().unwrap_err();
        Ok(json!({ "error_text": err.to_string(), "kind": format!("{:?}", err.kind()) }))
    });
    assert_eq!(
        got["error_text"],
        format!("container {id}: its init (pid {pid}) is not a child of this process, so only its parent can wait for it")
    );
    assert_eq!(got["kind"], "WrongState");
    c.start().unwrap();
    assert_eq!(c.wait().unwrap().code(), Some(3));
    c.delete(false).unwrap();
}

#[test]
fn stdio_and_a_terminal_are_refused_before_anything_is_made() {
    let mut w = World::new();
    let mut b = w.bundle(&["true"]);
    b.set(|c| c["process"]["terminal"] = json!(true));
    let id = w.id("stdiotty");
    let opts = CreateOptions::new(&b.dir)
        .stdio(null_stdio())
        .console_socket(scratch().join(unique("no-such-socket")));
    let err = Runtime::new(&w.root).create(&id, &opts).unwrap_err();
    assert_eq!(
        err.to_string(),
        "stdio descriptors were given but process.terminal is true: the process's stdio is its terminal"
    );
    assert_eq!(err.kind(), capsa::ErrorKind::InvalidInput);
}

#[test]
fn an_exec_gets_the_stdio_it_is_handed() {
    let mut w = World::new();
    let b = w.bundle(&["sleep", "1000"]);
    let id = w.id("execio");
    let runtime = Runtime::new(&w.root);
    let opts = CreateOptions::new(&b.dir).stdio(null_stdio());
    let c = runtime.create(&id, &opts).unwrap();
    w.pids.push(c.stored().pid);
    c.start().unwrap();
    let (out_r, out_w) = pipe();
    let mut process = c.process().unwrap().clone();
    process.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "echo from-exec; ls /proc/self/fd".into(),
    ]));
    let exec_opts = capsa::ExecOptions::new().stdio(StdioFds::new(null(), out_w, null()));
    let pid = c.exec_detached(&process, &exec_opts).unwrap();
    drop(exec_opts);
    let out = read_all(out_r);
    wait_exit(pid.as_raw());
    reap(pid.as_raw());
    assert_eq!(out, "from-exec\n0\n1\n2\n3\n");
    c.kill(nix::sys::signal::Signal::SIGKILL.into(), false)
        .unwrap();
    assert_eq!(c.wait().unwrap().signal(), Some(9));
    c.delete(false).unwrap();
}
