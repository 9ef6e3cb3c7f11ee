//! `clawdspace-bench`: times the runtime's lifecycle in-process, the way the
//! daemon drives it, and measures what an idle space costs the host.
//!
//! For each of N runs (after a few warm-up runs) it times `create` (until the
//! init runs), `exec` of `true` with captured output, `pause`, `resume` and
//! `destroy`. Then it creates K idle spaces and reads the RSS of every process
//! in each space's cgroup, and of the daemon side (this process and its worker
//! processes) before and after. Prints one JSON object on stdout.
//!
//! Everything it creates (spaces, mounts, cgroups, its state directory) is
//! removed at the end, also after an error or SIGINT/SIGTERM.
//! `scripts/bench-runtime` runs it next to crun and runc.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clawdspace_runtime::image::ImageConfig;
use clawdspace_runtime::{
    CgroupMode, Command, CreateSpace, ExecRequest, NetworkConfig, NetworkMode, Runtime,
    RuntimeConfig, Space, SpaceName,
};
use serde_json::{json, Value};

const USAGE: &str = "usage: clawdspace-bench --rootfs DIR [options]
  --rootfs DIR          root filesystem imported as the spaces' image (required)
  --runs N              timed runs per operation (default 30)
  --warmup N            untimed runs first (default 2)
  --idle K              idle spaces for the memory figures (default 10; 0 = skip)
  --state DIR           state directory to create and remove (default under /var/tmp)
  --cgroup-parent PATH  parent cgroup of the spaces (default /clawdspace-bench-<rand>)
  --workers N           worker processes (default: the runtime's default)
  --memory BYTES        memory limit of each space (default 256 MiB)
  --breakdown N         also time N rounds of the parts of exec/pause/resume
                        on one space: the bare worker round trip, the record
                        writes, the kernel freezer (default 0 = skip)
  --present K           then time the same runs again with K idle spaces
                        present (made first, destroyed after; default 0)
  --network MODE        network of the spaces: none (default) or internet
                        (on a bridge and subnet of the benchmark's own; one
                        extra networked space keeps the bridge up)
Prints one JSON object on stdout; logs (CLAWDSPACE_LOG) go to stderr.";

const IMAGE: &str = "clawdspace-bench:latest";
const OPS: [&str; 5] = ["create", "exec", "pause", "resume", "destroy"];

#[derive(Clone)]
struct Options {
    rootfs: PathBuf,
    runs: usize,
    warmup: usize,
    idle: usize,
    state: PathBuf,
    cgroup_parent: String,
    workers: Option<usize>,
    memory: u64,
    breakdown: usize,
    present: usize,
    network: NetworkMode,
}

fn parse_args() -> anyhow::Result<Options> {
    let tag = format!(
        "{}-{:06x}",
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    );
    let mut o = Options {
        rootfs: PathBuf::new(),
        runs: 30,
        warmup: 2,
        idle: 10,
        state: PathBuf::from(format!("/var/tmp/clawdspace-bench-{tag}")),
        cgroup_parent: format!("/clawdspace-bench-{tag}"),
        workers: None,
        memory: 256 << 20,
        breakdown: 0,
        present: 0,
        network: NetworkMode::None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "-h" || a == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let v = args
            .next()
            .with_context(|| format!("{a} needs a value\n{USAGE}"))?;
        let num = |v: &str| -> anyhow::Result<usize> {
            v.parse().with_context(|| format!("{a}: not a number: {v}"))
        };
        match a.as_str() {
            "--rootfs" => o.rootfs = PathBuf::from(v),
            "--runs" => o.runs = num(&v)?.max(1),
            "--warmup" => o.warmup = num(&v)?,
            "--idle" => o.idle = num(&v)?,
            "--state" => o.state = PathBuf::from(v),
            "--cgroup-parent" => o.cgroup_parent = v,
            "--workers" => o.workers = Some(num(&v)?.max(1)),
            "--memory" => o.memory = num(&v)? as u64,
            "--breakdown" => o.breakdown = num(&v)?,
            "--present" => o.present = num(&v)?,
            "--network" => o.network = v.parse().map_err(anyhow::Error::msg)?,
            _ => bail!("unknown option {a}\n{USAGE}"),
        }
    }
    if o.rootfs.as_os_str().is_empty() {
        bail!("--rootfs is required\n{USAGE}");
    }
    if !o.cgroup_parent.starts_with('/')
        || o.cgroup_parent.len() < 2
        || o.cgroup_parent.contains("..")
    {
        bail!("--cgroup-parent must be an absolute cgroup path below the root");
    }
    if o.state.exists() && fs::read_dir(&o.state).map_or(true, |mut d| d.next().is_some()) {
        bail!(
            "--state {} exists and is not empty (it is removed at the end)",
            o.state.display()
        );
    }
    Ok(o)
}

fn main() -> std::process::ExitCode {
    clawdspace_runtime::run_if_worker();
    clawdspace_runtime::log_to_stderr(
        &std::env::var("CLAWDSPACE_LOG").unwrap_or_else(|_| "warn".into()),
    );
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let tokio_rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    // On a runtime worker thread, as the daemon's request handlers run.
    let o = opts.clone();
    let result = tokio_rt.block_on(async move {
        tokio::spawn(async move { run(&o).await })
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("benchmark task: {e}")))
    });
    drop(tokio_rt);
    // Whatever the runtime could not remove (an interrupted create, a
    // failed destroy): processes, mounts, cgroups, files.
    force_cleanup(&opts);
    match result {
        Ok(v) => {
            println!("{v}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Opens the runtime, runs the benchmark unless a signal comes first, then
/// destroys every space the runtime still knows.
async fn run(o: &Options) -> anyhow::Result<Value> {
    use tokio::signal::unix::{signal, SignalKind};
    fs::create_dir_all(&o.state).with_context(|| format!("create {}", o.state.display()))?;
    let mut config = RuntimeConfig::new(o.state.join("state"));
    config.worker_exe = std::env::current_exe().context("current exe")?;
    config.cgroup_parent = o.cgroup_parent.clone();
    config.network = NetworkConfig::private_for(rand::random());
    if let Some(w) = o.workers {
        config.workers = w;
    }
    let rt = Runtime::open(config).await.context("open runtime")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let result = tokio::select! {
        r = bench(&rt, o) => r,
        _ = sigint.recv() => Err(anyhow::anyhow!("interrupted (SIGINT)")),
        _ = sigterm.recv() => Err(anyhow::anyhow!("terminated (SIGTERM)")),
    };
    // The state dir is ours alone: every space in it is the benchmark's.
    for s in rt.list() {
        if let Err(e) = rt.destroy(&s.name).await {
            eprintln!("cleanup: destroy {}: {e}", s.name);
        }
    }
    drop(rt);
    result
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median (mean of the middle two for an even count) of sorted values.
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile `p` (0..=100) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn summary(samples: &[f64]) -> Value {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    json!({
        "median_ms": round3(median(&s)),
        "p90_ms": round3(percentile(&s, 90.0)),
        "min_ms": round3(s.first().copied().unwrap_or(f64::NAN)),
        "max_ms": round3(s.last().copied().unwrap_or(f64::NAN)),
        "samples_ms": samples.iter().map(|v| round3(*v)).collect::<Vec<_>>(),
    })
}

fn create_req(name: &str, o: &Options) -> anyhow::Result<CreateSpace> {
    Ok(CreateSpace {
        image: IMAGE.to_string(),
        memory: o.memory,
        nano_cpus: 1_000_000_000,
        pids_limit: None,
        network: o.network,
        ..CreateSpace::named(SpaceName::new(name)?)
    })
}

/// One create → exec → pause → resume → destroy cycle; the five durations.
async fn cycle(rt: &Runtime, name: &str, o: &Options) -> anyhow::Result<[f64; 5]> {
    let t = Instant::now();
    let space = rt.create(create_req(name, o)?).await.context("create")?;
    let create = ms(t.elapsed());
    if space.init_pid.is_none() {
        bail!("space {name} has no init pid after create");
    }

    let t = Instant::now();
    let out = rt
        .exec(name, ExecRequest::new(Command::Argv(vec!["true".into()])))
        .await
        .context("exec")?;
    let exec = ms(t.elapsed());
    if out.exit_code != 0 {
        bail!(
            "exec true exited {}: {}",
            out.exit_code,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let t = Instant::now();
    rt.pause(name).await.context("pause")?;
    let pause = ms(t.elapsed());
    if !rt.cgroup(&space).is_frozen() {
        bail!("space {name} is not frozen after pause");
    }

    let t = Instant::now();
    rt.resume(name).await.context("resume")?;
    let resume = ms(t.elapsed());
    if rt.cgroup(&space).is_frozen() {
        bail!("space {name} is still frozen after resume");
    }

    let t = Instant::now();
    rt.destroy(name).await.context("destroy")?;
    let destroy = ms(t.elapsed());
    Ok([create, exec, pause, resume, destroy])
}

async fn bench(rt: &Runtime, o: &Options) -> anyhow::Result<Value> {
    let t = Instant::now();
    rt.images()
        .import_rootfs(IMAGE, &o.rootfs, ImageConfig::default())
        .with_context(|| format!("import {}", o.rootfs.display()))?;
    let import_ms = ms(t.elapsed());
    if o.network.is_networked() {
        // A networked space that stays: the bridge and rules are set up
        // once, as on a server with spaces, not in every timed create.
        rt.create(create_req("anchor", o)?)
            .await
            .context("create anchor")?;
    }

    let ops = timed_runs(rt, o, "bench").await?;
    let present = if o.present > 0 {
        with_present(rt, o).await?
    } else {
        Value::Null
    };

    let idle = if o.idle > 0 {
        idle_memory(rt, o).await?
    } else {
        Value::Null
    };

    let breakdown = if o.breakdown > 0 {
        breakdown(rt, o).await?
    } else {
        Value::Null
    };

    Ok(json!({
        "runtime": "clawdspace",
        "runs": o.runs,
        "warmup": o.warmup,
        "workers": rt.config().workers,
        "memory_limit": o.memory,
        "cgroup_mode": rt.cgroup_mode().describe(),
        "import_ms": round3(import_ms),
        "ops": ops,
        "present": present,
        "idle": idle,
        "breakdown": breakdown,
    }))
}

/// Warm-up and timed create → … → destroy cycles; a summary per operation.
async fn timed_runs(rt: &Runtime, o: &Options, prefix: &str) -> anyhow::Result<Value> {
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(o.runs); OPS.len()];
    for i in 0..o.warmup + o.runs {
        let name = format!("{prefix}-{i}");
        let d = cycle(rt, &name, o)
            .await
            .with_context(|| format!("run {i} ({name})"))?;
        if i >= o.warmup {
            for (k, v) in d.iter().enumerate() {
                samples[k].push(*v);
            }
        }
    }
    let mut ops = serde_json::Map::new();
    for (k, op) in OPS.iter().enumerate() {
        ops.insert(op.to_string(), summary(&samples[k]));
    }
    Ok(Value::Object(ops))
}

/// The timed runs again with `--present` idle spaces running beside them
/// (each with its rootfs mount and cgroups); the idle spaces are destroyed
/// afterwards.
async fn with_present(rt: &Runtime, o: &Options) -> anyhow::Result<Value> {
    let t = Instant::now();
    for i in 0..o.present {
        rt.create(create_req(&format!("present-{i}"), o)?)
            .await
            .with_context(|| format!("create present space {i}"))?;
    }
    let create_all_s = t.elapsed().as_secs_f64();
    let ops = timed_runs(rt, o, "bench-present").await?;
    let parts = if o.breakdown > 0 {
        breakdown(rt, o).await?
    } else {
        Value::Null
    };
    let t = Instant::now();
    for i in 0..o.present {
        rt.destroy(&format!("present-{i}"))
            .await
            .with_context(|| format!("destroy present space {i}"))?;
    }
    Ok(json!({
        "spaces": o.present,
        "create_all_s": round3(create_all_s),
        "destroy_all_s": round3(t.elapsed().as_secs_f64()),
        "ops": ops,
        "breakdown": parts,
    }))
}

/// Times the parts of exec, pause and resume on one running space, to show
/// where the runtime's time goes: the same request sent straight to a worker
/// process (libcontainer's work plus the IPC), the space record writes the
/// runtime adds (`touch`: atomic, `set_status`: atomic + fsync), and the
/// kernel's v1 freezer alone.
async fn breakdown(rt: &Runtime, o: &Options) -> anyhow::Result<Value> {
    use clawdspace_runtime::testing::Request;
    use clawdspace_runtime::testing::Store;
    use clawdspace_runtime::testing::WorkerPool;

    let name = "breakdown";
    let space = rt.create(create_req(name, o)?).await.context("create")?;
    let state_root = rt
        .container_state_dir(&space)
        .parent()
        .context("state root")?
        .to_path_buf();
    let bundle = rt.space_dir(&space);
    let exe = std::env::current_exe().context("current exe")?;
    let pool = WorkerPool::start(&exe, 1).await.context("start worker")?;
    let scratch = Store::open(&o.state.join("breakdown-store")).context("scratch store")?;
    let freezer = rt.cgroup(&space).dir("freezer").join("freezer.state");
    let unified = rt.cgroup_mode() == CgroupMode::Unified;
    let freeze_file = if unified {
        rt.cgroup(&space).dir("").join("cgroup.freeze")
    } else {
        freezer.clone()
    };
    let (frozen, thawed) = if unified {
        ("1", "0")
    } else {
        ("FROZEN", "THAWED")
    };

    let keys = [
        "exec_runtime",
        "exec_worker_only",
        "touch_record",
        "pause_runtime",
        "pause_worker_only",
        "resume_runtime",
        "resume_worker_only",
        "durable_record_write",
        "freeze_kernel",
        "thaw_kernel",
    ];
    let mut t: Vec<Vec<f64>> = vec![Vec::with_capacity(o.breakdown); keys.len()];
    let id = &space.id;
    let pause_req = || Request::Pause {
        id: id.clone(),
        state_root: state_root.clone(),
    };
    let resume_req = || Request::Resume {
        id: id.clone(),
        state_root: state_root.clone(),
    };
    for i in 0..o.breakdown {
        // Each pair runs in alternating order, so that neither side always
        // follows the same operation.
        let flip = i % 2 == 1;
        for step in 0..2 {
            let s = Instant::now();
            if (step == 0) != flip {
                let out = rt
                    .exec(name, ExecRequest::new(Command::Argv(vec!["true".into()])))
                    .await?;
                t[0].push(ms(s.elapsed()));
                if out.exit_code != 0 {
                    bail!("exec true exited {}", out.exit_code);
                }
            } else {
                worker_exec(&pool, &space, &state_root, &bundle).await?;
                t[1].push(ms(s.elapsed()));
            }
        }

        let s = Instant::now();
        rt.touch(name)?;
        t[2].push(ms(s.elapsed()));

        for step in 0..2 {
            if (step == 0) != flip {
                let s = Instant::now();
                rt.pause(name).await?;
                t[3].push(ms(s.elapsed()));
                let s = Instant::now();
                rt.resume(name).await?;
                t[5].push(ms(s.elapsed()));
            } else {
                let s = Instant::now();
                worker_call(&pool, pause_req()).await?;
                t[4].push(ms(s.elapsed()));
                let s = Instant::now();
                worker_call(&pool, resume_req()).await?;
                t[6].push(ms(s.elapsed()));
            }
        }

        let s = Instant::now();
        scratch.save(&space, true)?;
        t[7].push(ms(s.elapsed()));

        let s = Instant::now();
        fs::write(&freeze_file, frozen)?;
        if !unified {
            while fs::read_to_string(&freezer)?.trim() != "FROZEN" {
                std::thread::yield_now();
            }
        }
        t[8].push(ms(s.elapsed()));
        let s = Instant::now();
        fs::write(&freeze_file, thawed)?;
        t[9].push(ms(s.elapsed()));
    }
    drop(pool);
    rt.destroy(name).await.context("destroy")?;
    let mut m = serde_json::Map::new();
    for (k, v) in keys.iter().zip(&t) {
        m.insert(k.to_string(), summary(v));
    }
    Ok(Value::Object(m))
}

/// Sends a request that answers `Done` straight to a worker.
async fn worker_call(
    pool: &clawdspace_runtime::testing::WorkerPool,
    req: clawdspace_runtime::testing::Request,
) -> anyhow::Result<()> {
    use clawdspace_runtime::testing::Reply;
    match pool.call(&req, &[]).await?.0 {
        Reply::Done => Ok(()),
        other => Err(anyhow::anyhow!("worker: {other:?}")),
    }
}

/// Runs `true` in `space` straight through a worker, capturing its output
/// as `Runtime::exec` does, without the runtime's bookkeeping.
async fn worker_exec(
    pool: &clawdspace_runtime::testing::WorkerPool,
    space: &Space,
    state_root: &Path,
    bundle: &Path,
) -> anyhow::Result<()> {
    use clawdspace_runtime::testing::{proto, Reply, Request};
    use std::os::fd::{AsRawFd, OwnedFd};
    let null = OwnedFd::from(fs::File::open("/dev/null")?);
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let req = Request::Exec(proto::ExecRequest {
        id: space.id.clone(),
        state_root: state_root.to_path_buf(),
        bundle: bundle.to_path_buf(),
        args: vec!["true".into()],
        env: space.env.clone(),
        cwd: space.user.workdir.clone(),
        uid: space.user.uid,
        gid: space.user.gid,
        additional_gids: space.user.additional_gids.clone(),
        space_uid: space.user.uid,
        init_pid: space.init_pid.context("the space has no init")?,
        init_start_time: space.init_start_time.context("the space has no init")?,
        tty: None,
    });
    let fds = [null.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()];
    let (reply, exit) = pool.call(&req, &fds).await?;
    drop((null, out_w, err_w));
    let Reply::Spawned { pid } = reply else {
        bail!("worker exec: {reply:?}");
    };
    let handle = clawdspace_runtime::ExecHandle {
        pid,
        stdin: None,
        stdout: tokio::net::unix::pipe::Receiver::from_owned_fd(out_r)?,
        stderr: tokio::net::unix::pipe::Receiver::from_owned_fd(err_r)?,
        exit: exit.context("no exit channel")?,
        pty: None,
    };
    let out = clawdspace_runtime::exec::collect(handle, None, 1 << 20, None).await;
    if out.exit_code != 0 {
        bail!("worker exec true exited {}", out.exit_code);
    }
    Ok(())
}

/// Memory figures of one process, KiB.
#[derive(Default, Clone, Copy)]
struct Mem {
    rss: u64,
    pss: u64,
}

impl std::ops::AddAssign for Mem {
    fn add_assign(&mut self, o: Mem) {
        self.rss += o.rss;
        self.pss += o.pss;
    }
}

fn proc_mem(pid: i32) -> Mem {
    let field = |text: &str, key: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    let mut m = Mem::default();
    if let Ok(s) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        m.rss = field(&s, "Rss:").unwrap_or(0);
        m.pss = field(&s, "Pss:").unwrap_or(0);
    } else if let Ok(s) = fs::read_to_string(format!("/proc/{pid}/status")) {
        m.rss = field(&s, "VmRSS:").unwrap_or(0);
        m.pss = m.rss;
    }
    m
}

/// Pids of this process's worker processes.
fn worker_pids() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].split(' ').nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid != Some(me) {
            continue;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline
            .split(|b| *b == 0)
            .any(|a| a == clawdspace_runtime::testing::WORKER_ARG.as_bytes())
        {
            out.push(pid);
        }
    }
    out.sort_unstable();
    out
}

/// RSS/PSS of the daemon side: this process plus its workers.
fn daemon_mem() -> (Mem, usize) {
    let mut m = proc_mem(std::process::id() as i32);
    let workers = worker_pids();
    for p in &workers {
        m += proc_mem(*p);
    }
    (m, workers.len())
}

/// Pids in a space's cgroup.
fn space_pids(rt: &Runtime, space: &Space) -> Vec<i32> {
    let cg = rt.cgroup(space);
    let ctrls: &[&str] = match rt.cgroup_mode() {
        CgroupMode::Unified => &[""],
        _ => &["pids", "memory", "freezer"],
    };
    for c in ctrls {
        if let Ok(s) = fs::read_to_string(cg.dir(c).join("cgroup.procs")) {
            let pids: Vec<i32> = s.lines().filter_map(|l| l.trim().parse().ok()).collect();
            if !pids.is_empty() {
                return pids;
            }
        }
    }
    Vec::new()
}

async fn idle_memory(rt: &Runtime, o: &Options) -> anyhow::Result<Value> {
    // Let the allocator and the workers settle after the timed runs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (before, nworkers) = daemon_mem();
    let mut spaces = Vec::with_capacity(o.idle);
    for i in 0..o.idle {
        let name = format!("idle-{i}");
        spaces.push(
            rt.create(create_req(&name, o)?)
                .await
                .context("create idle space")?,
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (after, nworkers_after) = daemon_mem();
    let mut per_space = Vec::with_capacity(spaces.len());
    let mut procs = 0usize;
    let mut space_total = Mem::default();
    let mut cgroup_kib = Vec::with_capacity(spaces.len());
    for s in &spaces {
        let mut m = Mem::default();
        let pids = space_pids(rt, s);
        procs += pids.len();
        for p in pids {
            m += proc_mem(p);
        }
        space_total += m;
        per_space.push(json!({ "rss_kib": m.rss, "pss_kib": m.pss }));
        cgroup_kib.push(
            rt.stats(&s.name)
                .map(|st| st.memory_bytes / 1024)
                .unwrap_or(0),
        );
    }
    for s in &spaces {
        rt.destroy(&s.name).await.context("destroy idle space")?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (after_destroy, _) = daemon_mem();
    let k = spaces.len().max(1) as f64;
    let delta = |a: u64, b: u64| (a as f64 - b as f64) / k;
    Ok(json!({
        "spaces": spaces.len(),
        "space_processes": procs,
        "space_rss_kib_per_space": space_total.rss as f64 / k,
        "space_pss_kib_per_space": space_total.pss as f64 / k,
        "per_space": per_space,
        "space_cgroup_memory_kib": cgroup_kib,
        "daemon_workers": nworkers,
        "daemon_workers_after": nworkers_after,
        "daemon_rss_kib_before": before.rss,
        "daemon_rss_kib_after": after.rss,
        "daemon_rss_kib_after_destroy": after_destroy.rss,
        "daemon_pss_kib_before": before.pss,
        "daemon_pss_kib_after": after.pss,
        "daemon_rss_kib_per_space": delta(after.rss, before.rss),
        "daemon_pss_kib_per_space": delta(after.pss, before.pss),
    }))
}

/// Removes whatever is left of the benchmark without the runtime: thaws and
/// kills processes in its cgroups, unmounts everything under its state
/// directory, removes its cgroups and the state directory.
fn force_cleanup(o: &Options) {
    clawdspace_runtime::purge::purge(&o.state, &o.cgroup_parent, Some(&o.state));
}
