//! Layer blobs: compression by media type, streaming decompression, and
//! hashing what is read (to verify digests while unpacking).

use std::io::{self, Read};

use sha2::{Digest, Sha256};

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
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// `sha256:<hex>` of everything read.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
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
