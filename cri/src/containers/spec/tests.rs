//! One test per rule of the spec, on a fake host and fake image accounts.

use super::fakes::{FakeAccounts, FakeHost, ALL_CAPS};
use super::*;
use k8s_cri::v1::*;
use serde_json::Value;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      tester:x:1000:1000::/home/tester:/bin/sh\n\
                      daemon:x:2:3::/:/bin/false\n";
const GROUP: &str = "root:x:0:\nsys:x:3:\nwheel:x:10:tester,other\naudio:x:29:other, tester\n\
                     tester:x:1000:\nstaff:x:50:\n";

struct Case {
    config: ContainerConfig,
    sandbox_config: PodSandboxConfig,
    sandbox: SandboxFacts,
    image: ImageConfig,
    host: FakeHost,
    accounts: FakeAccounts,
    volumes_dir: Option<PathBuf>,
}

impl Case {
    fn new() -> Case {
        let host = FakeHost {
            mountinfo: "1 0 8:1 / / rw shared:1 - ext4 /dev/sda1 rw\n\
                        2 1 0:30 / /private rw - tmpfs t rw\n\
                        3 1 0:31 / /slave rw master:4 - tmpfs t rw\n"
                .into(),
            ..Default::default()
        }
        .with_path("/run/s/hostname")
        .with_path("/run/s/hosts")
        .with_path("/run/s/resolv.conf")
        .with_path("/run/s/shm")
        .with_path("/dev/shm");
        Case {
            config: ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "web".into(),
                    attempt: 0,
                }),
                ..Default::default()
            },
            sandbox_config: PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: "pod".into(),
                    namespace: "ns".into(),
                    uid: "u".into(),
                    attempt: 0,
                }),
                ..Default::default()
            },
            sandbox: SandboxFacts {
                id: "sb1".into(),
                infra_pid: 4242,
                hostname: "pod-host".into(),
                hostname_path: "/run/s/hostname".into(),
                resolv_conf_path: "/run/s/resolv.conf".into(),
                hosts_path: "/run/s/hosts".into(),
                shm_path: Some("/run/s/shm".into()),
                cgroup: "/kubepods/pod-u/sb1".into(),
            },
            image: ImageConfig {
                entrypoint: vec!["/bin/server".into()],
                cmd: vec!["--port".into(), "80".into()],
                env: vec!["PATH=/bin".into(), "A=image".into(), "B=image".into()],
                ..Default::default()
            },
            host,
            accounts: FakeAccounts {
                passwd: Some(PASSWD.into()),
                group: Some(GROUP.into()),
            },
            volumes_dir: None,
        }
    }

    fn sc(&mut self) -> &mut LinuxContainerSecurityContext {
        self.config
            .linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default)
    }

    fn sandbox_ns(&mut self) -> &mut NamespaceOption {
        self.sandbox_config
            .linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default)
            .namespace_options
            .get_or_insert_with(Default::default)
    }

    fn build(&self) -> Result<Spec, SpecError> {
        build_spec(&SpecInput {
            id: "c1",
            config: &self.config,
            sandbox_config: &self.sandbox_config,
            sandbox: &self.sandbox,
            image: &self.image,
            image_name: "docker.io/library/busybox:latest",
            rootfs: Path::new("/var/lib/c1/rootfs"),
            volumes_dir: self.volumes_dir.as_deref(),
            host: &self.host,
            accounts: &self.accounts,
        })
    }

    fn json(&self) -> Value {
        serde_json::to_value(self.build().unwrap()).unwrap()
    }

    fn err(&self) -> String {
        crate::cni::error_chain(&self.build().unwrap_err())
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Capability sets are sets: their order in the spec is not kept.
fn sorted(v: &Value) -> Vec<String> {
    let mut s = strings(v);
    s.sort();
    s
}

fn mount<'a>(spec: &'a Value, dest: &str) -> Option<&'a Value> {
    spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == dest)
}

fn options(spec: &Value, dest: &str) -> Vec<String> {
    strings(&mount(spec, dest).unwrap()["options"])
}

