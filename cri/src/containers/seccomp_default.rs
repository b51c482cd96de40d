//! The RuntimeDefault seccomp profile: an allowlist (everything else fails with EPERM), as
//! strict as containerd's default profile (contrib/seccomp), written here as data.
//!
//! - [`ALLOWED`]: what any process needs, grouped by purpose. Names a kernel or libseccomp
//!   does not know are skipped when the filter is compiled (capsa's seccomp), so the list
//!   may name newer syscalls.
//! - Argument-filtered: personality(2) only for the harmless personas; socket(2) for every
//!   family but AF_ALG (kernel crypto, a history of CVEs) and AF_VSOCK (host channels).
//! - [`BY_CAPABILITY`]: syscalls allowed only when the container's bounding set holds the
//!   capability that gates them anyway (mount needs CAP_SYS_ADMIN, ...): without it they fail
//!   with EPERM before reaching the kernel's own checks.
//! - clone(2) without CAP_SYS_ADMIN: only without namespace flags; clone3(2), whose flags
//!   live in memory a filter cannot read, then fails with ENOSYS so that glibc falls back
//!   to clone.

use serde_json::{json, Value};

/// Allowed for every container.
#[rustfmt::skip]
pub const ALLOWED: &[&str] = &[
    // files and directories
    "access", "chdir", "chmod", "chown", "chown32", "close", "close_range", "copy_file_range",
    "creat", "dup", "dup2", "dup3", "faccessat", "faccessat2", "fadvise64", "fadvise64_64",
    "fallocate", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat",
    "fcntl", "fcntl64", "fdatasync", "flock", "fstat", "fstat64", "fstatat64", "fstatfs",
    "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futimesat", "getcwd", "getdents",
    "getdents64", "lchown", "lchown32", "link", "linkat", "_llseek", "lseek", "lstat", "lstat64",
    "mkdir", "mkdirat", "mknod", "mknodat", "newfstatat", "open", "openat", "openat2", "pread64",
    "preadv", "preadv2", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink",
    "readlinkat", "readv", "rename", "renameat", "renameat2", "rmdir", "sendfile", "sendfile64",
    "splice", "stat", "stat64", "statfs", "statfs64", "statx", "symlink", "symlinkat", "sync",
    "sync_file_range", "syncfs", "tee", "truncate", "truncate64", "umask", "unlink", "unlinkat",
    "utime", "utimensat", "utimensat_time64", "utimes", "vmsplice", "write", "writev",
    // extended attributes
    "fgetxattr", "flistxattr", "fremovexattr", "fsetxattr", "getxattr", "lgetxattr",
    "listxattr", "llistxattr", "lremovexattr", "lsetxattr", "removexattr", "setxattr",
    // waiting on descriptors, events, notifications
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
    "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "fanotify_mark",
    "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "_newselect",
    "pipe", "pipe2", "poll", "ppoll", "ppoll_time64", "pselect6", "pselect6_time64", "select",
    "signalfd", "signalfd4", "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
    "timerfd_settime", "timerfd_settime64",
    // asynchronous I/O
    "io_cancel", "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64",
    "io_setup", "io_submit", "ioctl", "ioprio_get", "ioprio_set",
    // memory
    "brk", "madvise", "membarrier", "memfd_create", "memfd_secret", "mincore", "mlock",
    "mlock2", "mlockall", "map_shadow_stack", "mmap", "mmap2", "mprotect", "mremap", "msync",
    "munlock", "munlockall", "munmap", "pkey_alloc", "pkey_free", "pkey_mprotect",
    "remap_file_pages",
    // processes, threads, identity
    "capget", "capset", "execve", "execveat", "exit", "exit_group", "fork", "futex",
    "futex_requeue", "futex_time64", "futex_wait", "futex_waitv", "futex_wake",
    "get_robust_list", "get_thread_area", "getcpu", "getegid", "getegid32", "geteuid",
    "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32", "getpgid", "getpgrp",
    "getpid", "getppid", "getpriority", "getresgid", "getresgid32", "getresuid",
    "getresuid32", "getrlimit", "getrusage", "getsid", "gettid", "getuid", "getuid32",
    "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "pidfd_open",
    "pidfd_send_signal", "prctl", "prlimit64", "process_mrelease", "restart_syscall", "rseq",
    "sched_get_priority_max", "sched_get_priority_min", "sched_getaffinity", "sched_getattr",
    "sched_getparam", "sched_getscheduler", "sched_rr_get_interval",
    "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam",
    "sched_setscheduler", "sched_yield", "seccomp", "set_robust_list", "set_thread_area",
    "set_tid_address", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid",
    "setgid32", "setgroups", "setgroups32", "setpgid", "setpriority", "setregid", "setregid32",
    "setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32",
    "setrlimit", "setsid", "setuid", "setuid32", "ugetrlimit", "uname", "vfork", "wait4",
    "waitid", "waitpid",
    // signals
    "kill", "pause", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo",
    "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo", "sigaltstack", "sigprocmask", "sigreturn", "tgkill", "tkill",
    // time
    "alarm", "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64",
    "clock_nanosleep", "clock_nanosleep_time64", "getitimer", "gettimeofday", "nanosleep",
    "setitimer", "time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
    "timer_gettime64", "timer_settime", "timer_settime64", "times",
    // sockets (socket(2) itself is filtered below)
    "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt", "listen",
    "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "send", "sendmmsg", "sendmsg",
    "sendto", "setsockopt", "shutdown", "socketcall", "socketpair",
    // System V and POSIX IPC
    "ipc", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
    "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "msgctl",
    "msgget", "msgrcv", "msgsnd", "semctl", "semget", "semop", "semtimedop",
    "semtimedop_time64", "shmat", "shmctl", "shmdt", "shmget",
    // the system, read-only
    "getrandom", "sysinfo",
    // debugging one's own processes (kernels since 4.8 check ptrace against seccomp)
    "process_vm_readv", "process_vm_writev", "ptrace",
];

