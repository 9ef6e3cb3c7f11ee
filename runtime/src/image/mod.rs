//! Local image store: content-addressed unpacked layers shared by every
//! space, and image records naming them. Pulling from registries plugs in
//! here (it produces layers and records the same way an import does).

mod auth;
mod busybox;
mod digest;
mod layer;
mod layout;
mod manifest;
mod pull;
mod reference;
pub(crate) mod unpack;
mod user;

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::fsutil::{remove_dir_all_if_exists, write_atomic};
use layer::{CappedReader, SizeCap};

pub use auth::Credentials;
pub use busybox::busybox_rootfs;
pub use digest::{Algorithm, Digest};
pub use pull::{ProgressFn, PullProgress, Puller, RegistryConfig};
pub use reference::validate_reference;
pub use user::{resolve_user, PasswdEntry};

/// The parts of an OCI image config that spaces use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    /// Base environment (`KEY=value`).
    #[serde(default)]
    pub env: Vec<String>,
    /// Entrypoint of the image (informational; spaces run our init).
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// Cmd of the image (informational).
    #[serde(default)]
    pub cmd: Vec<String>,
    /// Working directory of the image.
    #[serde(default)]
    pub working_dir: String,
    /// User of the image.
    #[serde(default)]
    pub user: String,
}

/// An image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The local name or registry reference it is stored under.
    pub reference: String,
    /// Layer digests (uncompressed, `sha256:<hex>`), bottom layer first.
    pub layers: Vec<String>,
    /// Image configuration.
    pub config: ImageConfig,
}

/// An image ready to build a space on.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The stored image.
    pub image: Image,
    /// Unpacked layer directories, topmost first (overlay `lowerdir` order).
    pub layer_dirs: Vec<PathBuf>,
}

/// Default cap on one layer, compressed or uncompressed (16 GiB).
pub const DEFAULT_MAX_LAYER_BYTES: u64 = 16 << 30;
/// Default cap on the uncompressed layers one pull unpacks (64 GiB).
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 64 << 30;
/// Default cap on a manifest, index or image config (4 MiB).
pub const DEFAULT_MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// How much an image may make the daemon read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// A layer's compressed and its uncompressed size
    /// (`CLAWDSPACE_MAX_LAYER_BYTES`).
    pub max_layer_bytes: u64,
    /// The uncompressed size of all layers one pull or import unpacks
    /// (`CLAWDSPACE_MAX_IMAGE_BYTES`).
    pub max_image_bytes: u64,
    /// A manifest, image index or image config.
    pub max_manifest_bytes: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_layer_bytes: DEFAULT_MAX_LAYER_BYTES,
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
            max_manifest_bytes: DEFAULT_MAX_MANIFEST_BYTES,
        }
    }
}

impl ImageLimits {
    /// Defaults overridden by `CLAWDSPACE_MAX_LAYER_BYTES` and
    /// `CLAWDSPACE_MAX_IMAGE_BYTES` (bytes, or with a `K`/`M`/`G`/`T`
    /// binary suffix); an unreadable value is logged and the default kept.
    pub fn from_env() -> Self {
        let mut l = ImageLimits::default();
        for (var, field) in [
            ("CLAWDSPACE_MAX_LAYER_BYTES", &mut l.max_layer_bytes),
            ("CLAWDSPACE_MAX_IMAGE_BYTES", &mut l.max_image_bytes),
        ] {
            let Ok(v) = std::env::var(var) else { continue };
            match parse_bytes(&v) {
                Some(n) if n > 0 => *field = n,
                _ => tracing::warn!("{var}={v:?} is not a size; keeping {field}"),
            }
        }
        l
    }

    /// The budget of one pull or import.
    pub(crate) fn image_cap(&self) -> std::sync::Arc<SizeCap> {
        SizeCap::new("image", self.max_image_bytes)
    }

