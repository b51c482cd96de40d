//! Network configuration: the first valid `*.conflist` / `*.conf` / `*.json` of a directory.
//!
//! Choice for malformed files: they are skipped with a warning and the next file is tried,
//! as kubelet's `getDefaultCNINetwork` and CRI-O's ocicni do ("take the first valid network").
//! containerd's go-cni instead fails the whole load on a malformed first file; skipping lets a
//! half-written file dropped by a network add-on not take the node's network down when a good
//! one is next to it, and the warning names the file and the reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::CniError;

/// Config versions whose result format (`interfaces` / `ips` / `routes` / `dns`) we parse.
/// 0.1.0/0.2.0 results (`ip4`/`ip6`) are not supported: such files are skipped.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// File extensions libcni's `ConfFiles` accepts (`.json` is read as a single-plugin `.conf`).
const EXTENSIONS: &[&str] = &["conflist", "conf", "json"];

/// One plugin of a network list, with its configuration kept verbatim (unknown fields are
/// passed to the plugin untouched).
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConf {
    plugin_type: String,
    capabilities: BTreeMap<String, bool>,
    raw: Map<String, Value>,
}

impl PluginConf {
    /// The plugin's `type`: the executable's file name in the plugin dirs.
    pub fn plugin_type(&self) -> &str {
        &self.plugin_type
    }

    /// Whether the plugin declared `capabilities: {NAME: true}` (libcni injects
    /// `runtimeConfig.NAME` only then).
    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities.get(name).copied().unwrap_or(false)
    }

    pub(crate) fn raw(&self) -> &Map<String, Value> {
        &self.raw
    }
}

/// A CNI network: a named, versioned list of plugins run in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    name: String,
    cni_version: String,
    plugins: Vec<PluginConf>,
    source: PathBuf,
    /// The list as JSON (a `.conf` already wrapped), stored in the cache for DEL.
    raw: Value,
}