/// The spec's options for `/mnt` bound from `host` with `propagation`, and the root's.
fn propagated(c: &mut Case, host: &str, propagation: MountPropagation) -> (Vec<String>, Value) {
    let mut m = bind("/mnt", host);
    m.propagation = propagation as i32;
    c.config.mounts = vec![m];
    let spec = c.json();
    (
        options(&spec, "/mnt"),
        spec["linux"]["rootfsPropagation"].clone(),
    )
}

fn bind(container: &str, host: &str) -> k8s_cri::v1::Mount {
    k8s_cri::v1::Mount {
        container_path: container.into(),
        host_path: host.into(),
        ..Default::default()
    }
}

#[test]
fn command_and_args_follow_kubernetes_rules() {
    let mut c = Case::new();
    let args = |c: &Case| strings(&c.json()["process"]["args"]);
    assert_eq!(args(&c), ["/bin/server", "--port", "80"]);
    c.config.args = vec!["--port".into(), "8080".into()];
    assert_eq!(args(&c), ["/bin/server", "--port", "8080"]);
    c.config.command = vec!["/bin/sh".into()];
    c.config.args.clear();
    assert_eq!(args(&c), ["/bin/sh"], "command drops the image's cmd");
    c.config.args = vec!["-c".into(), "true".into()];
    assert_eq!(args(&c), ["/bin/sh", "-c", "true"]);
    let mut c = Case::new();
    c.image.entrypoint = vec!["".into()];
    assert_eq!(
        args(&c),
        ["--port", "80"],
        "ENTRYPOINT [\"\"] is no entrypoint"
    );
    c.image.cmd.clear();
    assert_eq!(
        c.err(),
        "container \"web\": no command to run: the request gives neither command nor args, \
         and the image has no entrypoint or cmd"
    );
    assert_eq!(c.build().unwrap_err().code(), tonic::Code::InvalidArgument);
}

#[test]
fn env_is_path_hostname_image_then_request_later_wins_in_place() {
    let mut c = Case::new();
    c.config.envs = vec![
        KeyValue {
            key: "B".into(),
            value: "request".into(),
        },
        KeyValue {
            key: "C".into(),
            value: "x=y".into(),
        },
    ];
    assert_eq!(
        strings(&c.json()["process"]["env"]),
        [
            "PATH=/bin",
            "HOSTNAME=pod-host",
            "A=image",
            "B=request",
            "C=x=y"
        ]
    );
}

#[test]
fn cwd_is_the_requests_else_the_images_else_root_and_terminal_follows_tty() {
    let mut c = Case::new();
    assert_eq!(c.json()["process"]["cwd"], "/");
    assert_eq!(c.json()["process"]["terminal"], false);
    c.image.working_dir = "/srv".into();
    assert_eq!(c.json()["process"]["cwd"], "/srv");
    c.config.working_dir = "/data".into();
    c.config.tty = true;
    assert_eq!(c.json()["process"]["cwd"], "/data");
    assert_eq!(c.json()["process"]["terminal"], true);
    c.config.working_dir = "data".into();
    assert!(
        c.err().starts_with("config.working_dir \"data\""),
        "{}",
        c.err()
    );
}

