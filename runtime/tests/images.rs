//! Images from a real registry (Debian's docker-registry on 127.0.0.1):
//! whiteouts, platforms, compression, corruption, auth, single flight.
//! Needs root and the docker-registry package; skipped otherwise.

mod common;

use std::fs;
use std::sync::Arc;

use clawdspace_runtime::image::RegistryConfig;
use clawdspace_runtime::{CreateSpace, Error, ErrorKind, SpaceStatus};
use common::registry::{layer, push, tar_of, tar_of_dir, Comp, Entry, Registry};
use common::TestEnv;
use oci_client::secrets::RegistryAuth;

fn have_registry() -> bool {
    std::process::Command::new("docker-registry")
        .arg("--version")
        .output()
        .is_ok()
}

async fn env_for(reg: &Registry) -> Option<TestEnv> {
    if !have_registry() {
        eprintln!("skipped: docker-registry not installed");
        return None;
    }
    TestEnv::with_registries(RegistryConfig {
        insecure: vec![reg.host.clone()],
        ..Default::default()
    })
    .await
}

/// A registry and a runtime that reaches it; None (test skipped) without
/// root or the docker-registry package.
async fn registry_env() -> Option<(Registry, TestEnv)> {
    if !common::is_root() || !have_registry() {
        return None;
    }
    let reg = Registry::start(None);
    let env = env_for(&reg).await?;
    Some((reg, env))
}

