//! The CNI client: runs the node's network plugins by the CNI spec's exec contract
//! (no CNI crate is mature enough to depend on; the contract is small).
//!
//! ```text
//! RunPodSandbox                                   StopPodSandbox
//!   Network::load(conf_dir)  first valid file       Network::del(att, opts)
//!   Network::add(att, opts)                           cache entry? -> its config + result
//!     for plugin in plugins:        (in order)        for plugin in plugins.rev():
//!       exec <plugin_dirs>/<type>                       exec, CNI_COMMAND=DEL,
//!         env  CNI_COMMAND=ADD, CNI_*                     prevResult = cached result (>= 0.4.0),
//!         stdin  plugin conf + name, cniVersion,          CNI_NETNS = "" if the netns is gone
//!                prevResult, runtimeConfig (caps)     remove the cache entry
//!         stdout result -> next plugin's prevResult
//!       failure: DEL the plugins run so far (reverse), return the plugin's error
//!     write the cache entry (temp + rename), return the typed final result
//! ```
//!
//! Every run is bounded by [`CniOptions::timeout`]. Plugins run in the caller's network
//! namespace (the host's); the pod's is named by `CNI_NETNS`.

mod cache;
mod config;
mod invoke;
mod result;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

pub use config::{Network, PluginConf, SUPPORTED_VERSIONS};
pub use invoke::{Attachment, CniCommand, PluginFailure, PortMapping, Protocol, DEFAULT_IFNAME};
pub use result::{CniResult, Dns, Interface, IpConfig, PluginErrorJson, Route};

use invoke::Site;

/// Errors of the CNI client; each names the file, plugin or field concerned.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("reading CNI config dir {}", dir.display())]
    ReadConfDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading CNI config {}", path.display())]
    ReadConf {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid CNI config {}: {reason}", path.display())]
    InvalidConf { path: PathBuf, reason: String },
    #[error("attachment field {field} {value:?}: {reason}")]
    InvalidAttachment {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("CNI plugin {plugin:?} not found in {}", join_dirs(dirs))]
    PluginNotFound { plugin: String, dirs: Vec<PathBuf> },
    #[error("network {network:?}: CNI plugin {plugin:?} {command} failed")]
    Plugin {
        network: String,
        plugin: String,
        command: CniCommand,
        #[source]
        reason: PluginFailure,
    },
    #[error("CNI cache entry {}", path.display())]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn join_dirs(dirs: &[PathBuf]) -> String {
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    dirs.join(", ")
}

/// Where plugins and the result cache live, and how long one plugin may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniOptions {
    /// Searched in order for a plugin's `type`; joined with ':' as `CNI_PATH`.
    pub plugin_dirs: Vec<PathBuf>,
    /// Holds one entry per attachment (created 0700 if missing).
    pub cache_dir: PathBuf,
    /// Bound of one plugin run; the plugin's process group is killed on expiry.
    pub timeout: Duration,
}

/// The default bound of one plugin run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

