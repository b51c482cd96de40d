//! Where a registry host's requests go: its mirrors from the daemon's `[registry]` table, in
//! order, then the host itself (containerd's hosts.toml order). A mirror written
//! `http://…` and a host listed in `insecure` are reached over plain HTTP; everything else
//! over HTTPS. `docker.io` is served at `registry-1.docker.io`.

use crate::config::RegistryConfig;
use crate::images::reference::DEFAULT_REGISTRY;
use std::collections::BTreeMap;

/// Where docker.io's registry API answers.
pub const DOCKER_HUB_HOST: &str = "registry-1.docker.io";

/// A mirror the configuration names that is not `[http[s]://]host[:port][/]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("registry.mirrors.{registry:?}: {mirror:?} is not [http://|https://]host[:port]")]
pub struct MirrorError {
    pub registry: String,
    pub mirror: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

/// One place to send a registry's requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// `host[:port]` the requests go to.
    pub host: String,
    pub scheme: Scheme,
    /// A mirror (requests carry `?ns=<registry>`, as containerd's do) or the registry itself.
    pub mirror: bool,
}

/// The configuration, checked and ready to answer [`Endpoints::for_registry`].
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    mirrors: BTreeMap<String, Vec<Endpoint>>,
    insecure: Vec<String>,
}

impl Endpoints {
    /// Checks every mirror of `config`.
    pub fn new(config: &RegistryConfig) -> Result<Endpoints, MirrorError> {
        let mut mirrors = BTreeMap::new();
        for (registry, list) in &config.mirrors {
            let parsed = list
                .iter()
                .map(|m| {
                    parse_mirror(m, &config.insecure).ok_or_else(|| MirrorError {
                        registry: registry.clone(),
                        mirror: m.clone(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            mirrors.insert(registry.clone(), parsed);
        }
        Ok(Endpoints {
            mirrors,
            insecure: config.insecure.clone(),
        })
    }

    /// Mirrors of `registry` in order, then `registry` itself.
    pub fn for_registry(&self, registry: &str) -> Vec<Endpoint> {
        let mut all = self.mirrors.get(registry).cloned().unwrap_or_default();
        let host = if registry == DEFAULT_REGISTRY {
            DOCKER_HUB_HOST
        } else {
            registry
        };
        let insecure = self.insecure.iter().any(|h| h == registry || h == host);
        all.push(Endpoint {
            host: host.to_string(),
            scheme: if insecure {
                Scheme::Http
            } else {
                Scheme::Https
            },
            mirror: false,
        });
        all
    }
}

/// `http://h:p`, `https://h`, `h:p` (HTTPS unless `insecure` lists it), with at most a
/// trailing `/`: the mirror's API must be at `/v2/`.
fn parse_mirror(mirror: &str, insecure: &[String]) -> Option<Endpoint> {
    let (scheme, rest) = if let Some(r) = mirror.strip_prefix("http://") {
        (Some(Scheme::Http), r)
    } else if let Some(r) = mirror.strip_prefix("https://") {
        (Some(Scheme::Https), r)
    } else {
        (None, mirror)
    };
    let host = rest.strip_suffix('/').unwrap_or(rest);
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    if !valid {
        return None;
    }
    let scheme = scheme.unwrap_or(if insecure.iter().any(|h| h == host) {
        Scheme::Http
    } else {
        Scheme::Https
    });
    Some(Endpoint {
        host: host.to_string(),
        scheme,
        mirror: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(mirrors: &[(&str, &[&str])], insecure: &[&str]) -> RegistryConfig {
        RegistryConfig {
            mirrors: mirrors
                .iter()
                .map(|(r, l)| (r.to_string(), l.iter().map(|m| m.to_string()).collect()))
                .collect(),
            insecure: insecure.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn ep(host: &str, scheme: Scheme, mirror: bool) -> Endpoint {
        Endpoint {
            host: host.into(),
            scheme,
            mirror,
        }
    }

    #[test]
    fn without_configuration_the_host_itself_over_https() {
        let e = Endpoints::new(&RegistryConfig::default()).unwrap();
        assert_eq!(
            e.for_registry("quay.io"),
            vec![ep("quay.io", Scheme::Https, false)]
        );
        assert_eq!(
            e.for_registry("docker.io"),
            vec![ep("registry-1.docker.io", Scheme::Https, false)]
        );
    }

    #[test]
    fn mirrors_in_order_then_the_host() {
        let c = config(
            &[(
                "docker.io",
                &[
                    "http://127.0.0.1:5000",
                    "https://mirror.example/",
                    "m2.example:8443",
                ],
            )],
            &[],
        );
        let e = Endpoints::new(&c).unwrap();
        assert_eq!(
            e.for_registry("docker.io"),
            vec![
                ep("127.0.0.1:5000", Scheme::Http, true),
                ep("mirror.example", Scheme::Https, true),
                ep("m2.example:8443", Scheme::Https, true),
                ep("registry-1.docker.io", Scheme::Https, false),
            ]
        );
        assert_eq!(
            e.for_registry("quay.io"),
            vec![ep("quay.io", Scheme::Https, false)]
        );
    }

    #[test]
    fn insecure_hosts_and_schemeless_mirrors_use_http() {
        let c = config(
            &[("registry.k8s.io", &["10.0.0.1:5000"])],
            &["127.0.0.1:5000", "10.0.0.1:5000"],
        );
        let e = Endpoints::new(&c).unwrap();
        assert_eq!(
            e.for_registry("127.0.0.1:5000"),
            vec![ep("127.0.0.1:5000", Scheme::Http, false)]
        );
        assert_eq!(
            e.for_registry("registry.k8s.io"),
            vec![
                ep("10.0.0.1:5000", Scheme::Http, true),
                ep("registry.k8s.io", Scheme::Https, false)
            ]
        );
        // Listing registry-1.docker.io or docker.io makes docker.io plain HTTP alike.
        let e = Endpoints::new(&config(&[], &["docker.io"])).unwrap();
        assert_eq!(e.for_registry("docker.io")[0].scheme, Scheme::Http);
    }

    #[test]
    fn mirrors_with_paths_or_users_are_refused_naming_them() {
        for bad in [
            "http://m.example/prefix",
            "https://u:p@m.example",
            "",
            "ftp://m",
            "http://",
        ] {
            let c = config(&[("docker.io", &[bad])], &[]);
            let e = Endpoints::new(&c).unwrap_err();
            assert_eq!(e.mirror, bad);
            assert!(e.to_string().contains("docker.io"), "{e}");
        }
    }
}
