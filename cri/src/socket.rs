//! The CRI socket: a stale socket file left by a killed daemon is replaced, a live one (a
//! daemon answering on it) is refused, anything that is not a socket is left alone and
//! refused. The socket is made mode 0660 before anyone can connect: it is bound under a
//! umask that leaves nothing for others, then chmod'ed.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("another server is already listening on {}", path.display())]
    InUse { path: PathBuf },
    #[error("{} exists and is not a socket; refusing to replace it", path.display())]
    NotASocket { path: PathBuf },
    #[error("{step} {}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SocketError + 'a {
    move |source| SocketError::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

/// Refuses a socket at `path` that a daemon answers on. The daemon checks this before it
/// opens its state, so that a second daemon says why it cannot start, not which of its
/// locks it found taken.
pub fn refuse_live(path: &Path) -> Result<(), SocketError> {
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if is_socket && std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(SocketError::InUse { path: path.into() });
    }
    Ok(())
}

/// Binds the listening socket at `path` (mode 0660, its directory created 0711).
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, SocketError> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(dir)
                .map_err(io("creating the directory of", path))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            refuse_live(path)?;
            // Nobody listens: a stale socket from a daemon that died.
            std::fs::remove_file(path).map_err(io("removing the stale socket", path))?
        }
        Ok(_) => return Err(SocketError::NotASocket { path: path.into() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(io("inspecting", path)(source)),
    }
    // umask is per process: 0o117 while binding, so the file never exists wider than 0660.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o117));
    let std_listener = std::os::unix::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let std_listener = std_listener.map_err(io("binding", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(io("setting the mode of", path))?;
    std_listener
        .set_nonblocking(true)
        .map_err(io("configuring", path))?;
    tokio::net::UnixListener::from_std(std_listener).map_err(io("registering", path))
}

use std::os::unix::fs::DirBuilderExt;

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("capsa-cri-sock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn stale_sockets_are_replaced_live_ones_and_files_refused() {
        let d = dir("cases");
        let path = d.join("cri.sock");
        // A stale socket: bound, then its listener dropped.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let live = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        // A second daemon on the same socket is refused while the first listens.
        let e = bind(&path).unwrap_err();
        assert!(matches!(e, SocketError::InUse { .. }), "{e}");
        drop(live);
        // A regular file is never removed.
        let file = d.join("file");
        std::fs::write(&file, "keep").unwrap();
        let e = bind(&file).unwrap_err();
        assert!(e.to_string().contains("is not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
