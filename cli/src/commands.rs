//! The commands (SPEC 11.1, 11.4, 11.5).

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use clawdspace_cli::fleet;
use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};

use crate::api::{encode_segment, Api, ApiError, Connect, Opts};
use crate::config::{host_url, Settings};
use crate::discovery::{self, Server};
use crate::stream::{self, Outcome, RawMode, Stdin};
use crate::style::{self, BLUE, CYAN, GREEN, RED, YELLOW};
use crate::{Cmd, CreateArgs, Fail};

/// What every command needs.
pub struct Ctx<'a> {
    pub settings: &'a Settings,
    pub api: &'a Api,
}

pub(crate) type CmdResult = Result<i32, Fail>;

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// A JSON value as the original printed it (`1`, `0.5`, `text`).
fn show(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "?".into(),
        Some(v) => v.to_string(),
    }
}

/// Bytes of a `formatBytes` string such as `"23.4 GB"`.
pub fn parse_size(s: &str) -> Option<f64> {
    let mut it = s.split_whitespace();
    let n: f64 = it.next()?.parse().ok()?;
    let mult = match it.next().unwrap_or("B").to_ascii_uppercase().as_str() {
        "B" => 1.0,
        "KB" | "K" | "KIB" => 1024.0,
        "MB" | "M" | "MIB" => 1024f64.powi(2),
        "GB" | "G" | "GIB" => 1024f64.powi(3),
        "TB" | "T" | "TIB" => 1024f64.powi(4),
        _ => return None,
    };
    Some(n * mult)
}

/// The CAPABILITIES column: `🎮 3090` for RTX cards, `🎮 GPU` for others.
pub fn gpu_label(caps: Option<&Value>) -> String {
    let Some(caps) = caps else {
        return String::new();
    };
    if caps.get("gpu").and_then(Value::as_bool) != Some(true) {
        return String::new();
    }
    let name = caps.get("gpuName").and_then(Value::as_str).unwrap_or("GPU");
    let word = name
        .split_once("RTX")
        .and_then(|(_, rest)| rest.split_whitespace().next());
    let label = match word {
        Some(w) => format!("🎮 {w}"),
        None => "🎮 GPU".into(),
    };
    // Several GPUs (the `gpus` extension of capabilities): `🎮 GPU ×8`.
    match caps.get("gpus").and_then(Value::as_array).map(Vec::len) {
        Some(n) if n > 1 => format!("{label} ×{n}"),
        _ => label,
    }
}

/// GPUs a create asks for: `--gpus` as a count or a list, else 1 for
/// `--gpu` (all of a server's, at least one).
pub fn gpus_wanted(gpu: bool, gpus: Option<&Value>) -> usize {
    match gpus {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(1),
        Some(Value::Array(a)) => a.len().max(1),
        _ => usize::from(gpu),
    }
}

/// What placement needs of a server, from its `/api/system` and
/// `/api/system/capabilities` (servers without the placement extensions:
/// `memory.free` parsed, `docker.containersRunning`, a GPU per `gpus`
/// entry or one when `gpu` is true).
pub fn load_of(s: &Server, sys: Option<&Value>, caps: Option<&Value>) -> fleet::NodeLoad {
    let n = |v: Option<&Value>| v.and_then(Value::as_u64);
    let gpus = caps.map_or(0, |c| {
        n(c.get("gpusAvailable")).map_or_else(
            || {
                if c.get("gpu").and_then(Value::as_bool) == Some(true) {
                    c.get("gpus").and_then(Value::as_array).map_or(1, Vec::len)
                } else {
                    0
                }
            },
            |g| usize::try_from(g).unwrap_or(0),
        )
    });
    let memory_free = n(caps.and_then(|c| c.get("memoryFree"))).unwrap_or_else(|| {
        sys.and_then(|d| d.pointer("/memory/free"))
            .and_then(Value::as_str)
            .and_then(parse_size)
            .unwrap_or(0.0) as u64
    });
    let spaces_running = n(caps.and_then(|c| c.get("spacesRunning")))
        .or_else(|| n(sys.and_then(|d| d.pointer("/docker/containersRunning"))))
        .and_then(|r| usize::try_from(r).ok())
        .unwrap_or(0);
    fleet::NodeLoad {
        name: s.name.clone(),
        online: sys.is_some(),
        gpus,
        memory_free,
        spaces_running,
    }
}

