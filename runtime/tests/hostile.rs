//! Hostile images: layers and manifests built to reach the host, through the
//! real import and pull paths (an OCI layout, and Debian's docker-registry on
//! 127.0.0.1). Each refusal is proven the same way: a decoy host tree outside
//! the store has the same checksums before and after, the test's whole state
//! tree is unchanged (nothing left in `layers/`, `tmp/` or `refs/`), and the
//! error names the bad entry. Needs root (and docker-registry for pulls);
//! skipped otherwise.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use clawdspace_runtime::image::{ImageLimits, RegistryConfig};
use clawdspace_runtime::{Error, ErrorKind};
use common::decoy::{snapshot, Decoy};
use common::registry::{layer, Comp, Registry};
use common::TestEnv;
use oci_client::client::{Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use sha2::Digest as _;

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = CString::new(p.as_os_str().as_bytes()).expect("path");
    let n = CString::new(name).expect("name");
    let mut buf = vec![0u8; 256];
    // SAFETY: NUL-terminated strings and a buffer of the given size.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| {
        buf.truncate(r as usize);
        buf
    })
}

/// The decoy and the test's state tree, to compare after an attack.
struct Watch {
    decoy: BTreeMap<PathBuf, String>,
    state: BTreeMap<PathBuf, String>,
}

impl Watch {
    fn new(env: &TestEnv, decoy: &Decoy) -> Watch {
        Watch {
            decoy: snapshot(&decoy.dir),
            state: snapshot(&env.dir),
        }
    }

    /// Asserts that neither the host decoy nor anything of the test's state
    /// (layers, staging, records) changed.
    fn unchanged(&self, env: &TestEnv, decoy: &Decoy, case: &str) {
        assert_eq!(
            self.decoy,
            snapshot(&decoy.dir),
            "{case}: the host decoy changed"
        );
        assert_eq!(
            self.state,
            snapshot(&env.dir),
            "{case}: something stayed in the store"
        );
        let tmp = env.dir.join("state/images/tmp");
        assert_eq!(
            fs::read_dir(tmp).expect("tmp").count(),
            0,
            "{case}: staging left"
        );
    }
}

// ---------------------------------------------------------------- evil tars

/// One raw tar entry; names are written as given (`..` included).
enum E<'a> {
    File(&'a str, &'a [u8]),
    Mode(&'a str, u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Device(&'a str, tar::EntryType),
    Xattrs(&'a str, &'a [(&'a str, &'a [u8])]),
}

fn header(name: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    let bytes = name.as_bytes();
    assert!(bytes.len() < 100, "short names only");
    h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(size);
    h
}

fn evil_tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (mut h, data): (tar::Header, &[u8]) = match e {
            E::File(n, d) => (header(n, tar::EntryType::Regular, 0o644, d.len() as u64), d),
            E::Mode(n, m) => (header(n, tar::EntryType::Regular, *m, 1), b"x"),
            E::Dir(n) => (header(n, tar::EntryType::Directory, 0o755, 0), b""),
            E::Symlink(n, t) | E::Hardlink(n, t) => {
                let kind = if matches!(e, E::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                let mut h = header(n, kind, 0o777, 0);
                h.set_link_name_literal(t).expect("link name");
                (h, b"")
            }
            E::Device(n, kind) => {
                let mut h = header(n, *kind, 0o666, 0);
                h.set_device_major(1).expect("major");
                h.set_device_minor(3).expect("minor");
                (h, b"")
            }
            E::Xattrs(n, attrs) => {
                b.append_pax_extensions(attrs.iter().map(|(k, v)| (*k, *v)))
                    .expect("pax");
                (header(n, tar::EntryType::Regular, 0o644, 1), b"x")
            }
        };
        h.set_cksum();
        b.append(&h, data).expect("tar entry");
    }
    b.into_inner().expect("tar")
}

// ---------------------------------------------------------------- OCI layouts

/// Writes an OCI layout of one image; `diff_ids`, `layer_digests` and
/// `manifest_digest` override what is written (to plant bad digests).
struct Layout<'a> {
    layers: Vec<(ImageLayer, String)>,
    diff_ids: Option<Vec<String>>,
    layer_digests: Option<Vec<String>>,
    manifest_digest: Option<&'a str>,
}

