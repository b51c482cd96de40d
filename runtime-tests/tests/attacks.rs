//! One test per class of runc CVE: a container (or its image, or its config) tries the
//! attack, and it fails. Classes covered elsewhere, by scenario:
//! - CVE-2021-30465 (mount destination through a symlink): rootfs.rs,
//!   a_mount_destination_symlinked_to_a_host_path_stays_inside_the_rootfs;
//! - CVE-2024-21626 (leaked fds): process.rs,
//!   only_stdio_reaches_the_container_even_when_the_caller_leaks_fds;
//! - layer extraction escapes: overlay.rs, layers_that_escape_are_refused_and_write_nothing.

mod common;
use common::*;
use serde_json::json;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn host_dir(w: &mut World, name: &str) -> PathBuf {
    let d = scratch().join(unique(name));
    std::fs::create_dir_all(&d).unwrap();
    w.dirs.push(d.clone());
    d
}

fn exe_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default()
}

/// Tries to write through a handle to a runtime's /proc/<pid>/exe after that process has
/// moved on: the CVE-2019-5736 overwrite.
fn write_through(handle: &OwnedFd) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))?;
    f.write_all(b"#!/bin/sh\necho pwned\n")
}

#[test]
fn cve_2019_5736_the_runtime_binary_cannot_be_overwritten() {
    let mut w = World::new();
    let host_binary = std::fs::canonicalize(BIN).unwrap();
    let before = std::fs::read(&host_binary).unwrap();
    let b = w.bundle(&["sleep", "1000"]);
    let id = w.id("exe");
    let init = w.create(&id, &b);
    // The waiting init is capsa, but not the host's file.
    assert_ne!(exe_of(init as u32), host_binary);
    // Inside the container, root with the default capabilities cannot even open it: init
    // is non-dumpable until its execve.
    let out = w.capsa(&[
        "exec",
        &id,
        "sh",
        "-c",
        "cat /proc/1/exe > /dev/null 2>&1 && echo opened || echo denied",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "denied\n");
    // The strongest attacker holds a handle from outside; once init has become the
    // container's process, writing through the handle still fails.
    let handle: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(format!("/proc/{init}/exe"))
        .unwrap()
        .into();
    w.ok(&["start", &id]);
    wait_until_exe_changes(init as u32, &handle);
    write_through(&handle).expect_err("the runtime binary was writable");
    assert!(unwritable(&handle), "init ran from a writable binary");

    // exec too: the runtime process of a foreground exec runs from the protected copy.
    let log = scratch().join(unique("exec-out"));
    let mut child = w
        .cmd()
        .args(["exec", &id, "sleep", "30"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while exe_of(child.id()) == host_binary {
        assert!(Instant::now() < deadline, "exec never left the host binary");
        std::thread::sleep(Duration::from_millis(5));
    }
    let exec_handle: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(format!("/proc/{}/exe", child.id()))
        .unwrap()
        .into();
    w.ok(&["delete", "--force", &id]);
    let _ = child.wait();
    let _ = std::fs::remove_file(&log);
    assert!(write_through(&exec_handle).is_err());
    assert!(unwritable(&exec_handle), "exec ran from a writable binary");
    wait_exit(init);
    reap(init);
    assert_eq!(
        std::fs::read(&host_binary).unwrap(),
        before,
        "host binary changed"
    );
}

/// The file behind the handle refuses writes whoever runs it: it sits on a read-only mount,
/// or it is a write-sealed memfd. (A failed write alone could be ETXTBSY, which only lasts
/// while some capsa runs the file.)
fn unwritable(handle: &OwnedFd) -> bool {
    let ro = nix::sys::statvfs::fstatvfs(handle)
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false);
    let file = std::fs::File::open(format!("/proc/self/fd/{}", handle.as_raw_fd()));
    // SAFETY: F_GET_SEALS on a descriptor we own.
    let sealed = file
        .map(|f| unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) } & libc::F_SEAL_WRITE != 0)
        .unwrap_or(false);
    ro || sealed
}