/// `--gpus`: a count (`2`) or a comma-separated list of GPU indexes or
/// UUIDs (`0,2`), as the API's `gpus` extension.
pub fn gpus_json(arg: &str) -> Result<Value, Fail> {
    let arg = arg.trim();
    if let Ok(n) = arg.parse::<u64>() {
        return Ok(json!(n));
    }
    let ids: Vec<&str> = arg.split(',').map(str::trim).collect();
    if ids.iter().any(|i| i.is_empty()) {
        return Err(Fail::error(format!(
            "Invalid gpus '{arg}' (a count, or GPU indexes/UUIDs separated by commas)"
        )));
    }
    Ok(json!(ids))
}

/// A size in bytes written as `create --memory` takes it (`2g`, `512m`,
/// `1536k`), or in bytes when it is not a whole number of KiB.
fn size_text(bytes: u64) -> String {
    match bytes {
        b if b > 0 && b % (1 << 30) == 0 => format!("{}g", b >> 30),
        b if b > 0 && b % (1 << 20) == 0 => format!("{}m", b >> 20),
        b if b > 0 && b % (1 << 10) == 0 => format!("{}k", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// The CPU number for a create request: an integer when integral.
pub fn cpus_json(cpus: &str) -> Option<Value> {
    let t = cpus.trim();
    if let Ok(i) = t.parse::<u64>() {
        return Some(json!(i));
    }
    let f: f64 = t.parse().ok()?;
    if !f.is_finite() {
        return None;
    }
    if f.fract() == 0.0 && f.abs() < 1e15 {
        return Some(json!(f as i64));
    }
    serde_json::Number::from_f64(f).map(Value::Number)
}

/// The hint after a failure that fresh discovery may cure.
const PROBE_AGAIN: &str = "Run 'clawdspace servers --refresh' to probe the configured hosts again.";

/// Cap on stop, start and destroy (they may wait for processes to end).
const LIFECYCLE_CAP: Option<Duration> = Some(Duration::from_secs(120));

/// The space name argument, or `Error: name required` with the usage.
fn required(name: Option<String>, usage: &str) -> Result<String, Fail> {
    name.filter(|n| !n.is_empty())
        .ok_or_else(|| Fail::error("name required").hint(format!("Usage: clawdspace {usage}")))
}

/// The API path of space `name`, plus `rest` (`""`, `"/exec"`, ...).
pub(crate) fn space_path(name: &str, rest: &str) -> String {
    format!("/spaces/{}{rest}", encode_segment(name))
}

fn servers_list(servers: &[Server]) -> String {
    servers
        .iter()
        .map(|s| format!("{} ({})", s.name, s.url))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Ctx<'_> {
    /// Runs one command; the result is the exit code.
    pub async fn run(&self, cmd: Cmd) -> CmdResult {
        match cmd {
            Cmd::Servers { refresh, json } => self.servers_cmd(refresh, json).await,
            Cmd::Create(args) => self.create(*args).await,
            Cmd::List { server, json } => self.list(server, json).await,
            Cmd::Exec {
                server,
                stdin,
                no_stream,
                name,
                command,
            } => self.exec(server, stdin, no_stream, name, command).await,
            Cmd::Shell { server, name } => self.shell(server, name).await,
            Cmd::Stop { server, name } => self.stop_start(server, name, true).await,
            Cmd::Start { server, name } => self.stop_start(server, name, false).await,
            Cmd::Destroy {
                force,
                volume,
                server,
                name,
            } => self.destroy(server, name, force, volume).await,
            Cmd::Port {
                server,
                public,
                ttl,
                open,
                name,
                port,
            } => self.port(server, name, port, public, ttl, open).await,
            Cmd::Forward {
                server,
                name,
                port,
                local,
            } => self.forward(server, name, port, local).await,
            Cmd::Cp { server, src, dst } => self.cp(server, src, dst).await,
            Cmd::System { server, json } => self.system(server, json).await,
            Cmd::Config { json } => self.config(json).await,
            Cmd::Mcp {
                allow,
                deny,
                no_local_files,
            } => self.mcp(allow, deny, no_local_files).await,
            Cmd::Completions { .. } => Ok(0),
        }
    }

    /// A request to `target` (2 s connect, `total` cap); a failure becomes
    /// the error that ends the command.
    pub(crate) async fn send(
        &self,
        target: &Server,
        method: Method,
        path: &str,
        body: Option<&Value>,
        total: Option<Duration>,
    ) -> Result<Value, Fail> {
        self.api
            .call(
                target,
                method,
                path,
                body,
                Opts::new(Connect::Normal, total),
            )
            .await
            .map_err(|e| e.fail(self.api, target))
    }

    async fn servers(&self) -> Vec<Server> {
        discovery::servers(self.settings, self.api, false).await
    }

    fn no_servers(&self) -> Fail {
        Fail::error("No Clawdspace servers found. Run 'clawdspace servers --refresh'").hint(
            format!(
                "Hosts probed: {} (from {}).",
                self.settings.hosts.join(" "),
                self.settings.hosts_source
            ),
        )
    }

    /// A `--server` argument: a discovered name, a URL, or a configured host.
    fn resolve(&self, servers: &[Server], s: &str) -> Result<Server, Fail> {
        let lower = s.to_lowercase();
        if let Some(x) = servers.iter().find(|x| x.name == s || x.name == lower) {
            return Ok(x.clone());
        }
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let url = host_url(s);
            return Ok(Server {
                name: url.clone(),
                url,
            });
        }
        if let Some(x) = servers.iter().find(|x| x.url == host_url(s)) {
            return Ok(x.clone());
        }
        if self.settings.hosts.iter().any(|h| h == s) {
            return Ok(Server {
                name: s.to_string(),
                url: host_url(s),
            });
        }
        let known = if servers.is_empty() {
            "none (run 'clawdspace servers --refresh')".to_string()
        } else {
            servers
                .iter()
                .map(|x| x.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(Fail::plain(format!("Unknown server: {s}")).hint(format!("Known servers: {known}")))
    }

    /// The servers to use: the one named by `--server`, or all known.
    async fn targets(&self, only: Option<&str>) -> Result<Vec<Server>, Fail> {
        let servers = self.servers().await;
        match only {
            Some(s) => Ok(vec![self.resolve(&servers, s)?]),
            None => Ok(servers),
        }
    }

    /// The first server (cache order) that has space `name`.
    pub(crate) async fn find_space(
        &self,
        name: &str,
        only: Option<&str>,
        on_any: bool,
    ) -> Result<Server, Fail> {
        let servers = self.targets(only).await?;
        if servers.is_empty() {
            return Err(self.no_servers());
        }
        let path = space_path(name, "");
        let results = join_all(servers.iter().map(|s| self.api.get(s, &path))).await;
        for (s, r) in servers.iter().zip(&results) {
            if let Ok(v) = r {
                if v.get("space").is_some() {
                    return Ok(s.clone());
                }
            }
        }
        let msg = if on_any {
            format!("Space '{name}' not found on any server")
        } else {
            format!("Space '{name}' not found")
        };
        let mut fail =
            Fail::error(msg).hint(format!("Servers searched: {}", servers_list(&servers)));
        for (s, r) in servers.iter().zip(&results) {
            match r {
                Err(e) if e.is_not_found() => {}
                Err(ApiError::Unauthorized) => {
                    fail = fail.hint(format!(
                        "{} refused the API key (it came from {}).",
                        s.name, self.settings.key_source
                    ))
                }
                Err(e) => fail = fail.hint(format!("{} could not be asked: {}", s.name, e.short())),
                Ok(_) => {}
            }
        }
        Err(fail.hint("Run 'clawdspace list' to see the spaces of every server."))
    }

    async fn servers_cmd(&self, refresh: bool, as_json: bool) -> CmdResult {
        if refresh {
            if !as_json {
                println!("{}", style::out(BLUE, "Scanning known hosts..."));
            }
            let _ = std::fs::remove_file(&self.settings.cache_file);
        }
        let servers = discovery::servers(self.settings, self.api, refresh).await;
        let infos = join_all(servers.iter().map(|s| self.api.system(s))).await;
        if as_json {
            let list: Vec<Value> = servers
                .iter()
                .zip(&infos)
                .map(|(s, i)| match i {
                    Ok(d) => json!({"name": s.name, "url": s.url, "status": "online", "system": d}),
                    Err(e) => {
                        json!({"name": s.name, "url": s.url, "status": "offline", "error": e.short()})
                    }
                })
                .collect();
            print_json(&json!({ "servers": list }));
            return Ok(0);
        }
        println!("{}", style::out(BLUE, "Clawdspace Servers:"));
        println!();
        println!(
            "{:<12} {:<25} {:<8} {:<22} {:<15}",
            "NAME", "URL", "STATUS", "RESOURCES", "CAPABILITIES"
        );
        println!(
            "{:<12} {:<25} {:<8} {:<22} {:<15}",
            "----", "---", "------", "---------", "------------"
        );
        let mut found = 0;
        let mut warnings = Vec::new();
        for (s, info) in servers.iter().zip(&infos) {
            match info {
                Ok(d) => {
                    let resources = format!(
                        "{}cpu, {}, {}",
                        show(d.get("cpus")),
                        show(d.pointer("/memory/percentage")),
                        show(d.get("arch"))
                    );
                    let gpu = gpu_label(d.get("capabilities"));
                    println!(
                        "{:<12} {:<25} {} {:<22} {:<15}",
                        s.name,
                        s.url,
                        style::out(GREEN, &format!("{:<8}", "online")),
                        resources,
                        gpu
                    );
                    found += 1;
                }
                Err(e) => {
                    println!(
                        "{:<12} {:<25} {}",
                        s.name,
                        s.url,
                        style::out(RED, &format!("{:<8}", "offline"))
                    );
                    let mut w = format!("Warning: {} ({}): {}", s.name, s.url, e.short());
                    if matches!(e, ApiError::Unauthorized) {
                        w.push_str(&format!("; the key came from {}", self.settings.key_source));
                    }
                    warnings.push(w);
                }
            }
        }
        if found == 0 {
            println!();
            println!("{}", style::out(YELLOW, "No Clawdspace servers found."));
            println!("Add hosts to CLAWDSPACE_HOSTS in ~/.clawdspace");
        }
        println!();
        println!(
            "{}",
            style::out(CYAN, "Tip: Use --gpu flag to auto-select a GPU server")
        );
        let _ = std::io::stdout().flush();
        for w in warnings {
            eprintln!("{}", style::err(YELLOW, &w));
        }
        Ok(0)
    }

    /// Placement without `--server` (the fleet's one rule,
    /// [`clawdspace_cli::fleet::place`]): with `gpus` > 0 a server whose
    /// runtime can give that many GPUs; otherwise, and among those, the
    /// most free memory, then the fewest running spaces. Prints why.
    async fn place(&self, gpus: usize, template: Option<&str>) -> Result<Server, Fail> {
        let servers = self.servers().await;
        if servers.is_empty() {
            return Err(self.no_servers());
        }
        if gpus > 0 {
            println!("{}", style::out(BLUE, "Looking for server with GPU..."));
        }
        // A template is looked up on each server too: only servers that
        // have it are candidates, and one whose resources ask for a GPU
        // places the space as `--gpu` would.
        let template = template.filter(|t| fleet::is_template_name(t));
        let answers = join_all(servers.iter().map(|s| async {
            let tmpl = async {
                match template {
                    Some(t) => Some(self.api.get(s, &format!("/templates/{t}")).await),
                    None => None,
                }
            };
            tokio::join!(self.api.system(s), self.api.capabilities(s), tmpl)
        }))
        .await;
        let mut loads = Vec::new();
        let mut down = Vec::new();
        let (mut lacking, mut template_gpu) = (Vec::new(), false);
        for (s, (sys, caps, tmpl)) in servers.iter().zip(&answers) {
            if let Err(e) = sys {
                down.push(format!("{}: {}", s.name, e.short()));
            }
            let mut load = load_of(s, sys.as_ref().ok(), caps.as_ref().ok());
            match tmpl {
                Some(Ok(v)) => template_gpu |= fleet::template_wants_gpu(v),
                Some(Err(ApiError::Status(404, _))) if load.online => {
                    lacking.push(s.name.clone());
                    load.online = false;
                }
                _ => {}
            }
            loads.push(load);
        }
        if let (Some(t), false) = (template, lacking.is_empty()) {
            if loads.iter().all(|l| !l.online) && down.len() < servers.len() {
                return Err(
                    Fail::error(format!("Template '{t}' not found on any server"))
                        .hint(format!("Servers without it: {}", lacking.join(", "))),
                );
            }
        }
        let gpus = if template_gpu && gpus == 0 {
            println!(
                "{}",
                style::out(
                    BLUE,
                    &format!(
                        "Template '{}' asks for a GPU: looking for server with GPU...",
                        template.unwrap_or_default()
                    )
                )
            );
            1
        } else {
            gpus
        };
        let placed = fleet::place(&loads, &fleet::Request { server: None, gpus });
        let p = match placed {
            Ok(p) => p,
            Err(fleet::NoPlacement::NoGpu { wanted, checked }) => {
                let what = if wanted == 1 {
                    "No server with GPU found".to_string()
                } else {
                    format!("No server with {wanted} GPUs found")
                };
                return Err(
                    Fail::error(what).hint(format!("Servers checked: {}", checked.join("; ")))
                );
            }
            Err(e) => {
                return Err(Fail::error(e.to_string())
                    .hint(down.join("; "))
                    .hint(PROBE_AGAIN))
            }
        };
        let chosen = servers
            .iter()
            .find(|s| s.name == p.node)
            .cloned()
            .ok_or_else(|| Fail::error(format!("Unknown server: {}", p.node)))?;
        if gpus > 0 {
            println!(
                "{}",
                style::out(GREEN, &format!("Found GPU server: {}", chosen.name))
            );
        } else {
            println!("{}", p.reason);
        }
        Ok(chosen)
    }

    async fn create(&self, args: CreateArgs) -> CmdResult {
        let CreateArgs {
            name,
            server,
            template,
            memory,
            cpus,
            gpu,
            gpus,
            image,
            network,
            publish,
            block_cidrs,
            allow_domains,
            allow_ports,
            env,
            env_file,
            env_file_path,
            repo,
            branch,
            dest,
            github_token,
            github_token_stdin,
        } = args;
        let gpus = gpus.as_deref().map(gpus_json).transpose()?;
        let gpu = gpu || gpus.is_some();
        let name = required(name, "create <name> [OPTIONS]")?;
        // With a template, what is not given here is the template's (as
        // upstream's CLI has it); without one, the usual defaults are sent.
        let template = template.filter(|t| !t.is_empty());
        let (memory, cpus) = match &template {
            Some(_) => (memory, cpus),
            None => (
                Some(memory.unwrap_or_else(|| "2g".into())),
                Some(cpus.unwrap_or_else(|| "1".into())),
            ),
        };
        let cpus_value = match &cpus {
            Some(c) => Some(cpus_json(c).ok_or_else(|| {
                Fail::error(format!(
                    "Invalid cpus '{c}' (a number of cores, e.g. 1 or 0.5)"
                ))
            })?),
            None => None,
        };
        let mut vars = serde_json::Map::new();
        for e in &env {
            let (k, v) = match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (
                    e.clone(),
                    std::env::var(e).map_err(|_| {
                        Fail::error(format!("--env {e}: not set here (use --env {e}=VALUE)"))
                    })?,
                ),
            };
            vars.insert(k, json!(v));
        }
        let token = if github_token_stdin {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| Fail::error(format!("reading the token from stdin: {e}")))?;
            Some(line.trim().to_string()).filter(|t| !t.is_empty())
        } else {
            github_token
        };
        if let Some(t) = token {
            vars.insert("GITHUB_TOKEN".into(), json!(t));
        }
        let env_file = match &env_file {
            Some(f) => {
                use base64::Engine;
                let bytes = std::fs::read(f)
                    .map_err(|e| Fail::error(format!("--env-file {}: {e}", f.display())))?;
                Some(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            None => None,
        };
        let target = match &server {
            Some(s) => {
                let servers = self.servers().await;
                self.resolve(&servers, s)?
            }
            None => {
                self.place(gpus_wanted(gpu, gpus.as_ref()), template.as_deref())
                    .await?
            }
        };
        println!(
            "{}",
            style::out(
                BLUE,
                &format!("Creating space '{name}' on {}...", target.name)
            )
        );
        let mut body = json!({ "name": name });
        if let Some(m) = &memory {
            body["memory"] = json!(m);
        }
        if let Some(c) = cpus_value {
            body["cpus"] = c;
        }
        if gpu || template.is_none() {
            body["gpu"] = json!(gpu);
        }
        if let Some(t) = &template {
            body["template"] = json!(t);
        }
        if let Some(img) = &image {
            body["image"] = json!(img);
        }
        if let Some(g) = gpus {
            body["gpus"] = g;
        }
        if !block_cidrs.is_empty() || !allow_domains.is_empty() || !allow_ports.is_empty() {
            // The object form; the server checks every entry.
            let mut policy = json!({"mode": network.as_deref().unwrap_or("internet")});
            for (key, v) in [
                ("blockCidrs", json!(block_cidrs)),
                ("allowDomains", json!(allow_domains)),
                ("allowPorts", json!(allow_ports)),
            ] {
                if v.as_array().is_some_and(|a| !a.is_empty()) {
                    policy[key] = v;
                }
            }
            body["network"] = policy;
        } else if let Some(n) = network {
            body["network"] = json!(n);
        }
        if !publish.is_empty() {
            body["ports"] = publish
                .iter()
                .map(|(host, container)| json!({"container": container, "host": host}))
                .collect();
        }
        if !vars.is_empty() {
            body["env"] = Value::Object(vars);
        }
        if let Some(b64) = env_file {
            body["envFileBase64"] = json!(b64);
            body["envFilePath"] = json!(env_file_path);
        }
        if let Some(r) = &repo {
            body["repoUrl"] = json!(r);
            if let Some(b) = &branch {
                body["repoBranch"] = json!(b);
            }
            if let Some(d) = &dest {
                body["repoDest"] = json!(d);
            }
        }
        let created = self
            .send(&target, Method::POST, "/spaces", Some(&body), None)
            .await?;
        println!("{}", style::out(GREEN, &format!("✓ Created space: {name}")));
        println!("  Server: {}", target.name);
        if let Some(t) = &template {
            println!("  Template: {t}");
        }
        let space = created.get("space");
        let memory = memory.unwrap_or_else(|| {
            let bytes = space.and_then(|s| s.get("memory")).and_then(Value::as_u64);
            bytes.map_or_else(|| "?".into(), size_text)
        });
        let cpus = cpus.unwrap_or_else(|| show(space.and_then(|s| s.get("cpus"))));
        println!("  Memory: {memory}");
        println!("  CPUs: {cpus}");
        if let Some(r) = &repo {
            let d = dest.as_deref().unwrap_or("repo");
            println!("  Repository: {r} in /workspace/{d}");
        }
        Ok(0)
    }

    async fn list(&self, server: Option<String>, as_json: bool) -> CmdResult {
        let servers = self.targets(server.as_deref()).await?;
        let results = join_all(servers.iter().map(|s| self.api.get(s, "/spaces"))).await;
        let mut rows = Vec::new();
        let mut errors = Vec::new();
        for (s, r) in servers.iter().zip(results) {
            match r {
                Ok(v) => {
                    for sp in v
                        .get("spaces")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                    {
                        rows.push((s.clone(), sp));
                    }
                }
                Err(e) => errors.push((s.clone(), e)),
            }
        }
        let all_failed = !servers.is_empty() && errors.len() == servers.len();
        if as_json {
            let spaces: Vec<Value> = rows
                .iter()
                .map(|(s, sp)| {
                    let mut sp = sp.clone();
                    if let Some(o) = sp.as_object_mut() {
                        o.insert("server".into(), json!(s.name));
                        o.insert("serverUrl".into(), json!(s.url));
                    }
                    sp
                })
                .collect();
            let errs: Vec<Value> = errors
                .iter()
                .map(|(s, e)| json!({"server": s.name, "url": s.url, "error": e.short()}))
                .collect();
            print_json(&json!({"spaces": spaces, "errors": errs}));
            return Ok(if all_failed { 1 } else { 0 });
        }
        if server.is_some() && all_failed {
            let (s, e) = &errors[0];
            return Err(e.fail(self.api, s));
        }
        if all_failed {
            let mut f = Fail::error("No server could be asked for its spaces");
            for (s, e) in &errors {
                f = f.hint(format!("{} ({}): {}", s.name, s.url, e.short()));
            }
            if errors
                .iter()
                .any(|(_, e)| matches!(e, ApiError::Unauthorized))
            {
                f = f.hint(format!(
                    "The API key came from {}.",
                    self.settings.key_source
                ));
            }
            return Err(f.hint(PROBE_AGAIN));
        }
        println!("{}", style::out(BLUE, "Spaces:"));
        println!();
        println!(
            "{:<20} {:<12} {:<12} {:<15}",
            "NAME", "SERVER", "STATUS", "RESOURCES"
        );
        println!(
            "{:<20} {:<12} {:<12} {:<15}",
            "----", "------", "------", "---------"
        );
        for (s, sp) in &rows {
            let status = show(sp.get("status"));
            let color = match status.as_str() {
                "running" => GREEN,
                "paused" => YELLOW,
                _ => RED,
            };
            let gib = sp.get("memory").and_then(Value::as_f64).unwrap_or(0.0) / 1024f64.powi(3);
            println!(
                "{:<20} {:<12} {} {}cpu, {gib:.1}GB",
                show(sp.get("name")),
                s.name,
                style::out(color, &format!("{status:<12}")),
                show(sp.get("cpus")),
            );
        }
        if rows.is_empty() {
            println!("  No spaces found.");
        }
        let _ = std::io::stdout().flush();
        for (s, e) in &errors {
            let mut w = format!(
                "Warning: server '{}' ({}) did not answer: {}; its spaces are not listed",
                s.name,
                s.url,
                e.short()
            );
            if matches!(e, ApiError::Unauthorized) {
                w.push_str(&format!(
                    " (the key came from {})",
                    self.settings.key_source
                ));
            }
            eprintln!("{}", style::err(YELLOW, &w));
        }
        if servers.is_empty() {
            eprintln!("  Hint: No Clawdspace servers found. Run 'clawdspace servers --refresh'");
        }
        Ok(0)
    }

    async fn exec(
        &self,
        server: Option<String>,
        forward_stdin: bool,
        no_stream: bool,
        name: Option<String>,
        command: Vec<String>,
    ) -> CmdResult {
        let (Some(name), false) = (name.filter(|n| !n.is_empty()), command.is_empty()) else {
            return Err(Fail::error("name and command required")
                .hint("Usage: clawdspace exec <name> <command...>"));
        };
        let cmd = command.join(" ");
        let target = self.find_space(&name, server.as_deref(), true).await?;
        if !no_stream {
            let mode = if forward_stdin {
                Stdin::Forward
            } else {
                Stdin::Closed
            };
            match stream::run(self.api, &target, &name, json!({"command": cmd}), mode).await? {
                Outcome::Exited(code) => return Ok(code),
                Outcome::Unsupported => {}
            }
        }
        let mut body = json!({"command": cmd});
        if forward_stdin {
            let mut input = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut input);
            body["stdin"] = json!(String::from_utf8_lossy(&input));
        }
        let path = space_path(&name, "/exec");
        let v = self
            .send(&target, Method::POST, &path, Some(&body), None)
            .await?;
        let out = v.get("stdout").and_then(Value::as_str).unwrap_or("");
        let err = v.get("stderr").and_then(Value::as_str).unwrap_or("");
        if !out.is_empty() {
            println!("{out}");
        }
        if !err.is_empty() {
            let _ = std::io::stdout().flush();
            eprintln!("{err}");
        }
        let code = v.get("exitCode").and_then(Value::as_i64).unwrap_or(0);
        Ok(i32::try_from(code).unwrap_or(1))
    }

    async fn shell(&self, server: Option<String>, name: Option<String>) -> CmdResult {
        let name = required(name, "shell <name>")?;
        let target = self.find_space(&name, server.as_deref(), true).await?;
        let tty = std::io::stdin().is_terminal();
        let mut first = json!({"command": stream::SHELL_COMMAND});
        if tty {
            let (cols, rows) = stream::window_size().unwrap_or((80, 24));
            let term = std::env::var("TERM")
                .ok()
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "xterm-256color".into());
            first["tty"] = json!(true);
            first["cols"] = json!(cols);
            first["rows"] = json!(rows);
            first["env"] = json!({ "TERM": term });
        }
        let raw = if tty { RawMode::enable() } else { None };
        let mode = if tty { Stdin::Terminal } else { Stdin::Forward };
        let result = stream::run(self.api, &target, &name, first, mode).await;
        drop(raw);
        match result? {
            Outcome::Exited(code) => Ok(code),
            Outcome::Unsupported => Err(Fail::error(format!(
                "Server '{}' does not offer interactive shells (no WebSocket exec at {}/api/spaces/{name}/exec/ws)",
                target.name, target.url
            ))
            .hint("Use 'clawdspace exec' instead.")),
        }
    }

    async fn stop_start(
        &self,
        server: Option<String>,
        name: Option<String>,
        stop: bool,
    ) -> CmdResult {
        let action = if stop { "stop" } else { "start" };
        let name = required(name, &format!("{action} <name>"))?;
        let target = self.find_space(&name, server.as_deref(), false).await?;
        let path = space_path(&name, &format!("/{action}"));
        self.send(&target, Method::POST, &path, None, LIFECYCLE_CAP)
            .await?;
        let msg = if stop {
            format!("✓ Paused: {name} (on {})", target.name)
        } else {
            format!("✓ Started: {name} (on {})", target.name)
        };
        println!("{}", style::out(GREEN, &msg));
        Ok(0)
    }

    async fn destroy(
        &self,
        server: Option<String>,
        name: Option<String>,
        force: bool,
        volume: bool,
    ) -> CmdResult {
        let name = required(name, "destroy [-f] <name>")?;
        let target = self.find_space(&name, server.as_deref(), false).await?;
        if !force {
            print!("Destroy space '{name}' on {}? [y/N] ", target.name);
            let _ = std::io::stdout().flush();
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            let answer = line.trim();
            if answer != "y" && answer != "Y" {
                println!("Cancelled.");
                return Ok(0);
            }
        }
        let mut path = space_path(&name, "");
        if volume {
            path.push_str("?removeVolume=true");
        }
        self.send(&target, Method::DELETE, &path, None, LIFECYCLE_CAP)
            .await?;
        println!(
            "{}",
            style::out(
                GREEN,
                &format!("✓ Destroyed: {name} (was on {})", target.name)
            )
        );
        if volume {
            println!("  Its /workspace volume was removed too.");
        } else {
            println!(
                "  Its /workspace volume was kept for a new space named '{name}' \
                 (destroy --volume deletes it with the space)."
            );
        }
        Ok(0)
    }

    async fn system(&self, server: Option<String>, as_json: bool) -> CmdResult {
        let servers = self.servers().await;
        let target = match &server {
            Some(s) => self.resolve(&servers, s)?,
            None => servers.first().cloned().ok_or_else(|| self.no_servers())?,
        };
        let d = match self.api.system(&target).await {
            Ok(d) => d,
            Err(ApiError::Unauthorized) => return Err(self.api.unauthorized(&target)),
            Err(e) => {
                return Err(Fail::error(format!("Could not connect to {}", target.name))
                    .hint(format!("{}: {}", target.url, e.short()))
                    .hint(PROBE_AGAIN))
            }
        };
        if as_json {
            print_json(&d);
            return Ok(0);
        }
        println!(
            "{}",
            style::out(BLUE, &format!("System Status ({}):", target.name))
        );
        println!();
        let load = d
            .pointer("/loadAverage/0")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        println!("  Hostname:   {}", show(d.get("hostname")));
        println!(
            "  Platform:   {} ({})",
            show(d.get("platform")),
            show(d.get("arch"))
        );
        println!("  CPUs:       {}", show(d.get("cpus")));
        println!("  Load:       {load:.2}");
        println!(
            "  Memory:     {} ({} / {})",
            show(d.pointer("/memory/percentage")),
            show(d.pointer("/memory/used")),
            show(d.pointer("/memory/total"))
        );
        if d.get("disk").is_some_and(|v| v.is_object()) {
            println!(
                "  Disk:       {} ({} / {})",
                show(d.pointer("/disk/percentage")),
                show(d.pointer("/disk/used")),
                show(d.pointer("/disk/total"))
            );
        }
        println!("  Uptime:     {}", show(d.get("uptime")));
        println!(
            "  Containers: {} running",
            show(d.pointer("/docker/containersRunning"))
        );
        Ok(0)
    }

    async fn config(&self, as_json: bool) -> CmdResult {
        let s = self.settings;
        let servers = self.servers().await;
        if as_json {
            print_json(&json!({
                "configFile": s.config_file,
                "cacheFile": s.cache_file,
                "hosts": s.hosts,
                "hostsSource": s.hosts_source,
                "apiKey": s.masked_key(),
                "apiKeySource": s.key_source,
                "servers": servers,
            }));
            return Ok(0);
        }
        println!("Config file:  {}", s.config_file.display());
        println!("Cache file:   {}", s.cache_file.display());
        println!("Known hosts:  {}", s.hosts.join(" "));
        println!();
        println!("API Key: {} (from {})", s.masked_key(), s.key_source);
        println!();
        println!("Discovered servers:");
        for sv in &servers {
            println!("  {}: {}", sv.name, sv.url);
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_labels() {
        assert_eq!(parse_size("1.0 KB"), Some(1024.0));
        assert_eq!(parse_size("2.5 GB"), Some(2.5 * 1024f64.powi(3)));
        assert_eq!(parse_size("1023.0 B"), Some(1023.0));
        assert_eq!(parse_size("junk"), None);
        let caps = json!({"gpu": true, "gpuName": "NVIDIA GeForce RTX 3090"});
        assert_eq!(gpu_label(Some(&caps)), "🎮 3090");
        let caps = json!({"gpu": true, "gpuName": "NVIDIA H100 80GB HBM3"});
        assert_eq!(gpu_label(Some(&caps)), "🎮 GPU");
        assert_eq!(gpu_label(Some(&json!({"gpu": false}))), "");
        let caps = json!({"gpu": true, "gpuName": "NVIDIA H100", "gpus": [{}, {}]});
        assert_eq!(gpu_label(Some(&caps)), "🎮 GPU ×2");
        assert_eq!(gpus_json("2").ok(), Some(json!(2)));
        assert_eq!(gpus_json("0, GPU-a").ok(), Some(json!(["0", "GPU-a"])));
        assert!(gpus_json("0,,1").is_err());
    }

    #[test]
    fn cpus_are_json_numbers() {
        assert_eq!(cpus_json("1"), Some(json!(1)));
        assert_eq!(cpus_json("2.0"), Some(json!(2)));
        assert_eq!(cpus_json("0.5"), Some(json!(0.5)));
        assert_eq!(cpus_json("abc"), None);
        assert_eq!(cpus_json("NaN"), None);
        assert_eq!(json!({"cpus": cpus_json("1")}).to_string(), r#"{"cpus":1}"#);
    }
}
