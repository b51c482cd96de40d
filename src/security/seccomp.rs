//! seccomp: an OCI profile translated into a libseccomp filter.
//!
//! The translation is split in two: [`plan`] turns the profile into rules (pure, unit-tested:
//! actions with their errno, argument comparisons, the split that runc does when one argument
//! index appears twice), and [`Filter::compile`] hands them to libseccomp, which knows the
//! syscall numbers of each architecture. Names libseccomp does not know are skipped, as runc
//! and crun do: profiles list syscalls of kernels newer than the running one.
//!
//! libseccomp (Debian's, through the `libseccomp` crate) rather than a pure-Rust compiler:
//! it is what runc and crun use, so profiles behave exactly as under them (multi-arch
//! filters, syscall-number rewrites such as socketcall on x86, argument ops), and it exposes
//! the user-notification fd.

use super::SecurityError;
use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use std::os::fd::{FromRawFd, OwnedFd};
use std::str::FromStr;

/// One rule for libseccomp: a syscall, an action, and conditions that must all hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub syscall: String,
    pub action: ScmpAction,
    pub conditions: Vec<(u32, ScmpCompareOp, u64)>,
}

/// A profile as rules, before libseccomp resolves names.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub default: ScmpAction,
    pub architectures: Vec<String>,
    pub rules: Vec<Rule>,
    pub notify: bool,
}

/// The libseccomp action for an OCI action; errno-carrying actions get `errno`.
pub fn action(a: LinuxSeccompAction, errno: u32) -> ScmpAction {
    match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno as i32),
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno as u16),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
    }
}

fn compare(op: LinuxSeccompOperator, value: u64, value_two: u64) -> (ScmpCompareOp, u64) {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, value),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, value),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, value),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, value),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, value),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, value),
        // value is the mask, valueTwo the datum (runtime-spec).
        LinuxSeccompOperator::ScmpCmpMaskedEq => (ScmpCompareOp::MaskedEqual(value), value_two),
    }
}

/// Translates a profile into rules. Rules whose action is the default one are dropped
/// (libseccomp refuses them, and they change nothing). When one argument index appears more
/// than once, libseccomp cannot AND the comparisons; like runc, each becomes its own rule.
pub fn plan(profile: &LinuxSeccomp) -> Plan {
    let default_errno = profile.default_errno_ret().unwrap_or(libc::EPERM as u32);
    let default = action(profile.default_action(), default_errno);
    let mut rules = Vec::new();
    let mut notify = false;
    for sc in profile.syscalls().iter().flatten() {
        let act = action(sc.action(), sc.errno_ret().unwrap_or(libc::EPERM as u32));
        if act == default {
            continue;
        }
        notify |= act == ScmpAction::Notify;
        let conds: Vec<(u32, ScmpCompareOp, u64)> = sc
            .args()
            .iter()
            .flatten()
            .map(|a| {
                let (op, datum) = compare(a.op(), a.value(), a.value_two().unwrap_or(0));
                (a.index() as u32, op, datum)
            })
            .collect();
        let mut indices: Vec<u32> = conds.iter().map(|c| c.0).collect();
        indices.sort_unstable();
        indices.dedup();
        let groups: Vec<Vec<(u32, ScmpCompareOp, u64)>> = if indices.len() < conds.len() {
            conds.into_iter().map(|c| vec![c]).collect()
        } else {
            vec![conds]
        };
        for name in sc.names() {
            for g in &groups {
                rules.push(Rule {
                    syscall: name.clone(),
                    action: act,
                    conditions: g.clone(),
                });
            }
        }
    }
    Plan {
        default,
        architectures: profile
            .architectures()
            .iter()
            .flatten()
            .map(|a| a.to_string())
            .collect(),
        rules,
        notify: notify || default == ScmpAction::Notify,
    }
}

/// One classic BPF instruction (struct sock_filter).
pub type Insn = libc::sock_filter;

const LD_ABS_W: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JA: u16 = 0x05; // BPF_JMP | BPF_JA
const RET_K: u16 = 0x06; // BPF_RET | BPF_K
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
/// struct seccomp_data: the syscall number, then the AUDIT_ARCH_* of the calling convention.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// x32 syscalls come with AUDIT_ARCH_X86_64 and this bit in their number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// The AUDIT_ARCH_* value the kernel reports for an architecture libseccomp names (the
/// common ones; a filter for another gets no ENOSYS stub for it).
fn audit_arch(arch: ScmpArch) -> Option<u32> {
    Some(match arch {
        ScmpArch::X86 => 0x4000_0003,
        ScmpArch::X8664 => AUDIT_ARCH_X86_64,
        ScmpArch::Arm => 0x4000_0028,
        ScmpArch::Aarch64 => 0xC000_00B7,
        ScmpArch::Ppc64Le => 0xC000_0015,
        ScmpArch::Ppc64 => 0x8000_0015,
        ScmpArch::S390X => 0x8000_0016,
        ScmpArch::Riscv64 => 0xC000_00F3,
        _ => return None,
    })
}

