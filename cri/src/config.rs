//! The daemon's configuration: a TOML file (`/etc/capsa/cri.toml` by default), every field
//! optional, each overridable by a command-line flag. Unknown keys are refused, naming the
//! key, so a typo does not silently fall back to a default.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the daemon looks for its configuration when `--config` is not given. A missing
/// default file is not an error (all defaults apply); a missing named file is.
pub const DEFAULT_CONFIG: &str = "/etc/capsa/cri.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading the configuration {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("configuration: {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Registry access, used by the image service: mirrors per registry host, and the hosts
/// that may be reached over plain HTTP (as containerd's hosts.toml and CRI-O's
/// registries.conf say them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// `"docker.io" = ["http://127.0.0.1:5000"]`: tried in order before the host itself.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// `host[:port]` entries reached over HTTP instead of HTTPS.
    pub insecure: Vec<String>,
}

/// The whole configuration, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The CRI socket kubelet connects to.
    pub listen: PathBuf,
    /// Sandbox and container records, CNI result cache.
    pub state_dir: PathBuf,
    /// Runtime state: capsa's root for the pods and containers this daemon runs
    /// ([`Config::capsa_root`]) and the daemon's own (netns pins, /dev/shm mounts, monitors).
    pub runtime_root: PathBuf,
    /// CNI network configurations (`*.conflist`, `*.conf`).
    pub cni_conf_dir: PathBuf,
    /// Where CNI plugin executables are looked up, in order.
    pub cni_plugin_dirs: Vec<PathBuf>,
    /// The streaming server's address (`127.0.0.1:0`: a free port on loopback).
    pub stream_address: String,
    /// The streaming server serves HTTPS with this certificate chain and key (PEM), both or
    /// neither.
    pub stream_tls_cert: Option<PathBuf>,
    pub stream_tls_key: Option<PathBuf>,
    /// A streaming connection over which nothing moved for this long is closed, as
    /// containerd's `stream_idle_timeout` (Go's duration form; `0`: never).
    pub stream_idle_timeout: String,
    pub registry: RegistryConfig,
    /// The infra program of every pod (default: `capsa-pause` next to this program).
    pub pause_binary: Option<PathBuf>,
    /// error, warn, info, debug or trace.
    pub log_level: String,
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "/run/capsa/cri.sock".into(),
            state_dir: "/var/lib/capsa-cri".into(),
            runtime_root: "/run/capsa-cri".into(),
            cni_conf_dir: "/etc/cni/net.d".into(),
            cni_plugin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            stream_address: "127.0.0.1:0".into(),
            stream_tls_cert: None,
            stream_tls_key: None,
            stream_idle_timeout: "4h0m0s".into(),
            registry: RegistryConfig::default(),
            pause_binary: None,
            log_level: "info".into(),
            log_format: LogFormat::Text,
        }
    }
}

impl Config {
    /// capsa's state root (`capsa --root` finds the pods and containers there).
    pub fn capsa_root(&self) -> PathBuf {
        self.runtime_root.join("capsa")
    }

