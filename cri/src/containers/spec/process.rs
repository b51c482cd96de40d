//! The process: what runs (Kubernetes' command/args rules), its environment and directory.

use super::{ImageConfig, SpecError};
use k8s_cri::v1::ContainerConfig;

/// The default PATH (containerd's `oci.WithDefaultPathEnv`); the image's usually replaces it.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Kubernetes' rules (moby's `commit.go`, as containerd applies them): `command` replaces the
/// image's entrypoint and drops its cmd; `args` replaces the cmd; with neither, entrypoint
/// then cmd. An entrypoint of one empty string means none (what `ENTRYPOINT [""]` leaves).
pub(super) fn args(
    config: &ContainerConfig,
    image: &ImageConfig,
    name: &str,
) -> Result<Vec<String>, SpecError> {
    let mut command = config.command.clone();
    let mut args = config.args.clone();
    if command.is_empty() {
        if args.is_empty() {
            args = image.cmd.clone();
        }
        if image.entrypoint != [""] {
            command = image.entrypoint.clone();
        }
    }
    command.extend(args);
    if command.is_empty() {
        return Err(SpecError::NoCommand {
            container: name.to_string(),
        });
    }
    Ok(command)
}

/// PATH, HOSTNAME, the image's variables, then the request's: a later value of a key
/// replaces the earlier one in place (containerd's `WithEnv`).
pub(super) fn env(config: &ContainerConfig, image: &ImageConfig, hostname: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    // kubelet passes a few variables per service of the namespace: thousands, at times.
    let mut index: std::collections::HashMap<String, usize> = Default::default();
    let requested = config
        .envs
        .iter()
        .map(|kv| format!("{}={}", kv.key, kv.value));
    let all = [DEFAULT_PATH.to_string(), format!("HOSTNAME={hostname}")]
        .into_iter()
        .chain(image.env.iter().cloned())
        .chain(requested);
    for entry in all {
        let key = entry.split('=').next().unwrap_or_default().to_string();
        match index.get(&key) {
            Some(&i) => out[i] = entry,
            None => {
                index.insert(key, out.len());
                out.push(entry);
            }
        }
    }
    out
}

/// The request's working directory, else the image's, else "/"; it must be absolute.
pub(super) fn cwd(config: &ContainerConfig, image: &ImageConfig) -> Result<String, SpecError> {
    let (field, dir) = if !config.working_dir.is_empty() {
        ("config.working_dir", config.working_dir.as_str())
    } else if !image.working_dir.is_empty() {
        ("the image's WorkingDir", image.working_dir.as_str())
    } else {
        return Ok("/".into());
    };
    if !dir.starts_with('/') {
        return Err(SpecError::Invalid {
            field: field.into(),
            value: dir.into(),
            reason: "a working directory must be an absolute path",
        });
    }
    Ok(dir.to_string())
}