    /// The budget of one layer.
    pub(crate) fn layer_cap(&self) -> std::sync::Arc<SizeCap> {
        SizeCap::new("layer", self.max_layer_bytes)
    }
}

/// `123`, `4K`, `16G`, `1T` (binary units) as bytes.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, shift) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 10),
        (i, 'm' | 'M') => (&s[..i], 20),
        (i, 'g' | 'G') => (&s[..i], 30),
        (i, 't' | 'T') => (&s[..i], 40),
        _ => (s, 0),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

/// The image store under `<state_dir>/images`.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    limits: ImageLimits,
}

impl ImageStore {
    /// Opens (creating) the store, with default [`ImageLimits`]. Its root is
    /// made private (0700), also when an older version created it open:
    /// layers hold set-uid files that only spaces may run.
    pub fn open(state_dir: &Path) -> Result<Self> {
        let root = state_dir.join("images");
        for d in ["refs", "layers/sha256", "layers/sha512", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p).ctx(|| format!("create {}", p.display()))?;
        }
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))
            .ctx(|| format!("chmod {}", root.display()))?;
        // Leftovers of interrupted imports are never mistaken for layers:
        // layers only appear by rename once complete.
        let tmp = root.join("tmp");
        if let Ok(rd) = fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let _ = fs::remove_dir_all(e.path()).or_else(|_| fs::remove_file(e.path()));
            }
        }
        Ok(ImageStore {
            root,
            limits: ImageLimits::default(),
        })
    }

    /// The same store with `limits` on what pulls and imports unpack.
    pub fn with_limits(mut self, limits: ImageLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The limits pulls and imports into this store obey.
    pub fn limits(&self) -> ImageLimits {
        self.limits
    }

    fn ref_path(&self, reference: &str) -> PathBuf {
        let h = hex::encode(Sha256::digest(reference.as_bytes()));
        self.root.join("refs").join(format!("{h}.json"))
    }

    /// The unpacked directory of a layer; `digest` is parsed strictly
    /// (`sha256:` + 64 lowercase hex digits, or `sha512:` + 128).
    pub fn layer_dir(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.layer_path(&Digest::parse(digest)?))
    }

    /// The unpacked directory of a layer.
    pub(crate) fn layer_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("layers")
            .join(digest.algorithm().name())
            .join(digest.hex())
    }

    /// Looks up an image by reference. A record naming a malformed layer
    /// digest is refused, never turned into a path.
    pub fn get(&self, reference: &str) -> Result<Option<Image>> {
        validate_reference(reference)?;
        match fs::read(self.ref_path(reference)) {
            Ok(d) => read_record(&d)
                .map(Some)
                .map_err(|e| Error::State(format!("image record of {reference}: {e}"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("read image record of {reference}"), e)),
        }
    }

    /// Resolves a reference to its layer directories.
    pub fn resolve(&self, reference: &str) -> Result<ResolvedImage> {
        let image = self
            .get(reference)?
            .ok_or_else(|| Error::ImageNotFound(reference.to_string()))?;
        let mut layer_dirs = Vec::with_capacity(image.layers.len());
        for l in image.layers.iter().rev() {
            let d = self.layer_dir(l)?;
            if !d.is_dir() {
                return Err(Error::State(format!(
                    "layer {l} of image {reference} is missing from the store"
                )));
            }
            layer_dirs.push(d);
        }
        Ok(ResolvedImage { image, layer_dirs })
    }

    /// Every stored image.
    pub fn list(&self) -> Result<Vec<Image>> {
        let dir = self.root.join("refs");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir)
            .ctx(|| format!("read {}", dir.display()))?
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "json") {
                match fs::read(e.path())
                    .map_err(|e| e.to_string())
                    .and_then(|d| read_record(&d))
                {
                    Ok(img) => out.push(img),
                    Err(why) => tracing::warn!(
                        record = %e.path().display(),
                        "ignoring unreadable image record: {why}"
                    ),
                }
            }
        }
        out.sort_by(|a: &Image, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Records `image` under its reference (replacing an older record).
    pub fn put(&self, image: &Image) -> Result<()> {
        validate_reference(&image.reference)?;
        for l in &image.layers {
            if !self.layer_dir(l)?.is_dir() {
                return Err(Error::State(format!("layer {l} is not in the store")));
            }
        }
        let data = serde_json::to_vec(image).map_err(|e| Error::State(e.to_string()))?;
        write_atomic(&self.ref_path(&image.reference), &data, true)
    }

    /// Removes an image record (layers stay until [`ImageStore::gc`]).
    pub fn remove(&self, reference: &str) -> Result<()> {
        validate_reference(reference)?;
        match fs::remove_file(self.ref_path(reference)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::ImageNotFound(reference.to_string()))
            }
            Err(e) => Err(Error::io(format!("remove image {reference}"), e)),
        }
    }

    /// Stores an uncompressed or gzip-compressed layer tarball read from
    /// `src`, unpacked once under its digest; returns `sha256:<hex>` of the
    /// uncompressed tar. An existing layer is reused.
    pub fn add_layer_tar(&self, src: &Path) -> Result<String> {
        let tmp_dir = tempdir_in(&self.root.join("tmp"))?;
        let r = self.add_layer_tar_in(src, &tmp_dir);
        remove_dir_all_if_exists(&tmp_dir)?;
        r.map(|d| d.to_string())
    }

    fn add_layer_tar_in(&self, src: &Path, tmp_dir: &Path) -> Result<Digest> {
        let tar_path = tmp_dir.join("layer.tar");
        let cap = self.limits.layer_cap();
        // Decompress (if needed) into a temporary file while hashing it.
        let digest = {
            let f = File::open(src).ctx(|| format!("open {}", src.display()))?;
            let plain =
                maybe_gunzip(BufReader::new(f)).ctx(|| format!("read {}", src.display()))?;
            let mut reader = layer::HashingReader::new(
                CappedReader::new(plain, vec![cap.clone()]),
                Algorithm::Sha256,
            );
            let mut out =
                File::create(&tar_path).ctx(|| format!("create {}", tar_path.display()))?;
            if let Err(e) = io::copy(&mut reader, &mut out) {
                SizeCap::check(&[&cap])?;
                return Err(Error::io(format!("read {}", src.display()), e));
            }
            reader.digest()
        };
        if !self.layer_path(&digest).is_dir() {
            let staging = tmp_dir.join("rootfs");
            fs::create_dir(&staging).ctx(|| format!("create {}", staging.display()))?;
            let f = File::open(&tar_path).ctx(|| format!("open {}", tar_path.display()))?;
            unpack::unpack_layer(BufReader::new(f), &staging, self.limits.max_layer_bytes)?;
            self.commit_layer(&staging, &digest)?;
        }
        Ok(digest)
    }

    /// A fresh private directory for work in progress; it is never taken
    /// for a layer (layers appear only by [`ImageStore::commit_layer`]) and
    /// leftovers are removed when the store is opened.
    pub fn staging_dir(&self) -> Result<PathBuf> {
        tempdir_in(&self.root.join("tmp"))
    }

    /// Moves a fully unpacked and verified layer directory into place.
    pub(crate) fn commit_layer(&self, unpacked: &Path, digest: &Digest) -> Result<()> {
        let dest = self.layer_path(digest);
        match fs::rename(unpacked, &dest) {
            Ok(()) => Ok(()),
            // Another import of the same layer won the race.
            Err(_) if dest.is_dir() => Ok(()),
            Err(e) => Err(Error::io(format!("store layer {digest}"), e)),
        }
    }

    /// Imports a root filesystem (a directory or a tarball, gzip or not) as
    /// a single-layer image named `reference`.
    pub fn import_rootfs(&self, reference: &str, src: &Path, config: ImageConfig) -> Result<Image> {
        validate_reference(reference)?;
        let meta = fs::metadata(src).ctx(|| format!("stat {}", src.display()))?;
        let digest = if meta.is_dir() {
            let tmp_dir = tempdir_in(&self.root.join("tmp"))?;
            let tar_path = tmp_dir.join("rootfs.tar");
            let f = File::create(&tar_path).ctx(|| format!("create {}", tar_path.display()))?;
            let mut b = tar::Builder::new(f);
            b.follow_symlinks(false);
            b.mode(tar::HeaderMode::Complete);
            b.append_dir_all(".", src)
                .ctx(|| format!("archive {}", src.display()))?;
            b.into_inner()
                .ctx(|| format!("write {}", tar_path.display()))?;
            let d = self.add_layer_tar(&tar_path);
            remove_dir_all_if_exists(&tmp_dir)?;
            d?
        } else {
            self.add_layer_tar(src)?
        };
        let image = Image {
            reference: reference.to_string(),
            layers: vec![digest],
            config,
        };
        self.put(&image)?;
        Ok(image)
    }

    /// Gives `src`'s image a second name `dst`.
    pub fn tag(&self, src: &str, dst: &str) -> Result<Image> {
        let mut img = self
            .get(src)?
            .ok_or_else(|| Error::ImageNotFound(src.to_string()))?;
        img.reference = dst.to_string();
        self.put(&img)?;
        Ok(img)
    }

    /// Imports an OCI image layout directory or archive as `reference`
    /// (`tag` picks an entry of a multi-image layout by its ref name).
    pub fn import_oci(&self, src: &Path, reference: &str, tag: Option<&str>) -> Result<Image> {
        layout::import(self, src, reference, tag)
    }

    /// Removes layer directories that no image references and that are not
    /// in `keep` (layer directories of existing spaces); returns how many.
    pub fn gc(&self, keep: &[PathBuf]) -> Result<usize> {
        // Records are checked by `list`: every layer name is a strict digest.
        let mut used: std::collections::HashSet<String> = self
            .list()?
            .into_iter()
            .flat_map(|i| i.layers)
            .filter_map(|l| Digest::parse(&l).ok())
            .map(|d| d.hex().to_string())
            .collect();
        used.extend(
            keep.iter()
                .filter_map(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned()),
        );
        let mut n = 0;
        for algorithm in Algorithm::ALL {
            let dir = self.root.join("layers").join(algorithm.name());
            for e in fs::read_dir(&dir)
                .ctx(|| format!("read {}", dir.display()))?
                .flatten()
            {
                let name = e.file_name().to_string_lossy().into_owned();
                if !used.contains(&name) {
                    remove_dir_all_if_exists(&e.path())?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

fn maybe_gunzip<R: io::BufRead + Seek + Send + 'static>(
    mut r: R,
) -> io::Result<Box<dyn Read + Send>> {
    let head = r.fill_buf()?;
    if head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b {
        Ok(Box::new(flate2::bufread::GzDecoder::new(r)))
    } else {
        Ok(Box::new(r))
    }
}

/// An image record, refused when it names a malformed layer digest.
fn read_record(data: &[u8]) -> std::result::Result<Image, String> {
    let image: Image = serde_json::from_slice(data).map_err(|e| e.to_string())?;
    for l in &image.layers {
        Digest::parse(l).map_err(|e| format!("layer {e}"))?;
    }
    Ok(image)
}

fn tempdir_in(parent: &Path) -> Result<PathBuf> {
    let p = parent.join(crate::space_id::new_space_id());
    fs::create_dir(&p).ctx(|| format!("create {}", p.display()))?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_bytes("123"), Some(123));
        assert_eq!(parse_bytes("4K"), Some(4096));
        assert_eq!(parse_bytes(" 16g "), Some(16 << 30));
        assert_eq!(parse_bytes("1T"), Some(1 << 40));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("-1"), None);
        assert_eq!(parse_bytes("99999999999T"), None);
    }
}
