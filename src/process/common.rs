//! What init and exec share: the last steps before execve, in the same order for both.

use super::channel::Channel;
use super::ProcessError;
use crate::security;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxSeccomp, Process};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A process ready to be executed.
pub(super) struct Exec {
    pub path: CString,
    pub args: Vec<CString>,
    pub env: Vec<CString>,
    pub umask: u32,
}

/// "a: b: c" for an error and its causes, for messages that can only go to stderr.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cur = c.source();
    }
    msg
}

/// Undoes what the runtime process had: blocked signals and ignored ones (Rust ignores
/// SIGPIPE), which would otherwise survive execve into the container.
pub(crate) fn reset_signals() {
    let _ = SigSet::empty().thread_set_mask();
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
            // SAFETY: installing SIG_DFL runs no code of ours in signal context.
            let _ = unsafe { sigaction(sig, &default) };
        }
    }
}

/// With `on`, the kernel SIGKILLs us when the runtime that cloned us exits; off once the
/// runtime has handed us over. A runtime killed before this is set is seen on the channel
/// instead: its end closes, and init's next send or receive fails, so the window is closed
/// without comparing getppid() (which reads 0 in a new pid namespace). The setting is
/// cleared by the kernel on a change of credentials, so it is set again after them.
pub(super) fn die_with_parent(on: bool) {
    let sig = if on { libc::SIGKILL } else { 0 };
    // SAFETY: PR_SET_PDEATHSIG only sets a flag of our own process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) };
}

/// Sets our command name (/proc/self/comm, at most 15 bytes).
pub(super) fn set_name(name: &str) {
    let Ok(name) = CString::new(name) else {
        return;
    };
    // SAFETY: PR_SET_NAME reads a NUL-terminated string that outlives the call.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
}

/// Closes every descriptor the runtime had open (its state-dir lock among them) except
/// stdio, the preserved range, and those listed.
pub(super) fn close_inherited(min: i32, keep: &[i32]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= min && !keep.contains(fd))
        .collect();
    for fd in fds {
        // SAFETY: closing a descriptor number; init holds no Rust owner for these.
        unsafe { libc::close(fd) };
    }
}

/// Marks every descriptor above stdio and the preserved ones close-on-exec, in a clone of
/// the runtime (its own copy of the table): nothing the caller leaked may reach the
/// container (CVE-2024-21626), and the caller's descriptors keep their flags.
pub(super) fn cloexec_inherited(preserve_fds: i32) -> Result<(), ProcessError> {
    crate::sys::fds::cloexec_from(3 + preserve_fds.max(0) as u32).map_err(ProcessError::Cloexec)
}

/// Makes `fds` this process's 0, 1 and 2. Each is first copied above 2, so that one given
/// as another's number (stdout as fd 2, say) is not overwritten before it is copied.
pub(super) fn install_stdio(fds: &[BorrowedFd; 3]) -> Result<(), ProcessError> {
    let high = fds
        .iter()
        .map(|fd| fd.try_clone_to_owned())
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(ProcessError::Stdio)?;
    for (target, fd) in high.iter().enumerate() {
        nix::unistd::dup2(fd.as_raw_fd(), target as i32)
            .map_err(|e| ProcessError::Stdio(e.into()))?;
    }
    Ok(())
}

