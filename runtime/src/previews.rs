//! Preview links: unguessable tokens that open one port of one space
//! without the API key (`/p/<token>/…`). Only a SHA-256 of each token is
//! kept (`<state dir>/previews.json`, written atomically), so the file
//! does not grant access; a token expires, and dies with its space (it
//! names the space's id, which a new space of the same name does not
//! have).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::store::Space;

/// Largest previews file read.
const MAX_FILE_BYTES: u64 = 8 << 20;
/// Longest lifetime of a link.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Lifetime of a link created without one.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most live links per space.
const MAX_PER_SPACE: usize = 64;

/// One preview link (without its token, which is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    /// Short public id (the first 12 hex digits of the token's hash).
    pub id: String,
    /// The space's name and id.
    pub space: String,
    pub space_id: String,
    /// The port inside the space.
    pub port: u16,
    pub created: DateTime<Utc>,
    pub expires: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    /// SHA-256 of the token, hex.
    hash: String,
    #[serde(flatten)]
    preview: Preview,
}

/// The preview links of a server.
#[derive(Debug)]
pub struct Previews {
    path: PathBuf,
    links: Mutex<Vec<Stored>>,
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Previews {
    /// The links kept in `state_dir` (none when the file is missing;
    /// an unreadable file is an error, not an empty list).
    pub fn open(state_dir: &Path) -> Result<Previews> {
        let path = state_dir.join("previews.json");
        let links = match std::fs::File::open(&path) {
            Ok(f) => {
                use std::io::Read;
                let mut text = Vec::new();
                f.take(MAX_FILE_BYTES)
                    .read_to_end(&mut text)
                    .map_err(|e| Error::io(path.display().to_string(), e))?;
                serde_json::from_slice(&text)
                    .map_err(|e| Error::State(format!("{}: {e}", path.display())))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(path.display().to_string(), e)),
        };
        Ok(Previews {
            path,
            links: Mutex::new(links),
        })
    }

    fn save(&self, links: &[Stored]) -> Result<()> {
        let data = serde_json::to_vec(links).map_err(|e| Error::State(e.to_string()))?;
        write_atomic(&self.path, &data, true)
    }

    /// A new link to `port` of `space`, valid for `ttl` (at most
    /// [`MAX_TTL`]). Returns the token, shown once.
    pub fn create(&self, space: &Space, port: u16, ttl: Duration) -> Result<(String, Preview)> {
        self.create_for(&space.name, &space.id, port, ttl)
    }

    fn create_for(
        &self,
        name: &str,
        space_id: &str,
        port: u16,
        ttl: Duration,
    ) -> Result<(String, Preview)> {
        if port == 0 {
            return Err(Error::InvalidInput("Invalid port: 0 (1-65535)".into()));
        }
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(Error::InvalidInput(format!(
                "Invalid ttlSeconds: {} (1 to {})",
                ttl.as_secs(),
                MAX_TTL.as_secs()
            )));
        }
        let token = hex::encode(rand::random::<[u8; 24]>());
        let h = hash(&token);
        let now = Utc::now();
        let preview = Preview {
            id: h[..12].to_string(),
            space: name.to_string(),
            space_id: space_id.to_string(),
            port,
            created: now,
            expires: now
                + chrono::Duration::from_std(ttl)
                    .map_err(|e| Error::InvalidInput(e.to_string()))?,
        };
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.retain(|l| l.preview.expires > now);
        if links
            .iter()
            .filter(|l| l.preview.space_id == space_id)
            .count()
            >= MAX_PER_SPACE
        {
            return Err(Error::InvalidInput(format!(
                "Space '{name}' has {MAX_PER_SPACE} preview links already: revoke some first"
            )));
        }
        let mut next = links.clone();
        next.push(Stored {
            hash: h,
            preview: preview.clone(),
        });
        self.save(&next)?;
        *links = next;
        Ok((token, preview))
    }

    /// The live links of `space`.
    pub fn list(&self, space: &Space) -> Vec<Preview> {
        self.list_for(&space.id)
    }

    fn list_for(&self, space_id: &str) -> Vec<Preview> {
        let now = Utc::now();
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links
            .iter()
            .filter(|l| l.preview.space_id == space_id && l.preview.expires > now)
            .map(|l| l.preview.clone())
            .collect()
    }

    /// Revokes the links of `space` to `port`; how many there were.
    pub fn revoke(&self, space: &Space, port: u16) -> Result<usize> {
        self.revoke_for(&space.id, port)
    }

    fn revoke_for(&self, space_id: &str, port: u16) -> Result<usize> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let next: Vec<Stored> = links
            .iter()
            .filter(|l| !(l.preview.space_id == space_id && l.preview.port == port))
            .cloned()
            .collect();
        let gone = links.len() - next.len();
        if gone > 0 {
            self.save(&next)?;
            *links = next;
        }
        Ok(gone)
    }

    /// The live link a token opens, if any (the caller checks that its
    /// space still exists with the same id).
    pub fn resolve(&self, token: &str) -> Option<Preview> {
        if token.len() != 48 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let h = hash(token);
        let now = Utc::now();
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links
            .iter()
            .find(|l| l.hash == h && l.preview.expires > now)
            .map(|l| l.preview.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_open_their_port_until_revoked_and_only_hashes_are_stored() {
        let dir = tempfile::tempdir().expect("dir");
        let p = Previews::open(dir.path()).expect("open");
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let (token, link) = p.create_for("a", &a, 8000, DEFAULT_TTL).expect("create");
        assert_eq!(token.len(), 48);
        assert_eq!(p.resolve(&token).map(|l| l.port), Some(8000));
        assert_eq!(p.resolve(&"0".repeat(48)), None);
        assert_eq!(p.resolve("../../etc"), None);
        let file = std::fs::read_to_string(dir.path().join("previews.json")).expect("file");
        assert!(!file.contains(&token), "the token itself is never stored");
        // Kept across a restart.
        let again = Previews::open(dir.path()).expect("reopen");
        assert_eq!(again.list_for(&a), vec![link.clone()]);
        // Another space of the same name does not inherit it.
        assert_eq!(again.list_for(&b), vec![]);
        assert_eq!(again.revoke_for(&a, 8000).expect("revoke"), 1);
        assert_eq!(again.resolve(&token), None);
        assert!(p.create_for("a", &a, 0, DEFAULT_TTL).is_err());
        assert!(p
            .create_for("a", &a, 1, MAX_TTL + Duration::from_secs(1))
            .is_err());
        // Garbage in the file is an error, not an empty list.
        std::fs::write(dir.path().join("previews.json"), "{oops").expect("write");
        assert!(Previews::open(dir.path()).is_err());
    }
}