/// Waits until init has executed the container's process (its exe is no longer capsa's).
fn wait_until_exe_changes(pid: u32, capsa: &OwnedFd) {
    let capsa_exe = std::fs::read_link(format!("/proc/self/fd/{}", capsa.as_raw_fd())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while exe_of(pid) == capsa_exe {
        assert!(Instant::now() < deadline, "init never executed");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn cve_2024_21626_a_cwd_through_a_leaked_host_fd_is_refused() {
    let mut w = World::new();
    let secret = host_dir(&mut w, "host-secret");
    std::fs::write(secret.join("marker-on-the-host"), "x").unwrap();
    let dir: OwnedFd = std::fs::File::open(&secret).unwrap().into();
    let mut b = w.bundle(&["ls", "-a"]);
    b.set(|c| c["process"]["cwd"] = json!("/proc/self/fd/7"));
    let raw = dir.as_raw_fd();
    let id = w.id("cwd");
    let mut cmd = w.cmd();
    cmd.args(["run", "--bundle", b.dir_str(), &id])
        .stdin(Stdio::null());
    // SAFETY: dup2 between fork and exec: the caller leaks a host directory as fd 7.
    unsafe {
        cmd.pre_exec(move || {
            libc::dup2(raw, 7);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stdout.contains("marker-on-the-host"),
        "the container saw the host: {stdout}"
    );
    assert!(!out.status.success(), "{stdout}");
    assert!(stderr.contains("/proc/self/fd/7"), "{stderr}");
}

#[test]
fn cve_2025_31133_masking_never_uses_a_fake_dev_null() {
    for fake in ["symlink", "regular file"] {
        let mut w = World::new();
        let secret = host_dir(&mut w, "host-target");
        std::fs::write(secret.join("file"), "host").unwrap();
        let mut b = w.bundle(&["sh", "-c", "cat /proc/kcore | head -c 1 | wc -c"]);
        // No tmpfs on /dev: the image's own /dev/null is what masking would bind.
        b.set(|c| {
            let mounts = c["mounts"].as_array_mut().unwrap();
            mounts.retain(|m| m["destination"] != "/dev");
            c["linux"]["maskedPaths"] = json!(["/proc/kcore"]);
        });
        let null = b.rootfs().join("dev/null");
        let _ = std::fs::remove_file(&null);
        std::fs::create_dir_all(null.parent().unwrap()).unwrap();
        if fake == "symlink" {
            std::os::unix::fs::symlink(secret.join("file"), &null).unwrap();
        } else {
            std::fs::write(&null, "not a device").unwrap();
        }
        let (code, out, err) = w.run(&b);
        // Either capsa refuses, or it replaced the fake with a real device first; never does
        // /proc/kcore end up bound to something readable.
        assert!(
            code != 0 && err.contains("/dev/null") || code == 0 && out.trim() == "0",
            "{fake}: code {code}, out {out:?}, err {err:?}"
        );
        assert_eq!(
            std::fs::read_to_string(secret.join("file")).unwrap(),
            "host"
        );
    }
}

#[test]
fn cve_2025_52881_a_sysctl_write_is_not_redirected_by_a_mount_over_proc() {
    let mut w = World::new();
    let host = host_dir(&mut w, "host-sysctl");
    let target = host.join("ip_forward");
    std::fs::write(&target, "host-content\n").unwrap();
    let mut b = w.bundle(&["true"]);
    let src = target.to_str().unwrap().to_string();
    b.set(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/proc/sys/net/ipv4/ip_forward",
            "type": "bind",
            "source": src,
            "options": ["bind"]
        }));
        c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    });
    let (code, _, err) = w.run(&b);
    assert_ne!(code, 0);
    // The mount over /proc is refused first now (as runc's checkProcMount does); the sysctl
    // write's own check (no mount crossed) stays behind it as a second line.
    assert!(
        err.contains("refusing to mount on /proc/sys/net/ipv4/ip_forward")
            || err.contains("net.ipv4.ip_forward"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "host-content\n");
}

#[test]
fn cve_2022_29162_inheritable_capabilities_are_never_widened() {
    let mut w = World::new();
    let mut b = w.bundle(&["sh", "-c", "grep -E '^Cap(Inh|Amb)' /proc/self/status"]);
    let caps = json!(["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_KILL"]);
    b.set(|c| {
        c["process"]["capabilities"] = json!({
            "bounding": caps, "effective": caps, "permitted": caps
        })
    });
    let out = w.run_ok(&b);
    assert_eq!(
        out,
        "CapInh:\t0000000000000000\nCapAmb:\t0000000000000000\n"
    );
    // exec --cap widens what the process may do, never what it passes on.
    let mut b = w.bundle(&["sleep", "1000"]);
    b.set(|c| {
        c["process"]["capabilities"] = json!({
            "bounding": caps, "effective": caps, "permitted": caps
        })
    });
    let id = w.id("inh");
    let pid = w.create(&id, &b);
    w.ok(&["start", &id]);
    let out = w.ok(&[
        "exec",
        "--cap",
        "CAP_SYS_TIME",
        &id,
        "sh",
        "-c",
        "grep -E '^Cap(Inh|Amb)' /proc/self/status",
    ]);
    assert_eq!(
        out,
        "CapInh:\t0000000000000000\nCapAmb:\t0000000000000000\n"
    );
    w.ok(&["delete", "--force", &id]);
    wait_exit(pid);
    reap(pid);
}

#[test]
fn a_masked_path_that_is_a_symlink_to_a_host_path_masks_nothing_on_the_host() {
    let mut w = World::new();
    let secret = host_dir(&mut w, "host-masked");
    std::fs::write(secret.join("file"), "host").unwrap();
    let mut b = w.bundle(&["true"]);
    std::os::unix::fs::symlink(secret.join("file"), b.rootfs().join("etc/masked-link")).unwrap();
    std::os::unix::fs::symlink(&secret, b.rootfs().join("etc/masked-dir")).unwrap();
    b.set(|c| c["linux"]["maskedPaths"] = json!(["/etc/masked-link", "/etc/masked-dir"]));
    w.run_ok(&b);
    assert_eq!(
        std::fs::read_to_string(secret.join("file")).unwrap(),
        "host"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(secret.to_str().unwrap()));
    assert!(Path::new(&secret).join("file").exists());
}

/// The infra process of a pod runs for the pod's whole life as pid 1 of a pid namespace its
/// containers may share: the CVE-2019-5736 class for capsa-pause. It must not be possible to
/// open its /proc/1/exe from a container, and a handle to it, however obtained, must never
/// write the host's file that the next `pod create` runs as root.
#[test]
fn the_pods_infra_binary_cannot_be_overwritten_from_the_pod() {
    let mut w = World::new();
    // The test's own copy of capsa-pause, so that its bytes are this test's to check.
    let pause = host_dir(&mut w, "pause").join("capsa-pause");
    std::fs::copy(env!("CARGO_BIN_EXE_capsa-pause"), &pause).unwrap();
    let before = std::fs::read(&pause).unwrap();
    let pod = unique("pod");
    w.pods.push(pod.clone());
    w.ok(&[
        "pod",
        "create",
        "--share",
        "net,ipc,uts,pid",
        "--pause-binary",
        pause.to_str().unwrap(),
        &pod,
    ]);
    let list: serde_json::Value =
        serde_json::from_str(&w.ok(&["pod", "list", "--format", "json"])).unwrap();
    let infra = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == pod.as_str())
        .and_then(|p| p["pid"].as_i64())
        .expect("the pod is listed with its infra pid") as i32;
    w.pids.push(infra);
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{infra}/comm")).unwrap(),
        "capsa-pause\n"
    );
    assert_ne!(
        exe_of(infra as u32),
        pause,
        "the infra runs the host's file"
    );

    // Root in a container of the pod, sharing its pid namespace, with the default
    // capabilities: /proc/1 is the infra, and its exe can be neither read nor written.
    let b = w.bundle(&[
        "sh",
        "-c",
        "cat /proc/1/comm; \
         cat /proc/1/exe > /dev/null 2>&1 && echo opened || echo denied; \
         (exec 3>> /proc/1/exe) 2>/dev/null && echo writable || echo refused",
    ]);
    let (code, out, err) = w.run_with(&["--pod", &pod], &b);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "capsa-pause\ndenied\nrefused\n");

    // The strongest attacker holds a handle from outside (what a privileged container could
    // pass on); once the pod is gone, writing through it still fails.
    let handle: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(format!("/proc/{infra}/exe"))
        .unwrap()
        .into();
    assert!(unwritable(&handle), "the infra runs from a writable binary");
    w.ok(&["pod", "rm", &pod]);
    wait_exit(infra);
    reap(infra);
    write_through(&handle).expect_err("the pause binary was writable through the handle");
    drop(handle);
    assert_eq!(
        std::fs::read(&pause).unwrap(),
        before,
        "the pause binary changed"
    );
}