/// runc's -ENOSYS stub (libcontainer/seccomp/patchbpf), put in front of the filter: per
/// architecture, a syscall numbered above the highest one the profile names (`last`, as
/// (AUDIT_ARCH, number) pairs) is newer than the profile and gets ENOSYS, which is what glibc
/// needs to fall back to an older syscall; everything else goes on to the filter. x32
/// numbers are left to the filter (its architecture check decides them).
pub fn enosys_stub(last: &[(u32, u32)]) -> Vec<Insn> {
    let block_len = |arch: u32| if arch == AUDIT_ARCH_X86_64 { 5 } else { 4 };
    let total: usize = last.iter().map(|(a, _)| block_len(*a)).sum::<usize>() + 2;
    let (ret_at, main_at) = (total - 1, total);
    let mut p: Vec<Insn> = Vec::with_capacity(total);
    // Jump offsets are relative to the next instruction and fit in 8 bits: the stub is a
    // few instructions per architecture.
    let to = |target: usize, from: usize| (target - from - 1) as u8;
    for &(arch, nr) in last {
        let rest = (block_len(arch) - 2) as u8;
        p.push(bpf(LD_ABS_W, 0, 0, OFFSET_ARCH));
        p.push(bpf(JEQ_K, 0, rest, arch));
        p.push(bpf(LD_ABS_W, 0, 0, OFFSET_NR));
        if arch == AUDIT_ARCH_X86_64 {
            let i = p.len();
            p.push(bpf(JGE_K, to(main_at, i), 0, X32_SYSCALL_BIT));
        }
        let i = p.len();
        p.push(bpf(JGT_K, to(ret_at, i), to(main_at, i), nr));
    }
    p.push(bpf(JA, 0, 0, 1));
    p.push(bpf(RET_K, 0, 0, SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
    p
}

/// Whether a filter with this default action needs the stub: not when unknown syscalls are
/// allowed anyway, or already get ENOSYS (runc's conditions).
fn needs_enosys_stub(default: ScmpAction) -> bool {
    !matches!(
        default,
        ScmpAction::Allow | ScmpAction::Log | ScmpAction::Errno(libc::ENOSYS)
    )
}

/// (AUDIT_ARCH, highest syscall number the profile names) for each architecture of the
/// filter: the native one and those the profile lists.
fn last_syscalls(profile: &LinuxSeccomp, arches: &[ScmpArch]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &arch in arches {
        let Some(audit) = audit_arch(arch) else {
            continue;
        };
        if out.iter().any(|(a, _)| *a == audit) {
            continue;
        }
        let last = profile
            .syscalls()
            .iter()
            .flatten()
            .flat_map(|sc| sc.names())
            .filter_map(|n| libseccomp::ScmpSyscall::from_name_by_arch(n, arch).ok())
            .filter_map(|sc| u32::try_from(i32::from(sc)).ok())
            .max();
        if let Some(last) = last {
            out.push((audit, last));
        }
    }
    out
}

/// A compiled filter, ready to load: libseccomp's program behind the ENOSYS stub.
pub struct Filter {
    program: Vec<Insn>,
    flags: libc::c_ulong,
    notify: bool,
}

fn err(what: impl Into<String>) -> impl FnOnce(libseccomp::error::SeccompError) -> SecurityError {
    let what = what.into();
    move |source| SecurityError::Seccomp { what, source }
}

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> SecurityError {
    move |source| SecurityError::SeccompLoad { what, source }
}

const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
const SECCOMP_FILTER_FLAG_TSYNC: libc::c_ulong = 1;
const SECCOMP_FILTER_FLAG_LOG: libc::c_ulong = 2;
const SECCOMP_FILTER_FLAG_SPEC_ALLOW: libc::c_ulong = 4;
const SECCOMP_FILTER_FLAG_NEW_LISTENER: libc::c_ulong = 8;
const SECCOMP_FILTER_FLAG_TSYNC_ESRCH: libc::c_ulong = 16;
/// BPF_MAXINSNS: the kernel's limit on a classic BPF program.
const MAX_INSNS: usize = 4096;

impl Filter {
    /// Builds the filter for `profile` (nothing is loaded yet): libseccomp compiles the
    /// rules, and its program is exported so that the ENOSYS stub can go in front, which is
    /// why the filter is then loaded with seccomp(2) directly, as runc loads it.
    pub fn compile(profile: &LinuxSeccomp) -> Result<Self, SecurityError> {
        let plan = plan(profile);
        let mut ctx =
            ScmpFilterContext::new_filter(plan.default).map_err(err("creating the filter"))?;
        let mut arches = vec![ScmpArch::native()];
        for name in &plan.architectures {
            let arch = ScmpArch::from_str(name)
                .map_err(err(format!("linux.seccomp.architectures: {name}")))?;
            ctx.add_arch(arch)
                .map_err(err(format!("adding architecture {name}")))?;
            arches.push(arch);
        }
        let mut flags = 0;
        for flag in profile.flags().iter().flatten() {
            flags |= match flag {
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => SECCOMP_FILTER_FLAG_LOG,
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                    SECCOMP_FILTER_FLAG_SPEC_ALLOW
                }
                LinuxSeccompFilterFlag::SeccompFilterFlagTsync => SECCOMP_FILTER_FLAG_TSYNC,
            };
        }
        if plan.notify {
            flags |= SECCOMP_FILTER_FLAG_NEW_LISTENER;
            if flags & SECCOMP_FILTER_FLAG_TSYNC != 0 {
                // The kernel refuses TSYNC with a listener unless a failed sync is ESRCH.
                flags |= SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
            }
        }
        for rule in &plan.rules {
            let Ok(syscall) = libseccomp::ScmpSyscall::from_name(&rule.syscall) else {
                log::debug!(
                    "seccomp: syscall {} unknown to libseccomp, skipped",
                    rule.syscall
                );
                continue;
            };
            let conds: Vec<ScmpArgCompare> = rule
                .conditions
                .iter()
                .map(|(i, op, datum)| ScmpArgCompare::new(*i, *op, *datum))
                .collect();
            ctx.add_rule_conditional(rule.action, syscall, &conds)
                .map_err(err(format!("linux.seccomp.syscalls: {}", rule.syscall)))?;
        }
        let mut program = if needs_enosys_stub(plan.default) {
            enosys_stub(&last_syscalls(profile, &arches))
        } else {
            Vec::new()
        };
        program.extend(export(&ctx)?);
        if program.len() > MAX_INSNS {
            return Err(SecurityError::SeccompTooLong {
                len: program.len(),
                max: MAX_INSNS,
            });
        }
        Ok(Filter {
            program,
            flags,
            notify: plan.notify,
        })
    }

    /// Loads the filter into this thread; returns the user-notification fd when the profile
    /// has SCMP_ACT_NOTIFY rules. no_new_privs is the process's own setting
    /// (process.noNewPrivileges), set or not before this.
    pub fn load(&self) -> Result<Option<OwnedFd>, SecurityError> {
        let prog = libc::sock_fprog {
            len: self.program.len() as u16,
            filter: self.program.as_ptr() as *mut Insn,
        };
        // SAFETY: seccomp(2) reads the program through `prog`, which points into
        // self.program, alive for the call; its length was checked against BPF_MAXINSNS.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if ret < 0 {
            return Err(io_err("loading the filter")(std::io::Error::last_os_error()));
        }
        if !self.notify {
            return Ok(None);
        }
        // SAFETY: with SECCOMP_FILTER_FLAG_NEW_LISTENER the kernel returns a new descriptor
        // that only we own.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(ret as i32) }))
    }
}