impl Network {
    /// Loads the first valid network config of `conf_dir` in lexical file-name order.
    /// `Ok(None)` when the directory is missing or holds no valid config (the daemon then
    /// reports NetworkReady=false, reason NetworkPluginNotReady); invalid files are logged
    /// and skipped.
    pub fn load(conf_dir: &Path) -> Result<Option<Network>, CniError> {
        let entries = match std::fs::read_dir(conf_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CniError::ReadConfDir {
                    dir: conf_dir.to_path_buf(),
                    source,
                })
            }
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| CniError::ReadConfDir {
                dir: conf_dir.to_path_buf(),
                source,
            })?;
            let path = entry.path();
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if EXTENSIONS.contains(&ext) {
                files.push(path);
            }
        }
        files.sort();
        for file in files {
            match Network::from_file(&file) {
                Ok(network) => return Ok(Some(network)),
                Err(e) => log::warn!("skipping CNI config: {e}"),
            }
        }
        Ok(None)
    }

    /// Reads one config file: a `.conflist` as a list, anything else as a single plugin.
    pub fn from_file(path: &Path) -> Result<Network, CniError> {
        let bytes = std::fs::read(path).map_err(|source| CniError::ReadConf {
            path: path.to_path_buf(),
            source,
        })?;
        if path.extension().and_then(|e| e.to_str()) == Some("conflist") {
            Network::from_conflist(&bytes, path)
        } else {
            Network::from_conf(&bytes, path)
        }
    }

    /// Parses a `.conflist`: `{"cniVersion", "name", "plugins": [{"type", ...}, ...]}`.
    pub fn from_conflist(bytes: &[u8], source: &Path) -> Result<Network, CniError> {
        let invalid = |reason: String| CniError::InvalidConf {
            path: source.to_path_buf(),
            reason,
        };
        let value: Value = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        let Value::Object(list) = &value else {
            return Err(invalid("not a JSON object".into()));
        };
        let name = string_field(list, "name").map_err(invalid)?;
        let cni_version = string_field(list, "cniVersion").map_err(invalid)?;
        let plugins = match list.get("plugins") {
            Some(Value::Array(plugins)) if !plugins.is_empty() => plugins,
            Some(Value::Array(_)) => return Err(invalid("\"plugins\" is empty".into())),
            _ => return Err(invalid("\"plugins\" is missing or not a list".into())),
        };
        let plugins = plugins
            .iter()
            .enumerate()
            .map(|(i, p)| plugin_conf(p).map_err(|r| invalid(format!("plugins[{i}]: {r}"))))
            .collect::<Result<Vec<_>, _>>()?;
        check_name(&name).map_err(invalid)?;
        check_version(&cni_version).map_err(invalid)?;
        Ok(Network {
            name,
            cni_version,
            plugins,
            source: source.to_path_buf(),
            raw: value,
        })
    }

    /// Parses a `.conf` (a single plugin config with its own `name` and `cniVersion`) and
    /// wraps it as a list of one, as libcni's `ConfListFromConf` does.
    pub fn from_conf(bytes: &[u8], source: &Path) -> Result<Network, CniError> {
        let invalid = |reason: String| CniError::InvalidConf {
            path: source.to_path_buf(),
            reason,
        };
        let value: Value = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        let Value::Object(conf) = &value else {
            return Err(invalid("not a JSON object".into()));
        };
        // A conflist saved as .conf has no "type": say so rather than run nothing.
        let name = string_field(conf, "name").map_err(invalid)?;
        let cni_version = string_field(conf, "cniVersion").map_err(invalid)?;
        let plugin = plugin_conf(&value).map_err(invalid)?;
        check_name(&name).map_err(invalid)?;
        check_version(&cni_version).map_err(invalid)?;
        let mut list = Map::new();
        list.insert("cniVersion".into(), Value::String(cni_version.clone()));
        list.insert("name".into(), Value::String(name.clone()));
        list.insert("plugins".into(), Value::Array(vec![value.clone()]));
        Ok(Network {
            name,
            cni_version,
            plugins: vec![plugin],
            source: source.to_path_buf(),
            raw: Value::Object(list),
        })
    }

    /// The network's `name` (part of the cache key and of host-local's data dir).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The list's `cniVersion`, given to every plugin.
    pub fn cni_version(&self) -> &str {
        &self.cni_version
    }

    /// The plugins, in ADD order.
    pub fn plugins(&self) -> &[PluginConf] {
        &self.plugins
    }

    /// The file the network was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    pub(crate) fn raw(&self) -> &Value {
        &self.raw
    }
}

fn string_field(obj: &Map<String, Value>, key: &str) -> Result<String, String> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(format!("{key:?} is empty")),
        Some(_) => Err(format!("{key:?} is not a string")),
        None => Err(format!("{key:?} is missing")),
    }
}

fn plugin_conf(value: &Value) -> Result<PluginConf, String> {
    let Value::Object(raw) = value else {
        return Err("not a JSON object".into());
    };
    let plugin_type = string_field(raw, "type")?;
    check_plugin_type(&plugin_type)?;
    let capabilities = match raw.get("capabilities") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(caps)) => caps
            .iter()
            .map(|(k, v)| (k.clone(), v.as_bool().unwrap_or(false)))
            .collect(),
        Some(_) => return Err("\"capabilities\" is not an object".into()),
    };
    Ok(PluginConf {
        plugin_type,
        capabilities,
        raw: raw.clone(),
    })
}

/// The type names a file in the plugin dirs: no path separators, no `.`/`..`.
fn check_plugin_type(t: &str) -> Result<(), String> {
    if t == "." || t == ".." || t.contains('/') || t.contains('\0') {
        return Err(format!("plugin type {t:?} is not a file name"));
    }
    Ok(())
}

/// libcni's network name rule (`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`); the name is also part of
/// the cache file name and host-local's directory, so nothing else is allowed.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if is_safe_id(name) {
        Ok(())
    } else {
        Err(format!(
            "network name {name:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"
        ))
    }
}

/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 253 bytes.
pub(crate) fn is_safe_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && s.len() <= 253
}

fn check_version(v: &str) -> Result<(), String> {
    if SUPPORTED_VERSIONS.contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "cniVersion {v:?} is not supported (supported: {})",
            SUPPORTED_VERSIONS.join(", ")
        ))
    }
}