/// Accepts one console-socket connection and returns the pty master it carries.
fn receive_master(listener: std::os::unix::net::UnixListener) -> OwnedFd {
    let (stream, _) = listener.accept().unwrap();
    recv_with_fd(stream.as_raw_fd()).1
}

/// `exec -t -d` of `script` in `id`; returns (capsa's output, what the terminal showed).
fn exec_in_terminal(w: &mut World, id: &str, script: &str) -> (std::process::Output, String) {
    use std::io::Read;
    let sock = scratch().join(unique("attack-console.sock"));
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let receiver = std::thread::spawn(move || receive_master(listener));
    let pidfile = scratch().join(unique("attack-exec.pid"));
    let out = w.capsa(&[
        "exec",
        "-t",
        "-d",
        "--console-socket",
        sock.to_str().unwrap(),
        "--pid-file",
        pidfile.to_str().unwrap(),
        id,
        "sh",
        "-c",
        script,
    ]);
    let mut text = String::new();
    if out.status.success() {
        let master = receiver.join().unwrap();
        let mut buf = Vec::new();
        let _ = std::fs::File::from(master).read_to_end(&mut buf);
        text = String::from_utf8_lossy(&buf).replace('\r', "");
        let pid = read_pid_file(&pidfile);
        wait_exit(pid);
        reap(pid);
    } else {
        // Unblock the accept: nothing connected, or the connection carried nothing.
        let _ = std::os::unix::net::UnixStream::connect(&sock);
        let _ = receiver.join();
    }
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(&pidfile);
    (out, text)
}

