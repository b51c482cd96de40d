//! Shared helpers for the integration tests: they run the built `capsa` binary as root on
//! busybox bundles and check effects from inside and outside the container, and that
//! nothing (process, mount, cgroup, state) is left behind.
#![allow(dead_code)]

pub mod vm;

use serde_json::{json, Value};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

pub const BIN: &str = env!("CARGO_BIN_EXE_capsa");
static COUNTER: AtomicUsize = AtomicUsize::new(0);
static SETUP: Once = Once::new();

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where tests put their bundles and state roots: `$CAPSA_TEST_SCRATCH`, else
/// /tmp/capsa-tests (the cgroup v2 VM, whose /tmp is the host's and read-only, names one).
pub fn scratch() -> PathBuf {
    std::env::var_os("CAPSA_TEST_SCRATCH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/capsa-tests"))
}

/// Builds the busybox rootfs once (a lock file serialises test binaries) and makes this
/// process a child subreaper, as containerd's shim is: the init of a container whose
/// `capsa create` has exited is re-parented to us, and we reap it after delete.
pub fn setup() -> PathBuf {
    let fixture = repo().join("runtime-tests/.fixtures/busybox");
    SETUP.call_once(|| {
        assert!(
            nix::unistd::geteuid().is_root(),
            "integration tests run as root"
        );
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
        std::fs::create_dir_all(scratch()).unwrap();
        // Built already (always so in the VM, where the repository is read-only): no lock.
        if fixture.join("bin/busybox").exists() {
            return;
        }
        std::fs::create_dir_all(fixture.parent().unwrap()).unwrap();
        let lock = std::fs::File::create(repo().join("runtime-tests/.fixtures/lock")).unwrap();
        let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .unwrap();
        if !fixture.join("bin/busybox").exists() {
            let tmp = fixture.with_extension("tmp");
            let status = Command::new("bash")
                .arg(repo().join("rootfs-fixtures/busybox-rootfs.sh"))
                .arg(&tmp)
                .status()
                .expect("running busybox-rootfs.sh");
            assert!(status.success(), "building the busybox fixture failed");
            std::fs::rename(&tmp, &fixture).unwrap();
        }
    });
    fixture
}

/// A unique name for a test's container / bundle.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A test's world: its own state root, bundles under scratch, and the containers it made,
/// checked for leftovers when it ends.
pub struct World {
    /// The runtime binary this world drives: capsa, or runc where runc is the reference.
    pub bin: &'static str,
    pub root: PathBuf,
    pub dirs: Vec<PathBuf>,
    pub ids: Vec<String>,
    pub pids: Vec<i32>,
    /// Pods the test made: removed with --force if the test fails.
    pub pods: Vec<String>,
    /// This world's own cgroup parent (relative to each hierarchy's root): where runc's
    /// containers go, and where a test puts a cgroupsPath of its choosing. No capsa command
    /// removes it (capsa removes an empty `/capsa` when its last container goes, which
    /// would race with another runtime's mkdir under it); the world removes it at its end
    /// and reports anything left below it as a leak.
    pub cgroup_parent: String,
}

impl World {
    pub fn new() -> Self {
        Self::with_runtime(BIN)
    }

    /// A world that drives `bin` (capsa's [`BIN`] or [`RUNC`]) with the same bundles.
    pub fn with_runtime(bin: &'static str) -> Self {
        setup();
        if bin == RUNC {
            require("runc", "runc");
        }
        let root = scratch().join(unique("root"));
        World {
            bin,
            root,
            dirs: Vec::new(),
            ids: Vec::new(),
            pids: Vec::new(),
            pods: Vec::new(),
            cgroup_parent: unique("capsa-test"),
        }
    }

    /// `name` under this world's [`World::cgroup_parent`], relative to a hierarchy's root:
    /// a bundle's cgroupsPath is this with a leading `/`.
    pub fn cgroup_path(&self, name: &str) -> String {
        format!("{}/{name}", self.cgroup_parent)
    }

