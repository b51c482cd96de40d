//! The streaming server's token cache: what `Exec`, `Attach` and `PortForward` validated,
//! waiting for the client to come back with the URL's token.
//!
//! A token is 128 random bits from the kernel (base64url), usable once, for a minute (as
//! kubelet's own streaming server does: an unknown, expired or already used token is a
//! 404). The cache holds at most [`MAX_IN_FLIGHT`] requests; when full, expired entries go
//! first, and a request that still finds no room is refused rather than evicting a live one.

use base64::Engine;
use k8s_cri::v1::{AttachRequest, ExecRequest, PortForwardRequest};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a URL stays usable.
pub const TTL: Duration = Duration::from_secs(60);
/// Requests waiting for their client, at most (kubelet's server allows 1000 too).
pub const MAX_IN_FLIGHT: usize = 1000;
const TOKEN_BYTES: usize = 16;

/// A validated request, held until its client connects.
#[derive(Debug, Clone, PartialEq)]
pub enum Cached {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

impl Cached {
    /// The URL path's first segment for this kind of request.
    pub fn kind(&self) -> &'static str {
        match self {
            Cached::Exec(_) => "exec",
            Cached::Attach(_) => "attach",
            Cached::PortForward(_) => "portforward",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("streaming: {MAX_IN_FLIGHT} requests are already waiting for their clients")]
    Full,
    #[error("streaming: reading random bytes for a token")]
    Random(#[source] getrandom::Error),
}

/// See the module documentation.
pub struct TokenCache {
    ttl: Duration,
    max: usize,
    entries: Mutex<HashMap<String, (Instant, Cached)>>,
}

impl Default for TokenCache {
    fn default() -> TokenCache {
        TokenCache::new(TTL, MAX_IN_FLIGHT)
    }
}

impl TokenCache {
    pub fn new(ttl: Duration, max: usize) -> TokenCache {
        TokenCache {
            ttl,
            max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Cached)>> {
        // The map is consistent after every statement: a panic elsewhere cannot tear it.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `request` and returns its fresh token.
    pub fn insert(&self, request: Cached) -> Result<String, TokenError> {
        let mut raw = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut raw).map_err(TokenError::Random)?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() >= self.max {
            entries.retain(|_, (expires, _)| *expires > now);
            if entries.len() >= self.max {
                return Err(TokenError::Full);
            }
        }
        entries.insert(token.clone(), (now + self.ttl, request));
        Ok(token)
    }

    /// Takes the request of `token` if it is known and not expired; either way the token
    /// is gone afterwards.
    pub fn consume(&self, token: &str) -> Option<Cached> {
        let (expires, request) = self.lock().remove(token)?;
        (Instant::now() < expires).then_some(request)
    }

    /// Requests waiting (expired ones included until they are swept).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(id: &str) -> Cached {
        Cached::Exec(ExecRequest {
            container_id: id.into(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
    }

    #[test]
    fn a_token_is_random_and_single_use() {
        let cache = TokenCache::default();
        let a = cache.insert(exec("a")).unwrap();
        let b = cache.insert(exec("b")).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 22, "128 bits in base64url: {a}");
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(cache.consume(&a), Some(exec("a")));
        assert_eq!(cache.consume(&a), None, "reused");
        assert_eq!(cache.consume("nope"), None);
        assert_eq!(cache.consume(&b), Some(exec("b")));
        assert!(cache.is_empty());
    }

    #[test]
    fn an_expired_token_is_refused_and_makes_room() {
        let cache = TokenCache::new(Duration::ZERO, 2);
        let a = cache.insert(exec("a")).unwrap();
        assert_eq!(cache.consume(&a), None, "expired");
        cache.insert(exec("b")).unwrap();
        cache.insert(exec("c")).unwrap();
        // Full of expired entries: they are swept for the new one.
        cache.insert(exec("d")).unwrap();
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_full_cache_refuses_instead_of_evicting() {
        let cache = TokenCache::new(TTL, 2);
        let a = cache.insert(exec("a")).unwrap();
        cache.insert(exec("b")).unwrap();
        let e = cache.insert(exec("c")).unwrap_err();
        assert!(matches!(e, TokenError::Full), "{e}");
        assert_eq!(cache.consume(&a), Some(exec("a")));
        cache.insert(exec("c")).unwrap();
    }
}
