//! podman 4.3 (through conmon) drives capsa unchanged: private storage and run dirs, a
//! containers.conf naming capsa as the runtime, the busybox rootfs imported offline. Each
//! step checks what a podman user sees; nothing is left afterwards.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const IMAGE: &str = "localhost/capsa-busybox:latest";

struct Podman {
    dir: PathBuf,
}

impl Podman {
    fn new(dir: &Path) -> Self {
        require("podman", "podman");
        require("conmon", "conmon");
        require("runc", "runc"); // the reference some steps compare with
        let d = dir.display();
        // netns none: no network here. runtime_supports_json must name capsa, or podman
        // (which decides by the binary's name) passes no --log-format=json. default_ulimits:
        // podman's root default (nofile 1048576) needs CAP_SYS_RESOURCE, which the sandbox
        // lacks.
        let conf = format!(
            r#"[containers]
netns = "none"
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/events.log"
runtime = "capsa"
runtime_supports_json = ["crun", "runc", "capsa"]
[engine.runtimes]
capsa = ["{BIN}"]
"#
        );
        std::fs::write(dir.join("containers.conf"), conf).unwrap();
        std::fs::create_dir_all(dir.join("vol")).unwrap();
        Podman {
            dir: dir.to_path_buf(),
        }
    }

    fn cmd(&self) -> Command {
        let d = &self.dir;
        let mut c = bounded_command("podman");
        c.env("CONTAINERS_CONF", d.join("containers.conf"))
            .arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"]);
        c
    }

    fn output(&self, args: &[&str]) -> Output {
        self.cmd().args(args).stdin(Stdio::null()).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        succeeded(self.output(args), format_args!("podman {args:?}"))
    }

    /// `podman run --rm IMAGE sh -c SCRIPT` with extra flags: (code, stdout, stderr).
    fn run(&self, flags: &[&str], script: &str) -> (i32, String, String) {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[IMAGE, "sh", "-c", script]);
        let out = self.output(&args);
        outcome(&out)
    }

    fn state(&self, name: &str) -> String {
        self.ok(&["inspect", "--format", "{{.State.Status}}", name])
            .trim()
            .to_string()
    }

    /// Runs a podman command line (after the global flags of [`Podman::cmd`]) under
    /// script(1), which gives it a terminal.
    fn terminal(&self, args: &str) -> String {
        let cmd = self.cmd();
        let env: Vec<String> = cmd
            .get_envs()
            .filter_map(|(k, v)| Some(format!("{}={}", k.to_str()?, v?.to_str()?)))
            .collect();
        let program = cmd.get_program().to_string_lossy();
        let globals: Vec<&str> = cmd.get_args().filter_map(|a| a.to_str()).collect();
        let line = format!("{} {program} {} {args}", env.join(" "), globals.join(" "));
        in_terminal(&line)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.output(&["rm", "-af", "-t", "0"]);
        let _ = self.output(&["pod", "rm", "-af", "-t", "0"]);
        let _ = self.output(&["system", "reset", "-f"]);
        reap_all();
    }
}