fn user(c: &Case) -> (u64, u64, Vec<u64>) {
    let u = &c.json()["process"]["user"];
    let gids = u["additionalGids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_u64().unwrap())
        .collect();
    (u["uid"].as_u64().unwrap(), u["gid"].as_u64().unwrap(), gids)
}

#[test]
fn users_resolve_in_the_images_accounts() {
    let mut c = Case::new();
    assert_eq!(user(&c), (0, 0, vec![0]));
    c.image.user = "tester".into();
    // tester's own group, and the groups listing tester (wheel; audio with a space).
    assert_eq!(user(&c), (1000, 1000, vec![10, 29, 1000]));
    c.image.user = "1000:staff".into();
    assert_eq!(user(&c), (1000, 50, vec![10, 29, 50]));
    c.image.user = "4000:4001".into();
    assert_eq!(user(&c), (4000, 4001, vec![4001]));
    c.image.user = "daemon".into();
    assert_eq!(user(&c), (2, 3, vec![3]));
    c.image.user = "nobody".into();
    assert_eq!(
        c.err(),
        "the image's User: user \"nobody\" is not in the image's /etc/passwd"
    );
    c.image.user = "tester:nogroup".into();
    assert_eq!(
        c.err(),
        "the image's User: group \"nogroup\" is not in the image's /etc/group"
    );
}

#[test]
fn the_security_context_user_overrides_the_image() {
    let mut c = Case::new();
    c.image.user = "daemon".into();
    c.sc().run_as_user = Some(Int64Value { value: 1000 });
    assert_eq!(user(&c), (1000, 1000, vec![10, 29, 1000]));
    // A uid without an entry: gid 0, no groups from /etc/group.
    c.sc().run_as_user = Some(Int64Value { value: 5000 });
    assert_eq!(user(&c), (5000, 0, vec![0]));
    c.sc().run_as_group = Some(Int64Value { value: 77 });
    c.sc().supplemental_groups = vec![900, 77];
    assert_eq!(user(&c), (5000, 77, vec![77, 900]));
    c.sc().run_as_username = "tester".into();
    assert_eq!(user(&c), (1000, 77, vec![10, 29, 77, 900]));
    c.sc().supplemental_groups_policy = SupplementalGroupsPolicy::Strict as i32;
    assert_eq!(user(&c), (1000, 77, vec![77, 900]));
    c.sc().run_as_username = "ghost".into();
    assert!(
        c.err().contains("run_as_username: user \"ghost\""),
        "{}",
        c.err()
    );
    c.sc().run_as_username.clear();
    c.sc().run_as_user = Some(Int64Value { value: -1 });
    assert!(c.err().contains("run_as_user \"-1\""), "{}", c.err());
}

#[test]
fn run_as_group_without_a_user_is_an_invalid_argument() {
    let mut c = Case::new();
    c.image.user = "tester".into();
    c.sc().run_as_group = Some(Int64Value { value: 5 });
    let e = c.build().unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        e.to_string(),
        "config.linux.security_context.run_as_group 5 is set without run_as_user or \
         run_as_username"
    );
}

#[test]
fn a_hostile_passwd_is_an_error_not_a_hang() {
    let mut c = Case::new();
    c.image.user = "tester".into();
    c.accounts.passwd = Some("x".repeat(capsa::internal::MAX_LINE + 1));
    assert!(
        c.err()
            .starts_with("reading the image's /etc/passwd for the container's user: "),
        "{}",
        c.err()
    );
    // No accounts at all: numeric users still work, names do not.
    c.accounts = FakeAccounts::default();
    c.image.user = "7:8".into();
    assert_eq!(user(&c), (7, 8, vec![8]));
    c.image.user = "tester".into();
    assert!(c.err().contains("not in the image's /etc/passwd"));
}

#[test]
fn the_standard_mounts_and_the_sandbox_files_are_there() {
    let c = Case::new();
    let spec = c.json();
    let dests: Vec<&str> = spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    assert_eq!(
        dests,
        [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
            "/etc/hostname",
            "/etc/hosts",
            "/etc/resolv.conf",
            "/dev/shm"
        ]
    );
    assert!(options(&spec, "/sys").contains(&"ro".into()));
    assert!(options(&spec, "/sys/fs/cgroup").contains(&"ro".into()));
    let shm = mount(&spec, "/dev/shm").unwrap();
    assert_eq!(shm["source"], "/run/s/shm");
    assert_eq!(strings(&shm["options"]), ["rbind", "rprivate", "rw"]);
    assert_eq!(
        mount(&spec, "/etc/hosts").unwrap()["source"],
        "/run/s/hosts"
    );
}

#[test]
fn a_request_mount_replaces_the_sandbox_file_and_host_ipc_gets_the_hosts_shm() {
    let mut c = Case::new();
    c.host = std::mem::take(&mut c.host).with_path("/var/lib/kubelet/etc-hosts");
    c.config.mounts = vec![bind("/etc/hosts/", "/var/lib/kubelet/etc-hosts")];
    c.sc().namespace_options = Some(NamespaceOption {
        ipc: NamespaceMode::Node as i32,
        ..Default::default()
    });
    c.sc().readonly_rootfs = true;
    let spec = c.json();
    let hosts: Vec<&Value> = spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["destination"].as_str().unwrap().starts_with("/etc/hosts"))
        .collect();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0]["source"], "/var/lib/kubelet/etc-hosts");
    assert_eq!(mount(&spec, "/dev/shm").unwrap()["source"], "/dev/shm");
    // With a read-only root, the sandbox's files are read-only too.
    assert!(options(&spec, "/etc/resolv.conf").contains(&"ro".into()));
    assert_eq!(spec["root"]["readonly"], true);
}

