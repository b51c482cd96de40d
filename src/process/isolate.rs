//! Cloning from a multithreaded caller.
//!
//! The clone chain assumes a single-threaded process: a clone copies only the calling
//! thread, so a lock another thread held at that instant (malloc's, stdio's, a logger's) is
//! held for ever in the child, and the child's first allocation can deadlock. capsa's own
//! CLI is single-threaded; a program that embeds the library (a tokio daemon such as
//! capsa-cri) is not. So when the caller has more than one thread, the operations that
//! clone ([`Runtime::create`](crate::Runtime::create), [`Container::exec_detached`]
//! (crate::Container::exec_detached), [`Runtime::create_pod`](crate::Runtime::create_pod))
//! run in a child made by glibc's `fork()` -- which, unlike a raw clone, takes and releases
//! malloc's locks around the fork so the child may allocate -- and that child, alone in its
//! process, does the clone chain as the CLI would. The child logs nothing (the caller's
//! logger may be locked by another thread) and sends back its result: the value, or the
//! error with its whole cause chain, errno and [`ErrorKind`](crate::ErrorKind).
//!
//! What differs for the caller: the container's init is the child's, so once the child has
//! exited it is re-parented to the nearest child subreaper (PR_SET_CHILD_SUBREAPER, as
//! containerd's shim sets) or to pid 1; descriptors the caller hands over (console socket,
//! preserved fds, stdio) are inherited by the fork as they are.

use super::{ProcessError, RemoteError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::Read;

/// The number of threads of this process (1 when it cannot be read: /proc is the host's).
pub fn threads() -> usize {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Field 20 (num_threads), counted after the ")" that ends the command name.
            let rest = &s[s.rfind(')')? + 2..];
            rest.split(' ').nth(17)?.parse().ok()
        })
        .unwrap_or(1)
}

#[derive(Serialize, Deserialize)]
enum Outcome<T> {
    Ok(T),
    Err {
        kind: crate::ErrorKind,
        error: RemoteError,
    },
}

/// Runs `op` in this process when it is single-threaded, else in a forked single-threaded
/// child whose result comes back whole.
pub(crate) fn single_threaded<T, F>(op: F) -> crate::Result<T>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> crate::Result<T>,
{
    if threads() <= 1 {
        return op();
    }
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| ProcessError::Isolate(e.into()))?;
    // SAFETY: glibc's fork; the child only runs `op` (which the library makes safe for a
    // single-threaded process), writes its outcome and leaves with _exit, never returning
    // into the caller's code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(ProcessError::Isolate(std::io::Error::last_os_error()).into());
    }
    if pid == 0 {
        drop(read_end);
        // The caller's logger may be held by a thread that no longer exists here.
        log::set_max_level(log::LevelFilter::Off);
        let outcome = match op() {
            Ok(v) => Outcome::Ok(v),
            Err(e) => Outcome::Err {
                kind: e.kind(),
                error: RemoteError::from_error(&e),
            },
        };
        let code = match serde_json::to_vec(&outcome) {
            Ok(bytes) => {
                let mut f = std::fs::File::from(write_end);
                i32::from(std::io::Write::write_all(&mut f, &bytes).is_err())
            }
            Err(_) => 2,
        };
        // SAFETY: _exit ends the forked child without running the caller's exit handlers.
        unsafe { libc::_exit(code) };
    }
    drop(write_end);
    let child = nix::unistd::Pid::from_raw(pid);
    let mut bytes = Vec::new();
    let read = std::fs::File::from(read_end).read_to_end(&mut bytes);
    let status = loop {
        match nix::sys::wait::waitpid(child, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    read.map_err(ProcessError::Isolate)?;
    match serde_json::from_slice::<Outcome<T>>(&bytes) {
        Ok(Outcome::Ok(v)) => Ok(v),
        Ok(Outcome::Err { kind, error }) => Err(crate::error::Remote { kind, error }.into()),
        Err(_) => Err(ProcessError::IsolatedChild {
            status: status
                .map(|s| format!("{s:?}"))
                .unwrap_or_else(|e| e.to_string()),
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_counted() {
        assert!(threads() >= 1);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        // Other tests come and go on threads of their own: at least this one and ours.
        assert!(threads() >= 2);
        drop(tx);
        let _ = t.join();
    }

    #[test]
    fn results_and_errors_come_back_from_the_forked_child() {
        // The test harness runs tests on threads: this process has more than one.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        let me = std::process::id();
        let pid: u32 = single_threaded(|| Ok(std::process::id())).unwrap();
        assert_ne!(pid, me, "ran in the caller");
        let err = single_threaded::<(), _>(|| {
            Err(crate::container::ContainerError::NotExist { id: "x".into() }.into())
        })
        .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::NotFound);
        assert_eq!(err.to_string(), "container x does not exist");
        drop(tx);
        let _ = t.join();
    }
}
