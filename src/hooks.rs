//! OCI hooks: each runs with the container state as JSON on stdin, within its timeout.

use oci_spec::runtime::Hook;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A hook that could not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The hook did not start.
    #[error("{kind} hook #{index} ({}): starting", path.display())]
    Spawn {
        /// The hook kind (prestart, createRuntime, ...).
        kind: &'static str,
        /// Its index among hooks of that kind.
        index: usize,
        /// The hook program.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The hook exited with a failure.
    #[error("{kind} hook #{index} ({}): {status}{}", path.display(), stderr_suffix(stderr))]
    Failed {
        /// The hook kind.
        kind: &'static str,
        /// Its index among hooks of that kind.
        index: usize,
        /// The hook program.
        path: PathBuf,
        /// Its exit status.
        status: String,
        /// The hook's stderr.
        stderr: String,
    },
    /// The hook ran past its timeout.
    #[error("{kind} hook #{index} ({}): timed out after {seconds}s", path.display())]
    Timeout {
        /// The hook kind.
        kind: &'static str,
        /// Its index among hooks of that kind.
        index: usize,
        /// The hook program.
        path: PathBuf,
        /// The timeout, in seconds.
        seconds: i64,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(", stderr: {s}")
    }
}

/// Where a list of hooks runs, and the environment a hook without `env` gets (runc's
/// places: the runtime's hooks in the bundle with the runtime's environment,
/// createContainer in the container's root (before pivot_root), startContainer in the
/// process's cwd; those two run by the container's init, with the process's environment).
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// The working directory; `None`: the caller's own.
    pub cwd: Option<&'a Path>,
    /// The environment of a hook that names none; `None`: the caller's own.
    pub env: Option<&'a [String]>,
}

/// Runs one hook; `kind` names the hook list ("createRuntime", ...) in errors.
pub fn run(
    kind: &'static str,
    index: usize,
    hook: &Hook,
    state: &str,
    ctx: Context,
) -> Result<(), HookError> {
    let path = hook.path().clone();
    log::debug!("running {kind} hook #{index} ({})", path.display());
    let mut cmd = Command::new(&path);
    if let Some(args) = hook.args() {
        if let Some(arg0) = args.first() {
            cmd.arg0(arg0);
        }
        cmd.args(args.iter().skip(1));
    }
    // A hook with no env of its own and no context's inherits ours, as runc's do (Go's exec
    // with a nil Env): the runtime's hooks get the runtime's environment.
    if let Some(env) = hook.env().as_deref().or(ctx.env) {
        cmd.env_clear();
        for kv in env {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
    }
    if let Some(dir) = ctx.cwd {
        cmd.current_dir(dir);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // The hook gets its stdio and nothing else of ours: the descriptors of a program that
    // embeds the library (or of capsa's caller) are theirs, and stay as they are in it.
    // SAFETY: runs between fork and exec, and makes a single syscall (async-signal-safe).
    unsafe {
        cmd.pre_exec(|| crate::sys::fds::cloexec_from(3));
    }
    let spawn_err = |source| HookError::Spawn {
        kind,
        index,
        path: path.clone(),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine: ignore EPIPE.
        let _ = stdin.write_all(state.as_bytes());
    }
    let timeout = hook.timeout().filter(|t| *t > 0);
    if let Some(seconds) = timeout {
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let exited = crate::sys::pidfd::wait_exited(pid, Some(Duration::from_secs(seconds as u64)))
            .map_err(spawn_err)?;
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HookError::Timeout {
                kind,
                index,
                path,
                seconds,
            });
        }
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child.wait().map_err(spawn_err)?;
    if status.success() {
        return Ok(());
    }
    let status = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (_, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    };
    Err(HookError::Failed {
        kind,
        index,
        path,
        status,
        stderr,
    })
}

/// Runs a list of hooks in order, stopping at the first failure.
pub fn run_all(
    kind: &'static str,
    hooks: Option<&Vec<Hook>>,
    state: &str,
    ctx: Context,
) -> Result<(), HookError> {
    for (index, hook) in hooks.into_iter().flatten().enumerate() {
        run(kind, index, hook, state, ctx)?;
    }
    Ok(())
}

/// Runs every hook of a list, each failure logged as a warning and the rest run all the
/// same: the spec's rule for poststop hooks (runc 1.1 stops at the first failure).
pub fn run_all_warning(kind: &'static str, hooks: Option<&Vec<Hook>>, state: &str, ctx: Context) {
    for (index, hook) in hooks.into_iter().flatten().enumerate() {
        if let Err(e) = run(kind, index, hook, state, ctx) {
            log::warn!("{e}");
        }
    }
}