    /// A fresh bundle: a copy of the busybox rootfs and capsa's default spec with
    /// terminal off and `args`.
    pub fn bundle(&mut self, args: &[&str]) -> Bundle {
        let fixture = setup();
        let dir = scratch().join(unique("bundle"));
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("cp")
            .args(["-a"])
            .arg(&fixture)
            .arg(dir.join("rootfs"))
            .status()
            .unwrap();
        assert!(st.success());
        let out = Command::new(BIN)
            .args(["spec", "--bundle"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "capsa spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(args);
        if self.bin != BIN {
            // runc nests a container without cgroupsPath under the caller's own cgroup (the
            // machine's); give it a place under this world's parent, which the leak check
            // knows.
            let name = unique("runc");
            config["linux"]["cgroupsPath"] = json!(format!("/{}", self.cgroup_path(&name)));
            self.ids.push(name);
        }
        self.dirs.push(dir.clone());
        let b = Bundle { dir, config };
        b.write();
        b
    }

    /// A container id that the leak check will look for.
    pub fn id(&mut self, prefix: &str) -> String {
        let id = unique(prefix);
        self.ids.push(id.clone());
        id
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(self.bin);
        c.arg("--root").arg(&self.root);
        c
    }

    /// Runs capsa with stdout and stderr going to files, not pipes: a container created by
    /// the command inherits them, and a pipe would stay open for as long as it lives.
    pub fn capsa(&self, args: &[&str]) -> Output {
        let base = scratch().join(unique("out"));
        let (out_path, err_path) = (base.with_extension("stdout"), base.with_extension("stderr"));
        let status = self
            .cmd()
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .status()
            .expect("running capsa");
        let output = Output {
            status,
            stdout: std::fs::read(&out_path).unwrap_or_default(),
            stderr: std::fs::read(&err_path).unwrap_or_default(),
        };
        let _ = std::fs::remove_file(&out_path);
        let _ = std::fs::remove_file(&err_path);
        output
    }

    /// Runs capsa and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(self.capsa(args), format_args!("capsa {args:?}"))
    }

    /// Runs capsa and requires failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.capsa(args);
        assert!(
            !out.status.success(),
            "capsa {args:?} should have failed; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `capsa run` of a bundle in the foreground: (exit code, stdout, stderr).
    pub fn run(&mut self, bundle: &Bundle) -> (i32, String, String) {
        self.run_with(&[], bundle)
    }

    /// `capsa run EXTRA... --bundle B ID` in the foreground: (exit code, stdout, stderr).
    pub fn run_with(&mut self, extra: &[&str], bundle: &Bundle) -> (i32, String, String) {
        let id = self.id("run");
        let out = self
            .cmd()
            .arg("run")
            .args(extra)
            .arg("--bundle")
            .arg(&bundle.dir)
            .arg(&id)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        outcome(&out)
    }

    /// `capsa run` that must exit 0; returns stdout.
    pub fn run_ok(&mut self, bundle: &Bundle) -> String {
        let (code, out, err) = self.run(bundle);
        assert_eq!(code, 0, "container failed: stdout {out:?} stderr {err:?}");
        out
    }

    /// Creates `id` from a bundle (stdio null) and records its init pid.
    pub fn create(&mut self, id: &str, bundle: &Bundle) -> i32 {
        let pidfile = bundle.dir.join("init.pid");
        self.ok(&[
            "create",
            "--bundle",
            bundle.dir.to_str().unwrap(),
            "--pid-file",
            pidfile.to_str().unwrap(),
            id,
        ]);
        let pid = read_pid_file(&pidfile);
        self.pids.push(pid);
        pid
    }

    /// Creates a container from `bundle` under a fresh id of `prefix` and starts it:
    /// (id, init pid).
    pub fn started(&mut self, prefix: &str, bundle: &Bundle) -> (String, i32) {
        let id = self.id(prefix);
        let pid = self.create(&id, bundle);
        self.ok(&["start", &id]);
        (id, pid)
    }

    /// `delete --force` of `id`, then waits (bounded) for its init `pid` to be gone.
    pub fn force_delete(&self, id: &str, pid: i32) {
        self.ok(&["delete", "--force", id]);
        wait_exit(pid);
    }

    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).unwrap()
    }

    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"].as_str().unwrap().to_string()
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

/// The reference runtime for the parity tests (Debian's runc).
pub const RUNC: &str = "runc";

/// Runs a parity scenario against capsa and then runc, each in a world of its own: the
/// behaviour the test asserts is runc's, and capsa must show it too. A failure names the
/// runtime it happened with.
pub fn on_both(scenario: impl Fn(&mut World)) {
    for bin in [BIN, RUNC] {
        let name = if bin == BIN { "capsa" } else { "runc" };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut world = World::with_runtime(bin);
            scenario(&mut world);
        }));
        if let Err(e) = result {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("with {name}: {msg}");
        }
    }
}

/// How long a test waits for something that should happen at once: long enough for a
/// machine whose cores are all busy, short enough that a regression fails instead of hanging.
pub const BOUND: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits (bounded by [`BOUND`]) for a process to exit (its pidfd readable), without sleeping
/// in a loop; fails the test, naming the process, if it is still there after that.
pub fn wait_exit(pid: i32) {
    assert!(
        exited_within(pid, BOUND),
        "process {pid} did not exit within {BOUND:?}"
    );
}

