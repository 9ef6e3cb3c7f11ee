//! Importing an image from an OCI image layout directory (`oci-layout`,
//! `index.json`, `blobs/sha256/...`, as written by `skopeo copy oci:` or
//! `umoci`) or from a tar archive of one. Every digest is parsed strictly
//! before it names a blob; blobs are regular files reached without symlinks,
//! capped in size and verified against their digest, every layer against the
//! config's diff_id. Nothing of a failed import stays in the store.

use std::fs::File;
use std::io::{self, BufReader};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, Mode, SFlag};
use serde::Deserialize;

use super::digest::Digest;
use super::layer::{compression_of, decompressor, CappedReader, HashingReader, SizeCap};
use super::{unpack, validate_reference, Image, ImageConfig, ImageStore};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::remove_dir_all_if_exists;
use crate::inroot::{Resolve, Root};

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    annotations: std::collections::HashMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    config: Option<ImageConfig>,
    rootfs: RootFs,
}

#[derive(Deserialize, Default)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// A layout directory, blobs resolved inside it without symlinks.
struct Layout {
    root: Root,
    /// Cap on index, manifest and config blobs.
    max_small: u64,
}

impl Layout {
    fn open(dir: &Path, max_small: u64) -> Result<Layout> {
        let root = Root::open(dir)
            .ctx(|| format!("{} is not an OCI image layout directory", dir.display()))?;
        Ok(Layout { root, max_small })
    }

    fn blob_path(digest: &Digest) -> PathBuf {
        Path::new("blobs")
            .join(digest.algorithm().name())
            .join(digest.hex())
    }

    /// Reads a whole small file (index.json, a manifest, a config), capped.
    fn read_small(&self, path: &Path) -> Result<Vec<u8>> {
        self.root
            .read_regular(path, self.max_small, Resolve::NoSymlinks)
            .ctx(|| format!("OCI layout: read {}", path.display()))
    }

    /// Reads a whole small blob, verified against `digest`.
    fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let d = parse_digest(digest)?;
        let data = self.read_small(&Self::blob_path(&d))?;
        let mut h = super::digest::Hasher::new(d.algorithm());
        h.update(&data);
        if h.digest() != d {
            return Err(Error::InvalidInput(format!("blob {digest} is corrupt")));
        }
        Ok(data)
    }

    /// Opens a layer blob: a regular file of at most `cap` bytes.
    fn open_blob(&self, digest: &Digest, cap: u64) -> Result<File> {
        let path = Self::blob_path(digest);
        let fd = self
            .root
            .open_at(&path, OFlag::O_RDONLY, Mode::empty(), Resolve::NoSymlinks)
            .ctx(|| format!("OCI layout: open {}", path.display()))?;
        let st = fstat(fd.as_raw_fd())
            .map_err(io::Error::from)
            .ctx(|| format!("stat {}", path.display()))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(Error::InvalidInput(format!(
                "OCI layout: blob {digest} is not a regular file"
            )));
        }
        if st.st_size as u64 > cap {
            return Err(Error::InvalidInput(format!(
                "layer {digest} is larger than the limit of {cap} bytes"
            )));
        }
        Ok(File::from(fd))
    }
}

