//! Local image store: content-addressed unpacked layers shared by every
//! space, and image records naming them. Pulling from registries plugs in
//! here (it produces layers and records the same way an import does).

mod auth;
mod busybox;
mod layer;
mod layout;
mod pull;
mod reference;
mod unpack;
mod user;

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::fsutil::{remove_dir_all_if_exists, write_atomic};

pub use auth::Credentials;
pub use busybox::busybox_rootfs;
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
    /// Layer digests (`sha256:<hex>`), bottom layer first.
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

/// The image store under `<state_dir>/images`.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    /// Opens (creating) the store.
    pub fn open(state_dir: &Path) -> Result<Self> {
        let root = state_dir.join("images");
        for d in ["refs", "layers/sha256", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p).ctx(|| format!("create {}", p.display()))?;
        }
        // Leftovers of interrupted imports are never mistaken for layers:
        // layers only appear by rename once complete.
        let tmp = root.join("tmp");
        if let Ok(rd) = fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let _ = fs::remove_dir_all(e.path()).or_else(|_| fs::remove_file(e.path()));
            }
        }
        Ok(ImageStore { root })
    }

    fn ref_path(&self, reference: &str) -> PathBuf {
        let h = hex::encode(Sha256::digest(reference.as_bytes()));
        self.root.join("refs").join(format!("{h}.json"))
    }

    /// The unpacked directory of a layer (`sha256:<hex>`).
    pub fn layer_dir(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.root.join("layers/sha256").join(hex)
    }

    /// Looks up an image by reference.
    pub fn get(&self, reference: &str) -> Result<Option<Image>> {
        validate_reference(reference)?;
        match fs::read(self.ref_path(reference)) {
            Ok(d) => serde_json::from_slice(&d)
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
            let d = self.layer_dir(l);
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
                if let Some(img) = fs::read(e.path())
                    .ok()
                    .and_then(|d| serde_json::from_slice(&d).ok())
                {
                    out.push(img);
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
            if !self.layer_dir(l).is_dir() {
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
        let tar_path = tmp_dir.join("layer.tar");
        // Decompress (if needed) into a temporary file while hashing it.
        let digest = {
            let f = File::open(src).ctx(|| format!("open {}", src.display()))?;
            let mut reader =
                maybe_gunzip(BufReader::new(f)).ctx(|| format!("read {}", src.display()))?;
            let mut out =
                File::create(&tar_path).ctx(|| format!("create {}", tar_path.display()))?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = reader
                    .read(&mut buf)
                    .ctx(|| format!("read {}", src.display()))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                io::Write::write_all(&mut out, &buf[..n])
                    .ctx(|| format!("write {}", tar_path.display()))?;
            }
            format!("sha256:{}", hex::encode(hasher.finalize()))
        };
        if !self.layer_dir(&digest).is_dir() {
            let staging = tmp_dir.join("rootfs");
            fs::create_dir(&staging).ctx(|| format!("create {}", staging.display()))?;
            let f = File::open(&tar_path).ctx(|| format!("open {}", tar_path.display()))?;
            unpack::unpack_layer(BufReader::new(f), &staging)?;
            self.commit_layer(&staging, &digest)?;
        }
        remove_dir_all_if_exists(&tmp_dir)?;
        Ok(digest)
    }

    /// A fresh private directory for work in progress; it is never taken
    /// for a layer (layers appear only by [`ImageStore::commit_layer`]) and
    /// leftovers are removed when the store is opened.
    pub fn staging_dir(&self) -> Result<PathBuf> {
        tempdir_in(&self.root.join("tmp"))
    }

    /// Moves a fully unpacked and verified layer directory into place.
    pub fn commit_layer(&self, unpacked: &Path, digest: &str) -> Result<()> {
        let dest = self.layer_dir(digest);
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
        let mut used: std::collections::HashSet<String> = self
            .list()?
            .into_iter()
            .flat_map(|i| i.layers)
            .map(|l| l.trim_start_matches("sha256:").to_string())
            .collect();
        used.extend(
            keep.iter()
                .filter_map(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned()),
        );
        let dir = self.root.join("layers/sha256");
        let mut n = 0;
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

fn tempdir_in(parent: &Path) -> Result<PathBuf> {
    let p = parent.join(crate::store::new_space_id());
    fs::create_dir(&p).ctx(|| format!("create {}", p.display()))?;
    Ok(p)
}
