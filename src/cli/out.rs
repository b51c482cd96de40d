//! Writing the commands' output. Rust ignores SIGPIPE, so a write to a pipe whose reader has
//! gone (`capsa list | head -1`) fails with EPIPE, and `println!` panics on it (exit 134).
//! runc, in Go, dies of SIGPIPE when its stdout or stderr is such a pipe; capsa does the same
//! for stdout, where a command writes only once its work is done. A log line on stderr may
//! come in the middle of a create, where dying would leave a half-made container: one that
//! cannot be written is dropped.

use nix::sys::signal::Signal;
use std::io::Write;

/// Writes one line to stdout. A reader that has gone away ends capsa quietly, by SIGPIPE
/// (status 141 in a shell), as it ends runc; another failure is returned.
pub fn line(args: std::fmt::Arguments) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{args}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => die_of(Signal::SIGPIPE),
        Err(e) => Err(anyhow::Error::new(e).context("writing to stdout")),
        Ok(()) => Ok(()),
    }
}

/// Writes one line to stderr, dropping it if stderr cannot be written.
pub fn error_line(args: std::fmt::Arguments) {
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}

/// Ends capsa as the default action of `sig` would (SIGPIPE, or a terminating signal that
/// interrupted a create once it has been undone).
pub fn die_of(sig: Signal) -> ! {
    use nix::sys::signal::{raise, signal, SigHandler, SigSet};
    // SAFETY: SIG_DFL runs no code of ours in signal context.
    let _ = unsafe { signal(sig, SigHandler::SigDfl) };
    let mut set = SigSet::empty();
    set.add(sig);
    let _ = set.thread_unblock();
    let _ = raise(sig);
    // Not reached: the signal is fatal now. The status a shell would show, in case.
    std::process::exit(128 + sig as i32)
}
