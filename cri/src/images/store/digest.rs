//! Digests, descriptors, chain ids and layer media types: the pure part of the store.

use capsa::overlay::Compression;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A content digest, always `sha256:<64 lowercase hex>` (the only algorithm registries and
/// containerd's CRI use for images).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

/// A chain id names an unpacked layer together with everything below it (image-spec
/// config.md: `ChainID(L0|…|Ln) = sha256(ChainID(L0|…|Ln-1) + " " + DiffID(Ln))`).
pub type ChainId = Digest;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {0:?}: want sha256:<64 lowercase hex digits>")]
pub struct BadDigest(pub String);

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, BadDigest> {
        let ok = s
            .strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(is_lower_hex));
        if ok {
            Ok(Digest(s.to_string()))
        } else {
            Err(BadDigest(s.to_string()))
        }
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    pub(crate) fn from_hasher(h: Sha256) -> Digest {
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Digest(format!("sha256:{hex}"))
    }

    /// The 64 hex digits: the file or directory name in the store.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub(crate) fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Digest {
    type Err = BadDigest;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl TryFrom<String> for Digest {
    type Error = BadDigest;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

/// What a manifest says of a blob: its digest, exact size and media type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// The chain ids of a stack of layers given bottom first by diff id.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<ChainId> {
    let mut out: Vec<ChainId> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => Digest::of(format!("{parent} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// The compression a layer media type declares, for the OCI and Docker names this store
/// unpacks (plain, gzip and zstd tars, distributable or not); None for anything else
/// (encrypted layers, configs, manifests, Docker's schema 1 types).
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    const OCI: &str = "application/vnd.oci.image.layer.v1.tar";
    const OCI_ND: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
    const DOCKER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    const DOCKER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar";
    for base in [OCI, OCI_ND, DOCKER, DOCKER_FOREIGN] {
        let Some(rest) = media_type.strip_prefix(base) else {
            continue;
        };
        let docker = base.starts_with("application/vnd.docker");
        return match rest {
            "" => Some(Compression::None),
            "+gzip" if !docker => Some(Compression::Gzip),
            ".gzip" if docker => Some(Compression::Gzip),
            "+zstd" if !docker => Some(Compression::Zstd),
            ".zstd" if docker => Some(Compression::Zstd),
            _ => None,
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::record::tests::id as d;
    use super::*;

    #[test]
    fn digests_are_parsed_strictly() {
        assert!(Digest::parse(&format!("sha256:{}", "a".repeat(64))).is_ok());
        for bad in [
            "",
            "sha256:",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}", "a".repeat(63)),
            &format!("sha512:{}", "a".repeat(64)),
            &format!("sha256:{}/..", "a".repeat(61)),
        ] {
            let e = Digest::parse(bad).unwrap_err();
            assert!(e.to_string().contains("invalid digest"), "{bad}");
        }
        assert_eq!(
            Digest::of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d('a').hex(), "a".repeat(64));
    }

    #[test]
    fn chain_ids_follow_the_image_spec() {
        assert!(chain_ids(&[]).is_empty());
        let c = chain_ids(&[d('a'), d('b'), d('c')]);
        assert_eq!(c[0], d('a'));
        let c1 = Digest::of(format!("{} {}", d('a'), d('b')).as_bytes());
        assert_eq!(c[1], c1);
        assert_eq!(c[2], Digest::of(format!("{c1} {}", d('c')).as_bytes()));
        // The same layer on another base is another chain.
        assert_ne!(chain_ids(&[d('c'), d('b')])[1], c[1]);
    }

    #[test]
    fn layer_media_types() {
        use Compression::*;
        let cases = [
            ("application/vnd.oci.image.layer.v1.tar", Some(None)),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Some(Gzip)),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Some(Zstd)),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Some(Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.zstd",
                Some(Zstd),
            ),
            ("application/vnd.docker.image.rootfs.diff.tar", Some(None)),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Some(Gzip),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+encrypted",
                Option::None,
            ),
            ("application/vnd.oci.image.layer.v1.tar.gzip", Option::None),
            ("application/vnd.oci.image.config.v1+json", Option::None),
        ];
        for (m, want) in cases {
            assert_eq!(layer_compression(m), want, "{m}");
        }
    }
}