/// The busybox rootfs as a gzip layer.
fn busybox_layer(env: &TestEnv) -> (oci_client::client::ImageLayer, String) {
    layer(tar_of_dir(&env.dir.join("fixture-rootfs")), Comp::Gzip)
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_space_from_a_pulled_image_sees_files_env_user_and_whiteouts() {
    let Some((reg, env)) = registry_env().await else {
        return;
    };
    let client = reg.client();
    let upper = tar_of(&[
        Entry::Dir("data/"),
        Entry::File("data/keep", b"kept"),
        Entry::File("data/.wh.gone", b""),
        Entry::Dir("cache/"),
        Entry::File("cache/.wh..wh..opq", b""),
        Entry::File("cache/new", b"new"),
    ]);
    let middle = tar_of(&[
        Entry::Dir("data/"),
        Entry::File("data/gone", b"deleted above"),
        Entry::Dir("cache/"),
        Entry::File("cache/old", b"hidden by opaque dir"),
        Entry::Dir("cache/olddir/"),
    ]);
    let reference = format!("{}/test/layers:1", reg.host);
    push(
        &client,
        &reference,
        vec![
            busybox_layer(&env),
            layer(middle, Comp::Gzip),
            layer(upper, Comp::Plain),
        ],
        &["FOO=bar", "PATH=/bin:/usr/bin"],
        "amd64",
        &RegistryAuth::Anonymous,
    )
    .await;
    // Create pulls the missing image.
    let s = env
        .rt()
        .create(CreateSpace {
            image: reference.clone(),
            memory: 64 << 20,
            nano_cpus: 1_000_000_000,
            pids_limit: None,
            ..CreateSpace::named(clawdspace_runtime::SpaceName::new("pulled").expect("space name"))
        })
        .await
        .expect("create from registry image");
    assert_eq!(
        (s.status, s.image.as_str()),
        (SpaceStatus::Running, reference.as_str())
    );
    assert_eq!(
        env.out(
            "pulled",
            "ls /data; echo --; ls /cache; echo --; echo $FOO; id -un"
        )
        .await,
        "keep\n--\nnew\n--\nbar\nsandbox"
    );
}

#[tokio::test]
#[ignore = "needs root"]
async fn an_index_resolves_to_this_hosts_platform_and_zstd_layers_work() {
    let Some((reg, env)) = registry_env().await else {
        return;
    };
    let client = reg.client();
    let anon = RegistryAuth::Anonymous;
    let host_arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    let mut entries = Vec::new();
    for arch in ["amd64", "arm64"] {
        let r = format!("{}/test/multi:{arch}", reg.host);
        let marker = tar_of(&[Entry::File("arch", arch.as_bytes())]);
        push(
            &client,
            &r,
            vec![busybox_layer(&env), layer(marker, Comp::Zstd)],
            &[],
            arch,
            &anon,
        )
        .await;
        let parsed: oci_client::Reference = r.parse().expect("ref");
        let (raw, digest) = client
            .pull_manifest_raw(
                &parsed,
                &anon,
                &["application/vnd.oci.image.manifest.v1+json"],
            )
            .await
            .expect("manifest");
        entries.push(oci_client::manifest::ImageIndexEntry {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest,
            size: raw.len() as i64,
            platform: Some(oci_client::manifest::Platform {
                architecture: if arch == "amd64" {
                    libcontainer::oci_spec::image::Arch::Amd64
                } else {
                    libcontainer::oci_spec::image::Arch::ARM64
                },
                os: libcontainer::oci_spec::image::Os::Linux,
                os_version: None,
                os_features: None,
                variant: (arch == "arm64").then(|| "v8".into()),
                features: None,
            }),
            annotations: None,
            artifact_type: None,
        });
    }
    let index_ref = format!("{}/test/multi:latest", reg.host);
    let index = oci_client::manifest::OciImageIndex {
        schema_version: 2,
        media_type: Some("application/vnd.oci.image.index.v1+json".into()),
        manifests: entries,
        artifact_type: None,
        annotations: None,
    };
    client
        .push_manifest_list(&index_ref.parse().expect("ref"), &anon, index)
        .await
        .expect("push index");
    let img = env.rt().pull(&index_ref, None).await.expect("pull index");
    assert_eq!(img.layers.len(), 2);
    let top = env.rt().images().layer_dir(&img.layers[1]).expect("digest");
    assert_eq!(
        fs::read_to_string(top.join("arch")).expect("marker"),
        host_arch
    );
}

#[tokio::test]
#[ignore = "needs root"]
async fn missing_tags_and_unreachable_registries_are_clear_errors() {
    let Some((reg, env)) = registry_env().await else {
        return;
    };
    let missing = format!("{}/test/nothing:here", reg.host);
    let err = env
        .rt()
        .pull(&missing, None)
        .await
        .expect_err("missing tag");
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("Image not found: {missing}: ")),
        "{err}"
    );
    // A registry that is not there: 502-class, and create leaves nothing.
    let dead = "127.0.0.1:1/test/x:1";
    let err = env
        .rt()
        .create(CreateSpace {
            image: dead.into(),
            memory: 64 << 20,
            nano_cpus: 1_000_000_000,
            pids_limit: None,
            ..CreateSpace::named(clawdspace_runtime::SpaceName::new("nope").expect("space name"))
        })
        .await
        .expect_err("unreachable");
    assert_eq!(err.kind(), ErrorKind::Upstream, "{err}");
    assert!(env.rt().list().is_empty());
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_corrupt_blob_is_refused_and_nothing_is_stored() {
    let Some((reg, env)) = registry_env().await else {
        return;
    };
    let client = reg.client();
    let reference = format!("{}/test/corrupt:1", reg.host);
    let (blob, diff_id) = layer(tar_of(&[Entry::File("f", &[7u8; 4096])]), Comp::Gzip);
    let manifest = push(
        &client,
        &reference,
        vec![(blob, diff_id.clone())],
        &[],
        "amd64",
        &RegistryAuth::Anonymous,
    )
    .await;
    let file = reg.blob_file(&manifest.layers[0].digest);
    let mut data = fs::read(&file).expect("blob");
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    fs::write(&file, data).expect("corrupt blob");
    let err = env.rt().pull(&reference, None).await.expect_err("corrupt");
    assert_eq!(err.kind(), ErrorKind::Upstream, "{err}");
    assert!(
        err.to_string().contains("corrupt") || err.to_string().contains("digest"),
        "{err}"
    );
    assert!(
        !env.rt()
            .images()
            .layer_dir(&diff_id)
            .expect("digest")
            .exists(),
        "no layer stored"
    );
    assert!(
        env.rt().images().get(&reference).expect("get").is_none(),
        "no image stored"
    );
    let tmp = env.dir.join("state/images/tmp");
    assert_eq!(
        fs::read_dir(tmp).expect("tmp").count(),
        0,
        "no partial download left"
    );
}

