//! Registry I/O for PullImage: resolve a reference to its manifest, config and layers, and
//! stream blobs, through oci-client (bearer-token challenge, blob streams) over reqwest
//! with rustls.
//!
//! ```text
//! resolve(ref, auth)   for each endpoint (mirrors, then the host) until one answers:
//!   ping /v2/ + token            oci-client `auth` (once per resolve)
//!   GET manifests/<tag|digest>   read here, bounded to 4 MiB, digest checked
//!   index? GET manifests/<d>     the entry for this host's platform
//!   GET blobs/<config>           bounded, digest checked, parsed
//! fetch_blob(ref, desc, auth)    for each endpoint until one answers: a stream that stops
//!                                at desc.size and fails if the registry sends more or less
//! ```
//!
//! Nothing here writes to disk: the store verifies digests while writing.

pub mod auth;
pub mod endpoint;
pub mod manifest;
pub mod platform;

pub use auth::{Auth, AuthError};
pub use endpoint::{Endpoint, Endpoints, MirrorError, Scheme};
pub use manifest::{Compression, Descriptor, Layer, ManifestError, ParsedConfig};

use crate::config::RegistryConfig;
use crate::images::reference::{is_digest, Reference, ReferenceError};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use manifest::{ImageManifest, Manifest};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;
use platform::Platform;
use sha2::Digest as _;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncRead;

/// containerd's limit on a manifest or index body.
pub const MAX_MANIFEST: u64 = 4 << 20;
/// The largest image config read into memory.
pub const MAX_CONFIG: u64 = 8 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a response may stall between two reads (a slow layer is fine, a dead one not).
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Clients kept (one per endpoint and credentials, each with its token cache).
const MAX_CLIENTS: usize = 64;
const USER_AGENT: &str = concat!("capsa-cri/", env!("CARGO_PKG_VERSION"));

/// What can go wrong talking to a registry; [`RegistryError::code`] is the gRPC answer.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{reference}: not found at {host}: {detail}")]
    NotFound {
        reference: String,
        host: String,
        detail: String,
    },
    #[error("registry {host} is unreachable: {source}")]
    Unavailable {
        host: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{reference}: {host} refused the credentials (pull access denied, or the repository does not exist): {detail}")]
    Unauthorized {
        reference: String,
        host: String,
        detail: String,
    },
    #[error("{reference}: {host} answered HTTP {status} for {what}")]
    Status {
        reference: String,
        host: String,
        status: u16,
        what: String,
    },
    #[error("{object} {expected} from {host}: its content has digest {actual}")]
    DigestMismatch {
        object: &'static str,
        host: String,
        expected: String,
        actual: String,
    },
    #[error("{object} {digest} from {host}: {reason}")]
    Size {
        object: &'static str,
        digest: String,
        host: String,
        reason: String,
    },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{reference}: manifest {digest} has no image for {platform}")]
    NoPlatform {
        reference: String,
        digest: String,
        platform: String,
    },
    #[error("{reference} at {host}: {source}")]
    Client {
        reference: String,
        host: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("setting up the HTTP client: {0}")]
    Setup(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("configuration: {0}")]
    Mirror(#[from] MirrorError),
    /// The request's credentials cannot be read.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The request's image reference cannot be read.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("blob digest {0:?} is not sha256:<64 lowercase hex>")]
    BlobDigest(String),
}

impl RegistryError {
    /// The gRPC code PullImage answers with: NotFound for an unknown repository, tag,
    /// manifest or platform; Unavailable for a host that cannot be reached (containerd 1.6
    /// says Unknown there); Unknown for refused credentials (containerd 1.6.20's answer to a
    /// registry's 401, checked against it) and for content the registry got wrong.
    pub fn code(&self) -> tonic::Code {
        match self {
            RegistryError::NotFound { .. } | RegistryError::NoPlatform { .. } => {
                tonic::Code::NotFound
            }
            RegistryError::Unavailable { .. } => tonic::Code::Unavailable,
            RegistryError::Mirror(_) => tonic::Code::FailedPrecondition,
            RegistryError::Auth(_) | RegistryError::Reference(_) | RegistryError::BlobDigest(_) => {
                tonic::Code::InvalidArgument
            }
            _ => tonic::Code::Unknown,
        }
    }

    /// Whether the next endpoint may answer better (the request failed; nothing bad was
    /// served).
    fn try_next(&self) -> bool {
        matches!(
            self,
            RegistryError::NotFound { .. }
                | RegistryError::Unavailable { .. }
                | RegistryError::Unauthorized { .. }
                | RegistryError::Status { .. }
                | RegistryError::Client { .. }
        )
    }
}

/// A reference resolved against a registry: what PullImage stores and unpacks.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// What the reference names: an index's digest if it named one, else the manifest's
    /// (containerd's image target, the digest of `repo_digests`).
    pub digest: String,
    /// The image manifest for this host's platform.
    pub manifest_digest: String,
    pub manifest_media_type: String,
    /// The manifest's bytes as served (their sha256 is `manifest_digest`).
    pub manifest: Bytes,
    /// The index's bytes, when the reference named an index (their sha256 is `digest`).
    pub index: Option<Bytes>,
    pub config_descriptor: Descriptor,
    /// The config's bytes as served (their sha256 is the config digest, the image id).
    pub config_bytes: Bytes,
    pub config: ParsedConfig,
    pub layers: Vec<Layer>,
}