/// A digest from the layout, parsed strictly.
fn parse_digest(digest: &str) -> Result<Digest> {
    Digest::parse(digest).map_err(|e| Error::InvalidInput(format!("OCI layout: {e}")))
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Finds the image manifest in `index`: the entry named `tag` (annotation
/// `org.opencontainers.image.ref.name`), else the one for this platform,
/// else the only one; nested indexes are followed.
fn pick_manifest(layout: &Layout, index: Index, tag: Option<&str>) -> Result<Manifest> {
    let by_tag = tag.and_then(|t| {
        index.manifests.iter().position(|m| {
            m.annotations
                .get("org.opencontainers.image.ref.name")
                .map(String::as_str)
                == Some(t)
        })
    });
    let by_platform = index.manifests.iter().position(|m| {
        m.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == host_arch())
    });
    let i = by_tag
        .or(by_platform)
        .or((index.manifests.len() == 1).then_some(0))
        .ok_or_else(|| Error::InvalidInput("OCI layout: no manifest for this platform".into()))?;
    let d = &index.manifests[i];
    let data = layout.read_blob(&d.digest)?;
    if d.media_type.contains("index") || d.media_type.contains("manifest.list") {
        let nested: Index = serde_json::from_slice(&data)
            .map_err(|e| Error::InvalidInput(format!("OCI index: {e}")))?;
        return pick_manifest(layout, nested, None);
    }
    serde_json::from_slice(&data).map_err(|e| Error::InvalidInput(format!("OCI manifest: {e}")))
}

/// Imports the image in layout (or archive) `src` as `reference`.
pub fn import(store: &ImageStore, src: &Path, reference: &str, tag: Option<&str>) -> Result<Image> {
    validate_reference(reference)?;
    if src.is_file() {
        let staging = store.staging_dir()?;
        let r = (|| {
            let f = File::open(src).ctx(|| format!("open {}", src.display()))?;
            tar::Archive::new(BufReader::new(f))
                .unpack(&staging)
                .ctx(|| format!("extract {}", src.display()))?;
            import(store, &staging, reference, tag)
        })();
        remove_dir_all_if_exists(&staging)?;
        return r;
    }
    let layout = Layout::open(src, store.limits().max_manifest_bytes)?;
    let index: Index = serde_json::from_slice(&layout.read_small(Path::new("index.json"))?)
        .map_err(|e| Error::InvalidInput(format!("index.json: {e}")))?;
    let manifest = pick_manifest(&layout, index, tag)?;
    let cfg: ConfigFile = serde_json::from_slice(&layout.read_blob(&manifest.config.digest)?)
        .map_err(|e| Error::InvalidInput(format!("image config: {e}")))?;
    if cfg.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(Error::InvalidInput(
            "image config and manifest disagree on layers".into(),
        ));
    }
    // Every digest is checked before anything is unpacked.
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for (layer, diff_id) in manifest.layers.iter().zip(&cfg.rootfs.diff_ids) {
        let blob = parse_digest(&layer.digest)?;
        let diff =
            parse_digest(diff_id).map_err(|e| Error::InvalidInput(format!("diff_id: {e}")))?;
        layers.push((layer, blob, diff));
    }
    let image_cap = store.limits().image_cap();
    for (layer, blob, diff_id) in &layers {
        if store.layer_path(diff_id).is_dir() {
            continue;
        }
        let staging = store.staging_dir()?;
        let r = import_layer(store, &layout, layer, blob, diff_id, &staging, &image_cap);
        remove_dir_all_if_exists(&staging)?;
        r?;
    }
    let image = Image {
        reference: reference.to_string(),
        layers: cfg.rootfs.diff_ids,
        config: cfg.config.unwrap_or_default(),
    };
    store.put(&image)?;
    Ok(image)
}

fn import_layer(
    store: &ImageStore,
    layout: &Layout,
    layer: &Descriptor,
    blob_digest: &Digest,
    diff_id: &Digest,
    staging: &Path,
    image_cap: &Arc<SizeCap>,
) -> Result<()> {
    let limits = store.limits();
    let file = layout.open_blob(blob_digest, limits.max_layer_bytes)?;
    let mut blob = HashingReader::new(file, blob_digest.algorithm());
    let dest = staging.join("rootfs");
    std::fs::create_dir(&dest).ctx(|| format!("create {}", dest.display()))?;
    let layer_cap = limits.layer_cap();
    let diff = (|| {
        let capped = CappedReader::new(
            decompressor(&mut blob, compression_of(&layer.media_type)?)?,
            vec![layer_cap.clone(), image_cap.clone()],
        );
        let mut plain = HashingReader::new(capped, diff_id.algorithm());
        unpack::unpack_layer(&mut plain, &dest, limits.max_layer_bytes)?;
        io::copy(&mut plain, &mut io::sink()).ctx(|| "read layer".into())?;
        Ok(plain.digest())
    })()
    .map_err(|e: Error| match SizeCap::check(&[&layer_cap, image_cap]) {
        Err(cap) => Error::InvalidInput(format!("layer {blob_digest}: {cap}")),
        Ok(()) => Error::InvalidInput(format!("layer {blob_digest}: {e}")),
    })?;
    io::copy(&mut blob, &mut io::sink()).ctx(|| "read layer".into())?;
    if blob.digest() != *blob_digest {
        return Err(Error::InvalidInput(format!(
            "layer blob {blob_digest} is corrupt"
        )));
    }
    if diff != *diff_id {
        return Err(Error::InvalidInput(format!(
            "layer {blob_digest} does not match diff_id {diff_id}"
        )));
    }
    store.commit_layer(&dest, diff_id)
}