/// libseccomp's program, exported through a memfd.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<Insn>, SecurityError> {
    use std::io::{Read, Seek};
    // SAFETY: memfd_create reads a NUL-terminated name and returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"capsa-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io_err("exporting the filter")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: the descriptor was just made for us and nothing else owns it.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    ctx.export_bpf(&mut file)
        .map_err(err("exporting the filter"))?;
    let mut bytes = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(io_err("exporting the filter"))?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| Insn {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn actions_carry_their_errno() {
        let p = plan(&profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,
                "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
                "syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW"},
                            {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
                            {"names":["mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}"#,
        ));
        assert_eq!(p.default, ScmpAction::Errno(38));
        assert_eq!(p.architectures, vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]);
        let names: Vec<(&str, ScmpAction)> = p
            .rules
            .iter()
            .map(|r| (r.syscall.as_str(), r.action))
            .collect();
        // mkdirat's rule equals the default: dropped.
        assert_eq!(
            names,
            vec![
                ("read", ScmpAction::Allow),
                ("write", ScmpAction::Allow),
                ("mkdir", ScmpAction::Errno(1))
            ]
        );
        assert!(!p.notify);
    }

    #[test]
    fn repeated_argument_indices_become_separate_rules() {
        let p = plan(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["personality"],"action":"SCMP_ACT_ERRNO","args":[
                    {"index":0,"value":0,"op":"SCMP_CMP_EQ"},
                    {"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
                {"names":["clone"],"action":"SCMP_ACT_ERRNO","args":[
                    {"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"},
                    {"index":1,"value":5,"op":"SCMP_CMP_GT"}]}]}"#,
        ));
        assert_eq!(p.rules.len(), 3);
        assert_eq!(p.rules[0].conditions, vec![(0, ScmpCompareOp::Equal, 0)]);
        assert_eq!(p.rules[1].conditions, vec![(0, ScmpCompareOp::Equal, 8)]);
        assert_eq!(
            p.rules[2].conditions,
            vec![
                (0, ScmpCompareOp::MaskedEqual(2114060288), 0),
                (1, ScmpCompareOp::Greater, 5)
            ]
        );
        assert_eq!(p.rules[2].action, ScmpAction::Errno(libc::EPERM));
    }

    #[test]
    fn notify_rules_are_noticed() {
        let p = plan(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/l.sock",
                "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        ));
        assert!(p.notify);
    }

    /// Runs the subset of classic BPF the stub emits on (nr, arch); None when it falls
    /// through to the filter behind it.
    fn run_stub(p: &[Insn], nr: u32, arch: u32) -> Option<u32> {
        let (mut a, mut pc) = (0u32, 0usize);
        while pc < p.len() {
            let i = p[pc];
            pc += 1;
            match i.code {
                LD_ABS_W => a = if i.k == OFFSET_NR { nr } else { arch },
                JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                JGT_K => pc += usize::from(if a > i.k { i.jt } else { i.jf }),
                JGE_K => pc += usize::from(if a >= i.k { i.jt } else { i.jf }),
                JA => pc += i.k as usize,
                RET_K => return Some(i.k),
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
        None
    }

    #[test]
    fn the_stub_gives_enosys_above_the_last_known_syscall_per_arch() {
        const I386: u32 = 0x4000_0003;
        let p = enosys_stub(&[(AUDIT_ARCH_X86_64, 334), (I386, 386)]);
        let enosys = Some(SECCOMP_RET_ERRNO | 38);
        assert_eq!(run_stub(&p, 439, AUDIT_ARCH_X86_64), enosys);
        assert_eq!(run_stub(&p, 335, AUDIT_ARCH_X86_64), enosys);
        assert_eq!(run_stub(&p, 334, AUDIT_ARCH_X86_64), None);
        assert_eq!(run_stub(&p, 110, AUDIT_ARCH_X86_64), None);
        // x32 numbers are the filter's to decide.
        assert_eq!(run_stub(&p, X32_SYSCALL_BIT | 439, AUDIT_ARCH_X86_64), None);
        assert_eq!(run_stub(&p, 387, I386), enosys);
        assert_eq!(run_stub(&p, 386, I386), None);
        // An architecture the stub does not know: the filter decides.
        assert_eq!(run_stub(&p, 1000, 0xC000_00B7), None);
        assert_eq!(run_stub(&enosys_stub(&[]), 1000, AUDIT_ARCH_X86_64), None);
    }

    #[test]
    fn the_last_syscall_is_the_highest_the_profile_names_on_each_arch() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
                {"names":["read","rseq","no_such_syscall"],"action":"SCMP_ACT_ALLOW"},
                {"names":["write"],"action":"SCMP_ACT_ERRNO"}]}"#,
        );
        let last = last_syscalls(&p, &[ScmpArch::X8664, ScmpArch::X86, ScmpArch::X8664]);
        assert_eq!(last, vec![(AUDIT_ARCH_X86_64, 334), (0x4000_0003, 386)]);
        assert!(!needs_enosys_stub(ScmpAction::Allow));
        assert!(!needs_enosys_stub(ScmpAction::Errno(libc::ENOSYS)));
        assert!(needs_enosys_stub(ScmpAction::Errno(libc::EPERM)));
        assert!(needs_enosys_stub(ScmpAction::KillProcess));
    }

    #[test]
    fn unknown_syscalls_are_skipped_and_bad_architectures_named() {
        let ok = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["no_such_syscall_anywhere","mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
        );
        assert!(Filter::compile(&ok).is_ok());
    }
}
