//! Shared helpers for the runtime's integration tests: a private state dir
//! and cgroup parent per test, a busybox image, and cleanup that runs even
//! when a test fails (processes, mounts, cgroups, files).

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clawdspace_runtime::gpu::GpuConfig;
use clawdspace_runtime::image::RegistryConfig;
use clawdspace_runtime::{
    Command, CreateSpace, ExecOutput, ExecRequest, NetworkConfig, NetworkMode, Runtime,
    RuntimeConfig, Space,
};

pub mod cdi;
pub mod decoy;
pub mod probe;
pub mod registry;

/// Image name every test space uses.
pub const IMAGE: &str = "busybox-test:latest";

/// Whether we can run real containers (root).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Builds a tiny root filesystem from Debian's static busybox.
pub fn busybox_rootfs(dir: &Path) {
    clawdspace_runtime::image::busybox_rootfs(dir).expect("busybox rootfs");
}

/// A create request for the test image: 256 MiB, 1 CPU, defaults otherwise.
pub fn request(name: &str) -> CreateSpace {
    CreateSpace {
        image: IMAGE.into(),
        memory: 256 << 20,
        nano_cpus: 1_000_000_000,
        ..CreateSpace::named(clawdspace_runtime::SpaceName::new(name).expect("space name"))
    }
}

/// A runtime on a private state dir; everything is removed on drop.
pub struct TestEnv {
    pub rt: Option<Runtime>,
    pub dir: PathBuf,
    pub cgroup_parent: String,
    pub registries: RegistryConfig,
    /// A bridge, subnet and nftables table of this environment's own.
    pub network: NetworkConfig,
    /// GPU passthrough: none unless a test sets it (the host's CDI specs
    /// and hooks are never used).
    pub gpu: GpuConfig,
}

fn unique() -> String {
    use rand::Rng;
    format!("{:08x}", rand::thread_rng().gen::<u32>())
}

impl TestEnv {
    /// None (test skipped) unless running as root.
    pub async fn new() -> Option<TestEnv> {
        // Tests never reach the internet: Docker Hub names go to a dead
        // loopback port.
        Self::with_registries(RegistryConfig {
            docker_mirror: Some("127.0.0.1:1".into()),
            ..Default::default()
        })
        .await
    }

    /// Like [`TestEnv::new`], reaching registries as `registries` says.
    pub async fn with_registries(registries: RegistryConfig) -> Option<TestEnv> {
        // These tests are `#[ignore = "needs root"]`: they run only when
        // asked for (`--include-ignored`), and then they must really run.
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root and real containers: run as root"
        );
        let tag = unique();
        let dir = PathBuf::from(format!("/var/tmp/clawdspace-test-{tag}"));
        fs::create_dir_all(&dir).expect("state dir");
        let mut env = TestEnv {
            rt: None,
            dir,
            cgroup_parent: format!("/clawdspace-test-{tag}"),
            registries,
            network: NetworkConfig::private_for(rand::random()),
            gpu: GpuConfig {
                cdi_dirs: Vec::new(),
                hook: None,
                driver_root: None,
                ..GpuConfig::default()
            },
        };
        let rootfs = env.dir.join("fixture-rootfs");
        busybox_rootfs(&rootfs);
        let rt = env.open().await;
        rt.images()
            .import_rootfs(IMAGE, &rootfs, Default::default())
            .expect("import busybox image");
        env.rt = Some(rt);
        Some(env)
    }

    /// The runtime configuration of this environment.
    pub fn config(&self) -> RuntimeConfig {
        let mut c = RuntimeConfig::new(self.dir.join("state"));
        c.worker_exe = PathBuf::from(env!("CARGO_BIN_EXE_clawdspace-runtime"));
        c.workers = 2;
        c.cgroup_parent = self.cgroup_parent.clone();
        c.registries = self.registries.clone();
        c.network = self.network.clone();
        c.gpu = self.gpu.clone();
        c
    }

    /// Restarts the runtime with `gpu` as its GPU settings.
    pub async fn reopen_with_gpu(&mut self, gpu: GpuConfig) {
        self.close().await;
        self.gpu = gpu;
        self.rt = Some(self.open().await);
    }

    /// Closes the runtime, as a daemon's clean shutdown does: the state dir
    /// is free for [`TestEnv::open`] when this returns.
    pub async fn close(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.close().await;
        }
    }

    /// Opens a (new) runtime on this environment's state dir.
    pub async fn open(&self) -> Runtime {
        Runtime::open(self.config()).await.expect("open runtime")
    }

    /// The current runtime.
    pub fn rt(&self) -> &Runtime {
        self.rt.as_ref().expect("runtime")
    }

    /// Creates a space with 256 MiB, 1 CPU.
    pub async fn space(&self, name: &str) -> Space {
        self.space_with(name, 256 << 20, None).await
    }

    /// Creates a space with the given memory and pids limit.
    pub async fn space_with(&self, name: &str, memory: u64, pids: Option<i64>) -> Space {
        self.create(CreateSpace {
            memory,
            pids_limit: pids,
            ..request(name)
        })
        .await
    }

    /// Creates a space (256 MiB, 1 CPU) with network `mode`.
    pub async fn space_net(&self, name: &str, mode: NetworkMode) -> Space {
        self.create(CreateSpace {
            network: mode,
            ..request(name)
        })
        .await
    }

    /// Creates the space `req` describes (see [`request`]).
    pub async fn create(&self, req: CreateSpace) -> Space {
        self.rt().create(req).await.expect("create space")
    }

    /// Runs `sh -c cmd` in `name`.
    pub async fn sh(&self, name: &str, cmd: &str) -> ExecOutput {
        self.rt()
            .exec(name, ExecRequest::new(Command::Shell(cmd.into())))
            .await
            .expect("exec")
    }

    /// Runs `sh -c cmd` and returns its trimmed stdout.
    pub async fn out(&self, name: &str, cmd: &str) -> String {
        let o = self.sh(name, cmd).await;
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Tears everything down without the runtime: kill every process in our
    /// cgroups, unmount, remove cgroups and files.
    fn force_cleanup(&self) {
        clawdspace_runtime::purge::purge(&self.dir, &self.cgroup_parent, Some(&self.dir));
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Drop the runtime first so its workers exit.
        self.rt.take();
        self.force_cleanup();
    }
}

/// The `/proc/self/mountinfo` line of the mount at `target` (panics when
/// nothing is mounted there).
pub fn mountinfo_line(target: &Path) -> String {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let t = target.to_string_lossy();
    info.lines()
        .find(|l| l.split(' ').nth(4) == Some(&t))
        .unwrap_or_else(|| panic!("{t} is not mounted"))
        .to_string()
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// Whether every directory of cgroup `cg` goes within 10 s: a destroyed
/// space's cgroup is removed once creates pause.
pub async fn cgroup_goes(cg: &clawdspace_runtime::CgroupPaths) -> bool {
    wait_until(Duration::from_secs(10), || {
        cg.all_dirs().iter().all(|d| !d.exists())
    })
    .await
}