/// Whether `version` >= 0.4.0, from when DEL gets the cached result as `prevResult`.
pub(crate) fn del_gets_prev_result(version: &str) -> bool {
    !version.starts_with("0.3.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, content: &str) {
        std::fs::write(dir.join(name), content).unwrap();
    }

    fn tempdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("capsa-cni-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    const LIST: &str = r#"{"cniVersion":"1.0.0","name":"net-b","plugins":[
        {"type":"bridge","bridge":"cni0","ipam":{"type":"host-local"}},
        {"type":"portmap","capabilities":{"portMappings":true}}]}"#;

    #[test]
    fn first_file_in_lexical_order_wins() {
        let dir = tempdir("order");
        write(&dir, "20-b.conflist", LIST);
        write(
            &dir,
            "10-a.conf",
            r#"{"cniVersion":"0.4.0","name":"net-a","type":"bridge"}"#,
        );
        write(&dir, "05-ignored.txt", "not a config");
        let net = Network::load(&dir).unwrap().unwrap();
        assert_eq!(net.name(), "net-a");
        assert_eq!(net.source(), dir.join("10-a.conf"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn malformed_files_are_skipped() {
        let dir = tempdir("skip");
        write(&dir, "00-broken.conflist", "{not json");
        write(
            &dir,
            "01-noplugins.conflist",
            r#"{"cniVersion":"1.0.0","name":"x","plugins":[]}"#,
        );
        write(&dir, "02-list-as-conf.conf", LIST);
        write(
            &dir,
            "03-old.conf",
            r#"{"cniVersion":"0.2.0","name":"old","type":"bridge"}"#,
        );
        write(&dir, "04-good.conflist", LIST);
        let net = Network::load(&dir).unwrap().unwrap();
        assert_eq!(net.name(), "net-b");
        assert_eq!(net.plugins().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_config_is_none() {
        let dir = tempdir("none");
        assert_eq!(Network::load(&dir).unwrap(), None);
        write(&dir, "bad.conf", "{}");
        assert_eq!(Network::load(&dir).unwrap(), None);
        assert_eq!(Network::load(&dir.join("missing")).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn conf_is_wrapped_as_list_of_one() {
        let conf = r#"{"cniVersion":"0.3.1","name":"single","type":"bridge","isGateway":true}"#;
        let net = Network::from_conf(conf.as_bytes(), Path::new("x.conf")).unwrap();
        assert_eq!(net.name(), "single");
        assert_eq!(net.cni_version(), "0.3.1");
        assert_eq!(net.plugins().len(), 1);
        assert_eq!(net.plugins()[0].plugin_type(), "bridge");
        assert_eq!(net.raw()["plugins"][0]["isGateway"], Value::Bool(true));
        assert_eq!(net.raw()["name"], "single");
    }

    #[test]
    fn conflist_keeps_capabilities_and_unknown_fields() {
        let net = Network::from_conflist(LIST.as_bytes(), Path::new("x.conflist")).unwrap();
        let [bridge, portmap] = net.plugins() else {
            panic!("two plugins")
        };
        assert!(!bridge.has_capability("portMappings"));
        assert!(portmap.has_capability("portMappings"));
        assert_eq!(bridge.raw()["bridge"], "cni0");
    }

    #[test]
    fn invalid_configs_name_the_file_and_field() {
        let cases = [
            (
                r#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#,
                "\"name\" is missing",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"../x","plugins":[{"type":"bridge"}]}"#,
                "network name",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../bin/sh"}]}"#,
                "plugins[0]: plugin type",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"bridge":"x"}]}"#,
                "plugins[0]: \"type\" is missing",
            ),
            (
                r#"{"cniVersion":"9.9.9","name":"n","plugins":[{"type":"bridge"}]}"#,
                "cniVersion \"9.9.9\"",
            ),
        ];
        for (json, want) in cases {
            let err =
                Network::from_conflist(json.as_bytes(), Path::new("/etc/cni/net.d/x.conflist"))
                    .unwrap_err()
                    .to_string();
            assert!(err.contains("/etc/cni/net.d/x.conflist"), "{err}");
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }
}