#[test]
fn host_paths_are_resolved_sorted_and_bound_with_their_options() {
    let mut c = Case::new();
    c.host.paths.insert("/data/link".into(), "/srv/real".into());
    c.host = std::mem::take(&mut c.host).with_path("/logs");
    let mut ro = bind("/var/log/app", "/logs");
    ro.readonly = true;
    c.config.mounts = vec![ro, bind("/var", "/data/link")];
    let spec = c.json();
    let all = spec["mounts"].as_array().unwrap();
    let var = all.iter().position(|m| m["destination"] == "/var").unwrap();
    let log = all
        .iter()
        .position(|m| m["destination"] == "/var/log/app")
        .unwrap();
    assert!(var < log, "a parent is mounted before its child");
    assert_eq!(all[var]["source"], "/srv/real", "the symlink is resolved");
    assert_eq!(all[var]["type"], "bind");
    assert_eq!(strings(&all[log]["options"]), ["rbind", "rprivate", "ro"]);
    assert!(spec["linux"].get("rootfsPropagation").is_none());
}

#[test]
fn a_missing_host_path_is_an_error_naming_it() {
    let mut c = Case::new();
    c.config.mounts = vec![bind("/data", "/nowhere")];
    assert_eq!(
        c.err(),
        "config.mounts[0].host_path: host path /nowhere: No such file or directory (os error 2)"
    );
    c.config.mounts = vec![bind("data", "/nowhere")];
    assert!(c
        .err()
        .starts_with("config.mounts[0].container_path \"data\""));
}

#[test]
fn propagation_needs_a_matching_host_mount() {
    let mut c = Case::new();
    for p in ["/shared/x", "/private/x", "/slave/x"] {
        c.host = std::mem::take(&mut c.host).with_path(p);
    }
    use MountPropagation::*;
    let (opts, root) = propagated(&mut c, "/shared/x", PropagationBidirectional);
    assert_eq!(
        (opts, root),
        (
            vec!["rbind".into(), "rshared".into(), "rw".into()],
            "rshared".into()
        )
    );
    let (opts, root) = propagated(&mut c, "/slave/x", PropagationHostToContainer);
    assert_eq!(
        (opts, root),
        (
            vec!["rbind".into(), "rslave".into(), "rw".into()],
            "rslave".into()
        )
    );
    let mut m = bind("/mnt", "/slave/x");
    m.propagation = PropagationBidirectional as i32;
    c.config.mounts = vec![m.clone()];
    assert_eq!(
        c.err(),
        "config.mounts[0].propagation: rshared propagation needs /slave/x to be on a shared \
         mount, but its mount /slave is not"
    );
    m.host_path = "/private/x".into();
    m.propagation = PropagationHostToContainer as i32;
    c.config.mounts = vec![m.clone()];
    assert!(
        c.err().contains("on a shared or slave mount"),
        "{}",
        c.err()
    );
    m.propagation = 9;
    c.config.mounts = vec![m];
    assert!(c.err().contains("not a MountPropagation value"));
}

#[test]
fn selinux_relabel_is_ignored_without_selinux_and_rro_needs_readonly() {
    let mut c = Case::new();
    c.host = std::mem::take(&mut c.host).with_path("/d");
    let mut m = bind("/d", "/d");
    m.selinux_relabel = true;
    c.config.mounts = vec![m.clone()];
    assert!(c.build().is_ok());
    c.host.selinux = true;
    assert!(c
        .err()
        .contains("selinux_relabel: SELinux relabeling is not supported"));
    c.host.selinux = false;
    m.recursive_read_only = true;
    c.config.mounts = vec![m.clone()];
    assert!(c.err().contains("needs readonly"));
    m.readonly = true;
    c.config.mounts = vec![m];
    assert_eq!(options(&c.json(), "/d"), ["rbind", "rprivate", "ro", "rro"]);
}