/// Gives the process's stdio to its user before the switch to it, as runc's
/// fixStdioPermissions: a pipe or file the runtime was handed belongs to the runtime's
/// caller, and a process of another uid could not reopen it as /dev/stdout. Only the owner
/// changes (the group may be one the mount prefers); /dev/null, and a descriptor that
/// already has the uid, are left alone; one whose owner is not ours to change (EPERM, an
/// unmapped id: EINVAL, a read-only /dev: EROFS) is left as it is, as runc leaves it.
fn give_stdio(uid: u32) -> Result<(), ProcessError> {
    const NULL: libc::dev_t = libc::makedev(1, 3);
    for fd in 0..3 {
        let st = match nix::sys::stat::fstat(fd) {
            Ok(st) => st,
            // A closed descriptor: nothing to give.
            Err(nix::errno::Errno::EBADF) => continue,
            Err(e) => {
                return Err(ProcessError::StdioOwner {
                    fd,
                    uid,
                    source: e.into(),
                })
            }
        };
        let is_char = st.st_mode & libc::S_IFMT == libc::S_IFCHR;
        if st.st_uid == uid || (is_char && st.st_rdev == NULL) {
            continue;
        }
        // SAFETY: fchown on one of our descriptors; no memory is passed.
        if unsafe { libc::fchown(fd, uid, u32::MAX) } < 0 {
            let e = std::io::Error::last_os_error();
            if !matches!(
                e.raw_os_error(),
                Some(libc::EINVAL) | Some(libc::EPERM) | Some(libc::EROFS)
            ) {
                return Err(ProcessError::StdioOwner { fd, uid, source: e });
            }
        }
    }
    Ok(())
}

fn cwd_error(cwd: &Path) -> impl FnOnce(nix::errno::Errno) -> ProcessError + '_ {
    move |e| ProcessError::Cwd {
        cwd: cwd.to_path_buf(),
        source: e.into(),
    }
}

/// The first chdir into the process's cwd, as the runtime's user, before the switch to the
/// container's (runc's order): a directory only root can traverse is entered now. Returns
/// whether it is done; permission refused leaves it to [`enter_cwd`] as the container's
/// user, who may be allowed where root is not (a root-squashed volume).
fn enter_cwd_early(cwd: &Path) -> Result<bool, ProcessError> {
    match nix::unistd::chdir(cwd) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::EACCES | nix::errno::Errno::EPERM) => Ok(false),
        Err(e) => Err(cwd_error(cwd)(e)),
    }
}

/// chdir into the process's cwd unless [`enter_cwd_early`] did, and check that it really is
/// inside the container: a cwd reached through a leaked host fd shows up as "(unreachable)"
/// (CVE-2024-21626).
fn enter_cwd(cwd: &Path, entered: bool) -> Result<(), ProcessError> {
    if !entered {
        nix::unistd::chdir(cwd).map_err(cwd_error(cwd))?;
    }
    let now = nix::unistd::getcwd().map_err(|e| ProcessError::Cwd {
        cwd: cwd.to_path_buf(),
        source: e.into(),
    })?;
    if !now.is_absolute() || now.to_string_lossy().contains("(unreachable)") {
        return Err(ProcessError::CwdOutside {
            cwd: now.display().to_string(),
        });
    }
    Ok(())
}

/// The spec's environment, plus HOME from the container's /etc/passwd (or "/") when unset,
/// as runc does.
fn environment(process: &Process) -> Result<Vec<String>, ProcessError> {
    let mut env = merge_env(process.env().as_deref().unwrap_or(&[]));
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let uid = process.user().uid();
        let home = passwd_home(uid).map_err(|source| ProcessError::Passwd { uid, source })?;
        env.push(format!("HOME={}", home.unwrap_or_else(|| "/".into())));
    }
    Ok(env)
}

/// One entry per variable: a later `KEY=` replaces an earlier one's value in its place, as
/// runc's init builds the environment with one setenv per entry (so `exec -e KEY=VAL`, added
/// after the config's, wins over it).
fn merge_env(entries: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(entries.len());
    for e in entries {
        let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        let same = |o: &String| o.split_once('=').map_or(o.as_str(), |(k, _)| k) == key;
        match out.iter_mut().find(|o| same(o)) {
            Some(slot) => slot.clone_from(e),
            None => out.push(e.clone()),
        }
    }
    out
}

/// The home directory of `uid` from /etc/passwd, opened inside the container (a symlink in
/// the image resolves in the container), read as [`security::accounts`] reads an untrusted
/// file. A missing or unreadable file means no entry (runc ignores a failed open too); a
/// non-regular file or an overlong line is an error (runc fails on the line; on a FIFO it hangs).
fn passwd_home(uid: u32) -> std::io::Result<Option<String>> {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open("/etc/passwd")
    else {
        return Ok(None);
    };
    security::accounts::require_regular(&file, "/etc/passwd")?;
    find_home(std::io::BufReader::new(file), uid)
}