#[tokio::test]
#[ignore = "needs root"]
async fn concurrent_pulls_share_one_download_and_shared_layers_are_stored_once() {
    let Some((reg, env)) = registry_env().await else {
        return;
    };
    let client = reg.client();
    let anon = RegistryAuth::Anonymous;
    let a = format!("{}/test/shared:a", reg.host);
    let b = format!("{}/test/shared:b", reg.host);
    let base = layer(tar_of(&[Entry::File("base", &[1u8; 10000])]), Comp::Gzip);
    push(
        &client,
        &a,
        vec![
            base.clone(),
            layer(tar_of(&[Entry::File("a", b"a")]), Comp::Gzip),
        ],
        &[],
        "amd64",
        &anon,
    )
    .await;
    push(
        &client,
        &b,
        vec![base, layer(tar_of(&[Entry::File("b", b"b")]), Comp::Gzip)],
        &[],
        "amd64",
        &anon,
    )
    .await;
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ev = events.clone();
    let progress: clawdspace_runtime::image::ProgressFn =
        Arc::new(move |p| ev.lock().expect("lock").push(p));
    let (r1, r2) = tokio::join!(env.rt().pull(&a, Some(progress)), env.rt().pull(&a, None));
    let (i1, i2) = (r1.expect("pull 1"), r2.expect("pull 2"));
    assert_eq!(i1, i2);
    assert_eq!(
        env.rt().puller().downloads(),
        2,
        "two layers, downloaded once"
    );
    let complete = events
        .lock()
        .expect("lock")
        .iter()
        .any(|p| p.done == p.total && p.total > 0);
    assert!(complete, "progress reaches total");
    env.rt().pull(&b, None).await.expect("pull b");
    assert_eq!(
        env.rt().puller().downloads(),
        3,
        "the shared base layer is not fetched again"
    );
    // busybox (the test fixture), base, a, b.
    let layers = env.dir.join("state/images/layers/sha256");
    assert_eq!(fs::read_dir(layers).expect("layers").count(), 4);
}

#[tokio::test]
#[ignore = "needs root"]
async fn registry_credentials_are_used_and_wrong_ones_are_refused() {
    if !common::is_root() || !have_registry() {
        return;
    }
    let reg = Registry::start(Some(("alice", "s3cret")));
    let good = RegistryAuth::Basic("alice".into(), "s3cret".into());
    let reference = format!("{}/private/img:1", reg.host);
    // Credentials in a docker-style auth file.
    let auth_dir = tempfile::tempdir().expect("tmp");
    let write_auth = |user: &str, pass: &str| {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        let f = auth_dir.path().join(format!("{user}-{pass}.json"));
        fs::write(
            &f,
            format!(r#"{{"auths":{{"{}":{{"auth":"{b64}"}}}}}}"#, reg.host),
        )
        .expect("auth");
        f
    };
    let wrong = write_auth("alice", "wrong");
    let Some(env) = TestEnv::with_registries(RegistryConfig {
        insecure: vec![reg.host.clone()],
        auth_files: vec![wrong],
        ..Default::default()
    })
    .await
    else {
        return;
    };
    push(
        &reg.client(),
        &reference,
        vec![busybox_layer(&env)],
        &[],
        "amd64",
        &good,
    )
    .await;
    let err = env
        .rt()
        .pull(&reference, None)
        .await
        .expect_err("wrong password");
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    let msg = err.to_string().to_lowercase();
    assert!(
        msg.contains("auth") || msg.contains("denied") || msg.contains("unauthorized"),
        "{msg}"
    );
    drop(env);
    let Some(env) = TestEnv::with_registries(RegistryConfig {
        insecure: vec![reg.host.clone()],
        auth_files: vec![write_auth("alice", "s3cret")],
        ..Default::default()
    })
    .await
    else {
        return;
    };
    env.rt()
        .pull(&reference, None)
        .await
        .expect("pull with credentials");
}

#[tokio::test]
#[ignore = "needs root"]
async fn images_in_use_cannot_be_removed_and_gc_keeps_what_is_used() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    env.space("user").await;
    let err = env.rt().remove_image(common::IMAGE).expect_err("in use");
    assert!(matches!(err, Error::ImageInUse(..)), "{err}");
    env.rt()
        .images()
        .tag(common::IMAGE, "alias:1")
        .expect("tag");
    env.rt().images().remove("alias:1").expect("remove alias");
    assert_eq!(env.rt().gc_images().expect("gc"), 0, "layer still used");
    env.rt().destroy("user").await.expect("destroy");
    env.rt().remove_image(common::IMAGE).expect("remove");
    assert_eq!(env.rt().gc_images().expect("gc"), 1);
}

