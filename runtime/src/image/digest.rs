//! Content digests, parsed strictly before any of them becomes a path:
//! `sha256:` + 64 lowercase hex digits or `sha512:` + 128. Anything else
//! (`sha256:../../x`, uppercase hex, a wrong length, another algorithm) is
//! refused, so a digest from a registry, a layout or a record on disk can
//! never name a file outside the store.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha512};

use crate::error::{Error, Result};

/// A hash algorithm of a [`Digest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// SHA-256 (64 hex digits).
    Sha256,
    /// SHA-512 (128 hex digits).
    Sha512,
}

impl Algorithm {
    /// The name before the `:` (also the store's directory of the algorithm).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Every supported algorithm.
    pub const ALL: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Sha512];

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A well-formed content digest (`algorithm:hex`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Digest {
    algorithm: Algorithm,
    text: String,
}

impl Digest {
    /// Parses `s` strictly; the error names the refused text.
    pub fn parse(s: &str) -> Result<Digest> {
        let bad = |why: &str| Error::InvalidInput(format!("invalid digest {s:?}: {why}"));
        let (name, hex) = s
            .split_once(':')
            .ok_or_else(|| bad("expected algorithm:hex"))?;
        let algorithm = Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| bad("only sha256 and sha512 are supported"))?;
        if hex.len() != algorithm.hex_len() {
            return Err(bad(&format!(
                "{name} needs {} hex digits",
                algorithm.hex_len()
            )));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad("only lowercase hex digits are allowed"));
        }
        Ok(Digest {
            algorithm,
            text: s.to_string(),
        })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex digits (a safe single path component).
    pub fn hex(&self) -> &str {
        &self.text[self.algorithm.name().len() + 1..]
    }

    /// The whole digest, `algorithm:hex`.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Digest> {
        Digest::parse(s)
    }
}

/// A running hash in one [`Algorithm`].
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256 state.
    Sha256(Sha256),
    /// SHA-512 state.
    Sha512(Sha512),
}

impl Hasher {
    /// A fresh hasher for `algorithm`.
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything added so far.
    pub fn digest(&self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.clone().finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.clone().finalize())),
        };
        Digest {
            algorithm,
            text: format!("{}:{hex}", algorithm.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn well_formed_digests_parse() {
        let d = Digest::parse(&format!("sha256:{HEX64}")).expect("sha256");
        assert_eq!((d.algorithm(), d.hex()), (Algorithm::Sha256, HEX64));
        assert_eq!(d.to_string(), format!("sha256:{HEX64}"));
        let d = Digest::parse(&format!("sha512:{HEX64}{HEX64}")).expect("sha512");
        assert_eq!(d.algorithm(), Algorithm::Sha512);
        assert_eq!(d.hex().len(), 128);
    }

    #[test]
    fn anything_else_is_refused_and_named() {
        let traversal = "sha256:../../../..//./././hostdir";
        let bad = [
            traversal.to_string(),
            format!("sha256:{}", HEX64.to_uppercase()),
            format!("sha256:{}", &HEX64[1..]),
            format!("sha256:{HEX64}0"),
            format!("sha512:{HEX64}"),
            format!("sha384:{HEX64}"),
            format!("SHA256:{HEX64}"),
            format!("sha256:{}/", &HEX64[1..]),
            format!("sha256:{}\0", &HEX64[1..]),
            HEX64.to_string(),
            String::new(),
            "sha256:".into(),
            format!(" sha256:{HEX64}"),
        ];
        for s in &bad {
            let e = Digest::parse(s).expect_err(s);
            assert!(e.to_string().contains(&format!("{s:?}")), "{e}");
        }
    }

    #[test]
    fn hashers_produce_parseable_digests() {
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(b"");
        assert_eq!(
            h.digest().as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let d = Hasher::new(Algorithm::Sha512).digest();
        assert_eq!(Digest::parse(d.as_str()).ok(), Some(d));
    }
}