/// Whether a process has exited (or never existed) within `bound`, by polling its pidfd.
pub fn exited_within(pid: i32, bound: std::time::Duration) -> bool {
    // SAFETY: pidfd_open(pid, 0) returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return true;
    }
    // SAFETY: the fd was just returned to us by the kernel.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    let deadline = std::time::Instant::now() + bound;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let timeout = nix::poll::PollTimeout::try_from(left).unwrap_or(nix::poll::PollTimeout::MAX);
        let mut fds = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => panic!("poll on the pidfd of {pid}: {e}"),
        }
    }
}

/// Waits (bounded by [`BOUND`]) for a condition the test cannot get an event for, such as a
/// socket in LISTEN state in another network namespace, or a file a container's shell
/// writes once it is ready (its traps set).
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + BOUND;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A client's command (podman, ctr) under timeout(1), 300 s (five [`BOUND`]s: a command
/// may run a whole container), so that a regression that hangs it fails the test instead.
/// `--foreground` keeps it in the terminal's process group when it runs under script(1).
pub fn bounded_command(program: &str) -> Command {
    let mut c = Command::new("timeout");
    c.args(["--foreground", "--kill-after=10", "300", program]);
    c
}

/// Builds targets of this package with cargo (`args` after `cargo`, e.g. `["build",
/// "--examples"]`) and returns the executables it reports for targets of `kind` ("example",
/// "test"), by target name: wherever the target directory is, as a user's cargo builds them.
pub fn cargo_executables(args: &[&str], kind: &str) -> std::collections::BTreeMap<String, PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(repo())
        .args(args)
        .arg("--message-format=json")
        .stderr(Stdio::inherit())
        .output()
        .expect("running cargo");
    assert!(out.status.success(), "cargo {args:?} failed");
    let mut built = std::collections::BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let of_kind = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == kind));
        if let (true, Some(exe), Some(name)) = (
            of_kind,
            msg["executable"].as_str(),
            msg["target"]["name"].as_str(),
        ) {
            built.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    built
}