/// A container that controls its own /dev (CAP_SYS_ADMIN) keeps a real ptmx at
/// /dev/pts/ptmx (a bind of its own devpts's, which the kernel finds again through
/// /dev/pts/pts) but makes every /dev/pts/N a symlink to a file of its choosing, then waits
/// for an `exec -t`. A runtime that opens the pty slave by the name ptsname gives would make
/// that file the exec'd process's terminal (and mount it on /dev/console); capsa takes the
/// slave from the master (TIOCGPTPEER) and never mounts /dev/console for an exec.
#[test]
fn cve_2025_52565_a_planted_dev_pts_symlink_never_becomes_the_terminal() {
    let mut w = World::new();
    let setup = "mkdir /dev/realpts && \
        mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/realpts && \
        umount -l /dev/pts && \
        touch /dev/pts/ptmx && mount --bind /dev/realpts/ptmx /dev/pts/ptmx && \
        mkdir /dev/pts/pts && mount --bind /dev/realpts /dev/pts/pts && \
        for i in 0 1 2 3 4 5 6 7 8 9; do ln -s /secret /dev/pts/$i; done && \
        echo secret > /secret && touch /ready; exec sleep 1000";
    let mut b = w.bundle(&["sh", "-c", setup]);
    b.set(|c| {
        c["root"]["readonly"] = json!(false);
        for set in ["bounding", "effective", "permitted"] {
            let caps = c["process"]["capabilities"][set].as_array_mut().unwrap();
            caps.push(json!("CAP_SYS_ADMIN"));
            caps.push(json!("CAP_MKNOD"));
        }
    });
    let id = w.id("console-attack");
    let pid = w.create(&id, &b);
    w.ok(&["start", &id]);
    let ready = b.rootfs().join("ready");
    wait_until("the container's trap", || ready.exists());
    let (out, text) = exec_in_terminal(
        &mut w,
        &id,
        "stat -L -c '%F %t' /proc/self/fd/0; test -e /dev/console && echo console-mounted || echo console-untouched",
    );
    assert!(
        out.status.success(),
        "exec -t failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 0x88 = 136, the first Unix98 pty slave major: the real pty, not /secret.
    assert_eq!(text, "character special file 88\nconsole-untouched\n");
    assert_eq!(
        std::fs::read_to_string(b.rootfs().join("secret")).unwrap(),
        "secret\n"
    );
    // A ptmx node that is not a devpts's own is refused, with an error that says so.
    w.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        // Lazily: the master of the exec above may still be open through this mount.
        "umount -l /dev/pts/ptmx && rm /dev/pts/ptmx && mknod -m 666 /dev/pts/ptmx c 5 2",
    ]);
    let (out, _) = exec_in_terminal(&mut w, &id, "true");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing /dev/pts/ptmx") && err.contains("not on a devpts"),
        "{err}"
    );
    w.ok(&["delete", "--force", &id]);
    wait_exit(pid);
}

