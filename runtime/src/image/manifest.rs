//! Manifests and image indexes fetched with a size cap. oci-client reads
//! them whole, so a hostile registry could answer with gigabytes; here the
//! body is refused once it passes the cap (from `Content-Length` when sent,
//! else while it streams). Authentication still goes through oci-client
//! (its token cache then serves the blob downloads).

use std::time::Duration;

use oci_client::errors::OciDistributionError;
use oci_client::manifest::{
    ImageIndexEntry, OciImageManifest, OciManifest, IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use super::digest::{Digest, Hasher};
use crate::error::{Error, Result};

/// Fetches manifests over HTTP(S), capped.
pub(super) struct ManifestFetcher {
    http: std::sync::OnceLock<reqwest::Client>,
    insecure: Vec<String>,
    max_bytes: u64,
}

/// What a failed request says, for [`ManifestFetcher::image_manifest`]'s
/// caller to map.
pub(super) enum FetchError {
    /// oci-client failed (authentication).
    Oci(OciDistributionError),
    /// Anything else, already in our words.
    Ours(Error),
}

impl From<Error> for FetchError {
    fn from(e: Error) -> Self {
        FetchError::Ours(e)
    }
}

impl ManifestFetcher {
    /// A fetcher reaching `insecure` hosts over plain HTTP, refusing bodies
    /// over `max_bytes`.
    pub fn new(insecure: Vec<String>, max_bytes: u64) -> Self {
        ManifestFetcher {
            http: std::sync::OnceLock::new(),
            insecure,
            max_bytes,
        }
    }

    /// The HTTP client, built on first use.
    fn http(&self) -> Result<&reqwest::Client> {
        if let Some(c) = self.http.get() {
            return Ok(c);
        }
        let c = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| Error::Registry(format!("HTTP client: {e}")))?;
        Ok(self.http.get_or_init(|| c))
    }

    /// The image manifest of `r` (called `name` in messages) for this
    /// host: an index is resolved with `pick` and the chosen manifest fetched
    /// by digest. Returns it and its digest.
    pub async fn image_manifest(
        &self,
        client: &Client,
        r: &Reference,
        name: &str,
        auth: &RegistryAuth,
        pick: impl Fn(&[ImageIndexEntry]) -> Option<String>,
    ) -> std::result::Result<(OciImageManifest, Digest), FetchError> {
        let token = client
            .auth(r, auth, RegistryOperation::Pull)
            .await
            .map_err(FetchError::Oci)?;
        let authz = match (token, auth) {
            (Some(t), _) => Some(Authz::Bearer(t)),
            (None, RegistryAuth::Basic(u, p)) => Some(Authz::Basic(u.clone(), p.clone())),
            _ => None,
        };
        let what = r.digest().or(r.tag()).unwrap_or("latest").to_string();
        let (body, digest) = self.get(r, name, &what, authz.as_ref()).await?;
        match parse(&body)? {
            OciManifest::Image(m) => Ok((m, digest)),
            OciManifest::ImageIndex(index) => {
                let chosen = pick(&index.manifests).ok_or_else(|| {
                    Error::ImageNotFound(format!(
                        "{name}: no manifest for this platform in the image index"
                    ))
                })?;
                let entry = index.manifests.iter().find(|e| e.digest == chosen);
                if let Some(e) = entry.filter(|e| e.size.max(0) as u64 > self.max_bytes) {
                    return Err(self
                        .too_big(&format!("{name}: manifest {}", e.digest))
                        .into());
                }
                let d =
                    Digest::parse(&chosen).map_err(|e| registry(name, &format!("index: {e}")))?;
                let (body, digest) = self.get(r, name, d.as_str(), authz.as_ref()).await?;
                match parse(&body)? {
                    OciManifest::Image(m) => Ok((m, digest)),
                    OciManifest::ImageIndex(_) => {
                        Err(registry(name, "an image index names another index").into())
                    }
                }
            }
        }
    }

    /// GETs the manifest `what` (a tag or a digest) of `r`, verified when
    /// `what` is a digest; returns the body and its digest.
    async fn get(
        &self,
        r: &Reference,
        name: &str,
        what: &str,
        authz: Option<&Authz>,
    ) -> Result<(Vec<u8>, Digest)> {
        let host = r.resolve_registry();
        let scheme = if self.insecure.iter().any(|h| h == host) {
            "http"
        } else {
            "https"
        };
        let mut url = format!("{scheme}://{host}/v2/{}/manifests/{what}", r.repository());
        if let Some(ns) = r.namespace() {
            url.push_str(&format!("?ns={ns}"));
        }
        let mut req = self.http()?.get(&url).header(
            reqwest::header::ACCEPT,
            [
                OCI_IMAGE_MEDIA_TYPE,
                OCI_IMAGE_INDEX_MEDIA_TYPE,
                IMAGE_MANIFEST_MEDIA_TYPE,
                IMAGE_MANIFEST_LIST_MEDIA_TYPE,
            ]
            .join(", "),
        );
        req = match authz {
            Some(Authz::Bearer(t)) => req.bearer_auth(t),
            Some(Authz::Basic(u, p)) => req.basic_auth(u, Some(p)),
            None => req,
        };
        let mut resp = req
            .send()
            .await
            .map_err(|e| registry(name, &format!("registry unreachable: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            let body = self.read_capped(&mut resp, name).await.unwrap_or_default();
            return Err(status_error(name, status, &body));
        }
        let body = self.read_capped(&mut resp, name).await?;
        let digest = match Digest::parse(what) {
            Ok(want) => {
                let mut h = Hasher::new(want.algorithm());
                h.update(&body);
                if h.digest() != want {
                    return Err(registry(name, &format!("manifest {want} is corrupt")));
                }
                want
            }
            Err(_) => {
                let mut h = Hasher::new(super::digest::Algorithm::Sha256);
                h.update(&body);
                h.digest()
            }
        };
        Ok((body, digest))
    }

    async fn read_capped(&self, resp: &mut reqwest::Response, name: &str) -> Result<Vec<u8>> {
        if resp.content_length().is_some_and(|n| n > self.max_bytes) {
            return Err(self.too_big(&format!("the manifest of {name}")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| registry(name, &format!("reading the manifest: {e}")))?
        {
            if (body.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(self.too_big(&format!("the manifest of {name}")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn too_big(&self, what: &str) -> Error {
        Error::InvalidInput(format!(
            "{what} is larger than the limit of {} bytes",
            self.max_bytes
        ))
    }
}

enum Authz {
    Bearer(String),
    Basic(String, String),
}

fn registry(name: &str, why: &str) -> Error {
    Error::Registry(format!("{name}: {why}"))
}

fn parse(body: &[u8]) -> Result<OciManifest> {
    serde_json::from_slice(body).map_err(|e| Error::Registry(format!("bad manifest: {e}")))
}

/// A registry's refusal: missing or forbidden images are the caller's
/// problem (400), anything else the registry's (502).
fn status_error(name: &str, status: reqwest::StatusCode, body: &[u8]) -> Error {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(default)]
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        message: String,
    }
    let detail = serde_json::from_slice::<Envelope>(body)
        .map(|e| {
            e.errors
                .into_iter()
                .map(|i| i.message)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    let why = match (status.as_u16(), detail.is_empty()) {
        (401 | 403, _) => format!("access denied ({status}) {detail}"),
        (404, true) => "manifest unknown".to_string(),
        (404, false) => format!("manifest unknown ({detail})"),
        (_, _) => format!("{status} {detail}"),
    };
    if matches!(status.as_u16(), 401 | 403 | 404) {
        Error::ImageNotFound(format!("{name}: {}", why.trim()))
    } else {
        registry(name, why.trim())
    }
}
