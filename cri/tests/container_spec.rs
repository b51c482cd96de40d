//! The spec CreateContainer builds, run for real: a busybox rootfs, a capsa pod holding the
//! sandbox's namespaces, `build_spec` with the real host and the rootfs's own accounts, the
//! spec written as a bundle and run by the `capsa` CLI and by runc (the latter proves it is
//! a valid OCI spec). Inside, the process reports its identity, capabilities,
//! no_new_privs, seccomp mode, whether the root is writable and what a masked file reads;
//! afterwards no container, cgroup or pod is left.

mod common;
use capsa_cri::containers::spec::*;
use common::*;
use k8s_cri::v1::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The capsa binary built beside capsa-cri.
fn capsa_bin() -> PathBuf {
    let bin = Path::new(CAPSA_CRI).with_file_name("capsa");
    assert!(bin.exists(), "{} missing: cargo build first", bin.display());
    bin
}

/// A fresh busybox rootfs for one test (runtimes create mount points in it).
fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rootfs-fixtures/busybox-rootfs.sh");
    run_ok(Command::new("bash").arg(script).arg(&root));
    root
}

/// A pod (its infra holds net, ipc and uts) and the sandbox files a container mounts, in
/// the test's scratch directory. Dropped, even by a failing test, it removes the pod and
/// the directory.
struct Sandbox {
    dir: PathBuf,
    runtime: capsa::Runtime,
    facts: SandboxFacts,
}

impl Sandbox {
    fn new(prefix: &str) -> Sandbox {
        let dir = scratch(prefix);
        let runtime = capsa::Runtime::new(dir.join("state"));
        let id = dir.file_name().unwrap().to_string_lossy().into_owned();
        let opts = capsa::PodOptions::new()
            .hostname("specpod")
            .pause_binary(Path::new(CAPSA_CRI).with_file_name("capsa-pause"));
        let pod = runtime.create_pod(&id, &opts).unwrap();
        let files = dir.join("files");
        std::fs::create_dir_all(files.join("shm")).unwrap();
        for (name, text) in [
            ("hostname", "specpod\n"),
            ("hosts", "127.0.0.1 localhost\n"),
            ("resolv.conf", "nameserver 127.0.0.1\n"),
        ] {
            std::fs::write(files.join(name), text).unwrap();
        }
        let facts = SandboxFacts {
            id,
            infra_pid: pod.live_pid().unwrap().as_raw(),
            hostname: "specpod".into(),
            hostname_path: files.join("hostname"),
            resolv_conf_path: files.join("resolv.conf"),
            hosts_path: files.join("hosts"),
            shm_path: Some(files.join("shm")),
            cgroup: pod.state().cgroup_path.clone(),
        };
        Sandbox {
            dir,
            runtime,
            facts,
        }
    }

    fn cgroup_dir(&self, hierarchy: &str) -> PathBuf {
        Path::new("/sys/fs/cgroup")
            .join(hierarchy)
            .join(self.facts.cgroup.strip_prefix("/").unwrap())
    }

    /// Removes the pod and checks that its cgroup went with it.
    fn remove(self) {
        self.runtime.remove_pod(&self.facts.id, true).unwrap();
        self.remove_runc_leftovers();
        for hierarchy in ["memory", "pids", "cpu,cpuacct", "unified"] {
            let dir = self.cgroup_dir(hierarchy);
            assert!(!dir.exists(), "{} left behind", dir.display());
        }
    }

    /// runc (1.1, on this hybrid hierarchy) also makes the container's parents in the
    /// unified hierarchy, and leaves them when it deletes the container (capsa removes the
    /// pod's with the pod).
    fn remove_runc_leftovers(&self) {
        for dir in self.cgroup_dir("unified").ancestors().take(2) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.runtime.remove_pod(&self.facts.id, true);
        self.remove_runc_leftovers();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sandbox_config() -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "specpod".into(),
            namespace: "default".into(),
            uid: "u-spec".into(),
            attempt: 0,
        }),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What the container prints about itself.
const PROBE: &str = "id; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; \
                     touch /written 2>/dev/null && echo root=rw || echo root=ro; \
                     echo motd=$(cat /etc/motd); cat /etc/hostname";