impl CniOptions {
    pub fn new(plugin_dirs: Vec<PathBuf>, cache_dir: PathBuf) -> CniOptions {
        CniOptions {
            plugin_dirs,
            cache_dir,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl Network {
    /// ADD: runs the plugins in order, chaining each result into the next one's
    /// `prevResult`, caches the final result and returns it typed. On any failure the
    /// plugins already run get a DEL (reverse order, as containerd's teardown on a failed
    /// RunPodSandbox) and nothing is cached.
    pub async fn add(&self, att: &Attachment, opts: &CniOptions) -> Result<CniResult, CniError> {
        att.validate()?;
        let mut prev: Option<Value> = None;
        let mut last_plugin = "";
        for (i, plugin) in self.plugins().iter().enumerate() {
            let site = self.site(plugin, CniCommand::Add);
            let out = self
                .run(&site, plugin, prev.as_ref(), att, &att.netns, opts)
                .await
                .and_then(|out| match out {
                    Value::Null => Err(site.bad_result("printed no result".into())),
                    out => Ok(out),
                });
            match out {
                Ok(out) => prev = Some(out),
                Err(e) => {
                    self.rollback(i + 1, prev.as_ref(), att, opts).await;
                    return Err(e);
                }
            }
            last_plugin = plugin.plugin_type();
        }
        let raw = prev.unwrap_or(Value::Null);
        let parsed = CniResult::parse(raw.clone()).map_err(|reason| CniError::Plugin {
            network: self.name().to_string(),
            plugin: last_plugin.to_string(),
            command: CniCommand::Add,
            reason: PluginFailure::BadResult(reason),
        });
        let cached = parsed.and_then(|result| {
            let path = cache::path(&opts.cache_dir, self.name(), &att.container_id, &att.ifname);
            let entry = cache::Entry::new(
                self.name(),
                &att.container_id,
                &att.ifname,
                self.raw().clone(),
                raw.clone(),
            );
            cache::write(&path, &entry).map(|()| result)
        });
        if cached.is_err() {
            self.rollback(self.plugins().len(), Some(&raw), att, opts)
                .await;
        }
        cached
    }

    /// DEL: runs the plugins in reverse order with the cached config and result (the
    /// config the ADD ran, even if the config dir changed since), then removes the cache
    /// entry. Repeatable: a missing entry means this network's current config and no
    /// `prevResult`; a netns that is gone is passed as an empty `CNI_NETNS` (the plugins
    /// then only release what they hold outside it, e.g. host-local's IP). The first
    /// failing plugin fails the DEL and the entry stays for the retry (as libcni).
    /// DEL of an attachment made by an ADD of the network called `name`, from its cache
    /// entry alone (the config directory may have changed or emptied since). Returns false,
    /// having run nothing, when there is no entry: nothing to tear down, or a DEL already
    /// succeeded.
    pub async fn del_cached(
        name: &str,
        att: &Attachment,
        opts: &CniOptions,
    ) -> Result<bool, CniError> {
        att.validate()?;
        let path = cache::path(&opts.cache_dir, name, &att.container_id, &att.ifname);
        let Some(entry) = cache::read(&path)? else {
            return Ok(false);
        };
        let bytes = serde_json::to_vec(&entry.config).map_err(|e| CniError::InvalidConf {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Network::from_conflist(&bytes, &path)?
            .del(att, opts)
            .await
            .map(|()| true)
    }

    pub async fn del(&self, att: &Attachment, opts: &CniOptions) -> Result<(), CniError> {
        att.validate()?;
        let path = cache::path(&opts.cache_dir, self.name(), &att.container_id, &att.ifname);
        let entry = cache::read(&path).unwrap_or_else(|e| {
            log::warn!("ignoring unreadable CNI cache entry: {e}");
            None
        });
        let (network, prev) = match entry {
            Some(entry) => {
                let cached = serde_json::to_vec(&entry.config)
                    .map_err(|e| CniError::InvalidConf {
                        path: path.clone(),
                        reason: e.to_string(),
                    })
                    .and_then(|bytes| Network::from_conflist(&bytes, &path));
                let network = cached.unwrap_or_else(|e| {
                    log::warn!("DEL with the current config instead of the cached one: {e}");
                    self.clone()
                });
                (network, Some(entry.result))
            }
            None => (self.clone(), None),
        };
        let prev = prev.filter(|_| config::del_gets_prev_result(network.cni_version()));
        let netns = live_netns(&att.netns);
        for plugin in network.plugins().iter().rev() {
            let site = network.site(plugin, CniCommand::Del);
            network
                .run(&site, plugin, prev.as_ref(), att, netns, opts)
                .await?;
        }
        cache::remove(&path)
    }

    /// DEL of the first `count` plugins after a failed ADD; errors are logged, the ADD's
    /// error is the one returned.
    async fn rollback(
        &self,
        count: usize,
        prev: Option<&Value>,
        att: &Attachment,
        opts: &CniOptions,
    ) {
        for plugin in self.plugins()[..count].iter().rev() {
            let site = self.site(plugin, CniCommand::Del);
            if let Err(e) = self.run(&site, plugin, prev, att, &att.netns, opts).await {
                log::warn!("cleaning up after a failed CNI ADD: {}", error_chain(&e));
            }
        }
    }

    fn site<'a>(&'a self, plugin: &'a PluginConf, command: CniCommand) -> Site<'a> {
        Site {
            network: self.name(),
            plugin: plugin.plugin_type(),
            command,
        }
    }

    async fn run(
        &self,
        site: &Site<'_>,
        plugin: &PluginConf,
        prev: Option<&Value>,
        att: &Attachment,
        netns: &Path,
        opts: &CniOptions,
    ) -> Result<Value, CniError> {
        let path = invoke::find_plugin(plugin.plugin_type(), &opts.plugin_dirs)?;
        let env = invoke::plugin_env(site.command, att, netns, &opts.plugin_dirs);
        let stdin = invoke::plugin_stdin(self.name(), self.cni_version(), plugin, prev, att);
        invoke::run_plugin(site, &path, &env, &stdin, opts.timeout).await
    }
}

/// The netns path if it still names a network namespace (a bind mount of nsfs), else
/// empty: libcni passes whatever it is given, but a pin that was unmounted leaves a plain
/// file that plugins reject with "not a network namespace", failing the DEL forever.
fn live_netns(netns: &Path) -> &Path {
    match nix::sys::statfs::statfs(netns) {
        Ok(fs) if fs.filesystem_type() == nix::sys::statfs::NSFS_MAGIC => netns,
        _ => Path::new(""),
    }
}

/// The error and its causes on one line (`a: b: c`), for logs and CRI error messages.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
