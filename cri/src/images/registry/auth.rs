//! Credentials from CRI's `AuthConfig`, read as containerd's CRI plugin reads them:
//! `username`/`password` first, then `identity_token`, then `auth` (base64 `user:pass`),
//! then `registry_token` (a bearer token used as is; containerd ignores it). With a
//! `server_address`, they go only to that registry.
//!
//! An identity token is sent as HTTP Basic with an empty user to the token service, which is
//! containerd's fallback for registries without the OAuth2 refresh-token POST; that POST
//! itself is not made here.

use base64::Engine;
use k8s_cri::v1::AuthConfig;
use oci_client::secrets::RegistryAuth;
use sha2::Digest;

use super::endpoint::DOCKER_HUB_HOST;
use crate::images::reference::DEFAULT_REGISTRY;

/// An `AuthConfig` field that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("auth.{field}: {reason}")]
pub struct AuthError {
    pub field: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, PartialEq, Eq, Default)]
enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    Bearer(String),
}

/// The credentials of one pull; `Debug` never shows a secret.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Auth {
    credentials: Credentials,
    /// Only this registry host gets them (`None`: every host the pull contacts).
    server: Option<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.credentials {
            Credentials::Anonymous => "anonymous",
            Credentials::Basic { .. } => "basic",
            Credentials::Bearer(_) => "bearer",
        };
        f.debug_struct("Auth")
            .field("credentials", &kind)
            .field("server", &self.server)
            .finish()
    }
}

impl Auth {
    /// No credentials.
    pub fn anonymous() -> Auth {
        Auth::default()
    }

    /// HTTP Basic credentials (or the token service's, when the registry asks for a bearer
    /// token).
    pub fn basic(username: &str, password: &str) -> Auth {
        Auth {
            credentials: Credentials::Basic {
                username: username.to_string(),
                password: password.to_string(),
            },
            server: None,
        }
    }

    /// The credentials of a PullImage request (`None`: anonymous).
    pub fn from_cri(config: Option<&AuthConfig>) -> Result<Auth, AuthError> {
        let Some(c) = config else {
            return Ok(Auth::anonymous());
        };
        let credentials = if !c.username.is_empty() {
            Credentials::Basic {
                username: c.username.clone(),
                password: c.password.clone(),
            }
        } else if !c.identity_token.is_empty() {
            Credentials::Basic {
                username: String::new(),
                password: c.identity_token.clone(),
            }
        } else if !c.auth.is_empty() {
            let (username, password) = decode_auth(&c.auth)?;
            Credentials::Basic { username, password }
        } else if !c.registry_token.is_empty() {
            Credentials::Bearer(c.registry_token.clone())
        } else {
            Credentials::Anonymous
        };
        let server = match c.server_address.trim() {
            "" => None,
            s => Some(server_host(s).ok_or(AuthError {
                field: "server_address",
                reason: "it names no host",
            })?),
        };
        Ok(Auth {
            credentials,
            server,
        })
    }

    /// What to send to `endpoint_host` while pulling from `registry`: the credentials if
    /// they are for either (docker.io's names count as one), else nothing.
    pub(super) fn for_host(&self, registry: &str, endpoint_host: &str) -> RegistryAuth {
        let applies = match &self.server {
            None => true,
            Some(s) => same_registry(s, registry) || same_registry(s, endpoint_host),
        };
        match (&self.credentials, applies) {
            (_, false) | (Credentials::Anonymous, _) => RegistryAuth::Anonymous,
            (Credentials::Basic { username, password }, true) => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            (Credentials::Bearer(t), true) => RegistryAuth::Bearer(t.clone()),
        }
    }
}

/// A digest of what [`Auth::for_host`] gives, to key clients (and their token caches) by
/// credentials without keeping a second copy of them in the key.
pub(super) fn fingerprint(auth: &RegistryAuth) -> String {
    let mut h = sha2::Sha256::new();
    match auth {
        RegistryAuth::Anonymous => h.update(b"a"),
        RegistryAuth::Basic(u, p) => {
            h.update(b"b");
            h.update((u.len() as u64).to_le_bytes());
            h.update(u.as_bytes());
            h.update(p.as_bytes());
        }
        RegistryAuth::Bearer(t) => {
            h.update(b"t");
            h.update(t.as_bytes());
        }
    }
    hex::encode(h.finalize())
}