impl Layout<'_> {
    fn of(layers: Vec<(ImageLayer, String)>) -> Self {
        Layout {
            layers,
            diff_ids: None,
            layer_digests: None,
            manifest_digest: None,
        }
    }

    fn write(&self, dir: &Path) {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).expect("layout dirs");
        let put = |data: &[u8]| {
            let hex = hex::encode(sha2::Sha256::digest(data));
            fs::write(blobs.join(&hex), data).expect("blob");
            (format!("sha256:{hex}"), data.len())
        };
        let diff_ids = self
            .diff_ids
            .clone()
            .unwrap_or_else(|| self.layers.iter().map(|l| l.1.clone()).collect());
        let cfg = common::registry::config(&diff_ids, &[], "amd64");
        let (cfg_digest, cfg_size) = put(&cfg.data);
        let descs: Vec<serde_json::Value> = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, (l, _))| {
                let (d, n) = put(&l.data);
                let d = self
                    .layer_digests
                    .as_ref()
                    .map(|v| v[i].clone())
                    .unwrap_or(d);
                serde_json::json!({"mediaType": l.media_type, "digest": d, "size": n})
            })
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": cfg_digest, "size": cfg_size},
            "layers": descs
        });
        let (m_digest, m_size) = put(&serde_json::to_vec(&manifest).expect("json"));
        let m_digest = self.manifest_digest.map(String::from).unwrap_or(m_digest);
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": m_digest, "size": m_size}]
        });
        fs::write(
            dir.join("index.json"),
            serde_json::to_vec(&index).expect("json"),
        )
        .expect("index");
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("layout");
    }
}

/// Imports `layout` as a fresh layout directory under the test's dir (not in
/// the watched state tree's store).
fn import(env: &TestEnv, name: &str, layout: &Layout) -> Result<PathBuf, Error> {
    let dir = env.dir.join("layouts").join(name);
    layout.write(&dir);
    let img = env
        .rt()
        .images()
        .import_oci(&dir, &format!("evil:{name}"), None);
    let _ = fs::remove_dir_all(env.dir.join("layouts"));
    let img = img?;
    env.rt()
        .images()
        .layer_dir(&img.layers[0])
        .map_err(|e| Error::State(e.to_string()))
}

fn one_layer(entries: &[E]) -> Layout<'static> {
    Layout::of(vec![layer(evil_tar(entries), Comp::Gzip)])
}

/// Asserts that importing `entries` fails naming `needle`, changing nothing.
fn refused(env: &TestEnv, decoy: &Decoy, case: &str, entries: &[E], needle: &str) {
    let watch = Watch::new(env, decoy);
    let err = import(env, case, &one_layer(entries)).expect_err(case);
    assert_eq!(err.kind(), ErrorKind::Invalid, "{case}: {err}");
    assert!(
        err.to_string().contains(needle),
        "{case}: {err} (wanted {needle})"
    );
    watch.unchanged(env, decoy, case);
}