/// Scans passwd lines up to the first one for `uid`; lines that do not parse are skipped, as
/// runc's parser skips them. An empty home field means "/".
fn find_home(reader: impl std::io::BufRead, uid: u32) -> std::io::Result<Option<String>> {
    security::accounts::scan(reader, "/etc/passwd", |f| {
        (f.len() > 5 && f[2].parse() == Ok(uid))
            .then(|| if f[5].is_empty() { "/" } else { f[5] }.to_string())
    })
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn executable(path: &Path) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        return Err(std::io::Error::from_raw_os_error(libc::EISDIR));
    }
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).map_err(Into::into)
}

/// Resolves args[0] against the container's PATH, inside the container, as the container's
/// user: a missing executable fails the create, not the start.
fn find_executable(name: &str, env: &[String]) -> Result<PathBuf, ProcessError> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return executable(&p)
            .map(|_| p)
            .map_err(|source| ProcessError::Executable {
                name: name.to_string(),
                source,
            });
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| executable(p).is_ok())
        .ok_or_else(|| ProcessError::NotFound {
            name: name.to_string(),
        })
}

/// rlimits, no_new_privs, seccomp, capabilities and identity, cwd, environment and the
/// executable: everything about the process itself, after which only execve is left.
///
/// seccomp: without no_new_privs, loading a filter needs CAP_SYS_ADMIN, so it happens before
/// capabilities are dropped; with no_new_privs, as late as possible, so that fewer of our own
/// syscalls run under the container's filter (runc's order). A notification fd goes to the
/// runtime over `chan`, which passes it to the listener.
pub(super) fn prepare(
    process: &Process,
    seccomp: Option<&LinuxSeccomp>,
    chan: &Channel,
) -> crate::Result<Exec> {
    // Compiled before anything is restricted (it allocates and reads libseccomp's tables).
    let filter = seccomp
        .map(security::seccomp::Filter::compile)
        .transpose()?;
    let load = |f: &security::seccomp::Filter| -> crate::Result<()> {
        if let Some(fd) = f.load()? {
            chan.send_seccomp_fd(fd.as_fd())?;
        }
        Ok(())
    };
    if let Some(rl) = process.rlimits() {
        security::apply_rlimits(rl)?;
    }
    let nnp = process.no_new_privileges().unwrap_or(false);
    if nnp {
        security::set_no_new_privs()?;
        log::debug!("no_new_privs set");
    } else if let Some(f) = &filter {
        load(f)?;
        log::debug!("seccomp filter loaded (before the user switch: no no_new_privs)");
    }
    let caps = match process.capabilities() {
        Some(c) => security::CapabilitySets::from_spec(c)?,
        None => security::CapabilitySets::default(),
    };
    let entered = enter_cwd_early(process.cwd())?;
    security::drop_bounding(&caps)?;
    let user = process.user();
    give_stdio(user.uid())?;
    security::set_identity(
        user.uid(),
        user.gid(),
        user.additional_gids().as_deref().unwrap_or(&[]),
    )?;
    security::apply_capabilities(&caps)?;
    log::debug!(
        "user {}:{} (additional gids {:?}), capabilities set",
        user.uid(),
        user.gid(),
        user.additional_gids().as_deref().unwrap_or(&[])
    );
    enter_cwd(process.cwd(), entered)?;
    let env = environment(process)?;
    let args = process.args().clone().unwrap_or_default();
    let c_args = c_strings("process.args", &args)?;
    let c_env = c_strings("process.env", &env)?;
    let path = find_executable(args.first().map(String::as_str).unwrap_or(""), &env)?;
    apply_lsm_labels(process)?;
    if let (Some(f), true) = (&filter, nnp) {
        load(f)?;
        log::debug!("seccomp filter loaded");
    }
    Ok(Exec {
        // The name had no NUL (checked above), and PATH entries joined to it come from env.
        path: CString::new(path.as_os_str().as_bytes()).map_err(|_| ProcessError::Nul {
            field: "the executable's path".into(),
            value: path.display().to_string(),
        })?,
        args: c_args,
        env: c_env,
        umask: user.umask().unwrap_or(0o022),
    })
}