/// Mounts over /proc entries are refused, naming the destination (as runc's checkProcMount),
/// whether written under /proc or reaching it through a symlink in the image; the files
/// lxcfs provides may still be mounted over.
#[test]
fn cve_2025_52881_mounts_over_proc_entries_are_refused() {
    let mut w = World::new();
    let host = host_dir(&mut w, "host-proc");
    let file = host.join("file");
    std::fs::write(&file, "host-content\n").unwrap();
    let src = file.to_str().unwrap().to_string();
    for (dest, symlink) in [
        ("/proc/sys/kernel/core_pattern", None),
        ("/proc/self/attr/exec", None),
        ("/proc/1/task/1/fd", None),
        ("/proc/sysrq-trigger", None),
        ("/proc/cpuinfo/../kcore", None),
        ("/kernel/core_pattern", Some(("kernel", "/proc/sys/kernel"))),
    ] {
        let mut b = w.bundle(&["true"]);
        if let Some((link, target)) = symlink {
            std::os::unix::fs::symlink(target, b.rootfs().join(link)).unwrap();
        }
        let src = if dest.ends_with("/fd") {
            host.to_str().unwrap().to_string()
        } else {
            src.clone()
        };
        b.set(|c| {
            c["mounts"].as_array_mut().unwrap().push(json!({
                "destination": dest, "type": "bind", "source": src, "options": ["bind"]
            }));
        });
        let (code, _, err) = w.run(&b);
        assert_ne!(code, 0, "{dest}");
        assert!(
            err.contains(&format!("refusing to mount on {dest}")),
            "{dest}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // A fake /proc is refused too: a tmpfs at /proc at mount time, and a procfs directory
    // that is not a procfs root when /proc is first used after pivot_root.
    let mut b = w.bundle(&["true"]);
    b.set(|c| {
        for m in c["mounts"].as_array_mut().unwrap() {
            if m["destination"] == "/proc" {
                *m = json!({"destination": "/proc", "type": "tmpfs", "source": "tmpfs"});
            }
        }
    });
    let (code, _, err) = w.run(&b);
    assert_ne!(code, 0);
    assert!(
        err.contains("refusing to mount on /proc: only a procfs"),
        "{err}"
    );
    let mut b = w.bundle(&["true"]);
    b.set(|c| {
        for m in c["mounts"].as_array_mut().unwrap() {
            if m["destination"] == "/proc" {
                *m = json!({"destination": "/proc", "type": "bind", "source": "/proc/sys",
                            "options": ["rbind"]});
            }
        }
    });
    let (code, _, err) = w.run(&b);
    assert_ne!(code, 0);
    assert!(
        err.contains("/proc is not the root of a procfs mount"),
        "{err}"
    );
    // lxcfs's way still works: a file bound over /proc/cpuinfo.
    let mut b = w.bundle(&["cat", "/proc/cpuinfo"]);
    b.set(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/proc/cpuinfo", "type": "bind", "source": src, "options": ["bind", "ro"]
        }));
    });
    assert_eq!(w.run_ok(&b), "host-content\n");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "host-content\n");
}

