//! process.terminal with --console-socket: the pty master arrives over the socket and the
//! container's stdio, controlling terminal and /dev/console are the pty.

mod common;
use common::*;
use serde_json::json;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;

/// Accepts one connection and receives (name, fd) as runc's console-socket clients do.
fn receive_master(listener: UnixListener) -> (String, OwnedFd) {
    let (stream, _) = listener.accept().unwrap();
    let (name, fd) = recv_with_fd(stream.as_raw_fd());
    (String::from_utf8_lossy(&name).into_owned(), fd)
}

#[test]
fn the_pty_master_is_sent_over_the_console_socket() {
    let mut w = World::new();
    let mut b = w.bundle(&["sh", "-c", "tty; stty size; readlink /proc/self/fd/0; test -t 1 && echo is-a-tty; grep -c pts /proc/self/mountinfo >/dev/null; ls -l /dev/console | cut -c1"]);
    b.set(|c| {
        c["process"]["terminal"] = json!(true);
        c["process"]["consoleSize"] = json!({"height": 33, "width": 101});
    });
    let sock = scratch().join(unique("console.sock"));
    let listener = UnixListener::bind(&sock).unwrap();
    let receiver = std::thread::spawn(move || receive_master(listener));
    let id = w.id("tty");
    let pid = {
        let pidfile = b.dir.join("pid");
        w.ok(&[
            "create",
            "--console-socket",
            sock.to_str().unwrap(),
            "--pid-file",
            pidfile.to_str().unwrap(),
            "--bundle",
            b.dir_str(),
            &id,
        ]);
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
        w.pids.push(pid);
        pid
    };
    let (name, master) = receiver.join().unwrap();
    std::fs::remove_file(&sock).unwrap();
    assert!(name.starts_with("/dev/pts/"), "{name}");
    w.ok(&["start", &id]);
    let mut out = Vec::new();
    // Reading the master ends with EIO once the last slave is closed.
    let mut master = std::fs::File::from(master);
    let _ = master.read_to_end(&mut out);
    wait_exit(pid);
    let text = String::from_utf8_lossy(&out).replace('\r', "");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], name, "{text}");
    assert_eq!(lines[1], "33 101");
    assert_eq!(lines[2], name);
    assert_eq!(lines[3], "is-a-tty");
    assert_eq!(lines[4], "c", "/dev/console is the pty (a char device)");
    w.ok(&["delete", &id]);
}

#[test]
fn exec_with_a_terminal_gets_its_own_pty() {
    let mut w = World::new();
    let b = w.bundle(&["sleep", "100"]);
    let id = w.id("exectty");
    let pid = w.create(&id, &b);
    w.ok(&["start", &id]);
    let sock = scratch().join(unique("exec-console.sock"));
    let listener = UnixListener::bind(&sock).unwrap();
    let receiver = std::thread::spawn(move || receive_master(listener));
    // Detached, as containerd's shim runs `exec -t`: the pty master is the process's only link.
    let pidfile = b.dir.join("exec.pid");
    w.ok(&[
        "exec",
        "-t",
        "-d",
        "--console-socket",
        sock.to_str().unwrap(),
        "--pid-file",
        pidfile.to_str().unwrap(),
        &id,
        "sh",
        "-c",
        "tty; test -t 0 && echo stdin-tty",
    ]);
    let exec_pid: i32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    let (name, master) = receiver.join().unwrap();
    std::fs::remove_file(&sock).unwrap();
    let mut out = Vec::new();
    let _ = std::fs::File::from(master).read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).replace('\r', "");
    assert_eq!(text, format!("{name}\nstdin-tty\n"));
    // We are its subreaper (as containerd's shim is): reap it.
    wait_exit(exec_pid);
    reap(exec_pid);
    // Detached, nobody could be its console (in the foreground capsa is, as runc).
    assert!(w
        .fails(&["exec", "-t", "-d", &id, "true"])
        .contains("--console-socket"));
    w.ok(&["delete", "--force", &id]);
    wait_exit(pid);
}

/// Reads from `fd` until `needle` has appeared (or 20 s pass); returns all that was read.
fn read_until(fd: &OwnedFd, needle: &str, seen: &mut String) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !seen.contains(needle) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(
            !left.is_zero(),
            "timed out waiting for {needle:?}; got {seen:?}"
        );
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap();
        if poll(&mut fds, ms).unwrap() == 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) | Err(_) => panic!("terminal closed before {needle:?}; got {seen:?}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
}

fn set_size(fd: &OwnedFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
    assert_eq!(
        unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) },
        0
    );
}

#[test]
fn run_in_the_foreground_is_the_console_of_a_terminal_container() {
    use std::os::unix::process::CommandExt;
    let mut w = World::new();
    let mut b = w.bundle(&[
        "sh",
        "-c",
        "stty size; tty; read line; echo \"got $line\"; \
         trap 'stty size; exit 7' WINCH; echo ready; while true; do sleep 0.05; done",
    ]);
    b.set(|c| c["process"]["terminal"] = json!(true));
    // The caller's terminal: capsa's stdio is the slave of a pty this test holds.
    let pty = nix::pty::openpty(None, None).unwrap();
    set_size(&pty.master, 45, 123);
    let before = nix::sys::termios::tcgetattr(&pty.slave).unwrap();
    let id = w.id("console");
    let slave = pty.slave.as_raw_fd();
    let mut cmd = w.cmd();
    cmd.args(["run", "--bundle", b.dir_str(), &id]);
    // SAFETY: only async-signal-safe calls between fork and exec: a new session whose
    // controlling terminal is the pty, so SIGWINCH reaches capsa as it would in a shell.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            libc::ioctl(slave, libc::TIOCSCTTY, 0);
            for fd in 0..3 {
                libc::dup2(slave, fd);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut seen = String::new();
    // The container's pty took the caller's size; it is the container's own /dev/pts/0.
    read_until(&pty.master, "/dev/pts/0", &mut seen);
    assert!(seen.contains("45 123"), "{seen:?}");
    // Input reaches the container through capsa (the caller's terminal is raw now: the
    // container's own pty does the line editing).
    nix::unistd::write(&pty.master, b"hello\r").unwrap();
    read_until(&pty.master, "got hello", &mut seen);
    read_until(&pty.master, "ready", &mut seen);
    let during = nix::sys::termios::tcgetattr(&pty.slave).unwrap();
    assert!(!during
        .local_flags
        .contains(nix::sys::termios::LocalFlags::ICANON));
    // A resize of the caller's terminal is forwarded (SIGWINCH -> the container's pty).
    set_size(&pty.master, 50, 100);
    read_until(&pty.master, "50 100", &mut seen);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(7), "{seen:?}");
    let after = nix::sys::termios::tcgetattr(&pty.slave).unwrap();
    assert_eq!(after.local_flags, before.local_flags, "termios restored");
    assert_eq!(after.input_flags, before.input_flags, "termios restored");
}

#[test]
fn run_as_the_console_copies_piped_stdin() {
    let mut w = World::new();
    let mut b = w.bundle(&["sh", "-c", "read x; echo \"got $x\"; exit 3"]);
    b.set(|c| c["process"]["terminal"] = json!(true));
    let id = w.id("console-pipe");
    let mut child = w
        .cmd()
        .args(["run", "--bundle", b.dir_str(), &id])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "{out:?}");
    assert!(out.contains("got hi"), "{out:?}");
}