#[test]
fn a_dev_mount_replaces_the_standard_dev_mounts() {
    let mut c = Case::new();
    c.host = std::mem::take(&mut c.host).with_path("/hostdev");
    c.config.mounts = vec![bind("/dev", "/hostdev")];
    let spec = c.json();
    for gone in ["/dev/pts", "/dev/mqueue"] {
        assert!(mount(&spec, gone).is_none(), "{gone}");
    }
    // The sandbox's /dev/shm is a bind of the request's kind: it stays, on top.
    assert_eq!(mount(&spec, "/dev/shm").unwrap()["source"], "/run/s/shm");
    assert_eq!(mount(&spec, "/dev").unwrap()["source"], "/hostdev");
}

const NULL: HostDevice = HostDevice {
    kind: 'c',
    major: 1,
    minor: 3,
    mode: 0o666,
    uid: 0,
    gid: 0,
};

#[test]
fn devices_are_stated_on_the_host_and_allowed_with_their_permissions() {
    let mut c = Case::new();
    c.host.paths.insert("/dev/fuse".into(), "/dev/fuse".into());
    c.host.devices.insert("/dev/fuse".into(), NULL);
    c.config.devices = vec![Device {
        container_path: "/dev/myfuse".into(),
        host_path: "/dev/fuse".into(),
        permissions: "rw".into(),
    }];
    let spec = c.json();
    let d = &spec["linux"]["devices"][0];
    assert_eq!(
        (d["path"].as_str(), d["major"].as_i64()),
        (Some("/dev/myfuse"), Some(1))
    );
    let rules = spec["linux"]["resources"]["devices"].as_array().unwrap();
    assert_eq!(rules[0]["allow"], false);
    assert_eq!(rules[1]["access"], "rw");
    assert_eq!(rules[1]["minor"], 3);
    c.config.devices[0].host_path = "dev/fuse".into();
    assert!(c
        .err()
        .starts_with("config.devices[0].host_path \"dev/fuse\""));
    c.config.devices[0].host_path = "/dev/fuse".into();
    c.config.devices[0].permissions = "rwx".into();
    assert!(c.err().starts_with("config.devices[0].permissions \"rwx\""));
    c.host
        .paths
        .insert("/etc/passwd".into(), "/etc/passwd".into());
    c.config.devices[0].permissions = "r".into();
    c.config.devices[0].host_path = "/etc/passwd".into();
    assert_eq!(
        c.err(),
        "config.devices[0].host_path: /etc/passwd is not a device node"
    );
}

#[test]
fn capabilities_default_add_drop_and_all() {
    let mut c = Case::new();
    let caps = |c: &Case| sorted(&c.json()["process"]["capabilities"]["bounding"]);
    assert_eq!(caps(&c), DEFAULT_CAPABILITIES);
    let spec = c.json();
    let p = &spec["process"]["capabilities"];
    assert_eq!(sorted(&p["effective"]), sorted(&p["bounding"]));
    assert_eq!(sorted(&p["permitted"]), sorted(&p["bounding"]));
    assert!(p.get("inheritable").is_none() && p.get("ambient").is_none());
    c.sc().capabilities = Some(Capability {
        add_capabilities: vec!["sys_time".into(), "CAP_NET_ADMIN".into()],
        drop_capabilities: vec!["Chown".into(), "cap_kill".into()],
        ..Default::default()
    });
    let got = caps(&c);
    assert!(got.contains(&"CAP_SYS_TIME".into()) && got.contains(&"CAP_NET_ADMIN".into()));
    assert!(!got.contains(&"CAP_CHOWN".into()) && !got.contains(&"CAP_KILL".into()));
    c.sc().capabilities = Some(Capability {
        add_capabilities: vec!["ALL".into()],
        drop_capabilities: vec!["CHOWN".into()],
        ..Default::default()
    });
    assert_eq!(caps(&c), ["CAP_KILL", "CAP_SYS_ADMIN", "CAP_SYS_TIME"]);
    c.sc().capabilities = Some(Capability {
        add_capabilities: vec!["NET_BIND_SERVICE".into()],
        drop_capabilities: vec!["all".into()],
        ..Default::default()
    });
    assert_eq!(caps(&c), ["CAP_NET_BIND_SERVICE"]);
    c.sc().capabilities = Some(Capability {
        drop_capabilities: vec!["KILL".into(), "FLY".into()],
        ..Default::default()
    });
    assert_eq!(
        c.err(),
        "config.linux.security_context.capabilities.drop_capabilities[1]: unknown capability \
         \"FLY\""
    );
}

