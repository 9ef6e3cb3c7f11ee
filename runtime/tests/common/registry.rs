//! A real OCI registry for tests: Debian's `docker-registry` on 127.0.0.1
//! with temporary storage, optionally with htpasswd basic auth; and helpers
//! to build and push test images with `oci-client`.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};

/// A running registry; stopped and deleted on drop.
pub struct Registry {
    pub host: String,
    pub dir: PathBuf,
    child: Child,
}

impl Registry {
    /// Starts a registry; with `user` = Some((name, password)) it requires
    /// basic auth.
    pub fn start(user: Option<(&str, &str)>) -> Registry {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = PathBuf::from(format!("/var/tmp/clawdspace-registry-{port}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("storage")).expect("registry dir");
        let mut auth = String::new();
        if let Some((u, p)) = user {
            let out = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .expect("htpasswd (package apache2-utils)");
            fs::write(dir.join("htpasswd"), out.stdout).expect("htpasswd file");
            auth = format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                dir.join("htpasswd").display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
            dir.join("storage").display()
        );
        fs::write(dir.join("config.yml"), config).expect("config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry (package docker-registry)");
        let reg = Registry {
            host: format!("127.0.0.1:{port}"),
            dir,
            child,
        };
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&reg.host).is_err() {
            assert!(Instant::now() < end, "registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    /// The stored blob file of `digest` (to corrupt it).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// A client that talks plain HTTP to this registry.
    pub fn client(&self) -> Client {
        Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(vec![self.host.clone()]),
            ..Default::default()
        })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One file (or whiteout) in a test layer.
pub enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
}

/// An uncompressed tar of `entries` (ownership root, mode 0644/0755).
pub fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        match e {
            Entry::File(path, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, *data).expect("tar file");
            }
            Entry::Dir(path) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, path, std::io::empty())
                    .expect("tar dir");
            }
        }
    }
    b.into_inner().expect("tar")
}

/// A tar of a directory tree (the busybox rootfs).
pub fn tar_of_dir(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).expect("tar dir");
    b.into_inner().expect("tar")
}

/// How a test layer is compressed.
#[derive(Clone, Copy)]
pub enum Comp {
    Gzip,
    Zstd,
    Plain,
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A layer blob plus its diff_id.
pub fn layer(tar: Vec<u8>, comp: Comp) -> (ImageLayer, String) {
    let diff_id = sha(&tar);
    let (data, mt) = match comp {
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&tar).expect("gzip");
            (
                e.finish().expect("gzip"),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        }
        Comp::Zstd => (
            zstd::encode_all(&tar[..], 3).expect("zstd"),
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
        Comp::Plain => (tar, "application/vnd.oci.image.layer.v1.tar"),
    };
    (ImageLayer::new(data, mt.to_string(), None), diff_id)
}

/// An image config naming `diff_ids`, with `env`, for `arch`.
pub fn config(diff_ids: &[String], env: &[&str], arch: &str) -> Config {
    let v = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": { "Env": env, "Cmd": ["/bin/sh"], "WorkingDir": "/" },
        "rootfs": { "type": "layers", "diff_ids": diff_ids }
    });
    Config::new(
        serde_json::to_vec(&v).expect("json"),
        "application/vnd.oci.image.config.v1+json".into(),
        None,
    )
}

/// Pushes an image made of `layers` to `reference`.
pub async fn push(
    client: &Client,
    reference: &str,
    layers: Vec<(ImageLayer, String)>,
    env: &[&str],
    arch: &str,
    auth: &RegistryAuth,
) -> OciImageManifest {
    let r: Reference = reference.parse().expect("reference");
    let diff_ids: Vec<String> = layers.iter().map(|l| l.1.clone()).collect();
    let blobs: Vec<ImageLayer> = layers.into_iter().map(|l| l.0).collect();
    let cfg = config(&diff_ids, env, arch);
    let manifest = OciImageManifest::build(&blobs, &cfg, None);
    client
        .push(&r, &blobs, cfg, auth, Some(manifest.clone()))
        .await
        .expect("push image");
    manifest
}
