//! Manifests and image indexes fetched with a size cap. oci-client reads
//! them whole, so a hostile registry could answer with gigabytes; here the
//! body is refused once it passes the cap (from `Content-Length` when sent,
//! else while it streams). Bearer tokens are fetched here too, with the same
//! cap (oci-client would read a token response whole), and handed to
//! oci-client's token cache, which then serves the blob downloads.

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
        // A bearer token fetched here is cached by oci-client for the blob
        // downloads (no request made for it there).
        let auth = match self.bearer_token(r, name, auth).await? {
            Some(t) => &RegistryAuth::Bearer(t),
            None => auth,
        };
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

    /// A bearer token to pull `r`, when the registry asks for one (a `401`
    /// with a `Bearer` challenge on `/v2/`): fetched from the challenge's
    /// realm with `auth`'s credentials, the response capped like manifests.
    /// None when the registry wants no token (anonymous or Basic).
    async fn bearer_token(
        &self,
        r: &Reference,
        name: &str,
        auth: &RegistryAuth,
    ) -> Result<Option<String>> {
        let host = r.resolve_registry();
        let url = format!("{}://{host}/v2/", self.scheme(host));
        let resp = self
            .http()?
            .get(&url)
            .send()
            .await
            .map_err(|e| registry(name, &format!("registry unreachable: {e}")))?;
        if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(None);
        }
        let Some(challenge) = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
            .and_then(bearer_challenge)
        else {
            return Ok(None);
        };
        let Some(realm) = challenge.get("realm") else {
            return Err(registry(name, "a bearer challenge without a realm"));
        };
        let mut query = vec![("scope", format!("repository:{}:pull", r.repository()))];
        if let Some(service) = challenge.get("service") {
            query.push(("service", service.clone()));
        }
        let mut req = self.http()?.get(realm).query(&query);
        if let RegistryAuth::Basic(u, p) = auth {
            req = req.basic_auth(u, Some(p));
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| registry(name, &format!("token service unreachable: {e}")))?;
        let status = resp.status();
        let what = format!("the token response for {name}");
        let body = self.read_capped(&mut resp, name, &what).await?;
        if !status.is_success() {
            return Err(status_error(name, status, &body));
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = serde_json::from_slice(&body)
            .map_err(|e| registry(name, &format!("bad token response: {e}")))?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .map(Some)
            .ok_or_else(|| registry(name, "the token response has no token"))
    }

    fn scheme(&self, host: &str) -> &'static str {
        if self.insecure.iter().any(|h| h == host) {
            "http"
        } else {
            "https"
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
        let scheme = self.scheme(host);
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
            let body = self
                .read_capped(&mut resp, name, &format!("the manifest of {name}"))
                .await
                .unwrap_or_default();
            return Err(status_error(name, status, &body));
        }
        let body = self
            .read_capped(&mut resp, name, &format!("the manifest of {name}"))
            .await?;
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

    /// The body of `resp` (`what`, for messages), refused past the cap.
    async fn read_capped(
        &self,
        resp: &mut reqwest::Response,
        name: &str,
        what: &str,
    ) -> Result<Vec<u8>> {
        if resp.content_length().is_some_and(|n| n > self.max_bytes) {
            return Err(self.too_big(what));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| registry(name, &format!("reading {what}: {e}")))?
        {
            if (body.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(self.too_big(what));
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

/// The parameters of a `Bearer` `WWW-Authenticate` challenge
/// (`Bearer realm="…",service="…",scope="…"`); None for other schemes.
fn bearer_challenge(h: &str) -> Option<std::collections::HashMap<String, String>> {
    let (scheme, rest) = h.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut out = std::collections::HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, tail) = match after.strip_prefix('"') {
            Some(q) => {
                let end = q.find('"')?;
                (&q[..end], &q[end + 1..])
            }
            None => after.split_once(',').map_or((after, ""), |(v, t)| (v, t)),
        };
        out.insert(key.trim().to_ascii_lowercase(), value.to_string());
        rest = tail.trim_start_matches([',', ' ']);
    }
    Some(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_are_parsed() {
        let c = bearer_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .expect("bearer");
        assert_eq!(c["realm"], "https://auth.docker.io/token");
        assert_eq!(c["service"], "registry.docker.io");
        assert_eq!(c["scope"], "repository:library/busybox:pull");
        let c = bearer_challenge("bearer realm=http://x/t, service=s").expect("bearer");
        assert_eq!(c["realm"], "http://x/t");
        assert_eq!(c["service"], "s");
        assert!(bearer_challenge(r#"Basic realm="registry""#).is_none());
        assert!(bearer_challenge(r#"Bearer realm="unterminated"#).is_none());
    }
}
