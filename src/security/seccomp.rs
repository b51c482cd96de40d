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

/// A compiled filter, ready to load.
pub struct Filter {
    ctx: ScmpFilterContext,
    notify: bool,
}

fn err(what: impl Into<String>) -> impl FnOnce(libseccomp::error::SeccompError) -> SecurityError {
    let what = what.into();
    move |source| SecurityError::Seccomp { what, source }
}

impl Filter {
    /// Builds the libseccomp filter for `profile` (nothing is loaded yet).
    pub fn compile(profile: &LinuxSeccomp) -> Result<Self, SecurityError> {
        let plan = plan(profile);
        let mut ctx =
            ScmpFilterContext::new_filter(plan.default).map_err(err("creating the filter"))?;
        // no_new_privs is the process's own setting (process.noNewPrivileges), not a side
        // effect of loading seccomp: libseccomp sets it unless told not to.
        ctx.set_ctl_nnp(false)
            .map_err(err("clearing the no_new_privs attribute"))?;
        for name in &plan.architectures {
            let arch = ScmpArch::from_str(name)
                .map_err(err(format!("linux.seccomp.architectures: {name}")))?;
            ctx.add_arch(arch)
                .map_err(err(format!("adding architecture {name}")))?;
        }
        for flag in profile.flags().iter().flatten() {
            match flag {
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => ctx.set_ctl_log(true),
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true),
                LinuxSeccompFilterFlag::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true),
            }
            .map_err(err(format!("linux.seccomp.flags: {flag}")))?;
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
        Ok(Filter {
            ctx,
            notify: plan.notify,
        })
    }

    /// Loads the filter into this thread; returns the user-notification fd when the profile
    /// has SCMP_ACT_NOTIFY rules.
    pub fn load(&self) -> Result<Option<OwnedFd>, SecurityError> {
        self.ctx.load().map_err(err("loading the filter"))?;
        if !self.notify {
            return Ok(None);
        }
        let fd = self
            .ctx
            .get_notify_fd()
            .map_err(err("getting the notification fd"))?;
        // SAFETY: libseccomp returns a descriptor that the filter context made for us.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
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

    #[test]
    fn unknown_syscalls_are_skipped_and_bad_architectures_named() {
        let ok = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["no_such_syscall_anywhere","mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
        );
        assert!(Filter::compile(&ok).is_ok());
    }
}