#[test]
fn no_new_privs_and_masked_paths() {
    let mut c = Case::new();
    let spec = c.json();
    assert_eq!(spec["process"]["noNewPrivileges"], false);
    assert_eq!(
        strings(&spec["linux"]["maskedPaths"]),
        capsa::spec::DEFAULT_MASKED_PATHS
    );
    assert_eq!(
        strings(&spec["linux"]["readonlyPaths"]),
        capsa::spec::DEFAULT_READONLY_PATHS
    );
    c.sc().no_new_privs = true;
    c.sc().masked_paths = vec!["/proc/kcore".into(), "/secret".into()];
    c.sc().readonly_paths = vec!["/proc/sys".into()];
    let spec = c.json();
    assert_eq!(spec["process"]["noNewPrivileges"], true);
    assert_eq!(
        strings(&spec["linux"]["maskedPaths"]),
        ["/proc/kcore", "/secret"]
    );
    assert_eq!(strings(&spec["linux"]["readonlyPaths"]), ["/proc/sys"]);
}

#[test]
fn privileged_gets_everything_and_needs_a_privileged_sandbox() {
    let mut c = Case::new();
    c.sc().privileged = true;
    c.sc().seccomp = Some(SecurityProfile::default());
    c.host.devices.insert("/dev/null".into(), NULL);
    assert_eq!(
        c.err(),
        "config.linux.security_context.privileged: the sandbox is not privileged"
    );
    c.sandbox_config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .privileged = true;
    let spec = c.json();
    assert_eq!(
        sorted(&spec["process"]["capabilities"]["bounding"]),
        ALL_CAPS
    );
    assert!(strings(&spec["linux"]["maskedPaths"]).is_empty());
    assert!(strings(&spec["linux"]["readonlyPaths"]).is_empty());
    assert!(spec["linux"].get("seccomp").is_none());
    assert_eq!(spec["linux"]["devices"][0]["path"], "/dev/null");
    assert_eq!(spec["linux"]["resources"]["devices"][0]["allow"], true);
    assert!(!options(&spec, "/sys").contains(&"ro".into()));
}

#[test]
#[allow(deprecated)]
fn seccomp_profiles() {
    let mut c = Case::new();
    assert!(
        c.json()["linux"].get("seccomp").is_none(),
        "none asked: none"
    );
    c.sc().seccomp = Some(SecurityProfile::default());
    let spec = c.json();
    assert_eq!(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    c.sc().seccomp = Some(SecurityProfile {
        profile_type: security_profile::ProfileType::Unconfined as i32,
        localhost_ref: String::new(),
    });
    assert!(c.json()["linux"].get("seccomp").is_none());
    c.sc().seccomp = None;
    c.sc().seccomp_profile_path = "runtime/default".into();
    assert!(c.json()["linux"].get("seccomp").is_some());
    c.sc().seccomp_profile_path = "localhost//etc/p.json".into();
    c.host.profiles.insert(
        "/etc/p.json".into(),
        br#"{"defaultAction":"SCMP_ACT_LOG","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#
            .to_vec(),
    );
    assert_eq!(
        c.json()["linux"]["seccomp"]["defaultAction"],
        "SCMP_ACT_LOG"
    );
    c.sc().seccomp_profile_path = "bogus".into();
    assert!(
        c.err().contains("seccomp_profile_path \"bogus\""),
        "{}",
        c.err()
    );
    c.sc().seccomp_profile_path.clear();
    let localhost = |path: &str| SecurityProfile {
        profile_type: security_profile::ProfileType::Localhost as i32,
        localhost_ref: path.into(),
    };
    c.host
        .profiles
        .insert("/etc/bad.json".into(), b"{\"defaultAction\": 3}".to_vec());
    c.sc().seccomp = Some(localhost("/etc/bad.json"));
    assert!(c.err().starts_with(
        "config.linux.security_context.seccomp.localhost_ref: seccomp profile /etc/bad.json is \
         not an OCI LinuxSeccomp JSON object"
    ));
    c.sc().seccomp = Some(localhost("/etc/none.json"));
    assert!(c
        .err()
        .contains("seccomp profile /etc/none.json: No such file"));
    c.sc().seccomp = Some(SecurityProfile {
        profile_type: 0,
        localhost_ref: "/etc/p.json".into(),
    });
    assert!(c.err().contains("set only with profile_type Localhost"));
}

#[test]
#[allow(deprecated)]
fn lsm_requests_are_refused_where_the_lsm_is_off() {
    let mut c = Case::new();
    c.sc().apparmor = Some(SecurityProfile {
        profile_type: security_profile::ProfileType::Unconfined as i32,
        localhost_ref: String::new(),
    });
    assert!(c.build().is_ok());
    c.sc().apparmor = Some(SecurityProfile::default());
    let e = c.build().unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        e.to_string(),
        "config.linux.security_context.apparmor: AppArmor is not enabled on this host"
    );
    c.sc().apparmor = None;
    c.sc().apparmor_profile = "localhost/my-profile".into();
    assert!(c.err().contains("AppArmor is not enabled"));
    c.sc().apparmor_profile.clear();
    c.sc().selinux_options = Some(SeLinuxOption {
        level: "s0:c1,c2".into(),
        ..Default::default()
    });
    assert_eq!(
        c.err(),
        "config.linux.security_context.selinux_options: SELinux is not enabled on this host"
    );
}