#[tokio::test]
#[ignore = "needs root"]
async fn layers_never_write_through_symlinks_to_the_host() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let decoy = Decoy::new();
    let abs = decoy.dir.display().to_string();
    let rel = decoy.relative();
    let cases: Vec<(&str, Vec<E>, &str)> = vec![
        (
            "whiteout-through-absolute-symlink",
            vec![E::Symlink("a", &abs), E::File("a/.wh.victim", b"")],
            "a/.wh.victim",
        ),
        (
            "whiteout-through-relative-symlink",
            vec![E::Symlink("r", &rel), E::File("r/.wh.victim", b"")],
            "r/.wh.victim",
        ),
        (
            "opaque-marker-through-symlink",
            vec![E::Symlink("b", &abs), E::File("b/x/y/.wh..wh..opq", b"")],
            "b/x/y/.wh..wh..opq",
        ),
        (
            "opaque-marker-on-symlinked-dir",
            vec![E::Symlink("o", &abs), E::File("o/.wh..wh..opq", b"")],
            "o/.wh..wh..opq",
        ),
        (
            "regular-file-through-symlink",
            vec![E::Symlink("c", &abs), E::File("c/planted", b"evil")],
            "c/planted",
        ),
        (
            "overwrite-through-symlink",
            vec![E::Symlink("c", &abs), E::File("c/victim", b"evil")],
            "c/victim",
        ),
        (
            "directory-through-symlink",
            vec![E::Symlink("d", &rel), E::Dir("d/newdir/")],
            "d/newdir/",
        ),
        (
            "hardlink-through-symlink",
            vec![
                E::File("etc-file", b"in layer"),
                E::Symlink("h", &abs),
                E::Hardlink("h/linked", "etc-file"),
            ],
            "h/linked",
        ),
        (
            "symlink-chain",
            vec![
                E::Symlink("s1", "s2"),
                E::Symlink("s2", "s3"),
                E::Symlink("s3", &abs),
                E::File("s1/.wh.victim", b""),
            ],
            "s1/.wh.victim",
        ),
        (
            "symlink-into-the-store",
            vec![E::Symlink("st", "../../.."), E::File("st/.wh.layers", b"")],
            "st/.wh.layers",
        ),
        (
            "symlink-replaced-by-dir-name",
            vec![E::Symlink("sub", &abs), E::Dir("sub/deeper/")],
            "sub/deeper/",
        ),
    ];
    for (case, entries, needle) in &cases {
        refused(&env, &decoy, case, entries, needle);
    }
}

#[tokio::test]
#[ignore = "needs root"]
async fn hardlinks_and_names_cannot_leave_the_layer() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let decoy = Decoy::new();
    let victim = format!("{}/victim", decoy.dir.display());
    let via_link = "l/victim";
    let rel_victim = format!("{}/victim", decoy.relative());
    let abs = decoy.dir.display().to_string();
    let cases: Vec<(&str, Vec<E>, &str)> = vec![
        (
            "hardlink-to-host-path",
            vec![E::Hardlink("stolen", &victim)],
            "hardlink target",
        ),
        (
            "hardlink-to-relative-host-path",
            vec![E::Hardlink("stolen", &rel_victim)],
            "stolen",
        ),
        (
            "hardlink-via-symlink",
            vec![E::Symlink("l", &abs), E::Hardlink("stolen", via_link)],
            "hardlink target \"l/victim\"",
        ),
        ("whiteout-dotdot", vec![E::File(".wh...", b"")], ".wh..."),
        ("whiteout-dot", vec![E::File("x/.wh..", b"")], "x/.wh.."),
        (
            "dotdot-in-a-path",
            vec![E::File("../../../escape", b"evil")],
            "../../../escape",
        ),
        (
            "dotdot-in-the-middle",
            vec![E::Dir("a/"), E::File("a/../../escape", b"evil")],
            "a/../../escape",
        ),
    ];
    for (case, entries, needle) in &cases {
        refused(&env, &decoy, case, entries, needle);
    }
    assert!(!env.dir.join("escape").exists() && !Path::new("/escape").exists());
}

