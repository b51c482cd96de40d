//! Manifests, indexes and image configs as a registry serves them (OCI image spec and
//! Docker v2 schema 2), read without trusting them: every digest must be
//! `sha256:<64 hex>` (it becomes a URL path and a file name), every size non-negative, every
//! layer of a media type we can unpack, and the config's diff_ids one per layer.

use super::platform::Platform;
use crate::images::reference::is_digest;
use crate::images::store::layer_compression;
use crate::images::store::ImageConfig as StoredConfig;
pub use capsa::overlay::Compression;
use serde::Deserialize;
use std::collections::BTreeMap;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The media types a manifest request accepts, index types first.
pub const ACCEPT: [&str; 4] = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// A malformed or unsupported manifest or config; the message names it by digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object} {digest}: {reason}")]
pub struct ManifestError {
    /// `manifest` or `image config`.
    pub object: &'static str,
    pub digest: String,
    pub reason: String,
}

/// A blob a manifest points at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Descriptor {
    pub media_type: String,
    /// `sha256:<64 lowercase hex>`.
    pub digest: String,
    pub size: u64,
}

/// One layer of an image manifest, with its uncompressed digest from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub descriptor: Descriptor,
    pub compression: Compression,
    /// The digest of the uncompressed tar (`rootfs.diff_ids`), checked while unpacking.
    pub diff_id: String,
}

/// An image manifest: its config blob and its layer blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageManifest {
    /// OCI's or Docker's manifest media type.
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// One entry of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub descriptor: Descriptor,
    pub platform: Option<Platform>,
}

/// What a manifest request answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    Image(ImageManifest),
    Index(Vec<IndexEntry>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
}