/// Plants `.NAME.<pid>` -> `victim` in `dir` for the next `count` pids: the temporary name a
/// runtime that writes `NAME` by a pid-suffixed temp file would use.
/// Returns the last pid used before and pid_max.
fn plant_temp_symlinks(dir: &Path, names: &[&str], victim: &Path, count: i32) -> (i32, i32) {
    let read = |f: &str| -> i32 { std::fs::read_to_string(f).unwrap().trim().parse().unwrap() };
    let (last, max) = (
        read("/proc/sys/kernel/ns_last_pid"),
        read("/proc/sys/kernel/pid_max"),
    );
    for i in 1..=count {
        let pid = (last + i) % max;
        for name in names {
            let _ = std::os::unix::fs::symlink(victim, dir.join(format!(".{name}.{pid}")));
        }
    }
    (last, max)
}

#[test]
fn a_pid_file_directory_with_planted_symlinks_cannot_redirect_the_write() {
    let mut w = World::new();
    let b = w.bundle(&["sleep", "100"]);
    let d = host_dir(&mut w, "pidfiles");
    let victim = d.join("victim");
    std::fs::write(&victim, "precious").unwrap();
    const RANGE: i32 = 3000;
    let (first, pid_max) = plant_temp_symlinks(&d, &["init.pid", "exec.pid"], &victim, RANGE);
    let id = w.id("pidfile");
    let init_pid = d.join("init.pid");
    w.ok(&[
        "create",
        "--bundle",
        b.dir_str(),
        "--pid-file",
        init_pid.to_str().unwrap(),
        &id,
    ]);
    let pid = read_pid_file(&init_pid);
    w.pids.push(pid);
    let exec_pid = d.join("exec.pid");
    w.ok(&[
        "exec",
        "--detach",
        "--pid-file",
        exec_pid.to_str().unwrap(),
        &id,
        "sleep",
        "100",
    ]);
    let last: i32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The exec'd process is re-parented to us: reap it before anything can fail, or a
    // cleanup's delete --force would wait on a pid namespace that cannot empty.
    let exec = read_pid_file(&exec_pid);
    kill_and_reap(exec);
    assert!(
        (last - first).rem_euclid(pid_max) < RANGE,
        "more than {RANGE} pids went by: capsa's own pids may not have been planted"
    );

    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    for f in [&init_pid, &exec_pid] {
        assert!(
            std::fs::symlink_metadata(f).unwrap().is_file(),
            "{}",
            f.display()
        );
    }
    assert_eq!(w.state(&id)["pid"], json!(pid));
    let stray: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .filter(|e| !e.file_type().unwrap().is_symlink())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !["victim", "init.pid", "exec.pid"].contains(&n.as_str()))
        .collect();
    assert!(stray.is_empty(), "temporary files left: {stray:?}");
    w.ok(&["delete", "--force", &id]);
    wait_exit(pid);
    reap(pid);
}

/// `capsa ARGS` under a hard time limit: (exit code, stdout, stderr); -1 when it was killed.
fn capsa_within(w: &World, secs: u32, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new("timeout")
        .args(["-s", "KILL", &secs.to_string(), BIN, "--root"])
        .arg(&w.root)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    outcome(&out)
}

