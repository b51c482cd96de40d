//! Image records and the index over them: lookups by id, id prefix, tag and digest
//! reference; tag moves; what garbage collection must keep. Pure logic, no I/O.

use super::digest::{is_lower_hex, ChainId, Digest};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What the store keeps of an image config (image-spec config.md `config`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    /// `User` as written: `name`, `uid`, `name:group` or `uid:gid`.
    pub user: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub stop_signal: String,
    /// `ExposedPorts` keys, e.g. `80/tcp`.
    pub exposed_ports: Vec<String>,
    /// `Volumes` keys (container paths).
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// One image, keyed by its id (the config digest, which CRI's `image_ref` must equal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: Digest,
    /// Normalized `name:tag` references; a tag names one image at a time.
    pub repo_tags: Vec<String>,
    /// `name@sha256:<manifest digest>` references.
    pub repo_digests: Vec<String>,
    /// Bytes, as containerd's CRI reports it: the sum of the sizes of every descriptor walked
    /// from what was pulled (index, manifest, config, compressed layers). The puller fills it.
    pub size: u64,
    pub config: ImageConfig,
    /// The unpacked layers, bottom first.
    pub chain_ids: Vec<ChainId>,
    /// Every blob the image needs kept (config, layers, and the manifest/index if stored).
    pub blobs: Vec<Digest>,
}

impl ImageRecord {
    /// The numeric user of the config's `User`, as containerd's CRI splits it (`uid` or
    /// `uid:gid`).
    pub fn uid(&self) -> Option<i64> {
        split_user(&self.config.user).0
    }

    /// The user name of the config's `User` when it is not numeric; empty otherwise.
    pub fn username(&self) -> &str {
        split_user(&self.config.user).1
    }
}

/// `User` → (uid, username): the part before `:`, a uid when it parses as a number.
pub fn split_user(user: &str) -> (Option<i64>, &str) {
    let name = user.split(':').next().unwrap_or_default();
    if name.is_empty() {
        return (None, "");
    }
    match name.parse::<i64>() {
        Ok(uid) => (Some(uid), ""),
        Err(_) => (None, name),
    }
}

/// No image, or more than one, for a short id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ambiguous;

/// All image records, as written to `images.json` in one atomic write (so a tag moving from
/// one image to another is one step, never two).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Index {
    pub images: BTreeMap<Digest, ImageRecord>,
}

impl Index {
    /// The image `reference` names, the way containerd's CRI resolves one: a full id
    /// `sha256:<hex>`; else an exact (normalized) tag or `name@sha256:` reference; else a
    /// hex prefix of an id, of any length (containerd's digest set), which must be unique.
    pub fn resolve(&self, reference: &str) -> Result<Option<&ImageRecord>, Ambiguous> {
        if let Ok(id) = Digest::parse(reference) {
            return Ok(self.images.get(&id));
        }
        let by_ref = self.images.values().find(|r| {
            r.repo_tags.iter().any(|t| t == reference)
                || r.repo_digests.iter().any(|t| t == reference)
        });
        if by_ref.is_some() {
            return Ok(by_ref);
        }
        let prefix = reference.strip_prefix("sha256:").unwrap_or(reference);
        if prefix.is_empty() || !prefix.bytes().all(is_lower_hex) {
            return Ok(None);
        }
        let mut hits = self
            .images
            .values()
            .filter(|r| r.id.hex().starts_with(prefix));
        match (hits.next(), hits.next()) {
            (Some(one), None) => Ok(Some(one)),
            (None, _) => Ok(None),
            (Some(_), Some(_)) => Err(Ambiguous),
        }
    }

    /// Adds `record`, or merges its tags and digests into the record of the same id. Its tags
    /// and digest references leave any other image that had them; an image left with no
    /// reference at all is dropped (containerd deletes an image whose last name moved away).
    /// Returns the ids dropped.
    pub fn put(&mut self, record: ImageRecord) -> Vec<Digest> {
        let mut dropped = Vec::new();
        for other in self.images.values_mut().filter(|r| r.id != record.id) {
            let had = other.repo_tags.len() + other.repo_digests.len();
            other.repo_tags.retain(|t| !record.repo_tags.contains(t));
            other
                .repo_digests
                .retain(|t| !record.repo_digests.contains(t));
            if had > 0 && other.repo_tags.is_empty() && other.repo_digests.is_empty() {
                dropped.push(other.id.clone());
            }
        }
        for id in &dropped {
            self.images.remove(id);
        }
        match self.images.get_mut(&record.id) {
            Some(existing) => {
                let tags = union(&existing.repo_tags, &record.repo_tags);
                let digests = union(&existing.repo_digests, &record.repo_digests);
                *existing = ImageRecord {
                    repo_tags: tags,
                    repo_digests: digests,
                    ..record
                };
            }
            None => {
                self.images.insert(record.id.clone(), record);
            }
        }
        dropped
    }

