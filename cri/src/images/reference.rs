//! Image references, normalised the way kubelet and containerd read them (docker's
//! reference grammar, as containerd's `ParseDockerRef`): `busybox` is
//! `docker.io/library/busybox:latest`, `user/app` is `docker.io/user/app:latest`, a first
//! component with a `.` or `:` or equal to `localhost` names the registry, and a reference
//! with both a tag and a digest keeps only the digest (the digest is what gets pulled).

use std::fmt;

/// The registry of references that name none.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// What `index.docker.io/x` means (docker's legacy name for the same registry).
const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
/// docker's `NameTotalLengthMax`: registry and repository together.
const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// Why a reference was refused; every message names the reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid image reference {reference:?}: {reason}")]
    Invalid {
        reference: String,
        reason: &'static str,
    },
    #[error("invalid image reference {reference:?}: registry {registry:?} is not a host name with an optional port")]
    Registry { reference: String, registry: String },
    #[error("invalid image reference {reference:?}: tag {tag:?} is not 1 to 128 of [A-Za-z0-9_.-], starting with neither . nor -")]
    Tag { reference: String, tag: String },
    #[error("invalid image reference {reference:?}: digest {digest:?} is not sha256:<64 lowercase hex digits>")]
    Digest { reference: String, digest: String },
}

/// A normalised image reference: registry, repository, and a tag or a digest (never both).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses and normalises `text` (see the module comment).
    pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
        let invalid = |reason| ReferenceError::Invalid {
            reference: text.to_string(),
            reason,
        };
        if text.is_empty() {
            return Err(invalid("it is empty"));
        }
        if is_hex64(text) {
            return Err(invalid(
                "a repository name cannot be 64 hexadecimal digits (an image id?)",
            ));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                if !is_digest(digest) {
                    return Err(ReferenceError::Digest {
                        reference: text.to_string(),
                        digest: digest.to_string(),
                    });
                }
                (rest, Some(digest.to_string()))
            }
            None => (text, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            if !is_tag(tag) {
                return Err(ReferenceError::Tag {
                    reference: text.to_string(),
                    tag: tag.to_string(),
                });
            }
        }
        let (registry, remainder) = split_registry(name);
        if !is_registry(registry) {
            return Err(ReferenceError::Registry {
                reference: text.to_string(),
                registry: registry.to_string(),
            });
        }
        if remainder.to_ascii_lowercase() != remainder {
            return Err(invalid("the repository name must be lowercase"));
        }
        if !remainder.split('/').all(is_path_component) {
            return Err(invalid(
                "the repository name is not /-separated [a-z0-9] words joined by ., _, __ or -",
            ));
        }
        let registry = match registry {
            LEGACY_DEFAULT_REGISTRY => DEFAULT_REGISTRY,
            r => r,
        };
        let repository = if registry == DEFAULT_REGISTRY && !remainder.contains('/') {
            format!("{OFFICIAL_PREFIX}{remainder}")
        } else {
            remainder.to_string()
        };
        if registry.len() + 1 + repository.len() > NAME_MAX {
            return Err(invalid("the name is longer than 255 characters"));
        }
        // Digest wins: with both, the tag says nothing the digest does not (ParseDockerRef).
        let tag = match (&digest, tag) {
            (Some(_), _) => None,
            (None, Some(t)) => Some(t.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Reference {
            registry: registry.to_string(),
            repository,
            tag,
            digest,
        })
    }

    /// The registry host, with its port if it has one (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository inside the registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag; `None` when the reference names a digest.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`sha256:<hex>`), when the reference names one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// Registry and repository: `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository at `digest` (no tag), as in an image's `repo_digests`. `digest`
    /// must be `sha256:<64 lowercase hex>`.
    pub fn with_digest(&self, digest: &str) -> Result<Reference, ReferenceError> {
        if !is_digest(digest) {
            return Err(ReferenceError::Digest {
                reference: self.name(),
                digest: digest.to_string(),
            });
        }
        Ok(Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest.to_string()),
        })
    }
}

/// The normalised form: `docker.io/library/busybox:latest` or `…/busybox@sha256:…`.
impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        match (&self.digest, &self.tag) {
            (Some(d), _) => write!(f, "@{d}"),
            (None, Some(t)) => write!(f, ":{t}"),
            (None, None) => Ok(()),
        }
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// docker's splitDockerDomain: the first component is a registry when it has a `.` or a
/// `:`, is `localhost`, or has an uppercase letter (repositories cannot).
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_ascii_lowercase() != first =>
        {
            (first, rest)
        }
        _ => (DEFAULT_REGISTRY, name),
    }
}

