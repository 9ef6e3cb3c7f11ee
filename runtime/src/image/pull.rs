//! Pulling images from OCI registries with `oci-client`: Docker reference
//! rules, platform selection from image indexes, anonymous bearer tokens or
//! basic credentials, plain HTTP only for listed registries, an optional
//! docker.io mirror. Layers download in parallel (bounded) and unpack while
//! they stream into a private staging directory; every blob's digest and
//! size, and every layer's uncompressed digest, are verified before the layer
//! is renamed into the store, and nothing of a failed pull stays. Every
//! digest is parsed strictly before use; manifests, configs and layers are
//! capped in size ([`ImageLimits`]). Concurrent pulls of one image or one
//! layer share a single download.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::auth::Credentials;
use super::digest::{Digest, Hasher};
use super::layer::{compression_of, decompressor, CappedReader, HashingReader, SizeCap};
use super::manifest::{FetchError, ManifestFetcher};
use super::{unpack, validate_reference, Image, ImageConfig, ImageLimits, ImageStore};
use crate::error::{Error, Result};
use crate::fsutil::remove_dir_all_if_exists;
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{ImageIndexEntry, OciDescriptor};
use oci_client::{Client, Reference};
use serde::Deserialize;

/// Layers downloaded at once per pull.
const PARALLEL_LAYERS: usize = 3;

/// Progress of one layer of a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgress {
    /// Layer digest (compressed blob).
    pub layer: String,
    /// Bytes received so far.
    pub done: u64,
    /// Bytes in the layer (from the manifest).
    pub total: u64,
}

/// A callback for [`PullProgress`] events.
pub type ProgressFn = Arc<dyn Fn(PullProgress) + Send + Sync>;

/// Where and how to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// `host:port`s reached over plain HTTP (`CLAWDSPACE_INSECURE_REGISTRIES`).
    pub insecure: Vec<String>,
    /// Registry host used instead of docker.io (`CLAWDSPACE_DOCKER_MIRROR`).
    pub docker_mirror: Option<String>,
    /// Credential files, first wins.
    pub auth_files: Vec<PathBuf>,
    /// Caps on what a registry (or an imported layout) may make us unpack.
    pub limits: ImageLimits,
}

impl RegistryConfig {
    /// From the environment, with auth files under `state_dir`.
    pub fn from_env(state_dir: &std::path::Path) -> Self {
        let list = |v: &str| {
            std::env::var(v)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        };
        RegistryConfig {
            insecure: list("CLAWDSPACE_INSECURE_REGISTRIES"),
            docker_mirror: list("CLAWDSPACE_DOCKER_MIRROR").into_iter().next(),
            auth_files: Credentials::default_files(state_dir),
            limits: ImageLimits::from_env(),
        }
    }
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    config: Option<ImageConfigJson>,
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ImageConfigJson {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Deserialize, Default)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// Picks the manifest for this host (linux, our architecture, arm64 v8).
fn host_platform(entries: &[ImageIndexEntry]) -> Option<String> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    let matches = |e: &&ImageIndexEntry| {
        e.platform
            .as_ref()
            .is_some_and(|p| p.os.to_string() == "linux" && p.architecture.to_string() == arch)
    };
    let candidates: Vec<&ImageIndexEntry> = entries.iter().filter(matches).collect();
    let preferred = candidates.iter().find(|e| {
        arch != "arm64"
            || e.platform
                .as_ref()
                .and_then(|p| p.variant.as_deref())
                .is_none_or(|v| v == "v8")
    });
    preferred.or(candidates.first()).map(|e| e.digest.clone())
}