    /// Every blob and every layer some image record uses.
    pub fn used(&self) -> (BTreeSet<Digest>, BTreeSet<ChainId>) {
        let blobs = self.images.values().flat_map(|r| r.blobs.iter().cloned());
        let layers = self
            .images
            .values()
            .flat_map(|r| r.chain_ids.iter().cloned());
        (blobs.collect(), layers.collect())
    }
}

fn union(a: &[String], b: &[String]) -> Vec<String> {
    let mut out = a.to_vec();
    out.extend(b.iter().filter(|x| !a.contains(x)).cloned());
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn id(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    pub fn record(c: char, tags: &[&str]) -> ImageRecord {
        ImageRecord {
            id: id(c),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: vec![],
            size: 1,
            config: ImageConfig::default(),
            chain_ids: vec![],
            blobs: vec![id(c)],
        }
    }

    #[test]
    fn users_split_as_containerd_does() {
        assert_eq!(split_user(""), (None, ""));
        assert_eq!(split_user("1000"), (Some(1000), ""));
        assert_eq!(split_user("1000:50"), (Some(1000), ""));
        assert_eq!(split_user("nobody"), (None, "nobody"));
        assert_eq!(split_user("nobody:nogroup"), (None, "nobody"));
        assert_eq!(split_user(":50"), (None, ""));
        let mut r = record('a', &[]);
        r.config.user = "www".into();
        assert_eq!((r.uid(), r.username()), (None, "www"));
    }

    #[test]
    fn every_reference_form_resolves() {
        let mut ix = Index::default();
        let mut a = record('a', &["docker.io/library/busybox:latest"]);
        a.repo_digests = vec![format!("docker.io/library/busybox@{}", id('d'))];
        ix.put(a);
        ix.put(record('b', &["docker.io/library/other:1"]));
        let found = |s: &str| ix.resolve(s).unwrap().map(|r| r.id.clone());
        assert_eq!(found(id('a').as_str()), Some(id('a')));
        assert_eq!(found("docker.io/library/busybox:latest"), Some(id('a')));
        assert_eq!(
            found(&format!("docker.io/library/busybox@{}", id('d'))),
            Some(id('a'))
        );
        assert_eq!(found("aaaaaaaaaaaa"), Some(id('a')));
        assert_eq!(found("b"), Some(id('b')));
        assert_eq!(found("sha256:bbbb"), Some(id('b')));
        assert_eq!(found(id('c').as_str()), None);
        assert_eq!(found("docker.io/library/busybox:1"), None);
        assert_eq!(found("cccc"), None);
        assert_eq!(found(""), None);
        assert_eq!(found("AAAA"), None);
    }

    #[test]
    fn a_prefix_shared_by_two_ids_is_ambiguous() {
        let mut ix = Index::default();
        let mut a = record('a', &["x:1"]);
        a.id = Digest::parse(&format!("sha256:ab{}", "0".repeat(62))).unwrap();
        let mut b = record('b', &["y:1"]);
        b.id = Digest::parse(&format!("sha256:ac{}", "0".repeat(62))).unwrap();
        ix.put(a);
        ix.put(b);
        assert_eq!(ix.resolve("a"), Err(Ambiguous));
        assert!(ix.resolve("ab").unwrap().is_some());
    }

    #[test]
    fn a_tag_moves_and_an_image_left_without_names_is_dropped() {
        let mut ix = Index::default();
        assert!(ix.put(record('a', &["x:1", "x:2"])).is_empty());
        assert!(ix.put(record('b', &["x:2"])).is_empty());
        assert_eq!(ix.images[&id('a')].repo_tags, vec!["x:1"]);
        assert_eq!(ix.put(record('b', &["x:1"])), vec![id('a')]);
        assert!(!ix.images.contains_key(&id('a')));
        assert_eq!(ix.images[&id('b')].repo_tags, vec!["x:2", "x:1"]);
        // Pulling the same image again adds names, never duplicates.
        ix.put(record('b', &["x:1", "x:3"]));
        assert_eq!(ix.images[&id('b')].repo_tags, vec!["x:2", "x:1", "x:3"]);
        // An image that keeps a digest reference stays.
        let mut c = record('c', &["y:1"]);
        c.repo_digests = vec!["y@sha256:1".into()];
        ix.put(c);
        assert!(ix.put(record('d', &["y:1"])).is_empty());
        assert!(ix.images[&id('c')].repo_tags.is_empty());
    }

    #[test]
    fn used_collects_blobs_and_layers() {
        let mut ix = Index::default();
        let mut a = record('a', &["x:1"]);
        a.chain_ids = vec![id('1'), id('2')];
        let mut b = record('b', &["y:1"]);
        b.chain_ids = vec![id('1')];
        ix.put(a);
        ix.put(b);
        let (blobs, layers) = ix.used();
        assert_eq!(
            blobs.into_iter().collect::<Vec<_>>(),
            vec![id('a'), id('b')]
        );
        assert_eq!(
            layers.into_iter().collect::<Vec<_>>(),
            vec![id('1'), id('2')]
        );
    }
}