fn container(sc: LinuxContainerSecurityContext) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "probe".into(),
            attempt: 0,
        }),
        command: vec!["/bin/sh".into(), "-c".into(), PROBE.into()],
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                cpu_shares: 256,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..sc
            }),
        }),
        ..Default::default()
    }
}

/// Builds the spec of `config` in `sandbox`, writes the bundle, runs it with `runtime`
/// (capsa or runc) and returns its output.
fn run(sandbox: &Sandbox, config: &ContainerConfig, runtime: &Path) -> String {
    let dir = &sandbox.dir.join("run");
    let root = rootfs(dir);
    let host = SystemHost {
        target_pid: |_: &str, _: &str| None,
    };
    let accounts = RootfsAccounts::open(&root).unwrap();
    let id = format!("c-{}", sandbox.facts.id);
    let spec = build_spec(&SpecInput {
        id: &id,
        config,
        sandbox_config: &sandbox_config(),
        sandbox: &sandbox.facts,
        image: &ImageConfig::default(),
        image_name: "busybox",
        rootfs: &root,
        volumes_dir: None,
        host: &host,
        accounts: &accounts,
    })
    .unwrap();
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    spec.save(bundle.join("config.json")).unwrap();
    let state = dir.join(format!(
        "{}-root",
        runtime.file_name().unwrap().to_string_lossy()
    ));
    let run = Command::new(runtime)
        .arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout).into_owned();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "{}: {:?}: {out}{err}",
        runtime.display(),
        run.status
    );
    // run deletes the container when it exits: nothing of it is left.
    let left = std::fs::read_dir(&state).map(|d| d.count()).unwrap_or(0);
    assert_eq!(
        left,
        0,
        "{} left state in {}",
        runtime.display(),
        state.display()
    );
    let cgroup = sandbox.facts.cgroup.join(&id);
    let memory = Path::new("/sys/fs/cgroup/memory").join(cgroup.strip_prefix("/").unwrap());
    assert!(!memory.exists(), "{} left behind", memory.display());
    // Both runtimes give the container a cgroup in the unified hierarchy of this hybrid
    // host too; it goes with the container.
    let unified = sandbox.cgroup_dir("unified").join(&id);
    assert!(!unified.exists(), "{} left behind", unified.display());
    std::fs::remove_dir_all(dir).unwrap();
    out
}

/// Runs the container under capsa, then runc; each prints every `expected` line.
fn run_everywhere(sandbox: &Sandbox, config: &ContainerConfig, expected: &[String]) {
    for runtime in [capsa_bin(), PathBuf::from("/usr/sbin/runc")] {
        let out = run(sandbox, config, &runtime);
        for line in expected {
            let who = runtime.display();
            assert!(
                out.lines().any(|l| l == line),
                "{who}: no {line:?} in {out}"
            );
        }
    }
}

#[test]
fn a_restricted_user_container_runs_as_requested_under_capsa_and_runc() {
    let sandbox = Sandbox::new("spec-user");
    let config = container(LinuxContainerSecurityContext {
        run_as_user: Some(Int64Value { value: 1000 }),
        supplemental_groups: vec![5],
        no_new_privs: true,
        readonly_rootfs: true,
        seccomp: Some(SecurityProfile::default()),
        masked_paths: vec!["/proc/kcore".into(), "/etc/motd".into()],
        ..Default::default()
    });
    let expected = [
        "uid=1000(tester) gid=1000(tester) groups=5(tty),1000(tester)",
        "CapEff:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
        "root=ro",
        "motd=",
        "specpod",
    ];
    run_everywhere(&sandbox, &config, &expected.map(String::from));
    sandbox.remove();
}