#[tokio::test]
#[ignore = "needs root"]
async fn devices_are_skipped_setuid_and_user_xattrs_kept_trusted_xattrs_dropped() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let layer_dir = import(
        &env,
        "attrs",
        &one_layer(&[
            E::Dir("dev/"),
            E::Device("dev/mem", tar::EntryType::Char),
            E::Device("dev/sda", tar::EntryType::Block),
            E::Mode("bin-suid", 0o4755),
            E::Mode("bin-sgid", 0o2711),
            E::Xattrs(
                "attrs",
                &[
                    ("SCHILY.xattr.user.keep", b"kept"),
                    ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
                    ("SCHILY.xattr.trusted.evil", b"1"),
                    ("SCHILY.xattr.security.selinux", b"evil_t"),
                ],
            ),
            E::Dir("opaque/"),
            E::File("opaque/.wh..wh..opq", b""),
            E::File(".wh.gone", b""),
        ]),
    )
    .expect("import a layer with devices and xattrs");
    assert!(layer_dir.join("dev").is_dir());
    assert!(
        !layer_dir.join("dev/mem").exists(),
        "a char device was created"
    );
    assert!(
        !layer_dir.join("dev/sda").exists(),
        "a block device was created"
    );
    let mode = |n: &str| fs::metadata(layer_dir.join(n)).expect("stat").mode() & 0o7777;
    assert_eq!(mode("bin-suid"), 0o4755, "set-uid bit kept");
    assert_eq!(mode("bin-sgid"), 0o2711, "set-gid bit kept");
    let f = layer_dir.join("attrs");
    assert_eq!(xattr(&f, "user.keep").as_deref(), Some(&b"kept"[..]));
    assert_eq!(
        xattr(&f, "trusted.overlay.opaque"),
        None,
        "trusted.* dropped"
    );
    assert_eq!(xattr(&f, "trusted.evil"), None, "trusted.* dropped");
    // Whiteouts and opaque markers themselves still work.
    assert_eq!(
        xattr(&layer_dir.join("opaque"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    let wh = fs::symlink_metadata(layer_dir.join("gone")).expect("whiteout");
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    // The store itself is private.
    let store = fs::metadata(env.dir.join("state/images")).expect("store");
    assert_eq!(store.mode() & 0o777, 0o700);
}

#[tokio::test]
#[ignore = "needs root"]
async fn malformed_digests_in_a_layout_are_refused() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let decoy = Decoy::new();
    let hex = "ab".repeat(32);
    let traversal = format!("sha256:../../../..//./././{}", decoy.relative());
    let bad = [
        traversal.clone(),
        format!("sha256:{}", hex.to_uppercase()),
        format!("sha256:{}", &hex[2..]),
        format!("sha256:{hex}00"),
    ];
    let good = || vec![layer(evil_tar(&[E::File("f", b"fine")]), Comp::Gzip)];
    for d in &bad {
        let watch = Watch::new(&env, &decoy);
        for (case, layout) in [
            (
                "diff_id",
                Layout {
                    diff_ids: Some(vec![d.clone()]),
                    ..Layout::of(good())
                },
            ),
            (
                "layer",
                Layout {
                    layer_digests: Some(vec![d.clone()]),
                    ..Layout::of(good())
                },
            ),
            (
                "index",
                Layout {
                    manifest_digest: Some(d),
                    ..Layout::of(good())
                },
            ),
        ] {
            let err = import(&env, case, &layout).expect_err(case);
            assert_eq!(err.kind(), ErrorKind::Invalid, "{case} {d}: {err}");
            assert!(err.to_string().contains(&format!("{d:?}")), "{case}: {err}");
            watch.unchanged(&env, &decoy, case);
        }
    }
}

#[test]
#[ignore = "needs root"]
fn records_naming_bad_digests_are_refused() {
    if !common::is_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let store = clawdspace_runtime::image::ImageStore::open(dir.path()).expect("store");
    let refs = dir.path().join("images/refs");
    // A record planted on disk naming a host directory as its layer.
    let img = clawdspace_runtime::image::Image {
        reference: "planted:1".into(),
        layers: vec!["sha256:../../../../../../etc".into()],
        config: Default::default(),
    };
    assert!(store.put(&img).is_err(), "put refuses it");
    let h = hex::encode(sha2::Sha256::digest(b"planted:1"));
    fs::write(
        refs.join(format!("{h}.json")),
        serde_json::to_vec(&img).expect("json"),
    )
    .expect("record");
    let err = store.resolve("planted:1").expect_err("a bad record");
    assert!(err.to_string().contains("sha256:../../"), "{err}");
    assert!(store.list().expect("list").is_empty(), "listed");
    assert!(store.layer_dir("sha256:../../etc").is_err());
}

// ---------------------------------------------------------------- registry

fn have_registry() -> bool {
    std::process::Command::new("docker-registry")
        .arg("--version")
        .output()
        .is_ok()
}

/// A registry and a runtime reaching it with `limits`.
async fn registry_env(limits: ImageLimits) -> Option<(Registry, TestEnv)> {
    if !common::is_root() || !have_registry() {
        eprintln!("skipped: needs root and docker-registry");
        return None;
    }
    let reg = Registry::start(None);
    let env = TestEnv::with_registries(RegistryConfig {
        insecure: vec![reg.host.clone()],
        limits,
        ..Default::default()
    })
    .await?;
    Some((reg, env))
}

/// Pushes an image with a config of our making (`diff_ids`, `env`) and
/// manifest `annotations`.
async fn push_raw(
    reg: &Registry,
    reference: &str,
    layers: Vec<ImageLayer>,
    diff_ids: &[String],
    env: &[String],
    annotations: Option<BTreeMap<String, String>>,
) {
    let v = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Env": env },
        "rootfs": { "type": "layers", "diff_ids": diff_ids }
    });
    let cfg = Config::new(
        serde_json::to_vec(&v).expect("json"),
        "application/vnd.oci.image.config.v1+json".into(),
        None,
    );
    let manifest = OciImageManifest::build(&layers, &cfg, annotations);
    reg.client()
        .push(
            &reference.parse().expect("reference"),
            &layers,
            cfg,
            &RegistryAuth::Anonymous,
            Some(manifest),
        )
        .await
        .expect("push");
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_pulled_layer_through_a_symlink_is_refused_naming_the_entry() {
    let Some((reg, env)) = registry_env(ImageLimits::default()).await else {
        return;
    };
    let decoy = Decoy::new();
    let watch = Watch::new(&env, &decoy);
    let abs = decoy.dir.display().to_string();
    let (blob, diff) = layer(
        evil_tar(&[E::Symlink("a", &abs), E::File("a/.wh.victim", b"")]),
        Comp::Gzip,
    );
    let reference = format!("{}/evil/symlink:1", reg.host);
    push_raw(&reg, &reference, vec![blob], &[diff], &[], None).await;
    let err = env
        .rt()
        .pull(&reference, None)
        .await
        .expect_err("evil layer");
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    assert!(err.to_string().contains("a/.wh.victim"), "{err}");
    assert!(err.to_string().contains("symlink"), "{err}");
    watch.unchanged(&env, &decoy, "pull");
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_diff_id_naming_a_host_directory_is_refused() {
    let Some((reg, env)) = registry_env(ImageLimits::default()).await else {
        return;
    };
    let decoy = Decoy::new();
    let watch = Watch::new(&env, &decoy);
    let hex = "cd".repeat(32);
    for (i, bad) in [
        format!("sha256:../../../..//./././{}", decoy.relative()),
        format!("sha256:{}", hex.to_uppercase()),
        format!("sha256:{}", &hex[1..]),
    ]
    .iter()
    .enumerate()
    {
        let (blob, _) = layer(evil_tar(&[E::File("f", b"fine")]), Comp::Gzip);
        let reference = format!("{}/evil/diffid:{i}", reg.host);
        push_raw(
            &reg,
            &reference,
            vec![blob],
            std::slice::from_ref(bad),
            &[],
            None,
        )
        .await;
        let err = env
            .rt()
            .pull(&reference, None)
            .await
            .expect_err("bad diff_id");
        assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        assert!(env.rt().images().get(&reference).expect("get").is_none());
        watch.unchanged(&env, &decoy, bad);
    }
}

#[tokio::test]
#[ignore = "needs root"]
async fn oversized_manifests_and_configs_are_refused() {
    let limits = ImageLimits {
        max_manifest_bytes: 4096,
        ..ImageLimits::default()
    };
    let Some((reg, env)) = registry_env(limits).await else {
        return;
    };
    let decoy = Decoy::new();
    let watch = Watch::new(&env, &decoy);
    let (blob, diff) = layer(evil_tar(&[E::File("f", b"fine")]), Comp::Gzip);
    let big = BTreeMap::from([("padding".to_string(), "x".repeat(8192))]);
    let reference = format!("{}/evil/bigmanifest:1", reg.host);
    push_raw(
        &reg,
        &reference,
        vec![blob.clone()],
        std::slice::from_ref(&diff),
        &[],
        Some(big),
    )
    .await;
    let err = env
        .rt()
        .pull(&reference, None)
        .await
        .expect_err("big manifest");
    assert!(err.to_string().contains("manifest"), "{err}");
    assert!(
        err.to_string()
            .contains("larger than the limit of 4096 bytes"),
        "{err}"
    );
    let reference = format!("{}/evil/bigconfig:1", reg.host);
    let env_vars = vec![format!("PAD={}", "y".repeat(8192))];
    push_raw(
        &reg,
        &reference,
        vec![blob.clone()],
        std::slice::from_ref(&diff),
        &env_vars,
        None,
    )
    .await;
    let err = env
        .rt()
        .pull(&reference, None)
        .await
        .expect_err("big config");
    assert!(
        err.to_string()
            .contains("image config is larger than the limit"),
        "{err}"
    );
    watch.unchanged(&env, &decoy, "oversized");
    // Within the limits the same layer pulls.
    let reference = format!("{}/evil/fine:1", reg.host);
    push_raw(&reg, &reference, vec![blob], &[diff], &[], None).await;
    env.rt()
        .pull(&reference, None)
        .await
        .expect("a small image pulls");
}

/// A gzip layer of one `size`-byte file of zeros (a few KiB compressed).
fn zeros_layer(name: &str, size: usize) -> (ImageLayer, String) {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(size as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, name, std::io::repeat(0).take(size as u64))
        .expect("tar");
    let tar = b.into_inner().expect("tar");
    layer(tar, Comp::Gzip)
}

use std::io::Read as _;

#[tokio::test]
#[ignore = "needs root"]
async fn decompression_bombs_stop_at_the_layer_and_image_caps() {
    let limits = ImageLimits {
        max_layer_bytes: 8 << 20,
        max_image_bytes: 12 << 20,
        ..ImageLimits::default()
    };
    let Some((reg, env)) = registry_env(limits).await else {
        return;
    };
    let decoy = Decoy::new();
    let watch = Watch::new(&env, &decoy);
    // 64 MiB of zeros inflating from well under the compressed cap.
    let (bomb, diff) = zeros_layer("bomb", 64 << 20);
    assert!(bomb.data.len() < 1 << 20, "compressed {}", bomb.data.len());
    let reference = format!("{}/evil/bomb:1", reg.host);
    push_raw(
        &reg,
        &reference,
        vec![bomb.clone()],
        std::slice::from_ref(&diff),
        &[],
        None,
    )
    .await;
    let err = env.rt().pull(&reference, None).await.expect_err("bomb");
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    assert!(
        err.to_string()
            .contains("layer is larger than the limit of 8388608 bytes"),
        "{err}"
    );
    watch.unchanged(&env, &decoy, "bomb");
    // The same bomb from an OCI layout.
    let err = import(&env, "bomb", &Layout::of(vec![(bomb, diff)])).expect_err("bomb");
    assert!(err.to_string().contains("larger than the limit"), "{err}");
    watch.unchanged(&env, &decoy, "layout bomb");
    // Two layers each under the layer cap, together over the image cap.
    let (l1, d1) = zeros_layer("one", 7 << 20);
    let (l2, d2) = zeros_layer("two", 7 << 20);
    let reference = format!("{}/evil/wide:1", reg.host);
    push_raw(
        &reg,
        &reference,
        vec![l1, l2],
        &[d1.clone(), d2.clone()],
        &[],
        None,
    )
    .await;
    let err = env
        .rt()
        .pull(&reference, None)
        .await
        .expect_err("image cap");
    assert!(
        err.to_string()
            .contains("image is larger than the limit of 12582912 bytes"),
        "{err}"
    );
    assert_eq!(watch.decoy, snapshot(&decoy.dir), "the host decoy changed");
    assert!(env.rt().images().get(&reference).expect("get").is_none());
    let tmp = env.dir.join("state/images/tmp");
    assert_eq!(fs::read_dir(tmp).expect("tmp").count(), 0, "staging left");
    // A layer that finished (verified, whole) before the other passed the
    // image cap may stay, content-addressed, for gc; never a partial one.
    for (d, name) in [(&d1, "one"), (&d2, "two")] {
        let dir = env.rt().images().layer_dir(d).expect("digest");
        if dir.exists() {
            let md = fs::metadata(dir.join(name)).expect("a whole layer");
            assert_eq!(md.len(), 7 << 20, "a partial layer stayed");
        }
    }
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_layer_whose_digest_does_not_match_leaves_nothing_unpacked() {
    let Some((reg, env)) = registry_env(ImageLimits::default()).await else {
        return;
    };
    let decoy = Decoy::new();
    let watch = Watch::new(&env, &decoy);
    // Plain tar: the flipped byte is file content, so the tar still unpacks
    // completely before the digest is known to be wrong.
    let data = vec![b'a'; 64 << 10];
    let (blob, diff) = layer(evil_tar(&[E::File("content", &data)]), Comp::Plain);
    let reference = format!("{}/evil/mismatch:1", reg.host);
    let digest = blob.sha256_digest();
    push_raw(
        &reg,
        &reference,
        vec![blob],
        std::slice::from_ref(&diff),
        &[],
        None,
    )
    .await;
    let file = reg.blob_file(&digest);
    let mut stored = fs::read(&file).expect("blob");
    stored[4096] ^= 1;
    fs::write(&file, stored).expect("corrupt");
    let err = env.rt().pull(&reference, None).await.expect_err("mismatch");
    assert_eq!(err.kind(), ErrorKind::Upstream, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("corrupt") || msg.contains("igest"), "{msg}");
    assert!(!env.rt().images().layer_dir(&diff).expect("digest").exists());
    watch.unchanged(&env, &decoy, "mismatch");
    // A config whose diff_id does not match the (intact) layer.
    let (blob, _) = layer(evil_tar(&[E::File("other", b"x")]), Comp::Gzip);
    let wrong = format!("sha256:{}", "ef".repeat(32));
    let reference = format!("{}/evil/diffmismatch:1", reg.host);
    push_raw(&reg, &reference, vec![blob], &[wrong], &[], None).await;
    let err = env
        .rt()
        .pull(&reference, None)
        .await
        .expect_err("diff_id mismatch");
    assert!(err.to_string().contains("corrupt"), "{err}");
    watch.unchanged(&env, &decoy, "diff_id mismatch");
}

/// A registry whose token service answers with `token_bytes` bytes (no
/// Content-Length: the cap must hold while the body streams). Serves until
/// dropped; counts the token requests.
struct HostileTokenService {
    host: String,
    task: tokio::task::JoinHandle<()>,
}

impl HostileTokenService {
    async fn start(token_bytes: usize) -> HostileTokenService {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let host = listener.local_addr().expect("addr").to_string();
        let realm = format!("http://{host}/token");
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let realm = realm.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).to_string();
                    if head.starts_with("GET /token") {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"token\":\"")
                            .await;
                        let _ = s.write_all(&vec![b'a'; token_bytes]).await;
                        let _ = s.write_all(b"\"}").await;
                    } else {
                        let msg = format!(
                            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{realm}\",service=\"evil\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                        let _ = s.write_all(msg.as_bytes()).await;
                    }
                });
            }
        });
        HostileTokenService { host, task }
    }
}

impl Drop for HostileTokenService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
#[ignore = "needs root"]
async fn oversized_token_responses_are_refused() {
    let svc = HostileTokenService::start(64 << 10).await;
    let Some(env) = TestEnv::with_registries(RegistryConfig {
        insecure: vec![svc.host.clone()],
        limits: ImageLimits {
            max_manifest_bytes: 4096,
            ..ImageLimits::default()
        },
        ..Default::default()
    })
    .await
    else {
        return;
    };
    let decoy = Decoy::new();
    let watch = Watch::new(&env, &decoy);
    let err = env
        .rt()
        .pull(&format!("{}/evil/token:1", svc.host), None)
        .await
        .expect_err("a 64 KiB token");
    assert!(
        err.to_string().contains("token response for")
            && err
                .to_string()
                .contains("larger than the limit of 4096 bytes"),
        "{err}"
    );
    watch.unchanged(&env, &decoy, "token");
}