/// `sha256:` and 64 lowercase hex digits: the only digest this daemon verifies, and one
/// that is safe as a file name and in a URL path.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(is_hex64)
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `[\w][\w.-]{0,127}`.
fn is_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= TAG_MAX
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_path_component(c: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    if bytes.is_empty() || !alnum(&bytes[0]) || !alnum(&bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(&bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(&bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
    true
}

/// A host name (dot-separated labels of letters, digits and inner `-`) or a bracketed IPv6
/// address, with an optional decimal port.
fn is_registry(registry: &str) -> bool {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, after)) if v6.parse::<std::net::Ipv6Addr>().is_ok() => match after {
                "" => return true,
                p => match p.strip_prefix(':') {
                    Some(port) => ("", Some(port)),
                    None => return false,
                },
            },
            _ => return false,
        }
    } else {
        match registry.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        }
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let host_ok = host.is_empty() && registry.starts_with('[') || host.split('.').all(label);
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn short_names_get_docker_io_library_and_latest() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(
            norm("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            norm("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.repository(), "library/busybox");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.digest(), None);
        assert_eq!(r.name(), "docker.io/library/busybox");
    }

    #[test]
    fn user_repositories_keep_their_path() {
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(norm("user/app:v1"), "docker.io/user/app:v1");
        assert_eq!(norm("quay.io/a/b/c:v1"), "quay.io/a/b/c:v1");
        assert_eq!(
            norm("registry.k8s.io/pause:3.10"),
            "registry.k8s.io/pause:3.10"
        );
    }

    #[test]
    fn hosts_with_ports_localhost_and_addresses() {
        let r = Reference::parse("localhost:5000/x").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("localhost:5000", "x", Some("latest"))
        );
        assert_eq!(norm("localhost/x"), "localhost/x:latest");
        let r = Reference::parse("127.0.0.1:5000/x:t").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("127.0.0.1:5000", "x", Some("t"))
        );
        assert_eq!(norm("[::1]:5000/x"), "[::1]:5000/x:latest");
        // A port-looking tag on a one-component name is a tag, as docker reads it.
        assert_eq!(norm("x:5000"), "docker.io/library/x:5000");
    }

    #[test]
    fn digests_and_digest_winning_over_a_tag() {
        let r = Reference::parse(&format!("x@{D}")).unwrap();
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.tag(), None);
        assert_eq!(r.to_string(), format!("docker.io/library/x@{D}"));
        let r = Reference::parse(&format!("127.0.0.1:5000/x:tag@{D}")).unwrap();
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.tag(), None);
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/x@{D}"));
    }

    #[test]
    fn with_digest_keeps_the_name_and_drops_the_tag() {
        let r = Reference::parse("busybox:1.36")
            .unwrap()
            .with_digest(D)
            .unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        let e = Reference::parse("busybox")
            .unwrap()
            .with_digest("sha256:x")
            .unwrap_err();
        assert!(e.to_string().contains("docker.io/library/busybox"), "{e}");
    }

    #[test]
    fn parse_and_display_round_trip() {
        for s in [
            "docker.io/library/busybox:latest",
            "127.0.0.1:5000/a/b:c-1.2_3",
        ] {
            assert_eq!(norm(s), s);
            assert_eq!(s.parse::<Reference>().unwrap().to_string(), s);
        }
    }

    fn refused(s: &str) -> String {
        let e = Reference::parse(s).unwrap_err().to_string();
        assert!(e.contains(&format!("{s:?}")), "{e} does not name {s:?}");
        e
    }

    #[test]
    fn uppercase_repositories_are_refused() {
        assert!(refused("Busybox").contains("lowercase"));
        assert!(refused("user/App").contains("lowercase"));
        assert!(refused("quay.io/User/app").contains("lowercase"));
        // An uppercase first component is a registry (docker's rule), so this one is fine.
        assert_eq!(norm("Registry.Example/app"), "Registry.Example/app:latest");
    }

    #[test]
    fn bad_digests_are_refused_naming_the_reference() {
        for s in [
            "x@sha256:abc",
            "x@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
            "x@sha512:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "x@",
            "x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef@sha256:1",
        ] {
            assert!(refused(s).contains("digest"), "{s}");
        }
    }

    #[test]
    fn other_malformed_references_are_refused() {
        assert!(refused("").contains("empty"));
        assert!(refused("x:").contains("tag"));
        assert!(refused("x:-a").contains("tag"));
        assert!(refused(&format!("x:{}", "a".repeat(129))).contains("tag"));
        refused("a//b");
        refused("a/b/");
        refused("/a");
        refused("a..b/c/d");
        refused("a/-b");
        refused("a/b..c");
        refused("a/b c");
        refused("bad_host.io:x/y");
        refused("[::1/x");
        refused("-a.io/x");
        assert!(refused(&"a".repeat(64).replace('a', "0")).contains("64 hexadecimal"));
        assert!(refused(&format!("a/{}", "b".repeat(260))).contains("255"));
    }

    #[test]
    fn repository_separators_follow_the_grammar() {
        for ok in ["a.b", "a_b", "a__b", "a-b", "a---b", "a0/b1"] {
            Reference::parse(&format!("u/{ok}")).unwrap();
        }
        for bad in ["a___b", "a._b", "_a", "a_", ".a"] {
            refused(&format!("u/{bad}"));
        }
    }
}
