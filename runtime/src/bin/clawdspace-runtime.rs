//! `clawdspace-runtime`: the runtime's own worker entry point plus a small
//! operator tool that drives the runtime directly (no daemon): import an
//! image, create, exec, pause, resume, destroy and list spaces. Tests and
//! `scripts/bench-runtime` use it too.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clawdspace_runtime::{Command, CreateSpace, ExecRequest, Runtime, RuntimeConfig, SpaceName};

const USAGE: &str = "usage: clawdspace-runtime <command> [args]
  import <ref> <rootfs-dir|tar> [K=V..]  import a root filesystem as an image
                                         (K=V: the image's environment)
  import-oci <ref> <layout-dir|tar>      import an OCI image layout (or archive)
  import-busybox <ref>                   import a tiny image made from /bin/busybox
  pull <ref>                             pull an image from its registry
  tag <ref> <new-ref>                    give an image another name
  rmi <ref>                              remove an image (not while a space uses it)
  gc                                     delete layers no image or space uses
  images                                 list images
  create <name> <image> [memory-bytes] [cpus] [none|internet]
  hold <name> <image>                    create, print its id, then wait forever
  exec <name> <argv...>                  run a command, exit with its code
  sh <name> <command>                    run a command with sh -c
  pause|resume|start|destroy <name>
  list                                   list spaces as JSON lines
  purge                                  with no daemon on the state dir: kill
                                         every space's processes, remove their
                                         network, mounts and cgroups (files
                                         are kept)
State: CLAWDSPACE_STATE_DIR (default /var/lib/clawdspace).";

fn main() -> ExitCode {
    clawdspace_runtime::run_if_worker();
    clawdspace_runtime::log_to_stderr(
        &std::env::var("CLAWDSPACE_LOG").unwrap_or_else(|_| "warn".into()),
    );
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn space_json(s: &clawdspace_runtime::Space) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

async fn run(args: Vec<String>) -> anyhow::Result<u8> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut config = RuntimeConfig::from_env();
    config.workers = 2;
    let open = || Runtime::open(config.clone());
    match a.as_slice() {
        ["import", reference, src, env @ ..] => {
            if let Some(bad) = env.iter().find(|e| !e.contains('=') || e.starts_with('=')) {
                bail!("environment entries are KEY=VALUE, got {bad:?}");
            }
            let config = clawdspace_runtime::image::ImageConfig {
                env: env.iter().map(|e| e.to_string()).collect(),
                ..Default::default()
            };
            let rt = open().await?;
            let img = rt.images().import_rootfs(reference, src.as_ref(), config)?;
            println!("{}", img.layers.join(" "));
        }
        ["import-busybox", reference] => {
            let rt = open().await?;
            let dir = rt.images().staging_dir()?;
            let made = clawdspace_runtime::image::busybox_rootfs(&dir).and_then(|()| {
                rt.images()
                    .import_rootfs(reference, &dir, Default::default())
            });
            let _ = std::fs::remove_dir_all(&dir);
            println!("{}", made?.layers.join(" "));
        }
        ["import-oci", reference, src] => {
            let rt = open().await?;
            let img = rt.images().import_oci(src.as_ref(), reference, None)?;
            println!("{}", img.layers.join(" "));
        }
        ["pull", reference] => {
            let rt = open().await?;
            let progress: clawdspace_runtime::image::ProgressFn = std::sync::Arc::new(|p| {
                if p.done == p.total {
                    eprintln!("{}: {} bytes", p.layer, p.total);
                }
            });
            let img = rt.pull(reference, Some(progress)).await?;
            println!("{}", img.layers.join(" "));
        }
        ["tag", src, dst] => {
            open().await?.images().tag(src, dst)?;
        }
        ["rmi", reference] => open().await?.remove_image(reference)?,
        ["gc"] => println!("{} layers removed", open().await?.gc_images()?),
        ["images"] => {
            let rt = open().await?;
            for i in rt.images().list()? {
                println!("{}", i.reference);
            }
        }
        ["create", name, image, rest @ ..] | ["hold", name, image, rest @ ..] => {
            let memory = match rest.first() {
                Some(m) => m.parse().context("memory in bytes")?,
                None => 512 << 20,
            };
            let cpus: f64 = match rest.get(1) {
                Some(c) => c.parse().context("cpus")?,
                None => 1.0,
            };
            let network = match rest.get(2) {
                Some(n) => n.parse().map_err(anyhow::Error::msg)?,
                None => Default::default(),
            };
            let rt = open().await?;
            let s = rt
                .create(CreateSpace {
                    image: image.to_string(),
                    memory,
                    nano_cpus: (cpus * 1e9).round() as u64,
                    pids_limit: None,
                    network,
                    ..CreateSpace::named(SpaceName::new(*name)?)
                })
                .await?;
            println!("{}", space_json(&s));
            if a[0] == "hold" {
                loop {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            }
        }
        ["exec", name, argv @ ..] | ["sh", name, argv @ ..] if !argv.is_empty() => {
            let rt = open().await?;
            let cmd = if a[0] == "sh" {
                Command::Shell(argv.join(" "))
            } else {
                Command::Argv(argv.iter().map(|s| s.to_string()).collect())
            };
            let out = rt.exec(name, ExecRequest::new(cmd)).await?;
            use std::io::Write;
            std::io::stdout().write_all(&out.stdout)?;
            std::io::stderr().write_all(&out.stderr)?;
            return Ok(out.exit_code.clamp(0, 255) as u8);
        }
        ["pause", name] => println!("{}", space_json(&open().await?.pause(name).await?)),
        ["resume", name] => println!("{}", space_json(&open().await?.resume(name).await?)),
        ["start", name] => println!("{}", space_json(&open().await?.start(name).await?)),
        ["destroy", name] => open().await?.destroy(name).await?,
        ["purge"] => {
            // Never under a running daemon: take its lock first.
            let lock = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(config.state_dir.join("lock"))
                .context("open the state dir's lock")?;
            let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
                .map_err(|_| {
                    anyhow::anyhow!("the state dir is in use (a daemon runs); stop it first")
                })?;
            clawdspace_runtime::purge::purge(&config.state_dir, &config.cgroup_parent, None);
        }
        ["list"] => {
            for s in open().await?.list() {
                println!("{}", space_json(&s));
            }
        }
        _ => {
            if a.is_empty() || a[0] == "help" || a[0] == "--help" {
                println!("{USAGE}");
                return Ok(0);
            }
            bail!("unknown command\n{USAGE}");
        }
    }
    Ok(0)
}