/// `auth`: base64 of `user:password` (docker's config.json form).
fn decode_auth(auth: &str) -> Result<(String, String), AuthError> {
    let field = "auth";
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| AuthError {
            field,
            reason: "it is not base64",
        })?;
    let text = String::from_utf8(bytes).map_err(|_| AuthError {
        field,
        reason: "it does not decode to UTF-8",
    })?;
    match text.split_once(':') {
        Some((u, p)) if !u.is_empty() => Ok((u.to_string(), p.trim_end_matches('\n').to_string())),
        _ => Err(AuthError {
            field,
            reason: "it does not decode to user:password",
        }),
    }
}

/// The host of a server address: `https://index.docker.io/v1/` → `index.docker.io`.
fn server_host(address: &str) -> Option<String> {
    let rest = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address);
    let host = rest.split('/').next().unwrap_or_default();
    (!host.is_empty()).then(|| host.to_string())
}

fn same_registry(a: &str, b: &str) -> bool {
    let hub = |h: &str| matches!(h, DEFAULT_REGISTRY | DOCKER_HUB_HOST | "index.docker.io");
    a == b || (hub(a) && hub(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cri(f: impl FnOnce(&mut AuthConfig)) -> AuthConfig {
        let mut c = AuthConfig::default();
        f(&mut c);
        c
    }

    fn basic(u: &str, p: &str) -> RegistryAuth {
        RegistryAuth::Basic(u.into(), p.into())
    }

    fn on(a: &Auth) -> RegistryAuth {
        a.for_host("r.example", "r.example")
    }

    #[test]
    fn no_config_or_an_empty_one_is_anonymous() {
        assert_eq!(on(&Auth::from_cri(None).unwrap()), RegistryAuth::Anonymous);
        let a = Auth::from_cri(Some(&AuthConfig::default())).unwrap();
        assert_eq!(on(&a), RegistryAuth::Anonymous);
    }

    #[test]
    fn username_and_password() {
        let a = Auth::from_cri(Some(&cri(|c| {
            c.username = "u".into();
            c.password = "p:w".into();
            c.auth = "garbage".into();
        })))
        .unwrap();
        assert_eq!(on(&a), basic("u", "p:w"));
    }

    #[test]
    fn the_auth_field_is_base64_user_colon_password() {
        let a = Auth::from_cri(Some(&cri(|c| c.auth = "dXNlcjpwYTpzcw==".into()))).unwrap();
        assert_eq!(on(&a), basic("user", "pa:ss"));
        for (bad, why) in [
            ("%%%", "base64"),
            ("bm9jb2xvbg==", "user:password"),
            ("OnA=", "user:password"),
        ] {
            let e = Auth::from_cri(Some(&cri(|c| c.auth = bad.into()))).unwrap_err();
            assert!(
                e.to_string().starts_with("auth.auth: ") && e.to_string().contains(why),
                "{e}"
            );
        }
    }

    #[test]
    fn identity_and_registry_tokens() {
        let a = Auth::from_cri(Some(&cri(|c| {
            c.identity_token = "refresh".into();
            c.registry_token = "ignored".into();
        })))
        .unwrap();
        assert_eq!(on(&a), basic("", "refresh"));
        let a = Auth::from_cri(Some(&cri(|c| c.registry_token = "tok".into()))).unwrap();
        assert_eq!(on(&a), RegistryAuth::Bearer("tok".into()));
    }

    #[test]
    fn a_server_address_limits_where_credentials_go() {
        let a = Auth::from_cri(Some(&cri(|c| {
            c.username = "u".into();
            c.password = "p".into();
            c.server_address = "https://index.docker.io/v1/".into();
        })))
        .unwrap();
        assert_eq!(
            a.for_host("docker.io", "registry-1.docker.io"),
            basic("u", "p")
        );
        assert_eq!(a.for_host("docker.io", "127.0.0.1:5000"), basic("u", "p"));
        assert_eq!(a.for_host("quay.io", "quay.io"), RegistryAuth::Anonymous);
        let a = Auth::from_cri(Some(&cri(|c| {
            c.username = "u".into();
            c.server_address = "127.0.0.1:5000".into();
        })))
        .unwrap();
        assert_eq!(
            a.for_host("127.0.0.1:5000", "127.0.0.1:5000"),
            basic("u", "")
        );
        let e = Auth::from_cri(Some(&cri(|c| c.server_address = "https://".into()))).unwrap_err();
        assert_eq!(e.to_string(), "auth.server_address: it names no host");
    }

    #[test]
    fn debug_shows_no_secret_and_fingerprints_differ() {
        let a = Auth::basic("user", "hunter2");
        assert!(!format!("{a:?}").contains("hunter2"));
        assert_ne!(
            fingerprint(&basic("ab", "c")),
            fingerprint(&basic("a", "bc"))
        );
        assert_ne!(
            fingerprint(&basic("a", "b")),
            fingerprint(&RegistryAuth::Anonymous)
        );
    }
}