fn namespaces(c: &Case) -> Vec<(String, Option<String>)> {
    c.json()["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["type"].as_str().unwrap().to_string(),
                n["path"].as_str().map(String::from),
            )
        })
        .collect()
}

fn ns(kind: &str, path: Option<&str>) -> (String, Option<String>) {
    (kind.to_string(), path.map(String::from))
}

#[test]
fn namespaces_join_the_pod_and_pid_follows_the_mode() {
    let mut c = Case::new();
    assert_eq!(
        namespaces(&c),
        [
            ns("mount", None),
            ns("network", Some("/proc/4242/ns/net")),
            ns("uts", Some("/proc/4242/ns/uts")),
            ns("ipc", Some("/proc/4242/ns/ipc")),
            ns("pid", Some("/proc/4242/ns/pid")),
        ]
    );
    // POD is the zero value of NamespaceMode: what kubelet sets for a normal pod is CONTAINER.
    c.sandbox_ns().pid = NamespaceMode::Container as i32;
    c.sc().namespace_options = Some(NamespaceOption {
        pid: NamespaceMode::Container as i32,
        ..Default::default()
    });
    assert_eq!(namespaces(&c)[4], ns("pid", None));
    // The container asks for the pod's pid namespace but the pod has none of its own: its
    // infra is in the host's.
    c.sc().namespace_options.as_mut().unwrap().pid = NamespaceMode::Pod as i32;
    assert!(
        c.err().contains("the sandbox's pid namespace mode differs"),
        "{}",
        c.err()
    );
    c.sc().namespace_options.as_mut().unwrap().pid = NamespaceMode::Node as i32;
    assert!(
        c.err().contains("the sandbox's pid namespace mode differs"),
        "{}",
        c.err()
    );
    // Host network, ipc and pid: nothing joined but the host's.
    *c.sandbox_ns() = NamespaceOption {
        network: NamespaceMode::Node as i32,
        ipc: NamespaceMode::Node as i32,
        pid: NamespaceMode::Node as i32,
        ..Default::default()
    };
    c.sc().namespace_options = Some(NamespaceOption {
        pid: NamespaceMode::Node as i32,
        ..Default::default()
    });
    assert_eq!(namespaces(&c), [ns("mount", None)]);
    c.host.cgroup_v2 = true;
    assert_eq!(namespaces(&c), [ns("mount", None), ns("cgroup", None)]);
}