/// The containers in capsa's default state root.
fn capsa_state() -> Vec<std::ffi::OsString> {
    std::fs::read_dir("/run/capsa")
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

#[test]
fn podman_runs_capsa_through_conmon() {
    let mut w = World::new();
    let dir = scratch().join(unique("podman"));
    std::fs::create_dir_all(&dir).unwrap();
    w.dirs.push(dir.clone());
    let state_before = capsa_state();
    {
        let p = Podman::new(&dir);
        let rootfs_tar = dir.join("rootfs.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(setup())
            .arg("-cf")
            .arg(&rootfs_tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        p.ok(&["import", rootfs_tar.to_str().unwrap(), IMAGE]);

        // run --rm: output and exit code.
        assert_eq!(
            p.run(&[], "echo hi; exit 3"),
            (3, "hi\n".into(), String::new())
        );

        // podman's default seccomp profile loads and denies what it denies with the same
        // errno as under runc (same script, same podman, runc as the runtime); unconfined
        // means no filter.
        let probe = "grep ^Seccomp: /proc/self/status; swapoff /x 2>&1; dmesg 2>&1 | head -1; \
                     nsenter -t 1 -U true 2>&1; true";
        let (code, under_capsa, err) = p.run(&[], probe);
        assert_eq!(code, 0, "{err}");
        assert!(under_capsa.starts_with("Seccomp:\t2\n"), "{under_capsa}");
        let (_, under_runc, _) = p.run(&["--runtime", "runc"], probe);
        assert_eq!(under_capsa, under_runc);
        let (_, out, _) = p.run(
            &["--security-opt", "seccomp=unconfined"],
            "grep ^Seccomp: /proc/self/status",
        );
        assert_eq!(out, "Seccomp:\t0\n");

        // run -d, logs, exec (+ user, env, workdir).
        // "started" once the trap is set: a TERM before it would kill the shell instead.
        let trap = "trap 'echo term; exit 0' TERM; echo started; while true; do sleep 0.1; done";
        p.ok(&["run", "-d", "--name", "d1", IMAGE, "sh", "-c", trap]);
        assert_eq!(p.state("d1"), "running");
        wait_until("d1's trap", || p.ok(&["logs", "d1"]).contains("started"));
        let out = p.output(&["exec", "d1", "sh", "-c", "echo ex; exit 5"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ex\n");
        assert_eq!(out.status.code(), Some(5));
        let out = p.ok(&[
            "exec",
            "-u",
            "1000:1000",
            "-e",
            "FOO=bar",
            "-w",
            "/tmp",
            "d1",
            "sh",
            "-c",
            "id -u; id -g; echo $FOO; pwd",
        ]);
        assert_eq!(out, "1000\n1000\nbar\n/tmp\n");
        let out = p.terminal("exec -it d1 tty");
        assert!(out.contains("/dev/pts/"), "{out:?}");

        // pause / unpause.
        p.ok(&["pause", "d1"]);
        assert_eq!(p.state("d1"), "paused");
        p.ok(&["unpause", "d1"]);
        assert_eq!(p.state("d1"), "running");

        // kill -s TERM reaches the trapping pid 1.
        p.ok(&["kill", "-s", "TERM", "d1"]);
        p.ok(&["wait", "d1"]);
        assert!(p.ok(&["logs", "d1"]).contains("term"));
        assert_eq!(p.state("d1"), "exited");

        // start again; stop -t 1 of a process that ignores TERM ends with KILL.
        p.ok(&["start", "d1"]);
        assert_eq!(p.state("d1"), "running");
        p.ok(&[
            "run",
            "-d",
            "--name",
            "stubborn",
            IMAGE,
            "sh",
            "-c",
            "trap '' TERM; echo ignoring; while true; do sleep 0.1; done",
        ]);
        wait_until("stubborn's trap", || {
            p.ok(&["logs", "stubborn"]).contains("ignoring")
        });
        p.ok(&["stop", "-t", "1", "stubborn"]);
        let code = p.ok(&["inspect", "--format", "{{.State.ExitCode}}", "stubborn"]);
        assert_eq!(code.trim(), "137");

        // create + start -a.
        p.ok(&[
            "create",
            "--name",
            "c2",
            IMAGE,
            "sh",
            "-c",
            "echo attached; exit 6",
        ]);
        let out = p.output(&["start", "-a", "c2"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "attached\n");
        assert_eq!(out.status.code(), Some(6));

        // run -it through a terminal.
        let out = p.terminal(&format!("run --rm -it {IMAGE} sh -c 'tty; echo done'"));
        assert!(
            out.contains("/dev/pts/0") && out.contains("done"),
            "{out:?}"
        );

        // Limits, read back inside.
        let (code, out, err) = p.run(
            &["--memory", "64m", "--cpus", "0.5", "--pids-limit", "100"],
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us \
             /sys/fs/cgroup/pids/pids.max",
        );
        assert_eq!((code, out.as_str()), (0, "67108864\n50000\n100\n"), "{err}");

        // -i: stdin reaches the container.
        let mut child = p
            .cmd()
            .args([
                "run",
                "--rm",
                "-i",
                IMAGE,
                "sh",
                "-c",
                "read x; echo got $x",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"abc\n").unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "got abc\n");

        // --read-only, --privileged, --user with no capabilities.
        let (code, _, err) = p.run(&["--read-only"], "touch /x");
        assert_ne!(code, 0);
        assert!(err.contains("Read-only file system"), "{err}");
        let cap_eff = |out: &str| -> u64 {
            let line = out.lines().find(|l| l.starts_with("CapEff:")).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        let (_, out, _) = p.run(&["--privileged"], "grep CapEff /proc/self/status");
        assert_ne!(
            cap_eff(&out) & (1 << 21),
            0,
            "CAP_SYS_ADMIN when privileged"
        );
        let (_, out, _) = p.run(
            &["--user", "1000:1000", "--cap-drop", "ALL"],
            "id -u; grep -E 'Cap(Prm|Eff|Bnd)' /proc/self/status",
        );
        assert!(out.starts_with("1000\n"), "{out}");
        assert!(
            out.lines().skip(1).all(|l| l.ends_with("0000000000000000")),
            "{out}"
        );

        // --tmpfs (tmpcopyup), a read-only volume, hostname, env.
        std::fs::write(dir.join("vol/f"), "volfile\n").unwrap();
        let vol = format!("{}:/b:ro", dir.join("vol").display());
        let (code, out, err) = p.run(
            &[
                "--tmpfs",
                "/etc",
                "-v",
                &vol,
                "--hostname",
                "hh",
                "-e",
                "A=1",
            ],
            "cat /etc/motd /b/f; touch /b/x 2>/dev/null || echo ro; hostname; echo $A; \
             grep ' /etc ' /proc/self/mountinfo | grep -c tmpfs",
        );
        assert_eq!(
            (code, out.as_str()),
            (0, "capsa busybox fixture\nvolfile\nro\nhh\n1\n1\n"),
            "{err}"
        );

        // --network host, --init.
        let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
        let (_, out, _) = p.run(&["--network", "host"], "readlink /proc/self/ns/net");
        assert_eq!(out.trim(), host_net.to_str().unwrap());
        let (_, out, _) = p.run(&["--init"], "ps -o pid,comm");
        assert!(out.lines().any(|l| l.trim() == "1 podman-init"), "{out}");

        // A pod: containers join the infra container's namespaces by path.
        p.ok(&["pod", "create", "--name", "p1"]);
        p.ok(&[
            "run", "-d", "--pod", "p1", "--name", "pa", IMAGE, "sleep", "1000",
        ]);
        let (code, out, err) = p.run(&["--pod", "p1"], "hostname; readlink /proc/self/ns/net");
        assert_eq!(code, 0, "{err}");
        let pa_pid = p.ok(&["inspect", "--format", "{{.State.Pid}}", "pa"]);
        let pa_net = std::fs::read_link(format!("/proc/{}/ns/net", pa_pid.trim())).unwrap();
        assert_eq!(out.lines().nth(1), pa_net.to_str());

        // rm -f -t 0 of a running container.
        p.ok(&["rm", "-f", "-t", "0", "pa"]);
        p.ok(&["pod", "rm", "-f", "p1"]);

        // A broken bundle: podman prints capsa's reason.
        let out = p.output(&["run", "--rm", IMAGE, "/nonexistent"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("\"/nonexistent\"") && err.contains("No such file or directory"),
            "{err}"
        );

        p.ok(&["rm", "-af", "-t", "0"]);
        // podman passes no --root (its cleanup process would not pass one either): capsa's
        // default state root holds nothing of this test's any more.
        let left: Vec<_> = capsa_state()
            .into_iter()
            .filter(|id| !state_before.contains(id))
            .collect();
        assert!(left.is_empty(), "capsa state left in /run/capsa: {left:?}");
    }
    let procs = processes_mentioning(dir.to_str().unwrap());
    assert!(procs.is_empty(), "processes left: {procs:?}");
    assert_eq!(remove_cgroup_tree("libpod_parent"), Vec::<PathBuf>::new());
}
