//! GPU spaces over HTTP with a test CDI vendor standing in for
//! `nvidia.com/gpu` (this machine has no GPU): `gpu`, the `gpus`
//! extension, capabilities, and the errors; and with only a (fake) NVIDIA
//! driver installed. Needs root.

mod common;

use std::fs;

use common::{Daemon, IMAGE};
use serde_json::{json, Value};

#[path = "../../runtime/tests/common/cdi.rs"]
mod cdi;

use cdi::{write_fake_driver, write_test_vendor, KIND};

fn bad(msg: &str) -> (reqwest::StatusCode, Value) {
    (reqwest::StatusCode::BAD_REQUEST, json!({ "error": msg }))
}

#[tokio::test]
#[ignore = "needs root"]
async fn gpu_spaces_get_the_cdi_devices_they_ask_for() {
    let dir = std::env::temp_dir().join(format!("clawdspace-cdi-{:08x}", rand::random::<u32>()));
    let _rm = RmDir(dir.clone());
    let cdi = write_test_vendor(&dir);
    let cdi_dirs = cdi.display().to_string();
    let Some(d) = Daemon::start(&[
        ("CLAWDSPACE_CDI_DIRS", cdi_dirs.as_str()),
        ("CLAWDSPACE_GPU_CDI_KIND", KIND),
        ("CLAWDSPACE_GPU_IMAGE", IMAGE),
    ])
    .await
    else {
        return;
    };
    let (_, caps) = d.get("/api/system/capabilities").await;
    assert_eq!(caps["gpuRuntime"], "cdi", "{caps}");
    let (_, sys) = d.get("/api/system").await;
    assert_eq!(sys["capabilities"]["gpuRuntime"], "cdi", "{sys}");

    let (s, v) = d
        .post(
            "/api/spaces",
            json!({"name": "g", "gpu": true, "memory": "128m"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let both = json!([format!("{KIND}=0"), format!("{KIND}=1")]);
    assert_eq!(v["space"]["gpus"], both);
    let r = d
        .exec(
            "g",
            json!("test -c /dev/fakegpu1 && echo $FAKEGPU_0 $FAKEGPU_1 && id -u && pwd"),
        )
        .await;
    assert_eq!(r["stdout"], "yes yes\n0\n/workspace", "{r}");
    let (_, list) = d.get("/api/spaces").await;
    assert_eq!(list["spaces"][0]["gpus"], both);

    // The extension: a list by index, implying gpu.
    let (s, v) = d
        .post(
            "/api/spaces",
            json!({"name": "g1", "gpus": [0], "memory": "128m"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["space"]["gpus"], json!([format!("{KIND}=0")]));
    // A space without a GPU has neither the device nor the gpus field.
    let plain = d.create("plain").await;
    assert!(plain.get("gpus").is_none(), "{plain}");
    let r = d.exec("plain", json!("ls /dev/fakegpu0")).await;
    assert_ne!(r["exitCode"], 0);

    let invalid = "Invalid gpus (a count of at least 1, or a list of GPU indexes or UUIDs)";
    for (body, want) in [
        (
            json!({"name": "x", "gpus": 3}),
            bad("Invalid gpus: 3 requested, this server has 2"),
        ),
        (
            json!({"name": "x", "gpus": ["GPU-nope"]}),
            bad("Invalid gpus: unknown GPU GPU-nope"),
        ),
        (json!({"name": "x", "gpus": 0}), bad(invalid)),
        (json!({"name": "x", "gpus": []}), bad(invalid)),
        (json!({"name": "x", "gpus": "1"}), bad(invalid)),
        (json!({"name": "x", "gpus": [true]}), bad(invalid)),
        (
            json!({"name": "x", "gpu": false, "gpus": 1}),
            bad("Invalid gpus: gpu is false"),
        ),
    ] {
        assert_eq!(d.post("/api/spaces", body.clone()).await, want, "{body}");
    }
    let (_, list) = d.get("/api/spaces").await;
    assert_eq!(
        list["spaces"].as_array().map(Vec::len),
        Some(3),
        "nothing half-made"
    );
    for n in ["g", "g1", "plain"] {
        let (s, _) = d
            .call(reqwest::Method::DELETE, &format!("/api/spaces/{n}"), None)
            .await;
        assert_eq!(s, 200);
    }
}

#[tokio::test]
#[ignore = "needs root"]
async fn with_only_the_driver_gpu_runtime_is_driver() {
    let dir = std::env::temp_dir().join(format!("clawdspace-drv-{:08x}", rand::random::<u32>()));
    let _rm = RmDir(dir.clone());
    fs::create_dir_all(&dir).expect("dir");
    // Device nodes need root: Daemon::start skips the test otherwise.
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let root = write_fake_driver(&dir, "999.1.1").display().to_string();
    let Some(d) = Daemon::start(&[
        ("CLAWDSPACE_NVIDIA_DRIVER_ROOT", root.as_str()),
        ("CLAWDSPACE_GPU_IMAGE", IMAGE),
    ])
    .await
    else {
        return;
    };
    let (_, caps) = d.get("/api/system/capabilities").await;
    assert_eq!(caps["gpuRuntime"], "driver", "{caps}");
    let (_, sys) = d.get("/api/system").await;
    assert_eq!(sys["capabilities"]["gpuRuntime"], "driver", "{sys}");

    let (s, v) = d
        .post(
            "/api/spaces",
            json!({"name": "g", "gpus": [1], "memory": "128m"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["space"]["gpus"], json!(["nvidia.com/gpu=1"]));
    let r = d
        .exec(
            "g",
            json!("cat /usr/local/nvidia/lib64/libcuda.so.1 && nvidia-smi && test -c /dev/nvidia1 && echo $NVIDIA_VISIBLE_DEVICES"),
        )
        .await;
    assert_eq!(
        r["stdout"], "libcuda 999.1.1\nfake nvidia-smi 999.1.1\n1",
        "{r}"
    );
    let (s, _) = d.call(reqwest::Method::DELETE, "/api/spaces/g", None).await;
    assert_eq!(s, 200);
}

/// Removes a directory when dropped.
struct RmDir(std::path::PathBuf);

impl Drop for RmDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