#[test]
fn a_target_pid_namespace_is_a_running_container_of_the_sandbox() {
    let mut c = Case::new();
    c.sc().namespace_options = Some(NamespaceOption {
        pid: NamespaceMode::Target as i32,
        target_id: "app".into(),
        ..Default::default()
    });
    assert_eq!(
        c.err(),
        "config.linux.security_context.namespace_options.target_id \"app\" is not a running \
         container of sandbox sb1"
    );
    c.host.targets.insert(("sb1".into(), "app".into()), 777);
    assert_eq!(namespaces(&c)[4], ns("pid", Some("/proc/777/ns/pid")));
}

#[test]
fn resources_and_the_cgroup() {
    let mut c = Case::new();
    let spec = c.json();
    assert_eq!(spec["linux"]["cgroupsPath"], "/kubepods/pod-u/sb1/c1");
    assert!(spec["process"].get("oomScoreAdj").is_none());
    c.config
        .linux
        .get_or_insert_with(Default::default)
        .resources = Some(LinuxContainerResources {
        cpu_period: 100000,
        cpu_quota: 50000,
        cpu_shares: 512,
        memory_limit_in_bytes: 64 << 20,
        memory_swap_limit_in_bytes: 128 << 20,
        oom_score_adj: 999,
        cpuset_cpus: "0".into(),
        cpuset_mems: "0".into(),
        hugepage_limits: vec![HugepageLimit {
            page_size: "2MB".into(),
            limit: 0,
        }],
        unified: [("memory.high".to_string(), "1G".to_string())].into(),
    });
    let spec = c.json();
    let r = &spec["linux"]["resources"];
    assert_eq!(r["cpu"]["period"], 100000);
    assert_eq!(r["cpu"]["quota"], 50000);
    assert_eq!(r["cpu"]["shares"], 512);
    assert_eq!(r["cpu"]["cpus"], "0");
    assert_eq!(r["memory"]["limit"], 64 << 20);
    assert_eq!(r["memory"]["swap"], 128 << 20);
    assert_eq!(r["hugepageLimits"][0]["pageSize"], "2MB");
    assert_eq!(r["unified"]["memory.high"], "1G");
    assert_eq!(spec["process"]["oomScoreAdj"], 999);
    let res = c.config.linux.as_mut().unwrap().resources.as_mut().unwrap();
    res.cpu_shares = -2;
    assert!(c
        .err()
        .starts_with("config.linux.resources.cpu_shares \"-2\""));
}

#[test]
fn annotations_carry_the_request_and_the_cri_facts() {
    let mut c = Case::new();
    c.config.annotations = [
        ("team".to_string(), "a".to_string()),
        (
            "io.kubernetes.cri.sandbox-id".to_string(),
            "spoofed".to_string(),
        ),
    ]
    .into();
    let spec = c.json();
    let a = &spec["annotations"];
    assert_eq!(a["team"], "a");
    assert_eq!(a["io.kubernetes.cri.sandbox-id"], "sb1");
    assert_eq!(a["io.kubernetes.cri.container-type"], "container");
    assert_eq!(a["io.kubernetes.cri.container-name"], "web");
    assert_eq!(a["io.kubernetes.cri.sandbox-name"], "pod");
    assert_eq!(a["io.kubernetes.cri.sandbox-namespace"], "ns");
    assert_eq!(
        a["io.kubernetes.cri.image-name"],
        "docker.io/library/busybox:latest"
    );
    assert_eq!(spec["root"]["path"], "/var/lib/c1/rootfs");
    assert!(spec.get("hostname").is_none(), "the pod owns the hostname");
}

#[test]
fn image_volumes_get_host_directories_unless_mounted() {
    let mut c = Case::new();
    c.image.volumes = vec!["/data".into(), "/cache".into(), "/data".into()];
    c.host = std::mem::take(&mut c.host)
        .with_path("/v/c1/0")
        .with_path("/h");
    c.config.mounts = vec![bind("/data", "/h")];
    assert_eq!(
        image_volumes(&c.image, &c.config, Path::new("/v/c1")),
        [(PathBuf::from("/v/c1/0"), "/cache".to_string())]
    );
    assert!(
        mount(&c.json(), "/cache").is_none(),
        "ignored without a volumes dir"
    );
    c.volumes_dir = Some("/v/c1".into());
    assert_eq!(mount(&c.json(), "/cache").unwrap()["source"], "/v/c1/0");
}