impl Manifest {
    /// Parses `body`, whose digest is `digest` and whose Content-Type was `content_type`
    /// (the body's own `mediaType` wins when it has one).
    pub fn parse(body: &[u8], content_type: &str, digest: &str) -> Result<Manifest, ManifestError> {
        let bad = |reason: String| ManifestError {
            object: "manifest",
            digest: digest.to_string(),
            reason,
        };
        let raw: RawManifest =
            serde_json::from_slice(body).map_err(|e| bad(format!("not a manifest: {e}")))?;
        if raw.schema_version != Some(2) {
            return Err(bad(format!(
                "schemaVersion {:?} is not 2 (schema 1 images are not supported)",
                raw.schema_version
            )));
        }
        let media_type = match raw.media_type.as_deref() {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => content_type
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
        };
        let media_type = match media_type.as_str() {
            OCI_MANIFEST | DOCKER_MANIFEST | OCI_INDEX | DOCKER_LIST => media_type,
            // Content-Type can be generic; the shape says what it is (containerd does this
            // for OCI manifests served without mediaType).
            _ if raw.manifests.is_some() => OCI_INDEX.to_string(),
            _ if raw.config.is_some() => OCI_MANIFEST.to_string(),
            other => return Err(bad(format!("unsupported media type {other:?}"))),
        };
        let descriptor = |d: &RawDescriptor| -> Result<Descriptor, ManifestError> {
            if !is_digest(&d.digest) {
                return Err(bad(format!(
                    "descriptor digest {:?} is not sha256:<64 lowercase hex>",
                    d.digest
                )));
            }
            let size = u64::try_from(d.size)
                .map_err(|_| bad(format!("descriptor {} has size {}", d.digest, d.size)))?;
            Ok(Descriptor {
                media_type: d.media_type.clone(),
                digest: d.digest.clone(),
                size,
            })
        };
        if media_type == OCI_INDEX || media_type == DOCKER_LIST {
            let entries = raw
                .manifests
                .ok_or_else(|| bad("an index without \"manifests\"".into()))?;
            return entries
                .iter()
                .map(|e| {
                    Ok(IndexEntry {
                        descriptor: descriptor(e)?,
                        platform: e.platform.clone(),
                    })
                })
                .collect::<Result<_, _>>()
                .map(Manifest::Index);
        }
        let config = raw
            .config
            .as_ref()
            .ok_or_else(|| bad("an image manifest without \"config\"".into()))?;
        let config = descriptor(config)?;
        if config.media_type != OCI_CONFIG && config.media_type != DOCKER_CONFIG {
            return Err(bad(format!(
                "config media type {:?} is not an image config (not a container image?)",
                config.media_type
            )));
        }
        let layers = raw
            .layers
            .unwrap_or_default()
            .iter()
            .map(|l| {
                let d = descriptor(l)?;
                match layer_compression(&d.media_type) {
                    Some(_) => Ok(d),
                    None => Err(bad(format!(
                        "layer {} has media type {:?}, which cannot be unpacked",
                        d.digest, d.media_type
                    ))),
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Manifest::Image(ImageManifest {
            media_type,
            config,
            layers,
        }))
    }
}

/// An image config as pulled: what the store keeps of it, and what the pull checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedConfig {
    pub config: StoredConfig,
    /// One per layer, in order.
    pub diff_ids: Vec<String>,
    pub os: String,
    pub architecture: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawContainerConfig {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    user: Option<String>,
    working_dir: Option<String>,
    stop_signal: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    volumes: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawRootfs {
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    config: Option<RawContainerConfig>,
    rootfs: Option<RawRootfs>,
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
}

impl ParsedConfig {
    /// Parses the config blob `body` (digest `digest`) of `manifest`, which must list as many
    /// layers as the config lists diff_ids; returns the config and the layers with theirs.
    pub fn parse(
        body: &[u8],
        digest: &str,
        manifest: &ImageManifest,
        manifest_digest: &str,
    ) -> Result<(ParsedConfig, Vec<Layer>), ManifestError> {
        let bad = |reason: String| ManifestError {
            object: "image config",
            digest: digest.to_string(),
            reason,
        };
        let raw: RawConfig =
            serde_json::from_slice(body).map_err(|e| bad(format!("not an image config: {e}")))?;
        let diff_ids = raw
            .rootfs
            .ok_or_else(|| bad("no \"rootfs\"".into()))?
            .diff_ids;
        if let Some(d) = diff_ids.iter().find(|d| !is_digest(d)) {
            return Err(bad(format!(
                "diff_id {d:?} is not sha256:<64 lowercase hex>"
            )));
        }
        if diff_ids.len() != manifest.layers.len() {
            return Err(ManifestError {
                object: "manifest",
                digest: manifest_digest.to_string(),
                reason: format!(
                    "{} layers but its config {digest} lists {} diff_ids",
                    manifest.layers.len(),
                    diff_ids.len()
                ),
            });
        }
        let layers = manifest
            .layers
            .iter()
            .zip(&diff_ids)
            .map(|(d, diff_id)| Layer {
                descriptor: d.clone(),
                // Checked by Manifest::parse.
                compression: layer_compression(&d.media_type).unwrap_or(Compression::None),
                diff_id: diff_id.clone(),
            })
            .collect();
        let c = raw.config.unwrap_or_default();
        let keys = |m: Option<BTreeMap<String, serde_json::Value>>| {
            m.unwrap_or_default().into_keys().collect::<Vec<_>>()
        };
        let config = ParsedConfig {
            config: StoredConfig {
                entrypoint: c.entrypoint.unwrap_or_default(),
                cmd: c.cmd.unwrap_or_default(),
                env: c.env.unwrap_or_default(),
                user: c.user.unwrap_or_default(),
                working_dir: c.working_dir.unwrap_or_default(),
                stop_signal: c.stop_signal.unwrap_or_default(),
                labels: c.labels.unwrap_or_default(),
                exposed_ports: keys(c.exposed_ports),
                volumes: keys(c.volumes),
            },
            diff_ids,
            os: raw.os,
            architecture: raw.architecture,
        };
        Ok((config, layers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn manifest(config_type: &str, layer_type: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
               "config":{{"mediaType":"{config_type}","digest":"{}","size":10}},
               "layers":[{{"mediaType":"{layer_type}","digest":"{}","size":20}}]}}"#,
            d('a'),
            d('b')
        )
    }

    #[test]
    fn an_oci_manifest() {
        let body = manifest(OCI_CONFIG, "application/vnd.oci.image.layer.v1.tar+gzip");
        let Manifest::Image(m) = Manifest::parse(body.as_bytes(), "", &d('0')).unwrap() else {
            panic!("not an image manifest")
        };
        assert_eq!(m.config.digest, d('a'));
        assert_eq!(m.config.size, 10);
        assert_eq!(m.layers[0].digest, d('b'));
        assert_eq!(m.layers[0].size, 20);
    }

    #[test]
    fn a_docker_manifest_typed_by_its_content_type() {
        let body = format!(
            r#"{{"schemaVersion":2,
               "config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{}","size":1}},
               "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{}","size":2}}]}}"#,
            d('a'),
            d('b')
        );
        let m = Manifest::parse(body.as_bytes(), DOCKER_MANIFEST, &d('0')).unwrap();
        assert!(
            matches!(m, Manifest::Image(ref i) if i.layers.len() == 1 && i.media_type == DOCKER_MANIFEST)
        );
    }

    #[test]
    fn an_index_with_platforms() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[
                {{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":5,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}},
                {{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":6}}]}}"#,
            d('c'),
            d('e')
        );
        let Manifest::Index(entries) = Manifest::parse(body.as_bytes(), "", &d('0')).unwrap()
        else {
            panic!("not an index")
        };
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0].platform.as_ref().unwrap().variant.as_deref(),
            Some("v7")
        );
        assert_eq!(entries[1].platform, None);
        assert_eq!(entries[1].descriptor.digest, d('e'));
    }

    fn refused(body: &str) -> String {
        let e = Manifest::parse(body.as_bytes(), "application/json", &d('9')).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("manifest {}: ", d('9'))), "{msg}");
        msg
    }

    #[test]
    fn malformed_manifests_are_refused_naming_their_digest() {
        assert!(refused("{").contains("not a manifest"));
        assert!(refused(r#"{"schemaVersion":1,"fsLayers":[]}"#).contains("schema 1"));
        assert!(refused(r#"{"schemaVersion":2}"#).contains("unsupported media type"));
        let m = manifest(OCI_CONFIG, "application/vnd.oci.image.layer.v1.tar+gzip");
        assert!(refused(&m.replace(&d('b'), "sha256:../../etc")).contains("not sha256"));
        assert!(refused(&m.replace("\"size\":20", "\"size\":-1")).contains("size -1"));
        assert!(
            refused(&manifest("application/vnd.wasm.config.v1+json", "x"))
                .contains("not an image config")
        );
        let e = refused(&manifest(
            OCI_CONFIG,
            "application/vnd.oci.image.layer.v1.tar+lz4",
        ));
        assert!(
            e.contains(&d('b')) && e.contains("cannot be unpacked"),
            "{e}"
        );
        let index = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}"}}"#);
        assert!(refused(&index).contains("without \"manifests\""));
    }

    fn image(layers: usize) -> ImageManifest {
        ImageManifest {
            media_type: OCI_MANIFEST.into(),
            config: Descriptor {
                media_type: OCI_CONFIG.into(),
                digest: d('a'),
                size: 1,
            },
            layers: (0..layers)
                .map(|_| Descriptor {
                    media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
                    digest: d('b'),
                    size: 2,
                })
                .collect(),
        }
    }

    #[test]
    fn an_image_config_and_its_layers() {
        let body = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Entrypoint":["/bin/sh"],"Cmd":null,
               "Env":["A=1"],"User":"1000:1000","WorkingDir":"/w","StopSignal":"SIGINT",
               "Labels":{{"k":"v"}}}},"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            d('f')
        );
        let (c, layers) =
            ParsedConfig::parse(body.as_bytes(), &d('a'), &image(1), &d('0')).unwrap();
        assert_eq!(c.config.entrypoint, vec!["/bin/sh"]);
        assert!(c.config.cmd.is_empty());
        assert_eq!(c.config.env, vec!["A=1"]);
        assert_eq!(c.config.user, "1000:1000");
        assert_eq!(c.config.working_dir, "/w");
        assert_eq!(c.config.stop_signal, "SIGINT");
        assert_eq!(c.config.labels["k"], "v");
        assert_eq!((c.os.as_str(), c.architecture.as_str()), ("linux", "amd64"));
        assert_eq!(layers[0].diff_id, d('f'));
        assert_eq!(layers[0].compression, Compression::Zstd);
        // A config without "config" (scratch images) is fine.
        let bare = format!(r#"{{"rootfs":{{"diff_ids":["{}"]}}}}"#, d('f'));
        let (c, _) = ParsedConfig::parse(bare.as_bytes(), &d('a'), &image(1), &d('0')).unwrap();
        assert!(c.config.entrypoint.is_empty() && c.config.user.is_empty());
    }

    #[test]
    fn a_diff_id_count_mismatch_names_the_manifest() {
        let body = format!(r#"{{"rootfs":{{"diff_ids":["{}"]}}}}"#, d('f'));
        let e = ParsedConfig::parse(body.as_bytes(), &d('a'), &image(2), &d('0')).unwrap_err();
        assert_eq!(e.object, "manifest");
        assert_eq!(e.digest, d('0'));
        assert!(e.to_string().contains("2 layers"), "{e}");
        let e = ParsedConfig::parse(b"[]", &d('a'), &image(0), &d('0')).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("image config {}", d('a'))),
            "{e}"
        );
        let e = ParsedConfig::parse(
            br#"{"rootfs":{"diff_ids":["x"]}}"#,
            &d('a'),
            &image(1),
            &d('0'),
        )
        .unwrap_err();
        assert!(e.to_string().contains("diff_id"), "{e}");
    }
}
