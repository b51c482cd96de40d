//! process.terminal with --console-socket: the pty master arrives over the socket and the
//! container's stdio, controlling terminal and /dev/console are the pty.

mod common;
use common::*;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use serde_json::json;
use std::io::{IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;

/// Accepts one connection and receives (name, fd) as runc's console-socket clients do.
fn receive_master(listener: UnixListener) -> (String, OwnedFd) {
    let (stream, _) = listener.accept().unwrap();
    let mut buf = [0u8; 256];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .unwrap();
    let mut fd = None;
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            fd = fds.first().copied();
        }
    }
    let n = msg.bytes;
    let name = String::from_utf8_lossy(&buf[..n]).into_owned();
    // SAFETY: the kernel installed this descriptor for us with SCM_RIGHTS.
    (name, unsafe {
        OwnedFd::from_raw_fd(fd.expect("no fd received"))
    })
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
    assert!(w
        .fails(&["exec", "-t", &id, "true"])
        .contains("--console-socket"));
    w.ok(&["delete", "--force", &id]);
    wait_exit(pid);
}