/// Pulls images into an [`ImageStore`].
pub struct Puller {
    client: Client,
    creds: Credentials,
    config: RegistryConfig,
    store: ImageStore,
    manifests: ManifestFetcher,
    /// Per reference: when its last pull finished (single flight).
    images: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Instant>>>>>,
    /// Per layer digest: held while it downloads.
    layers: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    downloads: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Puller {
    /// A puller for `store` with `config` (whose limits it applies).
    pub fn new(store: ImageStore, config: RegistryConfig) -> Self {
        let store = store.with_limits(config.limits);
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(config.insecure.clone()),
            platform_resolver: Some(Box::new(host_platform)),
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(120)),
            ..Default::default()
        });
        Puller {
            client,
            creds: Credentials::load(&config.auth_files),
            manifests: ManifestFetcher::new(
                config.insecure.clone(),
                config.limits.max_manifest_bytes,
            ),
            config,
            store,
            images: Mutex::new(HashMap::new()),
            layers: Mutex::new(HashMap::new()),
            downloads: AtomicU64::new(0),
        }
    }

    /// Number of layer blobs downloaded so far (tests, metrics).
    pub fn downloads(&self) -> u64 {
        self.downloads.load(Ordering::Relaxed)
    }

    fn parse(&self, reference: &str) -> Result<Reference> {
        validate_reference(reference)?;
        let r: Reference = reference.parse().map_err(|e| {
            Error::InvalidInput(format!("Invalid image reference '{reference}': {e}"))
        })?;
        match &self.config.docker_mirror {
            Some(m) if r.registry() == "docker.io" => Ok(match r.digest() {
                Some(d) => Reference::with_digest(m.clone(), r.repository().into(), d.into()),
                None => Reference::with_tag(
                    m.clone(),
                    r.repository().into(),
                    r.tag().unwrap_or("latest").into(),
                ),
            }),
            _ => Ok(r),
        }
    }

    /// Pulls `reference` and records it in the store under that exact
    /// string. Concurrent pulls of one reference share one download.
    pub async fn pull(&self, reference: &str, progress: Option<ProgressFn>) -> Result<Image> {
        let r = self.parse(reference)?;
        let started = Instant::now();
        let slot = lock(&self.images)
            .entry(reference.to_string())
            .or_default()
            .clone();
        let mut last = slot.lock().await;
        if let Some(done) = *last {
            if done >= started {
                // Another pull of this reference finished while we waited.
                if let Some(img) = self.store.get(reference)? {
                    return Ok(img);
                }
            }
        }
        let image = self.pull_uncached(reference, &r, progress).await?;
        *last = Some(Instant::now());
        Ok(image)
    }

    async fn pull_uncached(
        &self,
        reference: &str,
        r: &Reference,
        progress: Option<ProgressFn>,
    ) -> Result<Image> {
        let auth = self.creds.for_registry(r.registry());
        let t = Instant::now();
        let (manifest, _digest) = self
            .manifests
            .image_manifest(&self.client, r, reference, &auth, host_platform)
            .await
            .map_err(|e| match e {
                FetchError::Oci(e) => map_err(reference, e),
                FetchError::Ours(e) => e,
            })?;
        let bad = |what: &str, e: Error| Error::InvalidInput(format!("{reference}: {what}: {e}"));
        let config_digest =
            Digest::parse(&manifest.config.digest).map_err(|e| bad("image config", e))?;
        let config_json = self
            .fetch_config(r, reference, &manifest.config, &config_digest)
            .await?;
        let cfg: ConfigFile = serde_json::from_slice(&config_json)
            .map_err(|e| Error::Registry(format!("{reference}: bad image config: {e}")))?;
        let diff_ids = cfg.rootfs.map(|r| r.diff_ids).unwrap_or_default();
        if diff_ids.len() != manifest.layers.len() {
            return Err(Error::Registry(format!(
                "{reference}: manifest has {} layers but config lists {} diff_ids",
                manifest.layers.len(),
                diff_ids.len()
            )));
        }
        // Every digest is checked, and every size, before anything is fetched.
        let max_layer = self.store.limits().max_layer_bytes;
        let mut jobs = Vec::with_capacity(diff_ids.len());
        for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
            let blob = Digest::parse(&layer.digest).map_err(|e| bad("layer", e))?;
            let diff = Digest::parse(diff_id).map_err(|e| bad("diff_id", e))?;
            if layer.size.max(0) as u64 > max_layer {
                return Err(Error::InvalidInput(format!(
                    "{reference}: layer {blob} is larger than the limit of {max_layer} bytes"
                )));
            }
            jobs.push((layer.clone(), blob, diff));
        }
        let image_cap = self.store.limits().image_cap();
        // Every layer job runs to its end (each removes its own staging
        // directory); after a failure the others stop early. The first error
        // to complete is the cause.
        let abort = AtomicBool::new(false);
        let results: Vec<Result<()>> = stream::iter(jobs)
            .map(|(layer, blob, diff_id)| {
                let job = Job {
                    blob,
                    diff_id,
                    image_cap: &image_cap,
                    abort: &abort,
                };
                async {
                    let r = self.fetch_layer(r, layer, job, progress.clone()).await;
                    if r.is_err() {
                        abort.store(true, Ordering::Relaxed);
                    }
                    r
                }
            })
            .buffer_unordered(PARALLEL_LAYERS)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>>>()?;
        let c = cfg.config.unwrap_or_default();
        let image = Image {
            reference: reference.to_string(),
            layers: diff_ids,
            config: ImageConfig {
                env: c.env.unwrap_or_default(),
                entrypoint: c.entrypoint.unwrap_or_default(),
                cmd: c.cmd.unwrap_or_default(),
                working_dir: c.working_dir.unwrap_or_default(),
                user: c.user.unwrap_or_default(),
            },
        };
        self.store.put(&image)?;
        tracing::info!(
            image = reference,
            layers = image.layers.len(),
            ms = t.elapsed().as_millis() as u64,
            "pulled"
        );
        Ok(image)
    }

    /// The image config blob, capped and verified.
    async fn fetch_config(
        &self,
        r: &Reference,
        reference: &str,
        desc: &OciDescriptor,
        digest: &Digest,
    ) -> Result<Vec<u8>> {
        let max = self.store.limits().max_manifest_bytes;
        let too_big = || {
            Error::InvalidInput(format!(
                "{reference}: image config is larger than the limit of {max} bytes"
            ))
        };
        if desc.size.max(0) as u64 > max {
            return Err(too_big());
        }
        let mut blob = self
            .client
            .pull_blob_stream(r, desc)
            .await
            .map_err(|e| map_err(reference, e))?;
        let mut body = Vec::new();
        while let Some(chunk) = blob.next().await {
            let chunk =
                chunk.map_err(|e| Error::Registry(format!("{reference}: image config: {e}")))?;
            if (body.len() + chunk.len()) as u64 > max {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        let mut h = Hasher::new(digest.algorithm());
        h.update(&body);
        if h.digest() != *digest {
            return Err(Error::Registry(format!(
                "{reference}: image config {digest} is corrupt"
            )));
        }
        Ok(body)
    }

    async fn fetch_layer(
        &self,
        r: &Reference,
        layer: OciDescriptor,
        job: Job<'_>,
        progress: Option<ProgressFn>,
    ) -> Result<()> {
        let Job {
            blob: blob_digest,
            diff_id,
            image_cap,
            abort,
        } = job;
        let aborted = || {
            Error::Registry(format!(
                "layer {blob_digest}: stopped, another layer failed"
            ))
        };
        if abort.load(Ordering::Relaxed) {
            return Err(aborted());
        }
        let report = |done: u64| {
            if let Some(p) = &progress {
                p(PullProgress {
                    layer: layer.digest.clone(),
                    done,
                    total: layer.size.max(0) as u64,
                });
            }
        };
        let slot = lock(&self.layers)
            .entry(diff_id.to_string())
            .or_default()
            .clone();
        let _held = slot.lock().await;
        if self.store.layer_path(&diff_id).is_dir() {
            report(layer.size.max(0) as u64);
            return Ok(());
        }
        let compression = compression_of(&layer.media_type)?;
        let mut blob = self
            .client
            .pull_blob_stream(r, &layer)
            .await
            .map_err(|e| map_err(&r.whole(), e))?;
        self.downloads.fetch_add(1, Ordering::Relaxed);
        let staging = self.store.staging_dir()?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(32);
        let dest = staging.join("rootfs");
        let limits = self.store.limits();
        let layer_cap = limits.layer_cap();
        let caps = vec![layer_cap.clone(), image_cap.clone()];
        let diff_algorithm = diff_id.algorithm();
        let unpacker = tokio::task::spawn_blocking(move || -> Result<Digest> {
            std::fs::create_dir(&dest).map_err(|e| Error::io("create staging dir", e))?;
            let r = (|| {
                let plain = CappedReader::new(
                    decompressor(ChannelReader::new(rx), compression)?,
                    caps.clone(),
                );
                let mut reader = HashingReader::new(plain, diff_algorithm);
                unpack::unpack_layer(&mut reader, &dest, limits.max_layer_bytes)?;
                // Hash what follows the tar end marker too.
                io::copy(&mut reader, &mut io::sink()).map_err(|e| Error::io("read layer", e))?;
                Ok(reader.digest())
            })();
            r.map_err(|e| {
                let refs: Vec<&Arc<SizeCap>> = caps.iter().collect();
                SizeCap::check(&refs).err().unwrap_or(e)
            })
        });
        let mut hasher = Hasher::new(blob_digest.algorithm());
        let mut received: u64 = 0;
        let mut failure = None;
        let mut unpacker_stopped = false;
        let limit = match u64::try_from(layer.size) {
            Ok(n) if n > 0 => n.min(limits.max_layer_bytes),
            _ => limits.max_layer_bytes,
        };
        while let Some(chunk) = blob.next().await {
            if abort.load(Ordering::Relaxed) {
                failure = Some(aborted());
                break;
            }
            match chunk {
                Ok(bytes) => {
                    hasher.update(&bytes);
                    received += bytes.len() as u64;
                    if received > limit {
                        failure = Some(if limit < limits.max_layer_bytes {
                            Error::Registry(format!(
                                "layer {blob_digest} is corrupt: more than the {limit} bytes the manifest says"
                            ))
                        } else {
                            Error::InvalidInput(format!(
                                "layer {blob_digest} is larger than the limit of {limit} bytes"
                            ))
                        });
                        break;
                    }
                    report(received);
                    if tx.send(bytes).await.is_err() {
                        unpacker_stopped = true; // it failed; its error says why
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(Error::Registry(format!("downloading {blob_digest}: {e}")));
                    break;
                }
            }
        }
        drop(tx);
        let unpacked = unpacker
            .await
            .map_err(|e| Error::Container(format!("unpack task: {e}")))?;
        let got = hasher.digest();
        // A layer refused for what it holds is the image's fault (400);
        // anything else while unpacking, the registry's or ours.
        let unpack_failed = |e: Error| {
            Err(match e {
                Error::InvalidInput(why) => {
                    Error::InvalidInput(format!("layer {blob_digest} refused: {why}"))
                }
                e => Error::Registry(format!("layer {blob_digest} could not be unpacked: {e}")),
            })
        };
        let verdict = if let Some(f) = failure {
            Err(f)
        } else if unpacker_stopped {
            match unpacked {
                Err(e) => unpack_failed(e),
                Ok(_) => Err(Error::Container("layer unpacker stopped early".into())),
            }
        } else if got != blob_digest {
            Err(Error::Registry(format!(
                "layer {blob_digest} is corrupt: content has digest {got}"
            )))
        } else if layer.size > 0 && received != layer.size as u64 {
            Err(Error::Registry(format!(
                "layer {blob_digest} is corrupt: {received} bytes, manifest says {}",
                layer.size
            )))
        } else {
            match unpacked {
                Err(e) => unpack_failed(e),
                Ok(d) if d != diff_id => Err(Error::Registry(format!(
                    "layer {blob_digest} is corrupt: uncompressed digest {d}, config says {diff_id}"
                ))),
                Ok(_) => Ok(()),
            }
        };
        let result = match verdict {
            Ok(()) => self.store.commit_layer(&staging.join("rootfs"), &diff_id),
            Err(e) => Err(e),
        };
        remove_dir_all_if_exists(&staging)?;
        result
    }
}

/// One layer of a pull: its digests and what it shares with the others.
struct Job<'a> {
    blob: Digest,
    diff_id: Digest,
    image_cap: &'a Arc<SizeCap>,
    abort: &'a AtomicBool,
}

/// Maps registry errors to ours: missing or forbidden images are the
/// caller's problem (400), anything else is the registry's (502).
fn map_err(reference: &str, e: OciDistributionError) -> Error {
    use OciDistributionError as E;
    let not_found = |why: String| Error::ImageNotFound(format!("{reference}: {why}"));
    match e {
        E::ImageManifestNotFoundError(m) => not_found(format!("manifest unknown ({m})")),
        E::AuthenticationFailure(m) => not_found(format!("authentication failed: {m}")),
        E::UnauthorizedError { .. } => not_found("access denied (unauthorized)".into()),
        E::RegistryError { envelope, .. } => {
            let user_side = envelope.errors.iter().any(|x| {
                matches!(
                    x.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::Unauthorized
                        | OciErrorCode::Denied
                        | OciErrorCode::NameInvalid
                        | OciErrorCode::TagInvalid
                )
            });
            let msg = envelope
                .errors
                .iter()
                .map(|x| x.message.clone())
                .collect::<Vec<_>>()
                .join("; ");
            if user_side {
                not_found(msg)
            } else {
                Error::Registry(format!("{reference}: {msg}"))
            }
        }
        E::ServerError { code, message, .. } if matches!(code, 401 | 403 | 404) => {
            not_found(format!("{code} {message}"))
        }
        E::RequestError(e) => Error::Registry(format!("{reference}: registry unreachable: {e}")),
        E::DigestError(e) => Error::Registry(format!("{reference}: corrupt content: {e}")),
        other => Error::Registry(format!("{reference}: {other}")),
    }
}

/// A blocking `Read` over chunks sent from async code.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl ChannelReader {
    fn new(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Self {
        ChannelReader {
            rx,
            cur: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_reference_rules() {
        let p = Puller::new(
            ImageStore {
                root: PathBuf::from("/nonexistent"),
                limits: ImageLimits::default(),
            },
            RegistryConfig::default(),
        );
        let r = p.parse("ubuntu:24.04").expect("parse");
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("docker.io", "library/ubuntu", Some("24.04"))
        );
        let r = p.parse("127.0.0.1:5000/test/img:1").expect("parse");
        assert_eq!(
            (r.registry(), r.repository()),
            ("127.0.0.1:5000", "test/img")
        );
        let mirrored = Puller::new(
            ImageStore {
                root: PathBuf::from("/nonexistent"),
                limits: ImageLimits::default(),
            },
            RegistryConfig {
                docker_mirror: Some("mirror.local:5000".into()),
                ..Default::default()
            },
        );
        let r = mirrored.parse("busybox").expect("parse");
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("mirror.local:5000", "library/busybox", Some("latest"))
        );
    }
}
