//! GPU passthrough without a GPU: a test CDI vendor (`clawdspace.test/gpu`)
//! whose "GPUs" are harmless host character devices goes through the same
//! code path as `nvidia.com/gpu`, a fake `nvidia-container-runtime-hook`
//! shows the hook path, and a fake driver tree (device nodes of harmless
//! devices, text files for libraries) the driver-only path. Needs root;
//! skipped otherwise.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clawdspace_runtime::gpu::{driver, GpuBackend, GpuConfig, GpuRequest};
use clawdspace_runtime::{CreateSpace, Error, ErrorKind, SpaceStatus};
use common::{wait_until, TestEnv, IMAGE};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use common::cdi::{triple, write_fake_driver, write_test_vendor, FAKE_UUIDS, KIND};

/// The test vendor's specs (`common::cdi`) as this runtime's GPU settings.
fn fake_vendor(dir: &Path) -> GpuConfig {
    GpuConfig {
        cdi_dirs: vec![
            PathBuf::from("/nonexistent-cdi-dir"),
            write_test_vendor(dir),
        ],
        cdi_kind: KIND.into(),
        hook: None,
        ..GpuConfig::default()
    }
}

fn gpu_req(name: &str, gpus: Option<GpuRequest>) -> CreateSpace {
    CreateSpace {
        image: IMAGE.into(),
        memory: 128 << 20,
        nano_cpus: 1_000_000_000,
        gpu: true,
        gpus,
        ..CreateSpace::named(clawdspace_runtime::SpaceName::new(name).expect("space name"))
    }
}

/// Exit code of `sh -c cmd` in `name`.
async fn code(env: &TestEnv, name: &str, cmd: &str) -> i32 {
    env.sh(name, cmd).await.exit_code
}

