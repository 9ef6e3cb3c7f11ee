//! Layer blobs: compression by media type, streaming decompression,
//! hashing what is read (to verify digests while unpacking) and size caps
//! on what is read.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::digest::{Algorithm, Digest, Hasher};
use crate::error::{Error, Result};

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// The compression a layer media type says.
pub fn compression_of(media_type: &str) -> Result<Compression> {
    let m = media_type;
    if m.ends_with("gzip") || m.ends_with("+gzip") {
        Ok(Compression::Gzip)
    } else if m.ends_with("zstd") {
        Ok(Compression::Zstd)
    } else if m.ends_with(".tar") || m.ends_with("diff.tar") || m.ends_with("layer.v1.tar") {
        Ok(Compression::None)
    } else {
        Err(Error::Registry(format!("unsupported layer media type {m}")))
    }
}

/// A reader that decompresses `r`.
pub fn decompressor<'a, R: Read + Send + 'a>(
    r: R,
    c: Compression,
) -> Result<Box<dyn Read + Send + 'a>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(r).map_err(|e| Error::io("zstd", e))?)
        }
    })
}

/// Hashes everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`, hashing with `algorithm`.
    pub fn new(inner: R, algorithm: Algorithm) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::new(algorithm),
        }
    }

    /// The digest of everything read.
    pub fn digest(&self) -> Digest {
        self.hasher.digest()
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A byte budget shared by the readers charged to it (one layer, or every
/// layer of one pull).
#[derive(Debug)]
pub struct SizeCap {
    what: &'static str,
    limit: u64,
    used: AtomicU64,
}

impl SizeCap {
    /// A budget of `limit` bytes for `what` ("layer", "image").
    pub fn new(what: &'static str, limit: u64) -> Arc<SizeCap> {
        Arc::new(SizeCap {
            what,
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// Counts `n` more bytes; an error once over the limit.
    pub fn charge(&self, n: u64) -> io::Result<()> {
        let used = self.used.fetch_add(n, Ordering::Relaxed) + n;
        if used > self.limit {
            return Err(io::Error::new(io::ErrorKind::InvalidData, self.message()));
        }
        Ok(())
    }

    /// Whether more than the limit was charged.
    pub fn exceeded(&self) -> bool {
        self.used.load(Ordering::Relaxed) > self.limit
    }

    /// What the user is told when the limit is passed.
    pub fn message(&self) -> String {
        format!(
            "the {} is larger than the limit of {} bytes uncompressed",
            self.what, self.limit
        )
    }

    /// The first exceeded cap of `caps` as an error, if any.
    pub fn check(caps: &[&Arc<SizeCap>]) -> Result<()> {
        match caps.iter().find(|c| c.exceeded()) {
            Some(c) => Err(Error::InvalidInput(c.message())),
            None => Ok(()),
        }
    }
}

/// Charges everything read through it to some [`SizeCap`]s and fails once
/// one of them is exceeded (stops decompression bombs).
pub struct CappedReader<R> {
    inner: R,
    caps: Vec<Arc<SizeCap>>,
}

impl<R: Read> CappedReader<R> {
    /// Wraps `inner`, charging `caps`.
    pub fn new(inner: R, caps: Vec<Arc<SizeCap>>) -> Self {
        CappedReader { inner, caps }
    }
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        for c in &self.caps {
            c.charge(n as u64)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_media_types_map_to_compression() {
        assert_eq!(
            compression_of("application/vnd.oci.image.layer.v1.tar+gzip").ok(),
            Some(Compression::Gzip)
        );
        assert_eq!(
            compression_of("application/vnd.docker.image.rootfs.diff.tar.gzip").ok(),
            Some(Compression::Gzip)
        );
        assert_eq!(
            compression_of("application/vnd.oci.image.layer.v1.tar+zstd").ok(),
            Some(Compression::Zstd)
        );
        assert_eq!(
            compression_of("application/vnd.oci.image.layer.v1.tar").ok(),
            Some(Compression::None)
        );
        assert!(compression_of("application/json").is_err());
    }
}