#[test]
fn a_root_container_keeps_only_the_capabilities_asked_for() {
    let sandbox = Sandbox::new("spec-caps");
    let config = container(LinuxContainerSecurityContext {
        capabilities: Some(Capability {
            drop_capabilities: vec!["ALL".into()],
            add_capabilities: vec!["net_bind_service".into(), "CAP_KILL".into()],
            ..Default::default()
        }),
        // The default filter without no_new_privs: loaded while capsa still holds
        // CAP_SYS_ADMIN, before the capabilities are dropped.
        seccomp: Some(SecurityProfile::default()),
        ..Default::default()
    });
    // CAP_KILL is bit 5, CAP_NET_BIND_SERVICE bit 10.
    let caps = format!("{:016x}", (1u64 << 5) | (1 << 10));
    let expected = [
        "uid=0(root) gid=0(root) groups=0(root)".into(),
        format!("CapEff:\t{caps}"),
        format!("CapBnd:\t{caps}"),
        "NoNewPrivs:\t0".into(),
        "Seccomp:\t2".into(),
        "root=rw".into(),
        "motd=capsa busybox fixture".into(),
    ];
    run_everywhere(&sandbox, &config, &expected);
    sandbox.remove();
}

/// A tmpfs the test mounts and makes shared (the host's own mounts here are private), so
/// that a bind from it may propagate; unmounted on drop.
struct SharedMount(PathBuf);

impl SharedMount {
    fn new(path: PathBuf) -> SharedMount {
        use nix::mount::{mount, MsFlags};
        std::fs::create_dir_all(&path).unwrap();
        mount(
            Some("tmpfs"),
            &path,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        let guard = SharedMount(path);
        mount(
            None::<&str>,
            &guard.0,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .unwrap();
        guard
    }
}

impl Drop for SharedMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn binds_devices_and_a_localhost_profile_reach_the_container() {
    let sandbox = Sandbox::new("spec-binds");
    let shared = SharedMount::new(sandbox.dir.join("shared"));
    std::fs::write(shared.0.join("hello"), "from the host").unwrap();
    let profile = sandbox.dir.join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let mut config = container(LinuxContainerSecurityContext {
        seccomp: Some(SecurityProfile {
            profile_type: security_profile::ProfileType::Localhost as i32,
            localhost_ref: profile.to_string_lossy().into_owned(),
        }),
        ..Default::default()
    });
    config.mounts = vec![Mount {
        container_path: "/data".into(),
        host_path: shared.0.to_string_lossy().into_owned(),
        readonly: true,
        propagation: MountPropagation::PropagationHostToContainer as i32,
        ..Default::default()
    }];
    // Not one of the devices every container may use (/dev/null, /dev/fuse, /dev/net/tun,
    // ...): the cgroup rule is the request's alone, read-only.
    config.devices = vec![Device {
        container_path: "/dev/myloop".into(),
        host_path: "/dev/loop-control".into(),
        permissions: "r".into(),
    }];
    config.command = vec![
        "/bin/sh".into(),
        "-c".into(),
        "echo data=$(cat /data/hello); touch /data/x 2>/dev/null || echo data=ro; \
         (exec 3</dev/myloop) && echo dev=read; \
         (exec 3>/dev/myloop) 2>/dev/null || echo dev=nowrite; mkdir /tmp/d 2>&1; \
         grep ' /data ' /proc/self/mountinfo | grep -q master: && echo data=slave"
            .into(),
    ];
    let expected = [
        "data=from the host",
        "data=ro",
        "dev=read",
        "dev=nowrite",
        "mkdir: can't create directory '/tmp/d': Operation not permitted",
        "data=slave",
    ];
    run_everywhere(&sandbox, &config, &expected.map(String::from));
    // From a private mount, HOST_TO_CONTAINER cannot be had: refused, naming the path.
    let private = sandbox.dir.join("files");
    config.mounts[0].host_path = private.to_string_lossy().into_owned();
    let host = SystemHost {
        target_pid: |_: &str, _: &str| None,
    };
    let err = build_spec(&SpecInput {
        id: "refused",
        config: &config,
        sandbox_config: &sandbox_config(),
        sandbox: &sandbox.facts,
        image: &ImageConfig::default(),
        image_name: "busybox",
        rootfs: Path::new("/nonexistent"),
        volumes_dir: None,
        host: &host,
        accounts: &capsa_cri::containers::spec::RootfsAccounts::open(Path::new("/")).unwrap(),
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "config.mounts[0].propagation: rslave propagation needs {} to be on a shared or \
             slave mount, but its mount / is not",
            private.display()
        )
    );
    drop(shared);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(sandbox.dir.to_str().unwrap()), "{mounts}");
    sandbox.remove();
}