/// Writes an OCI image layout (as `skopeo copy oci:` or umoci would) with
/// the given layers; returns its directory.
fn write_layout(
    dir: &std::path::Path,
    layers: Vec<(oci_client::client::ImageLayer, String)>,
    env: &[&str],
) {
    use sha2::Digest;
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).expect("layout dirs");
    let put = |data: &[u8]| {
        let hex = hex::encode(sha2::Sha256::digest(data));
        fs::write(blobs.join(&hex), data).expect("blob");
        (format!("sha256:{hex}"), data.len())
    };
    let diff_ids: Vec<String> = layers.iter().map(|l| l.1.clone()).collect();
    let cfg = common::registry::config(&diff_ids, env, "amd64");
    let (cfg_digest, cfg_size) = put(&cfg.data);
    let layer_descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|(l, _)| {
            let (d, n) = put(&l.data);
            serde_json::json!({"mediaType": l.media_type, "digest": d, "size": n})
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": cfg_size},
        "layers": layer_descs
    });
    let (m_digest, m_size) = put(&serde_json::to_vec(&manifest).expect("json"));
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m_digest,
            "size": m_size, "annotations": {"org.opencontainers.image.ref.name": "1"}}]
    });
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("index");
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
}

#[tokio::test]
#[ignore = "needs root"]
async fn an_oci_layout_or_archive_imports_and_a_corrupt_one_is_refused() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let layout = env.dir.join("layout");
    let top = tar_of(&[
        Entry::Dir("opt/"),
        Entry::File("opt/hello", b"from a layout"),
    ]);
    write_layout(
        &layout,
        vec![busybox_layer(&env), layer(top, Comp::Zstd)],
        &["GREETING=hi"],
    );
    let img = env
        .rt()
        .images()
        .import_oci(&layout, "layout:1", Some("1"))
        .expect("import layout");
    assert_eq!(img.config.env, vec!["GREETING=hi".to_string()]);
    // The same layout as a tar archive.
    let archive = env.dir.join("layout.tar");
    let mut b = tar::Builder::new(fs::File::create(&archive).expect("archive"));
    b.append_dir_all(".", &layout).expect("tar layout");
    b.finish().expect("finish");
    drop(b);
    env.rt()
        .images()
        .import_oci(&archive, "layout:archived", None)
        .expect("import archive");
    env.rt()
        .create(CreateSpace {
            image: "layout:archived".into(),
            memory: 64 << 20,
            nano_cpus: 1_000_000_000,
            pids_limit: None,
            ..CreateSpace::named(
                clawdspace_runtime::SpaceName::new("fromlayout").expect("space name"),
            )
        })
        .await
        .expect("create");
    assert_eq!(
        env.out("fromlayout", "cat /opt/hello; echo; echo $GREETING")
            .await,
        "from a layout\nhi"
    );
    // A blob that does not match its digest is refused; nothing is stored.
    let bad = env.dir.join("bad-layout");
    let junk = tar_of(&[Entry::File("junk", &[9u8; 4096])]);
    let (blob, diff_id) = layer(junk, Comp::Plain);
    write_layout(&bad, vec![(blob, diff_id.clone())], &[]);
    for e in fs::read_dir(bad.join("blobs/sha256"))
        .expect("blobs")
        .flatten()
    {
        let mut data = fs::read(e.path()).expect("blob");
        if data.len() > 4096 {
            let mid = data.len() / 2;
            data[mid] ^= 0x55;
            fs::write(e.path(), data).expect("corrupt");
        }
    }
    let err = env
        .rt()
        .images()
        .import_oci(&bad, "bad:1", None)
        .expect_err("corrupt layout");
    assert!(err.to_string().contains("corrupt"), "{err}");
    assert!(!env
        .rt()
        .images()
        .layer_dir(&diff_id)
        .expect("digest")
        .exists());
    assert!(env.rt().images().get("bad:1").expect("get").is_none());
}