/// A registry client configured by the daemon's `[registry]` table; cheap to share.
pub struct Registry {
    endpoints: Endpoints,
    /// For manifests, which oci-client would read whole whatever their size.
    http: reqwest::Client,
    /// oci-client clients by (endpoint, credentials' fingerprint): a token obtained with some
    /// credentials is never used for a request made with others.
    clients: Mutex<HashMap<(Endpoint, String), oci_client::Client>>,
}

/// One endpoint, with the credentials that go to it and the client that holds its tokens.
struct Session {
    endpoint: Endpoint,
    client: oci_client::Client,
    /// The reference as oci-client addresses it at this endpoint.
    target: oci_client::Reference,
    auth: RegistryAuth,
    reference: String,
}

impl Registry {
    pub fn new(config: &RegistryConfig) -> Result<Registry, RegistryError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| RegistryError::Setup(Box::new(e)))?;
        Ok(Registry {
            endpoints: Endpoints::new(config)?,
            http,
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// Fetches the manifest `reference` names (the entry for this host's platform if it is
    /// an index) and its config, every digest checked.
    pub async fn resolve(
        &self,
        reference: &Reference,
        auth: &Auth,
    ) -> Result<Resolved, RegistryError> {
        let http = &self.http;
        self.first_answer(reference, auth, |s| async move {
            s.resolve(http, reference).await
        })
        .await
    }

    /// Streams the blob `descriptor` of `reference`'s repository: at most `descriptor.size`
    /// bytes, and a read error if the registry sends more or fewer.
    pub async fn fetch_blob(
        &self,
        reference: &Reference,
        descriptor: &Descriptor,
        auth: &Auth,
    ) -> Result<Blob, RegistryError> {
        if !is_digest(&descriptor.digest) {
            return Err(RegistryError::BlobDigest(descriptor.digest.clone()));
        }
        self.first_answer(reference, auth, |s| async move {
            s.blob(descriptor, "blob").await
        })
        .await
    }

    /// `attempt` at each endpoint of `reference`'s registry in order, until one answers or
    /// fails for a reason another endpoint cannot mend; else the first failure (containerd's
    /// rule).
    async fn first_answer<T, F, Fut>(
        &self,
        reference: &Reference,
        auth: &Auth,
        attempt: F,
    ) -> Result<T, RegistryError>
    where
        F: Fn(Session) -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        let mut first = None;
        for endpoint in self.endpoints.for_registry(reference.registry()) {
            match attempt(self.session(&endpoint, reference, auth)?).await {
                Ok(r) => return Ok(r),
                Err(e) if e.try_next() => {
                    log::debug!("{e}; trying the next endpoint");
                    first.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(first.unwrap_or_else(|| unreachable_registry(reference)))
    }

    fn session(
        &self,
        endpoint: &Endpoint,
        reference: &Reference,
        auth: &Auth,
    ) -> Result<Session, RegistryError> {
        let registry_auth = auth.for_host(reference.registry(), &endpoint.host);
        let key = (endpoint.clone(), auth::fingerprint(&registry_auth));
        let client = {
            let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            if clients.len() >= MAX_CLIENTS && !clients.contains_key(&key) {
                clients.clear();
            }
            match clients.get(&key) {
                Some(c) => c.clone(),
                None => {
                    let c = new_client(endpoint.scheme)?;
                    clients.insert(key, c.clone());
                    c
                }
            }
        };
        let tag = reference.tag().unwrap_or("latest").to_string();
        let (registry, mirror) = if endpoint.mirror {
            (
                reference.registry().to_string(),
                Some(endpoint.host.clone()),
            )
        } else {
            (endpoint.host.clone(), None)
        };
        let mut target = match reference.digest() {
            Some(d) => oci_client::Reference::with_digest(
                registry,
                reference.repository().into(),
                d.into(),
            ),
            None => oci_client::Reference::with_tag(registry, reference.repository().into(), tag),
        };
        if let Some(m) = mirror {
            target.set_mirror_registry(m);
        }
        Ok(Session {
            endpoint: endpoint.clone(),
            client,
            target,
            auth: registry_auth,
            reference: reference.to_string(),
        })
    }
}

fn unreachable_registry(reference: &Reference) -> RegistryError {
    RegistryError::Unavailable {
        host: reference.registry().to_string(),
        source: "no endpoint to try".into(),
    }
}

/// An oci-client client (`Client::new` would fall back to defaults, without our timeouts, if
/// its HTTP client cannot be built).
fn new_client(scheme: Scheme) -> Result<oci_client::Client, RegistryError> {
    oci_client::Client::try_from(ClientConfig {
        protocol: match scheme {
            Scheme::Http => ClientProtocol::Http,
            Scheme::Https => ClientProtocol::Https,
        },
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        user_agent: USER_AGENT,
        // Indexes are resolved here, with containerd's variant rules.
        platform_resolver: None,
        ..ClientConfig::default()
    })
    .map_err(|e| RegistryError::Setup(Box::new(e)))
}

/// A manifest as served: its bytes, their digest, its Content-Type.
struct Fetched {
    body: Bytes,
    digest: String,
    content_type: String,
}

impl Session {
    async fn resolve(
        &self,
        http: &reqwest::Client,
        reference: &Reference,
    ) -> Result<Resolved, RegistryError> {
        let header = self.authorization().await?;
        let top_ref = reference.digest().or(reference.tag()).unwrap_or("latest");
        let top = self
            .manifest(http, header.as_deref(), top_ref, reference.digest())
            .await?;
        let (index, manifest, image) =
            match Manifest::parse(&top.body, &top.content_type, &top.digest)? {
                Manifest::Image(m) => (None, top, m),
                Manifest::Index(entries) => {
                    let (child, m) = self
                        .platform_manifest(http, header.as_deref(), &top, &entries)
                        .await?;
                    (Some(top), child, m)
                }
            };
        let config_bytes = self.read_config(&image).await?;
        let (config, layers) = ParsedConfig::parse(
            &config_bytes,
            &image.config.digest,
            &image,
            &manifest.digest,
        )?;
        Ok(Resolved {
            digest: index.as_ref().unwrap_or(&manifest).digest.clone(),
            manifest_digest: manifest.digest,
            manifest_media_type: image.media_type.clone(),
            manifest: manifest.body,
            index: index.map(|i| i.body),
            config_descriptor: image.config,
            config_bytes,
            config,
            layers,
        })
    }

    /// The image manifest for this host among an index's `entries` (`index` as served).
    async fn platform_manifest(
        &self,
        http: &reqwest::Client,
        authorization: Option<&str>,
        index: &Fetched,
        entries: &[manifest::IndexEntry],
    ) -> Result<(Fetched, ImageManifest), RegistryError> {
        let host = Platform::host();
        let platforms: Vec<_> = entries.iter().map(|e| e.platform.clone()).collect();
        let Some(i) = platform::choose(&platforms, &host) else {
            return Err(RegistryError::NoPlatform {
                reference: self.reference.clone(),
                digest: index.digest.clone(),
                platform: host.display(),
            });
        };
        let entry = &entries[i].descriptor;
        let child = self
            .manifest(http, authorization, &entry.digest, Some(&entry.digest))
            .await?;
        if child.body.len() as u64 != entry.size {
            let reason = format!(
                "{} bytes, but index {} says {}",
                child.body.len(),
                index.digest,
                entry.size
            );
            return Err(self.size_error("manifest", &entry.digest, reason));
        }
        match Manifest::parse(&child.body, &child.content_type, &child.digest)? {
            Manifest::Image(m) => Ok((child, m)),
            Manifest::Index(_) => Err(ManifestError {
                object: "manifest",
                digest: index.digest.clone(),
                reason: format!("its entry {} is an index, not an image", child.digest),
            }
            .into()),
        }
    }

    /// The Authorization header for the manifest requests: oci-client answers the registry's
    /// challenge (and caches the token for its own blob requests).
    async fn authorization(&self) -> Result<Option<String>, RegistryError> {
        let token = self
            .client
            .auth(&self.target, &self.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| self.client_error(e))?;
        Ok(match (token, &self.auth) {
            (Some(t), _) => Some(format!("Bearer {t}")),
            (None, RegistryAuth::Basic(u, p)) => {
                use base64::Engine;
                let pair = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                Some(format!("Basic {pair}"))
            }
            (None, _) => None,
        })
    }

    /// GET a manifest by tag or digest, at most [`MAX_MANIFEST`] bytes, checking its digest
    /// against `expected` and against the registry's Docker-Content-Digest.
    async fn manifest(
        &self,
        http: &reqwest::Client,
        authorization: Option<&str>,
        tag_or_digest: &str,
        expected: Option<&str>,
    ) -> Result<Fetched, RegistryError> {
        let scheme = match self.endpoint.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        let ns = match self.target.namespace() {
            Some(ns) => format!("?ns={ns}"),
            None => String::new(),
        };
        let url = format!(
            "{scheme}://{}/v2/{}/manifests/{tag_or_digest}{ns}",
            self.endpoint.host,
            self.target.repository()
        );
        let mut request = http
            .get(&url)
            .header(reqwest::header::ACCEPT, manifest::ACCEPT.join(", "));
        if let Some(a) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, a);
        }
        let response = request.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.status_error(status.as_u16(), &format!("manifest {tag_or_digest}")));
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let served_digest = header(reqwest::header::HeaderName::from_static(
            "docker-content-digest",
        ));
        let what = expected.unwrap_or(tag_or_digest).to_string();
        if response.content_length().is_some_and(|n| n > MAX_MANIFEST) {
            return Err(self.size_error(
                "manifest",
                &what,
                format!("larger than {MAX_MANIFEST} bytes"),
            ));
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.transport_error(e))?;
            if (body.len() + chunk.len()) as u64 > MAX_MANIFEST {
                return Err(self.size_error(
                    "manifest",
                    &what,
                    format!("larger than {MAX_MANIFEST} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let digest = sha256(&body);
        for claimed in [expected.unwrap_or_default(), served_digest.as_str()] {
            // A Docker-Content-Digest of another algorithm cannot be compared; sha256 ones must match.
            if claimed.starts_with("sha256:") && claimed != digest {
                return Err(RegistryError::DigestMismatch {
                    object: "manifest",
                    host: self.endpoint.host.clone(),
                    expected: claimed.to_string(),
                    actual: digest,
                });
            }
        }
        Ok(Fetched {
            body: body.into(),
            digest,
            content_type,
        })
    }

    /// The config blob, whole (it is small and bounded), digest checked.
    async fn read_config(&self, image: &ImageManifest) -> Result<Bytes, RegistryError> {
        let d = &image.config;
        if d.size > MAX_CONFIG {
            return Err(self.size_error(
                "image config",
                &d.digest,
                format!("{} bytes, more than the {MAX_CONFIG} read", d.size),
            ));
        }
        let mut blob = self.blob(d, "image config").await?;
        let mut body = Vec::with_capacity(d.size as usize);
        tokio::io::AsyncReadExt::read_to_end(&mut blob, &mut body)
            .await
            .map_err(|e| self.size_error("image config", &d.digest, e.to_string()))?;
        let actual = sha256(&body);
        if actual != d.digest {
            return Err(RegistryError::DigestMismatch {
                object: "image config",
                host: self.endpoint.host.clone(),
                expected: d.digest.clone(),
                actual,
            });
        }
        Ok(body.into())
    }

    /// A bounded stream of blob `d`.
    async fn blob(&self, d: &Descriptor, object: &'static str) -> Result<Blob, RegistryError> {
        self.client
            .store_auth_if_needed(self.target.resolve_registry(), &self.auth)
            .await;
        let descriptor = oci_client::manifest::OciDescriptor {
            media_type: d.media_type.clone(),
            digest: d.digest.clone(),
            size: d.size as i64,
            ..Default::default()
        };
        let sized = self
            .client
            .pull_blob_stream(&self.target, &descriptor)
            .await
            .map_err(|e| self.client_error(e))?;
        if let Some(n) = sized.content_length.filter(|&n| n != d.size) {
            return Err(self.size_error(
                object,
                &d.digest,
                format!(
                    "the registry sends {n} bytes, the descriptor says {}",
                    d.size
                ),
            ));
        }
        Ok(Blob {
            reader: tokio_util::io::StreamReader::new(Bounded {
                inner: sized.stream,
                left: d.size,
                name: format!("{object} {} from {}", d.digest, self.endpoint.host),
                done: false,
            }),
        })
    }

    fn size_error(&self, object: &'static str, digest: &str, reason: String) -> RegistryError {
        RegistryError::Size {
            object,
            digest: digest.to_string(),
            host: self.endpoint.host.clone(),
            reason,
        }
    }

    fn transport_error(&self, e: reqwest::Error) -> RegistryError {
        if e.is_connect() || e.is_timeout() {
            RegistryError::Unavailable {
                host: self.endpoint.host.clone(),
                source: Box::new(e),
            }
        } else {
            self.client_error(OciDistributionError::RequestError(e))
        }
    }

    fn status_error(&self, status: u16, what: &str) -> RegistryError {
        let host = self.endpoint.host.clone();
        let reference = self.reference.clone();
        match status {
            404 => RegistryError::NotFound {
                reference,
                host,
                detail: format!("{what}: HTTP 404"),
            },
            401 | 403 => RegistryError::Unauthorized {
                reference,
                host,
                detail: format!("{what}: HTTP {status}"),
            },
            502..=504 => RegistryError::Unavailable {
                host,
                source: format!("{what}: HTTP {status}").into(),
            },
            _ => RegistryError::Status {
                reference,
                host,
                status,
                what: what.to_string(),
            },
        }
    }

    fn client_error(&self, e: OciDistributionError) -> RegistryError {
        let host = self.endpoint.host.clone();
        let reference = self.reference.clone();
        match e {
            OciDistributionError::RequestError(r) if r.is_connect() || r.is_timeout() => {
                RegistryError::Unavailable {
                    host,
                    source: Box::new(r),
                }
            }
            OciDistributionError::UnauthorizedError { url } => self.status_error(401, &url),
            OciDistributionError::AuthenticationFailure(reason) => RegistryError::Unauthorized {
                reference,
                host,
                detail: format!("the token service said {:?}", truncate(&reason)),
            },
            OciDistributionError::ServerError { code, url, .. } => self.status_error(code, &url),
            OciDistributionError::RegistryError { envelope, url } => {
                let unknown = envelope.errors.iter().any(|e| {
                    matches!(
                        e.code,
                        OciErrorCode::BlobUnknown
                            | OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                    )
                });
                let denied = envelope
                    .errors
                    .iter()
                    .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied));
                match (unknown, denied) {
                    (true, _) => self.status_error(404, &url),
                    (_, true) => self.status_error(401, &url),
                    _ => RegistryError::Client {
                        reference,
                        host,
                        source: OciDistributionError::RegistryError { envelope, url },
                    },
                }
            }
            source => RegistryError::Client {
                reference,
                host,
                source,
            },
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A registry's message, cut short: it is the registry's text, not ours.
fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

/// A blob as it arrives: at most its descriptor's size, a read error on more or on less.
pub struct Blob {
    reader: tokio_util::io::StreamReader<Bounded, Bytes>,
}

impl AsyncRead for Blob {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

/// Passes a byte stream through while it stays within `left` bytes and ends exactly there.
struct Bounded {
    inner: futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>,
    left: u64,
    /// `blob sha256:… from host`, for errors.
    name: String,
    done: bool,
}

impl Stream for Bounded {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let fail = |this: &mut Bounded, kind, msg: String| {
            this.done = true;
            Poll::Ready(Some(Err(std::io::Error::new(
                kind,
                format!("{}: {msg}", this.name),
            ))))
        };
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let n = chunk.len() as u64;
                if n > self.left {
                    return fail(
                        &mut self,
                        std::io::ErrorKind::InvalidData,
                        "longer than its descriptor's size".into(),
                    );
                }
                self.left -= n;
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => fail(&mut self, e.kind(), e.to_string()),
            Poll::Ready(None) if self.left > 0 => {
                let left = self.left;
                fail(
                    &mut self,
                    std::io::ErrorKind::UnexpectedEof,
                    format!("ended {left} bytes short of its descriptor's size"),
                )
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn bounded(chunks: &[&'static [u8]], size: u64) -> Blob {
        let items: Vec<std::io::Result<Bytes>> =
            chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
        Blob {
            reader: tokio_util::io::StreamReader::new(Bounded {
                inner: futures_util::stream::iter(items).boxed(),
                left: size,
                name: "blob sha256:x from h".into(),
                done: false,
            }),
        }
    }

    async fn read(mut b: Blob) -> std::io::Result<Vec<u8>> {
        let mut v = Vec::new();
        b.read_to_end(&mut v).await.map(|_| v)
    }

    #[tokio::test]
    async fn a_blob_of_its_size_reads_whole() {
        assert_eq!(read(bounded(&[b"ab", b"cd"], 4)).await.unwrap(), b"abcd");
        assert_eq!(read(bounded(&[], 0)).await.unwrap(), b"");
    }

    #[tokio::test]
    async fn a_longer_or_shorter_blob_is_a_read_error_naming_it() {
        let e = read(bounded(&[b"ab", b"cde"], 4)).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(
            e.to_string().starts_with("blob sha256:x from h: longer"),
            "{e}"
        );
        let e = read(bounded(&[b"ab"], 4)).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("2 bytes short"), "{e}");
    }

    #[test]
    fn registry_futures_are_send() {
        fn send<T: Send>(_: &T) {}
        let registry = Registry::new(&RegistryConfig::default()).unwrap();
        let r = Reference::parse("busybox").unwrap();
        let auth = Auth::anonymous();
        send(&registry.resolve(&r, &auth));
        let d = Descriptor {
            media_type: String::new(),
            digest: String::new(),
            size: 0,
        };
        send(&registry.fetch_blob(&r, &d, &auth));
    }

    #[tokio::test]
    async fn a_descriptor_digest_that_is_no_sha256_is_refused_before_any_request() {
        let registry = Registry::new(&RegistryConfig::default()).unwrap();
        let r = Reference::parse("127.0.0.1:1/x").unwrap();
        let d = Descriptor {
            media_type: String::new(),
            digest: "sha256:../../v2/_catalog".into(),
            size: 1,
        };
        let e = registry
            .fetch_blob(&r, &d, &Auth::anonymous())
            .await
            .err()
            .unwrap();
        assert!(matches!(e, RegistryError::BlobDigest(_)), "{e}");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn error_codes() {
        let nf = RegistryError::NotFound {
            reference: "r".into(),
            host: "h".into(),
            detail: String::new(),
        };
        assert_eq!(nf.code(), tonic::Code::NotFound);
        let un = RegistryError::Unavailable {
            host: "h".into(),
            source: "x".into(),
        };
        assert_eq!(un.code(), tonic::Code::Unavailable);
        let m: RegistryError = ManifestError {
            object: "manifest",
            digest: "d".into(),
            reason: "r".into(),
        }
        .into();
        assert_eq!(m.code(), tonic::Code::Unknown);
    }
}