/// Requires that a command (described by `what`) succeeded; returns its stdout.
pub fn succeeded(out: Output, what: std::fmt::Arguments) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a shell command line under script(1), which gives it a terminal, and returns what it
/// printed there. script's stdin stays open until the command is done: at EOF on its stdin,
/// script sends the terminal an EOF of its own, and podman or ctr then tear the session down,
/// sometimes before the container has written a byte (1 run in 5 here, with runc as the
/// runtime as often as with capsa).
pub fn in_terminal(line: &str) -> String {
    let mut child = Command::new("script")
        .args(["-qec", line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pid a `--pid-file` holds.
pub fn read_pid_file(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

/// Kills a process re-parented to us (an `exec --detach`ed one) and reaps it: as its
/// subreaper (as containerd's shim is), we must, or the container's pid 1 cannot finish
/// exiting.
pub fn kill_and_reap(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_exit(pid);
    reap(pid);
}

/// A finished command as the tests compare it: (exit code or -1 for a signal, stdout,
/// stderr).
pub fn outcome(out: &Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Reaps a process that was re-parented to us (we are a subreaper) if it has exited; a live
/// one is left for the leak check to report.
pub fn reap(pid: i32) {
    let _ = nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(pid),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    );
}

pub struct Bundle {
    pub dir: PathBuf,
    pub config: Value,
}

impl Bundle {
    pub fn write(&self) {
        std::fs::write(
            self.dir.join("config.json"),
            serde_json::to_vec_pretty(&self.config).unwrap(),
        )
        .unwrap();
    }

    pub fn set(&mut self, f: impl FnOnce(&mut Value)) -> &mut Self {
        f(&mut self.config);
        self.write();
        self
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// A new user namespace (with the namespace types in `also`) mapping root to
    /// 100000..165535; the rootfs is given to that range, as host root's files show as
    /// "nobody" inside.
    pub fn in_user_namespace(&mut self, also: &[&str]) -> &mut Self {
        self.set(|c| {
            let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
            for t in std::iter::once(&"user").chain(also) {
                ns.push(json!({ "type": t }));
            }
            c["linux"]["uidMappings"] =
                json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            c["linux"]["gidMappings"] =
                json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        });
        let st = Command::new("chown")
            .args(["-R", "100000:100000"])
            .arg(self.rootfs())
            .status()
            .unwrap();
        assert!(st.success());
        self
    }

    pub fn dir_str(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// The cgroup of container `id` made from this bundle, relative to a hierarchy's root:
    /// the bundle's cgroupsPath (runc's always has one, see [`World::bundle`]), or capsa's
    /// default `capsa/<id>`.
    pub fn cgroup_path(&self, id: &str) -> String {
        self.config["linux"]["cgroupsPath"]
            .as_str()
            .map(|p| p.trim_start_matches('/').to_string())
            .unwrap_or_else(|| format!("capsa/{id}"))
    }
}

/// Where the cgroup at `path` (relative to a hierarchy's root) would be: in every v1
/// hierarchy, the unified one of a hybrid host, or the v2 root.
fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let mut out = vec![base.join(path)];
    if let Ok(entries) = std::fs::read_dir(base) {
        for e in entries.flatten() {
            out.push(e.path().join(path));
        }
    }
    out
}

fn processes_rooted_in(dir: &Path) -> Vec<i32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(root) = std::fs::read_link(format!("/proc/{pid}/root")) {
            if root.starts_with(dir) {
                found.push(pid);
            }
        }
    }
    found
}

impl Drop for World {
    fn drop(&mut self) {
        for pid in &self.pids {
            reap(*pid);
        }
        if std::thread::panicking() {
            for id in &self.ids {
                let _ = self.capsa(&["resume", id]);
            }
            // Best-effort cleanup so one failure does not cascade; the failure is reported.
            for id in &self.ids {
                let _ = self.capsa(&["delete", "--force", id]);
            }
            for pod in &self.pods {
                let _ = self.capsa(&["pod", "rm", "--force", pod]);
            }
            for pid in &self.pids {
                exited_within(*pid, BOUND);
                reap(*pid);
            }
            let _ = remove_cgroup_tree(&self.cgroup_parent);
            for d in &self.dirs {
                let _ = std::fs::remove_dir_all(d);
            }
            let _ = std::fs::remove_dir_all(&self.root);
            return;
        }
        let mut leaks = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            let left: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
            if !left.is_empty() {
                leaks.push(format!("state left in {}: {left:?}", self.root.display()));
            }
        }
        for id in &self.ids {
            for d in cgroup_dirs(&format!("capsa/{id}")) {
                if d.exists() {
                    leaks.push(format!("cgroup left: {}", d.display()));
                }
            }
        }
        // Below this world's parent every cgroup is a leak; the parent itself is the world's.
        for d in cgroup_dirs(&self.cgroup_parent) {
            if let Ok(entries) = std::fs::read_dir(&d) {
                for e in entries.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        leaks.push(format!("cgroup left: {}", e.path().display()));
                    }
                }
            }
        }
        leaks.extend(
            remove_cgroup_tree(&self.cgroup_parent)
                .iter()
                .map(|d| format!("cgroup not removable: {}", d.display())),
        );
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for d in &self.dirs {
            if let Some(line) = mountinfo.lines().find(|l| l.contains(d.to_str().unwrap())) {
                leaks.push(format!("mount left: {line}"));
            }
            let procs = processes_rooted_in(d);
            if !procs.is_empty() {
                leaks.push(format!("processes left in {}: {procs:?}", d.display()));
            }
        }
        for pid in &self.pids {
            if Path::new(&format!("/proc/{pid}")).exists() {
                leaks.push(format!("container init {pid} still exists"));
            }
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
        let _ = std::fs::remove_dir_all(&self.root);
        assert!(leaks.is_empty(), "left behind: {leaks:#?}");
    }
}

/// Whether this host's cgroups are v2 (unified, /sys/fs/cgroup a cgroup2 mount) rather
/// than v1 or the v1 hybrid layout. Tests branch on it only where the two differ in more
/// than a file's name (see [`cgroup_file`]).
pub fn cgroup_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// A file of container `id`'s cgroup, named as on v1: `/sys/fs/cgroup/<controller>/capsa/
/// <id>/<file>` on a v1 host; on v2, `/sys/fs/cgroup/capsa/<id>/` and the v2 file that
/// holds the same value where only the name differs (`memory.limit_in_bytes` is
/// `memory.max`, `memory.oom_control`'s `oom_kill` is in `memory.events`).
pub fn cgroup_file(controller: &str, id: &str, file: &str) -> PathBuf {
    cgroup_file_at(controller, &format!("capsa/{id}"), file)
}

/// As [`cgroup_file`], for the cgroup at `path` (relative to the hierarchy's root) that a
/// client chose, such as containerd's `<namespace>/<id>`.
pub fn cgroup_file_at(controller: &str, path: &str, file: &str) -> PathBuf {
    if cgroup_v2() {
        PathBuf::from(format!("/sys/fs/cgroup/{path}/{}", v2_name(file)))
    } else {
        PathBuf::from(format!("/sys/fs/cgroup/{controller}/{path}/{file}"))
    }
}

/// The v2 name of a v1 cgroup file whose value v2 keeps under another name.
fn v2_name(v1: &str) -> &str {
    match v1 {
        "memory.limit_in_bytes" => "memory.max",
        "memory.usage_in_bytes" => "memory.current",
        "memory.max_usage_in_bytes" => "memory.peak",
        "memory.oom_control" => "memory.events",
        other => other,
    }
}

pub fn read_cgroup(controller: &str, id: &str, file: &str) -> String {
    let path = cgroup_file(controller, id, file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// The value of `key` in a "key value" cgroup file.
pub fn cgroup_key(controller: &str, id: &str, file: &str, key: &str) -> u64 {
    read_cgroup(controller, id, file)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .unwrap_or_else(|| panic!("{key} not in {file}"))
        .trim()
        .parse()
        .unwrap()
}

/// Reaps a container init re-parented to us and returns its wait status.
pub fn reap_status(pid: i32) -> nix::sys::wait::WaitStatus {
    nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap()
}

/// Removes the cgroup tree `name` (e.g. a client's parent such as `libpod_parent`) from every
/// hierarchy, deepest first; returns the directories that could not be removed (still in
/// use: a leak).
pub fn remove_cgroup_tree(name: &str) -> Vec<PathBuf> {
    fn rm(dir: &Path, left: &mut Vec<PathBuf>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    rm(&e.path(), left);
                }
            }
        }
        if std::fs::remove_dir(dir).is_err() && dir.exists() {
            left.push(dir.to_path_buf());
        }
    }
    let mut left = Vec::new();
    for r in cgroup_dirs(name).iter().filter(|r| r.is_dir()) {
        rm(r, &mut left);
    }
    left
}