#[tokio::test]
#[ignore = "needs root"]
async fn cdi_devices_env_mounts_and_hooks_reach_only_spaces_that_ask() {
    let Some(mut env) = TestEnv::new().await else {
        return;
    };
    let gpu = fake_vendor(&env.dir);
    env.reopen_with_gpu(gpu).await;
    let rt = env.rt().clone();
    assert_eq!(rt.gpu().probe().backend, Some(GpuBackend::Cdi));
    assert_eq!(rt.gpu().probe().cdi_devices, ["0", "1"]);

    // gpu: true = every GPU of the kind.
    let all = rt.create(gpu_req("g-all", None)).await.expect("create");
    let a = all.gpus.as_ref().expect("assignment");
    assert_eq!(a.backend, GpuBackend::Cdi);
    assert_eq!(a.devices, [format!("{KIND}=0"), format!("{KIND}=1")]);
    assert_eq!(
        code(
            &env,
            "g-all",
            "test -c /dev/fakegpu0 && test -c /dev/fakegpu1"
        )
        .await,
        0
    );
    assert_eq!(
        env.out(
            "g-all",
            "echo $FAKEGPU_DRIVER $FAKEGPU_0 $FAKEGPU_1; id -u; pwd"
        )
        .await,
        "1.0 yes yes\n0\n/workspace"
    );
    assert_eq!(
        env.out("g-all", "cat /usr/local/fakegpu/version").await,
        "fake-driver 1.0"
    );
    // The driver mount is read-only.
    assert_ne!(code(&env, "g-all", "touch /usr/local/fakegpu/x").await, 0);
    // The createContainer hook ran with this container's state.
    let log = fs::read_to_string(env.dir.join("hook.log")).expect("hook log");
    let states: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).expect("state JSON"))
        .collect();
    assert!(
        states.iter().any(|s| s["id"] == all.id.as_str()),
        "hook saw the space: {log}"
    );

    // One GPU by name: only its node, and the device cgroup allows it.
    let one = rt
        .create(gpu_req(
            "g-one",
            Some(GpuRequest::Devices(vec!["1".into()])),
        ))
        .await
        .expect("create g-one");
    assert_eq!(one.gpus.expect("assignment").devices, [format!("{KIND}=1")]);
    assert_eq!(code(&env, "g-one", "test -e /dev/fakegpu0").await, 1);
    assert_eq!(code(&env, "g-one", ": < /dev/fakegpu1").await, 0);
    assert_eq!(
        env.out("g-one", "echo ${FAKEGPU_0:-none} $FAKEGPU_1").await,
        "none yes"
    );

    // A count takes the lowest indexes. GPU 1's device (10:229) is not
    // allowed there: root can make the node (CAP_MKNOD) but not open it.
    rt.create(gpu_req("g-count", Some(GpuRequest::Count(1))))
        .await
        .expect("create g-count");
    assert_eq!(
        code(
            &env,
            "g-count",
            "test -c /dev/fakegpu0 && ! test -e /dev/fakegpu1"
        )
        .await,
        0
    );
    let o = env
        .sh(
            "g-count",
            // In /dev: the rest of the rootfs is `nodev` (EACCES before
            // the device cgroup is even asked).
            "mknod /dev/stolen c 10 229 && echo made && : < /dev/stolen",
        )
        .await;
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "made");
    assert_ne!(o.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not permitted"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // A space without a GPU gets nothing of it.
    env.space("plain").await;
    assert_eq!(
        env.out(
            "plain",
            "ls /dev | grep -c fakegpu; echo ${FAKEGPU_DRIVER:-none}; test -e /usr/local/fakegpu || echo nomount"
        )
        .await,
        "0\nnone\nnomount"
    );

    // Bad requests are refused before anything is made.
    for (req, msg) in [
        (
            GpuRequest::Count(3),
            "Invalid gpus: 3 requested, this server has 2",
        ),
        (
            GpuRequest::Devices(vec!["7".into()]),
            "Invalid gpus: unknown GPU 7",
        ),
    ] {
        match rt.create(gpu_req("g-bad", Some(req))).await {
            Err(Error::InvalidInput(m)) => assert_eq!(m, msg),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }
    assert!(rt.get("g-bad").is_err());

    // A restarted init gets its GPU again (the edits are applied at every
    // start, from the current CDI specs).
    kill(Pid::from_raw(one.init_pid.expect("pid")), Signal::SIGKILL).expect("kill init");
    assert!(
        wait_until(Duration::from_secs(10), || {
            rt.get("g-one")
                .is_ok_and(|n| n.init_pid != one.init_pid && n.status == SpaceStatus::Running)
        })
        .await,
        "restarted"
    );
    assert_eq!(code(&env, "g-one", ": < /dev/fakegpu1").await, 0);

    // And a daemon restart keeps the record of its GPUs.
    drop(rt);
    env.close().await;
    env.rt = Some(env.open().await);
    let back = env.rt().get("g-one").expect("still there");
    assert_eq!(
        back.gpus.expect("assignment").devices,
        [format!("{KIND}=1")]
    );
    for n in ["g-all", "g-one", "g-count", "plain"] {
        env.rt().destroy(n).await.expect("destroy");
    }
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_failing_gpu_hook_leaves_nothing_behind() {
    let Some(mut env) = TestEnv::new().await else {
        return;
    };
    let mut gpu = fake_vendor(&env.dir);
    gpu.cdi_kind = "clawdspace.test/broken".into();
    env.reopen_with_gpu(gpu).await;
    let err = env
        .rt()
        .create(gpu_req("g-broken", None))
        .await
        .expect_err("the hook fails");
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    assert!(err.to_string().contains("hooks"), "{err}");
    assert!(env.rt().list().is_empty());
    let spaces = env.dir.join("state/spaces");
    assert_eq!(fs::read_dir(&spaces).expect("spaces").count(), 0);
}

#[tokio::test]
#[ignore = "needs root"]
async fn nvidia_hook_runs_as_prestart_hook_with_the_container_state() {
    let Some(mut env) = TestEnv::new().await else {
        return;
    };
    let hook = env.dir.join("nvidia-container-runtime-hook");
    let out = env.dir.join("hook-out");
    fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$@\" > {o}.args\ncat > {o}.state\n",
            o = out.display()
        ),
    )
    .expect("write hook");
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).expect("chmod");
    env.reopen_with_gpu(GpuConfig {
        cdi_dirs: Vec::new(),
        hook: Some(hook),
        ..GpuConfig::default()
    })
    .await;
    assert_eq!(env.rt().gpu().probe().backend, Some(GpuBackend::NvidiaHook));
    let s = env
        .rt()
        .create(gpu_req("g-hook", None))
        .await
        .expect("create");
    let a = s.gpus.as_ref().expect("assignment");
    assert_eq!(
        (a.backend, a.devices.as_slice()),
        (GpuBackend::NvidiaHook, &["all".to_string()][..])
    );
    let args = fs::read_to_string(out.with_extension("args")).expect("hook ran");
    assert_eq!(args.trim(), "prestart");
    let state: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.with_extension("state")).expect("state"))
            .expect("state JSON");
    assert_eq!(state["id"], s.id.as_str());
    assert!(state["pid"].as_i64().is_some_and(|p| p > 0), "{state}");
    // The real hook reads the devices from the bundle's config.json.
    let bundle = state["bundle"].as_str().expect("bundle");
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(Path::new(bundle).join("config.json")).expect("config"))
            .expect("config JSON");
    let env_list = config["process"]["env"].as_array().expect("env");
    for want in [
        "NVIDIA_VISIBLE_DEVICES=all",
        "NVIDIA_DRIVER_CAPABILITIES=compute,utility",
    ] {
        assert!(env_list.iter().any(|e| e == want), "{want} in {env_list:?}");
    }
    assert_eq!(
        env.out("g-hook", "echo $NVIDIA_VISIBLE_DEVICES").await,
        "all"
    );
    env.rt().destroy("g-hook").await.expect("destroy");
}

