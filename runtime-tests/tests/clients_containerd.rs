//! containerd 1.6 drives capsa unchanged: a private containerd (its own root, state and
//! sockets), an image imported offline, and `ctr run --runc-binary capsa`. Each step checks
//! what a user of ctr sees, and the cgroup where limits land; nothing is left afterwards.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const IMAGE: &str = "docker.io/library/capsa-busybox:latest";

struct Containerd {
    dir: PathBuf,
    ns: String,
    daemon: Child,
}

impl Containerd {
    fn start(dir: &Path) -> Self {
        require("containerd", "containerd");
        require("ctr", "containerd");
        let d = dir.display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/t.sock"
"#
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        for sub in ["runc", "fifo"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("containerd.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("containerd.err")).unwrap())
            .spawn()
            .unwrap();
        let c = Containerd {
            dir: dir.to_path_buf(),
            ns: unique("capsa-ctr"),
            daemon,
        };
        // Ready when ctr can talk to it (no event to wait on before the socket exists).
        wait_until("containerd to answer", || {
            c.ctr(&["version"]).status.success()
        });
        c
    }

    fn ctr_cmd(&self) -> Command {
        let mut cmd = bounded_command("ctr");
        cmd.arg("--address")
            .arg(self.dir.join("c.sock"))
            .args(["--namespace", &self.ns]);
        cmd
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_cmd()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        succeeded(self.ctr(args), format_args!("ctr {args:?}"))
    }

    /// `ctr run` with capsa as the runtime binary.
    fn run_cmd(&self, flags: &[&str], id: &str, argv: &[&str]) -> Command {
        let mut cmd = self.ctr_cmd();
        cmd.args(["run", "--runc-binary", BIN, "--runc-root"])
            .arg(self.dir.join("runc"))
            .arg("--fifo-dir")
            .arg(self.dir.join("fifo"))
            .args(flags)
            .args([IMAGE, id])
            .args(argv);
        cmd
    }

    fn run(&self, flags: &[&str], id: &str, argv: &[&str]) -> Output {
        self.run_cmd(flags, id, argv)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn task_status(&self, id: &str) -> String {
        self.ok(&["task", "ls"])
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or("")
            .to_string()
    }

    fn wait_status(&self, id: &str, want: &str) {
        wait_until(&format!("task {id} to be {want}"), || {
            self.task_status(id) == want
        });
    }

    fn cgroup(&self, controller: &str, id: &str, file: &str) -> String {
        let p = cgroup_file_at(controller, &format!("{}/{id}", self.ns), file);
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .to_string()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Whatever a failed step left: tasks, containers, then the daemon.
        if let Ok(out) = self.ctr_cmd().args(["task", "ls", "-q"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self.ctr(&["task", "kill", "-a", "-s", "SIGKILL", id]);
                let _ = self.ctr(&["task", "rm", "-f", id]);
            }
        }
        if let Ok(out) = self.ctr_cmd().args(["container", "ls", "-q"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self.ctr(&["container", "rm", id]);
            }
        }
        let _ = self.ctr(&["image", "rm", IMAGE]);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.daemon.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.daemon.wait();
        reap_all();
    }
}

#[test]
fn ctr_runs_capsa_through_the_containerd_shim() {
    let mut w = World::new();
    let dir = scratch().join(unique("ctrd"));
    std::fs::create_dir_all(&dir).unwrap();
    w.dirs.push(dir.clone());
    let had_run_containerd = Path::new("/run/containerd").exists();
    let ns;
    {
        let c = Containerd::start(&dir);
        ns = c.ns.clone();
        let image = dir.join("image.tar");
        let st = Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("rootfs-fixtures/oci-image.sh"))
            .arg(setup())
            .arg(&image)
            .arg(IMAGE)
            .status()
            .unwrap();
        assert!(st.success(), "building the OCI image");
        c.ok(&["image", "import", image.to_str().unwrap()]);

        // Foreground: output and exit code come through.
        let out = c.run(&["--rm"], "fg", &["sh", "-c", "echo hello; exit 3"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
        assert_eq!(out.status.code(), Some(3));

        // Stdin piped in (ctr never sends EOF: the container reads one line).
        let mut child = c
            .run_cmd(&["--rm"], "stdin", &["sh", "-c", "read x; echo got $x"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.as_mut().unwrap().write_all(b"abc\n").unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "got abc\n");

        // --read-only and --privileged.
        let out = c.run(&["--rm", "--read-only"], "ro", &["touch", "/x"]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("Read-only file system"));
        let caps = |flags: &[&str], id: &str| -> u64 {
            let out = c.run(flags, id, &["grep", "CapEff", "/proc/self/status"]);
            let s = String::from_utf8_lossy(&out.stdout).into_owned();
            u64::from_str_radix(s.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        let default = caps(&["--rm"], "caps");
        let privileged = caps(&["--rm", "--privileged"], "priv");
        const CAP_SYS_ADMIN: u64 = 1 << 21;
        assert_eq!(default & CAP_SYS_ADMIN, 0);
        assert_ne!(privileged & CAP_SYS_ADMIN, 0);

        // --seccomp: containerd's default profile loads (mode 2, filter mode).
        let seccomp = |flags: &[&str], id: &str| -> String {
            let out = c.run(flags, id, &["grep", "^Seccomp:", "/proc/self/status"]);
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(seccomp(&["--rm", "--seccomp"], "sec"), "Seccomp:\t2");
        assert_eq!(seccomp(&["--rm"], "nosec"), "Seccomp:\t0");

        // A broken bundle: ctr shows capsa's own reason.
        let out = c.run(&["--rm"], "broken", &["/nonexistent"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("\"/nonexistent\"") && err.contains("No such file or directory"),
            "{err}"
        );

        // Detached, with limits visible in the cgroup.
        let out = c.run(
            &["-d", "--memory-limit", "67108864", "--cpus", "0.5"],
            "bg",
            &["sh", "-c", "sleep 1000 & sleep 1001"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(c.task_status("bg"), "RUNNING");
        assert_eq!(
            c.cgroup("memory", "bg", "memory.limit_in_bytes"),
            "67108864"
        );
        if cgroup_v2() {
            assert_eq!(c.cgroup("cpu", "bg", "cpu.max"), "50000 100000");
        } else {
            assert_eq!(c.cgroup("cpu", "bg", "cpu.cfs_quota_us"), "50000");
            assert_eq!(c.cgroup("cpu", "bg", "cpu.cfs_period_us"), "100000");
        }
        // Init and two sleeps (the shell execs the second sleep: init is one of the two),
        // once the shell has forked the first: a header and 2 lines.
        wait_until("bg's two sleeps in task ps", || {
            c.ok(&["task", "ps", "bg"]).lines().count() == 3
        });

        // task exec: output and exit code; with -t through a terminal.
        let out = c.ctr(&[
            "task",
            "exec",
            "--exec-id",
            "e1",
            "bg",
            "sh",
            "-c",
            "echo in; exit 4",
        ]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "in\n");
        assert_eq!(out.status.code(), Some(4));
        let ctr_t = format!(
            "ctr --address {} --namespace {} task exec -t --exec-id e2 bg tty",
            dir.join("c.sock").display(),
            ns
        );
        let out = in_terminal(&ctr_t);
        assert!(out.contains("/dev/pts/"), "{out:?}");

        // pause / resume.
        c.ok(&["task", "pause", "bg"]);
        assert_eq!(c.task_status("bg"), "PAUSED");
        assert_eq!(c.cgroup("freezer", "bg", "freezer.state"), "FROZEN");
        c.ok(&["task", "resume", "bg"]);
        assert_eq!(c.task_status("bg"), "RUNNING");

        // kill -a reaches every process; the task stops with 137.
        c.ok(&["task", "kill", "-a", "-s", "SIGKILL", "bg"]);
        c.wait_status("bg", "STOPPED");
        assert_eq!(c.cgroup("pids", "bg", "cgroup.procs"), "");
        c.ok(&["task", "rm", "bg"]);
        c.ok(&["container", "rm", "bg"]);

        // kill -s SIGKILL of the init alone.
        let out = c.run(&["-d"], "k", &["sleep", "1000"]);
        assert!(out.status.success());
        c.ok(&["task", "kill", "-s", "SIGKILL", "k"]);
        c.wait_status("k", "STOPPED");
        c.ok(&["task", "rm", "k"]);
        c.ok(&["container", "rm", "k"]);

        assert_eq!(c.ok(&["task", "ls", "-q"]).trim(), "");
        assert_eq!(c.ok(&["container", "ls", "-q"]).trim(), "");
        let left: Vec<_> = std::fs::read_dir(dir.join("runc"))
            .unwrap()
            .flatten()
            .flat_map(|ns| std::fs::read_dir(ns.path()).into_iter().flatten().flatten())
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "capsa state left: {left:?}");
    }
    // The daemon is gone, and with it every shim; the namespace's cgroups go too.
    let procs = processes_mentioning(dir.to_str().unwrap());
    assert!(procs.is_empty(), "processes left: {procs:?}");
    assert_eq!(remove_cgroup_tree(&ns), Vec::<PathBuf>::new());
    if !had_run_containerd {
        // containerd makes these whatever its config says; remove them if nothing else uses them.
        for d in [
            "/run/containerd/s",
            "/run/containerd/fifo",
            "/run/containerd",
        ] {
            let _ = std::fs::remove_dir(d);
        }
    }
}