/// Processes whose command line mentions `needle` (a test's private directory): what a
/// client daemon or its shims would leave behind.
pub fn processes_mentioning(needle: &str) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Reaps every exited child (a subreaper collects a client's daemonised shims).
pub fn reap_all() {
    while let Ok(status) = nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(-1),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    ) {
        if status == nix::sys::wait::WaitStatus::StillAlive {
            break;
        }
    }
}

/// Fails with a clear message when a client the test drives is not installed.
pub fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: apt-get install {package} (runtime-tests/run-all.sh installs it)"
    );
}

/// Receives one message and the descriptor sent with it (SCM_RIGHTS), as a console socket
/// or seccomp listener client does.
pub fn recv_with_fd(socket: std::os::fd::RawFd) -> (Vec<u8>, std::os::fd::OwnedFd) {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    let mut buf = vec![0u8; 65536];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(socket, &mut iov, Some(&mut cmsg), MsgFlags::empty()).unwrap();
    let mut fd = None;
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            fd = fds.first().copied();
        }
    }
    let n = msg.bytes;
    buf.truncate(n);
    // SAFETY: the kernel installed this descriptor for us with SCM_RIGHTS.
    (buf, unsafe {
        std::os::fd::OwnedFd::from_raw_fd(fd.expect("no fd received"))
    })
}

/// The syscalls a busybox shell and a runtime's last steps before exec need, for seccomp
/// allowlist profiles (a test adds what its own program needs).
pub const SHELL_SYSCALLS: &[&str] = &[
    "read",
    "write",
    "openat",
    "open",
    "close",
    "fstat",
    "newfstatat",
    "stat",
    "lstat",
    "mmap",
    "munmap",
    "mprotect",
    "brk",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "ioctl",
    "execve",
    "exit",
    "exit_group",
    "getpid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "arch_prctl",
    "set_tid_address",
    "prctl",
    "fcntl",
    "dup2",
    "dup3",
    "wait4",
    "clone",
    "getcwd",
    "chdir",
    "statx",
    "uname",
    "access",
    "faccessat",
    "capget",
    "capset",
    "setgroups",
    "setresuid",
    "setresgid",
    "setuid",
    "setgid",
    "close_range",
    "sendmsg",
    "sendto",
    "getdents64",
    "readlink",
    "readlinkat",
    "lseek",
    "pread64",
    "getrandom",
    "futex",
    "setsid",
    "set_robust_list",
    "rseq",
    "umask",
    "prlimit64",
    "getrlimit",
    "sysinfo",
    "poll",
];
