//! Importing an image from an OCI image layout directory (`oci-layout`,
//! `index.json`, `blobs/sha256/...`, as written by `skopeo copy oci:` or
//! `umoci`) or from a tar archive of one. Every blob is verified against its
//! digest, every layer against the config's diff_id.

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::Path;

use serde::Deserialize;

use super::layer::{compression_of, decompressor, HashingReader};
use super::{unpack, validate_reference, Image, ImageConfig, ImageStore};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::remove_dir_all_if_exists;

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

fn blob_path(dir: &Path, digest: &str) -> Result<std::path::PathBuf> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| Error::InvalidInput(format!("unsupported digest {digest}")))?;
    Ok(dir.join("blobs/sha256").join(hex))
}

/// Reads a whole small blob (index, manifest, config), verified.
fn read_blob(dir: &Path, digest: &str) -> Result<Vec<u8>> {
    let p = blob_path(dir, digest)?;
    let mut r = HashingReader::new(File::open(&p).ctx(|| format!("open {}", p.display()))?);
    let mut data = Vec::new();
    r.read_to_end(&mut data)
        .ctx(|| format!("read {}", p.display()))?;
    if r.digest() != digest {
        return Err(Error::InvalidInput(format!("blob {digest} is corrupt")));
    }
    Ok(data)
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
fn pick_manifest(dir: &Path, index: Index, tag: Option<&str>) -> Result<Manifest> {
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
    let data = read_blob(dir, &d.digest)?;
    if d.media_type.contains("index") || d.media_type.contains("manifest.list") {
        let nested: Index = serde_json::from_slice(&data)
            .map_err(|e| Error::InvalidInput(format!("OCI index: {e}")))?;
        return pick_manifest(dir, nested, None);
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
    let index: Index = serde_json::from_slice(&fs::read(src.join("index.json")).ctx(|| {
        format!(
            "{} is not an OCI image layout (no index.json)",
            src.display()
        )
    })?)
    .map_err(|e| Error::InvalidInput(format!("index.json: {e}")))?;
    let manifest = pick_manifest(src, index, tag)?;
    let cfg: ConfigFile = serde_json::from_slice(&read_blob(src, &manifest.config.digest)?)
        .map_err(|e| Error::InvalidInput(format!("image config: {e}")))?;
    if cfg.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(Error::InvalidInput(
            "image config and manifest disagree on layers".into(),
        ));
    }
    for (layer, diff_id) in manifest.layers.iter().zip(&cfg.rootfs.diff_ids) {
        if store.layer_dir(diff_id).is_dir() {
            continue;
        }
        let staging = store.staging_dir()?;
        let r = import_layer(store, src, layer, diff_id, &staging);
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
    dir: &Path,
    layer: &Descriptor,
    diff_id: &str,
    staging: &Path,
) -> Result<()> {
    let p = blob_path(dir, &layer.digest)?;
    let mut blob = HashingReader::new(File::open(&p).ctx(|| format!("open {}", p.display()))?);
    let dest = staging.join("rootfs");
    fs::create_dir(&dest).ctx(|| format!("create {}", dest.display()))?;
    let diff = {
        let mut plain =
            HashingReader::new(decompressor(&mut blob, compression_of(&layer.media_type)?)?);
        unpack::unpack_layer(&mut plain, &dest)?;
        io::copy(&mut plain, &mut io::sink()).ctx(|| "read layer".into())?;
        plain.digest()
    };
    io::copy(&mut blob, &mut io::sink()).ctx(|| "read layer".into())?;
    let got = blob.digest();
    if got != layer.digest {
        return Err(Error::InvalidInput(format!(
            "layer blob {} is corrupt",
            layer.digest
        )));
    }
    if diff != diff_id {
        return Err(Error::InvalidInput(format!(
            "layer {} does not match diff_id {diff_id}",
            layer.digest
        )));
    }
    store.commit_layer(&dest, diff_id)
}