/// Allowed only on this architecture.
#[cfg(target_arch = "x86_64")]
const ARCH_ALLOWED: &[&str] = &["arch_prctl", "modify_ldt"];
#[cfg(target_arch = "aarch64")]
#[rustfmt::skip]
const ARCH_ALLOWED: &[&str] = &[
    "arm_fadvise64_64", "arm_sync_file_range", "breakpoint", "cacheflush", "set_tls",
    "sync_file_range2",
];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCH_ALLOWED: &[&str] = &[];

/// The seccomp architectures of this build (the native one and its compat ABIs).
#[cfg(target_arch = "x86_64")]
const ARCHITECTURES: &[&str] = &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];
#[cfg(target_arch = "aarch64")]
const ARCHITECTURES: &[&str] = &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCHITECTURES: &[&str] = &[];

/// Allowed when the bounding set holds the capability.
#[rustfmt::skip]
pub const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_BPF", &["bpf"]),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    ("CAP_PERFMON", &["perf_event_open"]),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    ("CAP_SYS_MODULE", &["delete_module", "finit_module", "init_module"]),
    (
        "CAP_SYS_NICE",
        &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &["kcmp", "pidfd_getfd", "process_madvise"],
    ),
    ("CAP_SYS_RAWIO", &["ioperm", "iopl"]),
    (
        "CAP_SYS_TIME",
        &["adjtimex", "clock_adjtime", "clock_adjtime64", "clock_settime", "clock_settime64", "settimeofday", "stime"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
            "lookup_dcookie", "mount", "mount_setattr", "move_mount", "name_to_handle_at",
            "open_tree", "perf_event_open", "quotactl", "quotactl_fd", "setdomainname",
            "sethostname", "setns", "syslog", "umount", "umount2", "unshare",
        ],
    ),
];

/// The personalities a process may switch to: PER_LINUX, PER_LINUX32, each with UNAME26
/// (as setarch uses them), and 0xffffffff, which only queries.
const PERSONAS: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// The namespace flags clone(2) may not carry without CAP_SYS_ADMIN.
const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

fn allow(names: &[&str]) -> Value {
    json!({"names": names, "action": "SCMP_ACT_ALLOW"})
}

fn allow_if(name: &str, op: &str, value: u64) -> Value {
    json!({"names": [name], "action": "SCMP_ACT_ALLOW",
           "args": [{"index": 0, "value": value, "op": op}]})
}