#[test]
fn an_image_passwd_that_is_endless_or_blocks_fails_with_its_name() {
    let mut w = World::new();
    let mut b = w.bundle(&["sh", "-c", "echo HOME=$HOME"]);
    // init is charged to the container: reading /dev/zero whole once ran it into the OOM
    // killer at this limit.
    b.set(|c| c["linux"]["resources"]["memory"] = json!({"limit": 64 << 20}));
    let passwd = b.rootfs().join("etc/passwd");
    let good = std::fs::read(&passwd).unwrap();
    let sparse = |first_line: &[u8]| {
        let _ = std::fs::remove_file(&passwd);
        std::fs::write(&passwd, first_line).unwrap();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&passwd)
            .unwrap();
        f.set_len(300 << 20).unwrap();
    };
    let cases: [(&str, &dyn Fn(), &str); 3] = [
        (
            "a link to /dev/zero",
            &|| {
                std::fs::remove_file(&passwd).unwrap();
                std::os::unix::fs::symlink("/dev/zero", &passwd).unwrap();
            },
            "/etc/passwd is a character device, not a regular file",
        ),
        (
            "a FIFO",
            &|| {
                std::fs::remove_file(&passwd).unwrap();
                nix::unistd::mkfifo(&passwd, nix::sys::stat::Mode::from_bits_truncate(0o644))
                    .unwrap();
            },
            "/etc/passwd is a FIFO, not a regular file",
        ),
        (
            "300 MB of zeros",
            &|| sparse(b""),
            "/etc/passwd has a line longer than 65536 bytes",
        ),
    ];
    for (what, make, expected) in cases {
        make();
        let id = w.id("passwd");
        let started = Instant::now();
        let (code, out, err) = capsa_within(&w, 30, &["run", "--bundle", b.dir_str(), &id]);
        assert!(
            code > 0,
            "{what}: exit {code}, stdout {out:?} stderr {err:?}"
        );
        assert!(
            err.contains("reading the container's /etc/passwd for the HOME of uid 0")
                && err.contains(expected),
            "{what}: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: took {:?}",
            started.elapsed()
        );
        assert!(w.fails(&["state", &id]).contains("does not exist"));
    }

    // A huge file whose first line is the user's: read up to that line only.
    sparse(b"root:x:0:0:root:/root:/bin/sh\n");
    let id = w.id("passwd");
    let (code, out, err) = capsa_within(&w, 30, &["run", "--bundle", b.dir_str(), &id]);
    assert_eq!((code, out.as_str()), (0, "HOME=/root\n"), "{err}");
    std::fs::remove_file(&passwd).unwrap();
    std::fs::write(&passwd, &good).unwrap();
}

#[test]
fn exec_reads_home_from_passwd_and_refuses_a_fifo_there() {
    let mut w = World::new();
    let b = w.bundle(&["sleep", "100"]);
    let id = w.id("passwd-exec");
    let pid = w.create(&id, &b);
    w.ok(&["start", &id]);
    let home = |user: &str| {
        capsa_within(
            &w,
            30,
            &["exec", "--user", user, &id, "sh", "-c", "echo $HOME"],
        )
    };
    assert_eq!(home("1000").1, "/home/tester\n");
    assert_eq!(home("4242").1, "/\n");
    let passwd = b.rootfs().join("etc/passwd");
    std::fs::remove_file(&passwd).unwrap();
    nix::unistd::mkfifo(&passwd, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let (code, out, err) = home("1000");
    // Stop the container first: an exec stuck on the FIFO (when capsa is killed) is
    // re-parented to us, and the pid namespace empties only once we reap it.
    w.ok(&["kill", "--all", &id, "KILL"]);
    wait_until("the container's processes to exit", || {
        reap_all();
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    w.ok(&["delete", &id]);
    assert!(code > 0, "exit {code}, stdout {out:?}");
    assert!(
        err.contains("uid 1000") && err.contains("/etc/passwd is a FIFO, not a regular file"),
        "{err}"
    );
}
