//! What both examples need: a bundle made from a root filesystem and a command, and a
//! container's output captured through pipes.

use capsa::StdioFds;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// The state root: `$CAPSA_ROOT`, else `/run/capsa` (where the `capsa` CLI keeps its own).
pub fn state_root() -> PathBuf {
    std::env::var_os("CAPSA_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/capsa"))
}

/// A bundle in a directory of its own (removed by [`Bundle`]'s drop): `config.json` is the
/// spec `capsa spec` writes, with `args` as the process, no terminal, and `rootfs` (made
/// absolute) as the root, read-only.
pub struct Bundle(pub PathBuf);

impl Bundle {
    pub fn new(
        name: &str,
        rootfs: &Path,
        args: &[&str],
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("capsa-example-{name}"));
        std::fs::create_dir_all(&dir)?;
        let bundle = Bundle(dir);
        let mut spec = capsa::spec::default_spec(None);
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_terminal(Some(false));
        process.set_args(Some(args.iter().map(|a| a.to_string()).collect()));
        spec.set_process(Some(process));
        let mut root = spec.root().clone().unwrap_or_default();
        root.set_path(std::fs::canonicalize(rootfs)?);
        root.set_readonly(Some(true));
        spec.set_root(Some(root));
        std::fs::write(
            bundle.0.join("config.json"),
            serde_json::to_vec_pretty(&spec)?,
        )?;
        Ok(bundle)
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The read ends of a container's stdout and stderr, and the stdio to create it with (stdin
/// /dev/null, stdout and stderr the write ends, which only the container then holds).
pub fn captured() -> std::io::Result<(StdioFds, std::fs::File, std::fs::File)> {
    let pipe = || -> std::io::Result<(OwnedFd, OwnedFd)> {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let null: OwnedFd = std::fs::File::open("/dev/null")?.into();
    Ok((
        StdioFds::new(null, out_w, err_w),
        out_r.into(),
        err_r.into(),
    ))
}

/// Reads a pipe to its end on a thread of its own (so that a container filling one pipe
/// never waits on a reader busy with the other).
pub fn read_on_a_thread(mut f: std::fs::File) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = f.read_to_string(&mut s);
        s
    })
}