/// The profile, as `linux.seccomp` JSON, for a container with this bounding set.
pub fn profile(bounding: &[String]) -> Value {
    let has = |cap: &str| bounding.iter().any(|c| c == cap);
    let mut rules = vec![allow(ALLOWED)];
    if !ARCH_ALLOWED.is_empty() {
        rules.push(allow(ARCH_ALLOWED));
    }
    for p in PERSONAS {
        rules.push(allow_if("personality", "SCMP_CMP_EQ", *p));
    }
    let (af_alg, af_vsock) = (libc::AF_ALG as u64, libc::AF_VSOCK as u64);
    // Three single-condition rules: one rule with two "!=" on the same argument would be
    // split into an OR by the compiler (as runc splits it) and allow both.
    rules.push(allow_if("socket", "SCMP_CMP_LT", af_alg));
    for family in af_alg + 1..af_vsock {
        rules.push(allow_if("socket", "SCMP_CMP_EQ", family));
    }
    rules.push(allow_if("socket", "SCMP_CMP_GT", af_vsock));
    for (cap, names) in BY_CAPABILITY {
        if has(cap) {
            rules.push(allow(names));
        }
    }
    if !has("CAP_SYS_ADMIN") {
        rules.push(json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": NAMESPACE_FLAGS, "valueTwo": 0,
                      "op": "SCMP_CMP_MASKED_EQ"}]}));
        rules.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": libc::ENOSYS}));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ARCHITECTURES,
        "syscalls": rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(profile: &Value) -> Vec<String> {
        profile["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none())
            .flat_map(|r| r["names"].as_array().unwrap().clone())
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn the_default_set_denies_what_containerd_denies() {
        let caps: Vec<String> = crate::containers::spec::DEFAULT_CAPABILITIES
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = profile(&caps);
        let allowed = names(&p);
        for denied in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "bpf",
            "keyctl",
            "add_key",
            "request_key",
            "kexec_load",
            "init_module",
            "reboot",
            "swapon",
            "pivot_root",
            "userfaultfd",
            "perf_event_open",
            "clock_settime",
            "open_by_handle_at",
            "io_uring_setup",
            "acct",
            "syslog",
            "clone3",
        ] {
            assert!(!allowed.contains(&denied.to_string()), "{denied} allowed");
        }
        // CAP_SYS_CHROOT is in the default set: chroot follows it.
        assert!(allowed.contains(&"chroot".to_string()));
        assert!(allowed.contains(&"read".to_string()));
        // clone only without namespace flags; clone3 with ENOSYS.
        let rules = p["syscalls"].as_array().unwrap();
        assert!(rules.iter().any(|r| r["names"][0] == "clone"
            && r["args"][0]["op"] == "SCMP_CMP_MASKED_EQ"
            && r["args"][0]["value"] == NAMESPACE_FLAGS));
        assert!(rules
            .iter()
            .any(|r| r["names"][0] == "clone3" && r["errnoRet"] == libc::ENOSYS));
        // The profile is a valid OCI LinuxSeccomp.
        let parsed: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(p).unwrap();
        assert_eq!(
            parsed.default_action(),
            oci_spec::runtime::LinuxSeccompAction::ScmpActErrno
        );
    }

    #[test]
    fn capabilities_open_their_syscalls() {
        let p = profile(&["CAP_SYS_ADMIN".to_string(), "CAP_SYS_PTRACE".to_string()]);
        let allowed = names(&p);
        for name in ["mount", "setns", "unshare", "clone", "clone3", "kcmp"] {
            assert!(allowed.contains(&name.to_string()), "{name}");
        }
        assert!(!allowed.contains(&"chroot".to_string()));
        // With CAP_SYS_ADMIN there is no restricted clone rule and no clone3 ENOSYS.
        let rules = p["syscalls"].as_array().unwrap();
        assert!(!rules.iter().any(|r| r.get("errnoRet").is_some()));
    }

    #[test]
    fn socket_allows_every_family_but_alg_and_vsock() {
        let p = profile(&[]);
        let allowed = |family: u64| {
            p["syscalls"].as_array().unwrap().iter().any(|r| {
                r["names"][0] == "socket" && {
                    let a = &r["args"][0];
                    let v = a["value"].as_u64().unwrap();
                    match a["op"].as_str().unwrap() {
                        "SCMP_CMP_LT" => family < v,
                        "SCMP_CMP_EQ" => family == v,
                        "SCMP_CMP_GT" => family > v,
                        _ => false,
                    }
                }
            })
        };
        for f in [
            libc::AF_UNIX,
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
            39,
        ] {
            assert!(allowed(f as u64), "family {f}");
        }
        assert!(!allowed(libc::AF_ALG as u64));
        assert!(!allowed(libc::AF_VSOCK as u64));
    }
}