#[tokio::test]
#[ignore = "needs root"]
async fn without_a_gpu_runtime_gpu_spaces_are_refused_with_what_to_install() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    assert_eq!(env.rt().gpu().probe().backend, None);
    match env.rt().create(gpu_req("g-none", None)).await {
        Err(Error::InvalidInput(m)) => {
            assert!(m.starts_with("GPU not available on this server"), "{m}");
            assert!(m.contains("nvidia-ctk cdi generate"), "{m}");
        }
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    assert!(env.rt().list().is_empty());
}

/// GPU settings with only the fake driver tree (no CDI spec, no hook).
fn driver_only(root: &Path) -> GpuConfig {
    GpuConfig {
        cdi_dirs: Vec::new(),
        hook: None,
        driver_root: Some(root.to_path_buf()),
        ..GpuConfig::default()
    }
}

/// `containerPath -> (hostPath, options)` of the generated mounts.
fn mounts_of(spec: &serde_json::Value) -> Vec<(String, String, String)> {
    spec["containerEdits"]["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| {
            (
                m["containerPath"].as_str().expect("path").to_string(),
                m["hostPath"].as_str().expect("host").to_string(),
                m["options"].as_array().expect("options")[0]
                    .as_str()
                    .expect("option")
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs root"]
async fn driver_edits_name_the_nodes_libraries_programs_and_environment() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let root = write_fake_driver(&env.dir, "999.1.1");
    let r = root.display().to_string();
    let key = driver::key(&root, None).expect("key").expect("a driver");
    assert_eq!(key.version, "999.1.1");
    let minors: Vec<(u32, &str)> = key
        .gpus
        .iter()
        .map(|g| (g.minor, g.uuid.as_str()))
        .collect();
    assert_eq!(minors, [(0, FAKE_UUIDS[0]), (1, FAKE_UUIDS[1])]);
    let g = driver::generate(&root, &key).expect("generate");
    assert!(g.warnings.is_empty(), "{:?}", g.warnings);
    assert_eq!(g.devices, ["0", "1", FAKE_UUIDS[0], FAKE_UUIDS[1], "all"]);
    let spec = serde_json::to_value(&g.spec).expect("spec JSON");
    assert_eq!(spec["kind"], "nvidia.com/gpu");

    // Devices: each GPU's node by index and UUID, all of them in `all`.
    let nodes = |v: &serde_json::Value| -> Vec<(String, String)> {
        v["deviceNodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| {
                (
                    n["path"].as_str().expect("path").into(),
                    n["hostPath"].as_str().expect("host").into(),
                )
            })
            .collect()
    };
    let dev = |n: &str| (format!("/dev/{n}"), format!("{r}/dev/{n}"));
    let device = |name: &str| {
        spec["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .find(|d| d["name"] == name)
            .map(|d| nodes(&d["containerEdits"]))
            .expect("device")
    };
    assert_eq!(device("0"), [dev("nvidia0")]);
    assert_eq!(device(FAKE_UUIDS[1]), [dev("nvidia1")]);
    assert_eq!(device("all"), [dev("nvidia0"), dev("nvidia1")]);
    assert_eq!(
        nodes(&spec["containerEdits"]),
        [
            dev("nvidiactl"),
            dev("nvidia-uvm"),
            dev("nvidia-uvm-tools"),
            dev("nvidia-modeset")
        ]
    );

    // Libraries at their sonames (the linker cache's native entries, then
    // the directory scan), programs in /usr/bin, the persistenced socket.
    let gnu = format!("{r}/usr/lib/{}", triple());
    let lib64 = format!("{r}/usr/local/nvidia/lib64");
    let want = [
        (
            "/usr/local/nvidia/lib64/libcuda.so.1".to_string(),
            format!("{gnu}/libcuda.so.999.1.1"),
            "ro",
        ),
        (
            "/usr/local/nvidia/lib64/libnvidia-ml.so.1".into(),
            format!("{r}/opt/nvidia/lib/libnvidia-ml.so.999.1.1"),
            "ro",
        ),
        (
            "/usr/local/nvidia/lib64/libnvidia-ptxjitcompiler.so.1".into(),
            format!("{lib64}/libnvidia-ptxjitcompiler.so.999.1.1"),
            "ro",
        ),
        (
            "/usr/local/nvidia/lib64/libnvidia-nvvm.so.4".into(),
            format!("{lib64}/libnvidia-nvvm.so.999.1.1"),
            "ro",
        ),
        (
            "/usr/local/nvidia/lib64/libnvidia-gpucomp.so.999.1.1".into(),
            format!("{lib64}/libnvidia-gpucomp.so.999.1.1"),
            "ro",
        ),
        (
            "/usr/bin/nvidia-smi".into(),
            format!("{r}/usr/local/nvidia/bin/nvidia-smi"),
            "ro",
        ),
        (
            "/usr/bin/nvidia-debugdump".into(),
            format!("{r}/usr/bin/nvidia-debugdump"),
            "ro",
        ),
        (
            "/run/nvidia-persistenced/socket".into(),
            format!("{r}/run/nvidia-persistenced/socket"),
            "nosuid",
        ),
    ];
    let want: Vec<(String, String, String)> = want
        .into_iter()
        .map(|(c, h, o)| (c, h, o.to_string()))
        .collect();
    assert_eq!(mounts_of(&spec), want);
    assert_eq!(
        spec["containerEdits"]["env"],
        serde_json::json!([
            "NVIDIA_DRIVER_CAPABILITIES=compute,utility",
            "LD_LIBRARY_PATH=/usr/local/nvidia/lib64"
        ])
    );

    // What is required: the control node and libcuda.
    fs::remove_file(root.join(format!("usr/lib/{}/libcuda.so.999.1.1", triple()))).expect("rm");
    let e = driver::generate(&root, &key).expect_err("no libcuda");
    assert!(
        e.starts_with("libcuda.so is not in the linker cache"),
        "{e}"
    );
    fs::remove_file(root.join("dev/nvidiactl")).expect("rm");
    let e = driver::generate(&root, &key).expect_err("no nvidiactl");
    assert!(e.contains("dev/nvidiactl is missing"), "{e}");
    // Without the kernel module there is no driver at all.
    fs::remove_file(root.join("proc/driver/nvidia/version")).expect("rm");
    assert_eq!(driver::key(&root, None), Ok(None));
}

#[tokio::test]
#[ignore = "needs root"]
async fn driver_only_gpu_spaces_see_the_driver_and_follow_its_upgrades() {
    let Some(mut env) = TestEnv::new().await else {
        return;
    };
    let root = write_fake_driver(&env.dir, "999.1.1");
    env.reopen_with_gpu(driver_only(&root)).await;
    let rt = env.rt().clone();
    let info = rt.gpu().probe();
    assert_eq!(info.backend, Some(GpuBackend::Driver));
    assert_eq!(info.driver_version.as_deref(), Some("999.1.1"));

    let all = rt.create(gpu_req("d-all", None)).await.expect("create");
    let a = all.gpus.as_ref().expect("assignment");
    assert_eq!(
        (a.backend, a.devices.as_slice()),
        (GpuBackend::Driver, &["nvidia.com/gpu=all".to_string()][..])
    );
    let libs = "cd /usr/local/nvidia/lib64 && cat libcuda.so.1 libnvidia-ml.so.1 \
        libnvidia-ptxjitcompiler.so.1 libnvidia-nvvm.so.4 libnvidia-gpucomp.so.999.1.1";
    assert_eq!(
        env.out("d-all", libs).await,
        "libcuda 999.1.1\nlibnvidia-ml 999.1.1\nlibnvidia-ptxjitcompiler 999.1.1\n\
         libnvidia-nvvm 999.1.1\nlibnvidia-gpucomp 999.1.1"
    );
    assert_eq!(
        env.out("d-all", "nvidia-smi; nvidia-debugdump").await,
        "fake nvidia-smi 999.1.1\nfake nvidia-debugdump 999.1.1"
    );
    assert_eq!(
        code(
            &env,
            "d-all",
            "for n in nvidia0 nvidia1 nvidiactl nvidia-uvm nvidia-uvm-tools nvidia-modeset; \
             do test -c /dev/$n || exit 1; done; : < /dev/nvidia1 && test -S /run/nvidia-persistenced/socket"
        )
        .await,
        0
    );
    assert_eq!(
        env.out(
            "d-all",
            "echo $NVIDIA_VISIBLE_DEVICES $NVIDIA_DRIVER_CAPABILITIES $LD_LIBRARY_PATH"
        )
        .await,
        "all compute,utility /usr/local/nvidia/lib64"
    );
    // The driver's files are read-only in the space.
    assert_ne!(
        code(
            &env,
            "d-all",
            "echo x > /usr/local/nvidia/lib64/libcuda.so.1"
        )
        .await,
        0
    );
    assert_ne!(code(&env, "d-all", "echo x > /usr/bin/nvidia-smi").await, 0);

    // One GPU by UUID: only its node; the other's device is not allowed
    // (GPU 1 is 10:229: root can make the node but not open it).
    let one = rt
        .create(gpu_req(
            "d-one",
            Some(GpuRequest::Devices(vec![FAKE_UUIDS[0].into()])),
        ))
        .await
        .expect("create d-one");
    assert_eq!(
        one.gpus.expect("assignment").devices,
        [format!("nvidia.com/gpu={}", FAKE_UUIDS[0])]
    );
    assert_eq!(
        env.out(
            "d-one",
            "test -c /dev/nvidia0 && ! test -e /dev/nvidia1 && echo $NVIDIA_VISIBLE_DEVICES"
        )
        .await,
        FAKE_UUIDS[0]
    );
    let o = env
        .sh("d-one", "mknod /dev/gpu1 c 10 229 && : < /dev/gpu1")
        .await;
    assert_ne!(o.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not permitted"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    match rt
        .create(gpu_req("d-bad", Some(GpuRequest::Count(3))))
        .await
    {
        Err(Error::InvalidInput(m)) => {
            assert_eq!(m, "Invalid gpus: 3 requested, this server has 2")
        }
        other => panic!("expected InvalidInput, got {other:?}"),
    }

    // A driver upgrade: new version, new files, links and cache moved on
    // (the old files stay). The edits are made again; a new space and a
    // restarted init get the new driver.
    write_fake_driver(&env.dir, "999.2.0");
    assert_eq!(rt.gpu().probe().driver_version.as_deref(), Some("999.2.0"));
    rt.create(gpu_req("d-new", None))
        .await
        .expect("create d-new");
    assert_eq!(
        env.out(
            "d-new",
            "cat /usr/local/nvidia/lib64/libcuda.so.1; nvidia-smi"
        )
        .await,
        "libcuda 999.2.0\nfake nvidia-smi 999.2.0"
    );
    kill(Pid::from_raw(all.init_pid.expect("pid")), Signal::SIGKILL).expect("kill init");
    assert!(
        wait_until(Duration::from_secs(10), || {
            rt.get("d-all")
                .is_ok_and(|n| n.init_pid != all.init_pid && n.status == SpaceStatus::Running)
        })
        .await,
        "restarted"
    );
    assert_eq!(
        env.out(
            "d-all",
            "cat /usr/local/nvidia/lib64/libcuda.so.1 /usr/local/nvidia/lib64/libnvidia-gpucomp.so.999.2.0; echo $LD_LIBRARY_PATH"
        )
        .await,
        "libcuda 999.2.0\nlibnvidia-gpucomp 999.2.0\n/usr/local/nvidia/lib64"
    );
    for n in ["d-all", "d-one", "d-new"] {
        rt.destroy(n).await.expect("destroy");
    }
}
