//! Registry credentials: `auths` files in the format of Docker's
//! `config.json` (`{"auths": {"host:port": {"auth": base64("user:pass")}}}`).
//! The clawdspace file (`CLAWDSPACE_AUTH_FILE`, default
//! `<state dir>/auth.json`) wins over `$HOME/.docker/config.json`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

#[derive(Deserialize, Default)]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Credentials by registry host, read once.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    by_host: HashMap<String, (String, String)>,
}

const DOCKER_HUB_KEYS: &[&str] = &[
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "https://index.docker.io/v1/",
];

/// Host part of an `auths` key (keys may be URLs).
fn host_of(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    if DOCKER_HUB_KEYS.contains(&key) || DOCKER_HUB_KEYS.contains(&host) {
        "docker.io".into()
    } else {
        host.to_string()
    }
}

impl Credentials {
    /// Loads the given files; earlier files win.
    pub fn load(files: &[PathBuf]) -> Self {
        let mut by_host = HashMap::new();
        for f in files.iter().rev() {
            let Some(parsed) = read(f) else { continue };
            for (key, entry) in parsed.auths {
                if let Some(up) = decode(&entry) {
                    by_host.insert(host_of(&key), up);
                }
            }
        }
        Credentials { by_host }
    }

    /// Default files: the clawdspace one, then Docker's.
    pub fn default_files(state_dir: &Path) -> Vec<PathBuf> {
        let mut v = vec![std::env::var_os("CLAWDSPACE_AUTH_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| state_dir.join("auth.json"))];
        if let Some(home) = std::env::var_os("HOME") {
            v.push(PathBuf::from(home).join(".docker/config.json"));
        }
        v
    }

    /// The auth to use for `registry` (as in a reference: `docker.io`,
    /// `host:port`).
    pub fn for_registry(&self, registry: &str) -> RegistryAuth {
        match self.by_host.get(&host_of(registry)) {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        }
    }
}

fn read(f: &Path) -> Option<AuthFile> {
    let data = fs::read(f).ok()?;
    match serde_json::from_slice(&data) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(file = %f.display(), "ignoring unreadable registry auth file: {e}");
            None
        }
    }
}

fn decode(e: &AuthEntry) -> Option<(String, String)> {
    if let (Some(u), Some(p)) = (&e.username, &e.password) {
        return Some((u.clone(), p.clone()));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(e.auth.as_ref()?.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_style_auths_and_clawdspace_file_wins() {
        let dir = tempfile::tempdir().expect("tmp");
        let ours = dir.path().join("auth.json");
        let docker = dir.path().join("config.json");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        fs::write(
            &docker,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},"127.0.0.1:5000":{{"auth":"{}"}}}}}}"#,
                b64("hub:pw"),
                b64("old:pw")
            ),
        )
        .expect("write");
        fs::write(
            &ours,
            format!(
                r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{}"}}}}}}"#,
                b64("new:pw2")
            ),
        )
        .expect("write");
        let c = Credentials::load(&[ours, docker]);
        assert!(matches!(c.for_registry("docker.io"), RegistryAuth::Basic(u, _) if u == "hub"));
        assert!(
            matches!(c.for_registry("127.0.0.1:5000"), RegistryAuth::Basic(u, p) if u == "new" && p == "pw2")
        );
        assert!(matches!(c.for_registry("ghcr.io"), RegistryAuth::Anonymous));
    }
}