    /// Parses a configuration file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Loads `path`; with `explicit` false (the default path), a missing file gives the
    /// defaults.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Checks what the types cannot: absolute paths, a parsable level and address.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let absolute = |field: &'static str, p: &Path| {
            if p.is_absolute() {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    field,
                    reason: format!("{} is not an absolute path", p.display()),
                })
            }
        };
        absolute("listen", &self.listen)?;
        absolute("state_dir", &self.state_dir)?;
        absolute("runtime_root", &self.runtime_root)?;
        absolute("cni_conf_dir", &self.cni_conf_dir)?;
        for d in &self.cni_plugin_dirs {
            absolute("cni_plugin_dirs", d)?;
        }
        // sun_path holds 108 bytes with its NUL.
        if self.listen.as_os_str().len() > 107 {
            return Err(ConfigError::Invalid {
                field: "listen",
                reason: format!(
                    "{} is longer than a unix socket path may be (107 bytes)",
                    self.listen.display()
                ),
            });
        }
        self.level()?;
        if self.stream_tls_cert.is_some() != self.stream_tls_key.is_some() {
            return Err(ConfigError::Invalid {
                field: "stream_tls_cert",
                reason: "stream_tls_cert and stream_tls_key go together".into(),
            });
        }
        self.idle_timeout()?;
        self.stream_address
            .parse::<std::net::SocketAddr>()
            .map_err(|e| ConfigError::Invalid {
                field: "stream_address",
                reason: format!("{:?}: {e} (want IP:PORT)", self.stream_address),
            })?;
        Ok(())
    }

    /// The streaming server's idle timeout; None: never.
    pub fn idle_timeout(&self) -> Result<Option<std::time::Duration>, ConfigError> {
        crate::streaming::idle::parse_duration(&self.stream_idle_timeout)
            .map(|d| (!d.is_zero()).then_some(d))
            .map_err(|reason| ConfigError::Invalid {
                field: "stream_idle_timeout",
                reason,
            })
    }

    /// The log level as a filter.
    pub fn level(&self) -> Result<log::LevelFilter, ConfigError> {
        self.log_level.parse().map_err(|_| ConfigError::Invalid {
            field: "log_level",
            reason: format!(
                "{:?} is not one of error, warn, info, debug, trace",
                self.log_level
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let c = Config::parse("", Path::new("/x.toml")).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen, PathBuf::from("/run/capsa/cri.sock"));
        assert_eq!(
            c.cni_plugin_dirs,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
    }

    #[test]
    fn every_field_is_read() {
        let text = r#"
            listen = "/tmp/c.sock"
            state_dir = "/tmp/state"
            runtime_root = "/tmp/root"
            cni_conf_dir = "/tmp/net.d"
            cni_plugin_dirs = ["/tmp/bin"]
            stream_address = "127.0.0.1:10010"
            stream_idle_timeout = "30m"
            log_level = "debug"
            log_format = "json"
            [registry]
            insecure = ["127.0.0.1:5000"]
            [registry.mirrors]
            "docker.io" = ["http://127.0.0.1:5000"]
        "#;
        let c = Config::parse(text, Path::new("/x.toml")).unwrap();
        assert_eq!(c.listen, PathBuf::from("/tmp/c.sock"));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(
            c.idle_timeout().unwrap(),
            Some(std::time::Duration::from_secs(1800))
        );
        assert_eq!(c.level().unwrap(), log::LevelFilter::Debug);
        assert_eq!(
            c.registry.mirrors["docker.io"],
            vec!["http://127.0.0.1:5000"]
        );
        assert_eq!(c.registry.insecure, vec!["127.0.0.1:5000"]);
    }

    #[test]
    fn bad_files_name_the_key_or_field() {
        let e = Config::parse("lisen = \"/x\"", Path::new("/etc/x.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("/etc/x.toml") && msg.contains("lisen"),
            "{msg}"
        );
        let e = Config::parse("listen = \"x.sock\"", Path::new("/x.toml")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "configuration: listen: x.sock is not an absolute path"
        );
        let e = Config::parse("log_level = \"loud\"", Path::new("/x.toml")).unwrap_err();
        assert!(e.to_string().contains("log_level"), "{e}");
        let e = Config::parse("stream_address = \"nowhere\"", Path::new("/x.toml")).unwrap_err();
        assert!(e.to_string().contains("stream_address"), "{e}");
        let e = Config::parse("stream_idle_timeout = \"soon\"", Path::new("/x.toml")).unwrap_err();
        assert!(e.to_string().contains("stream_idle_timeout"), "{e}");
        let c = Config::parse("stream_idle_timeout = \"0\"", Path::new("/x.toml")).unwrap();
        assert_eq!(c.idle_timeout().unwrap(), None);
        let long = format!("listen = \"/{}\"", "a".repeat(120));
        let e = Config::parse(&long, Path::new("/x.toml")).unwrap_err();
        assert!(e.to_string().contains("unix socket"), "{e}");
    }

    #[test]
    fn a_missing_default_file_is_fine_a_missing_named_one_is_not() {
        let missing = Path::new("/nonexistent/capsa-cri.toml");
        assert_eq!(Config::load(missing, false).unwrap(), Config::default());
        let e = Config::load(missing, true).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/capsa-cri.toml"), "{e}");
    }
}