/// The strings as C strings for execve. One holding a NUL byte is an error that names it: it
/// cannot be passed, and cutting it (or passing "") would run something else.
fn c_strings(field: &str, items: &[String]) -> Result<Vec<CString>, ProcessError> {
    items
        .iter()
        .enumerate()
        .map(|(i, s)| {
            CString::new(s.as_bytes()).map_err(|_| ProcessError::Nul {
                field: format!("{field}[{i}]"),
                value: s.clone(),
            })
        })
        .collect()
}

/// AppArmor profile and SELinux label, for the execve that follows.
fn apply_lsm_labels(process: &Process) -> crate::Result<()> {
    use security::lsm::{set_exec_label, Lsm};
    let labels = [
        (Lsm::AppArmor, process.apparmor_profile().as_deref()),
        (Lsm::SeLinux, process.selinux_label().as_deref()),
    ];
    if labels.iter().all(|(_, l)| l.is_none_or(str::is_empty)) {
        return Ok(());
    }
    let proc = crate::sys::procfs::ProcRoot::open().map_err(ProcessError::Proc)?;
    // "self" is a symlink, which the verified open refuses: name our pid in this procfs.
    let pid = nix::unistd::getpid();
    for (lsm, label) in labels {
        if let Some(l) = label.filter(|l| !l.is_empty()) {
            let dir = proc.dir();
            set_exec_label(dir, lsm, l, pid.as_raw())?;
        }
    }
    Ok(())
}

/// Sets the umask, marks every descriptor past stdio and the preserved ones close-on-exec
/// (nothing else may reach the container, CVE-2024-21626), and executes. Returns only on error.
pub(super) fn exec(
    exec: &Exec,
    preserve_fds: i32,
) -> Result<std::convert::Infallible, crate::Error> {
    nix::sys::stat::umask(Mode::from_bits_truncate(exec.umask));
    crate::sys::fds::cloexec_from(3 + preserve_fds as u32).map_err(ProcessError::Cloexec)?;
    let Err(err) = nix::unistd::execve(&exec.path, &exec.args, &exec.env);
    Err(ProcessError::Executable {
        name: exec.path.to_string_lossy().into_owned(),
        source: err.into(),
    }
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn home_comes_from_the_first_line_of_the_uid() {
        let passwd = "# comment\nbroken\n\nroot:x:0:0:root:/root:/bin/sh\n\
                      a:x:1000:1000::/home/a:/bin/sh\nb:x:1000:1000::/home/b:/bin/sh\n\
                      e:x:7:7:::/bin/sh\n";
        let home = |uid| find_home(Cursor::new(passwd), uid).unwrap();
        assert_eq!(home(0).as_deref(), Some("/root"));
        assert_eq!(home(1000).as_deref(), Some("/home/a"));
        assert_eq!(home(7).as_deref(), Some("/"));
        assert_eq!(home(42), None);
    }

    #[test]
    fn a_later_variable_replaces_an_earlier_one_in_its_place() {
        let env = |v: &[&str]| merge_env(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            env(&["PATH=/bin", "A=1", "B=2", "A=3", "C", "C=4"]),
            ["PATH=/bin", "A=3", "B=2", "C=4"]
        );
        assert_eq!(env(&["A=1", "AB=2", "A="]), ["A=", "AB=2"]);
    }

    #[test]
    fn an_argument_with_a_nul_byte_is_an_error_naming_it() {
        let ok = c_strings("process.args", &["sh".into(), "-c".into()]).unwrap();
        assert_eq!(ok.len(), 2);
        let err = c_strings("process.args", &["echo".into(), "a\0b".into()]).unwrap_err();
        assert!(matches!(&err, ProcessError::Nul { field, .. } if field == "process.args[1]"));
        assert_eq!(
            err.to_string(),
            "process.args[1] holds a NUL byte, which cannot be passed to execve: \"a\\0b\""
        );
    }
}
