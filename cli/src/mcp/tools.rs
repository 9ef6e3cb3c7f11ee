//! What each tool does: its arguments checked, the space name against the
//! session's policy, then the REST calls.

use std::time::Duration;

use futures_util::future::join_all;
use rmcp::model::{CallToolRequestParams, JsonObject};
use rmcp::service::RequestContext;
use rmcp::RoleServer;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::exec::{self, Progress};
use super::files;
use super::params::*;
use super::rest::{CallError, Endpoint, Rest, Target};
use super::servers::Servers;
use super::McpServer;

/// The arguments of `tool`, or a readable refusal.
fn parse<T: DeserializeOwned>(tool: &str, args: Option<JsonObject>) -> Result<T, CallError> {
    serde_json::from_value(Value::Object(args.unwrap_or_default()))
        .map_err(|e| CallError(format!("Invalid arguments for {tool}: {e}")))
}

fn command_json(c: Command) -> Value {
    match c {
        Command::Shell(s) => json!(s),
        Command::Argv(v) => json!(v),
    }
}

fn env_json(env: Option<std::collections::BTreeMap<String, String>>) -> Option<Value> {
    env.map(|e| json!(e))
}

/// A name for a temporary file that no other call uses.
fn temp_name(ext: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "/tmp/.clawdspace-run-{}-{nanos:x}-{}.{ext}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl McpServer {
    fn check(&self, name: &str) -> Result<(), CallError> {
        self.inner.opts.policy.check(name).map_err(CallError)
    }

    /// Runs tool `name` (known to exist).
    pub(super) async fn call(
        &self,
        name: &str,
        request: CallToolRequestParams,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Value, CallError> {
        let progress = request
            .meta
            .as_ref()
            .and_then(|m| m.get_progress_token())
            .or_else(|| ctx.meta.get_progress_token())
            .map(|token| Progress {
                peer: ctx.peer.clone(),
                token,
            });
        let args = request.arguments;
        let rest = self.rest(ctx)?;
        let servers = Servers {
            rest: &rest,
            source: &self.inner.opts.source,
        };
        let r = &rest;
        match name {
            "list_servers" => {
                let _: ServerArgs = parse(name, args)?;
                servers.describe().await
            }
            "list_spaces" => {
                let a: ServerArgs = parse(name, args)?;
                self.list_spaces(&servers, a.server.as_deref()).await
            }
            "create_space" => {
                let a: CreateArgs = parse(name, args)?;
                self.check(&a.name)?;
                self.create(&servers, a).await
            }
            "get_space" => {
                let a: SpaceArgs = parse(name, args)?;
                self.check(&a.name)?;
                let t = servers.with_space(&a.name, a.server.as_deref()).await?;
                let v = r.json(&t, Endpoint::GetSpace, &a.name, &[], None).await?;
                Ok(with_server(v, &t))
            }
            "destroy_space" => {
                let a: DestroyArgs = parse(name, args)?;
                self.check(&a.name)?;
                let t = servers.with_space(&a.name, a.server.as_deref()).await?;
                let q: &[(&str, &str)] = if a.remove_volume {
                    &[("removeVolume", "true")]
                } else {
                    &[]
                };
                let v = r.json(&t, Endpoint::DestroySpace, &a.name, q, None).await?;
                Ok(with_server(v, &t))
            }
            "pause_space" | "resume_space" => {
                let a: SpaceArgs = parse(name, args)?;
                self.check(&a.name)?;
                let t = servers.with_space(&a.name, a.server.as_deref()).await?;
                let ep = if name == "pause_space" {
                    Endpoint::StopSpace
                } else {
                    Endpoint::StartSpace
                };
                r.json(&t, ep, &a.name, &[], None).await?;
                let v = r.json(&t, Endpoint::GetSpace, &a.name, &[], None).await?;
                Ok(with_server(v, &t))
            }
            "exec" => {
                let a: ExecArgs = parse(name, args)?;
                self.check(&a.name)?;
                let t = servers.with_space(&a.name, a.server.as_deref()).await?;
                let req = exec::Request {
                    command: command_json(a.command),
                    cwd: a.cwd,
                    env: env_json(a.env),
                    user: a.user,
                    stdin: a.stdin,
                    timeout: a.timeout_seconds.map(|s| Duration::from_secs(s.into())),
                };
                exec::run(r, &t, &a.name, req, progress, &ctx.ct).await
            }
            "run_code" => {
                let a: RunCodeArgs = parse(name, args)?;
                self.check(&a.name)?;
                let t = servers.with_space(&a.name, a.server.as_deref()).await?;
                run_code(r, &t, a, progress, ctx).await
            }
            "read_file" => {
                let a: ReadFileArgs = parse(name, args)?;
                self.check(&a.name)?;
                let t = servers.with_space(&a.name, a.server.as_deref()).await?;
                files::read(r, &t, &a.name, &a.path, a.max_bytes).await
            }
            "write_file" => {
                let a: WriteFileArgs = parse(name, args)?;
                self.check(&a.name)?;
                let t = servers.with_space(&a.name, a.server.as_deref()).await?;
                files::write(
                    r,
                    &t,
                    &a.name,
                    &a.path,
                    a.content,
                    a.encoding,
                    a.mode.as_deref(),
                )
                .await
            }
            "list_files" => {
                let a: ListFilesArgs = parse(name, args)?;
                self.check(&a.name)?;
                let t = servers.with_space(&a.name, a.server.as_deref()).await?;
                files::list(r, &t, &a.name, a.path.as_deref()).await
            }
            "upload_file" => {
                let a: UploadArgs = parse(name, args)?;
                self.check(&a.name)?;
                let t = servers.with_space(&a.name, a.server.as_deref()).await?;
                files::upload(r, &t, &a.name, &a.local_path, &a.path, a.mode.as_deref()).await
            }
            "download_file" => {
                let a: DownloadArgs = parse(name, args)?;
                self.check(&a.name)?;
                let t = servers.with_space(&a.name, a.server.as_deref()).await?;
                files::download(r, &t, &a.name, &a.path, &a.local_path, a.overwrite).await
            }
            "list_templates" => {
                let a: ServerArgs = parse(name, args)?;
                let t = servers.one(a.server.as_deref()).await?;
                r.json(&t, Endpoint::ListTemplates, "", &[], None).await
            }
            "get_template" => {
                let a: TemplateArgs = parse(name, args)?;
                let t = servers.one(a.server.as_deref()).await?;
                r.json(&t, Endpoint::GetTemplate, &a.name, &[], None).await
            }
            "save_template" => {
                let a: SaveTemplateArgs = parse(name, args)?;
                let t = servers.one(a.server.as_deref()).await?;
                let body = json!({ "yaml": a.yaml });
                r.json(&t, Endpoint::PutTemplate, "", &[], Some(&body))
                    .await
            }
            "system_status" => {
                let a: ServerArgs = parse(name, args)?;
                let t = servers.one(a.server.as_deref()).await?;
                let (sys, caps) = tokio::join!(
                    r.json(&t, Endpoint::System, "", &[], None),
                    r.json(&t, Endpoint::Capabilities, "", &[], None)
                );
                Ok(json!({"server": t.server, "system": sys?, "capabilities": caps?}))
            }
            other => Err(CallError(format!("Unknown tool: {other}"))),
        }
    }

    async fn list_spaces(
        &self,
        servers: &Servers<'_>,
        server: Option<&str>,
    ) -> Result<Value, CallError> {
        let targets: Vec<Target> = match server {
            Some(s) => vec![servers.one(Some(s)).await?],
            None => servers
                .all()
                .await?
                .into_iter()
                .filter(|k| k.online)
                .map(|k| k.target)
                .collect(),
        };
        let answers = join_all(
            targets
                .iter()
                .map(|t| servers.rest.json(t, Endpoint::ListSpaces, "", &[], None)),
        )
        .await;
        let (mut spaces, mut errors, mut hidden) = (Vec::new(), Vec::new(), 0);
        // One daemon found under two names (a host entry and its fleet
        // name) lists its spaces once: ids are random per space.
        let mut seen = std::collections::HashSet::new();
        let mut last_err = None;
        for (t, a) in targets.iter().zip(answers) {
            match a {
                Ok(v) => {
                    for mut s in v
                        .get("spaces")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                    {
                        let name = s.get("name").and_then(Value::as_str).unwrap_or("");
                        if !self.inner.opts.policy.allows(name) {
                            hidden += 1;
                            continue;
                        }
                        let id = s.get("id").and_then(Value::as_str).unwrap_or("");
                        if !id.is_empty() && !seen.insert(id.to_string()) {
                            continue;
                        }
                        s["server"] = json!(t.server);
                        spaces.push(s);
                    }
                }
                Err(e) => {
                    errors.push(json!({"server": t.server, "error": e.0}));
                    last_err = Some(e);
                }
            }
        }
        if let (Some(e), true) = (last_err, errors.len() == targets.len()) {
            return Err(e);
        }
        let mut out = json!({ "spaces": spaces });
        if hidden > 0 {
            out["hiddenByPolicy"] = json!(hidden);
        }
        if !errors.is_empty() {
            out["errors"] = json!(errors);
        }
        Ok(out)
    }

    async fn create(&self, servers: &Servers<'_>, a: CreateArgs) -> Result<Value, CallError> {
        let gpus_wanted = match &a.gpus {
            Some(Gpus::Count(n)) => *n as usize,
            Some(Gpus::Ids(ids)) => ids.len(),
            None if a.gpu == Some(true) => 1,
            None => 0,
        };
        let mut body = json!({ "name": a.name });
        let strings = [
            ("template", a.template),
            ("image", a.image),
            ("memory", a.memory),
            ("disk", a.disk),
            ("envFileText", a.env_file_text),
            ("envFilePath", a.env_file_path),
            ("repoUrl", a.repo_url),
            ("repoBranch", a.repo_branch),
            ("repoDest", a.repo_dest),
        ];
        for (k, v) in strings {
            if let Some(v) = v {
                body[k] = json!(v);
            }
        }
        if let Some(c) = a.cpus {
            body["cpus"] = json!(c);
        }
        if let Some(g) = &a.gpus {
            body["gpu"] = json!(true);
            body["gpus"] = match g {
                Gpus::Count(n) => json!(n),
                Gpus::Ids(ids) => json!(ids),
            };
        } else if let Some(g) = a.gpu {
            body["gpu"] = json!(g);
        }
        if let Some(n) = a.network {
            body["network"] = json!(n.as_str());
        }
        if let Some(e) = a.env {
            body["env"] = json!(e);
        }
        let template = body["template"].as_str().map(String::from);
        let t = servers
            .for_create(a.server.as_deref(), gpus_wanted, template.as_deref())
            .await?;
        let v = servers
            .rest
            .json(&t, Endpoint::CreateSpace, "", &[], Some(&body))
            .await?;
        Ok(with_server(v, &t))
    }
}

/// `{"space": …}` answers get the server's name.
fn with_server(mut v: Value, t: &Target) -> Value {
    if v.is_object() {
        v["server"] = json!(t.server);
    }
    v
}

async fn run_code(
    r: &Rest,
    t: &Target,
    a: RunCodeArgs,
    progress: Option<Progress>,
    ctx: &RequestContext<RoleServer>,
) -> Result<Value, CallError> {
    let (program, ext) = a.language.program();
    let path = temp_name(ext);
    files::write(r, t, &a.name, &path, a.code, Encoding::Utf8, Some("0644")).await?;
    let req = exec::Request {
        command: json!([program, path]),
        cwd: a.cwd,
        env: env_json(a.env),
        user: a.user,
        stdin: a.stdin,
        timeout: a.timeout_seconds.map(|s| Duration::from_secs(s.into())),
    };
    let out = exec::run(r, t, &a.name, req, progress, &ctx.ct).await;
    let del = r.request(t, Endpoint::DeleteFile, &a.name, &[("path", &path)]);
    if let Err(e) = r.send(t, del).await {
        warn(&format!("run_code: could not remove {path}: {e}"));
    }
    out
}

/// The library logs nothing itself (stdout is the protocol's in stdio
/// mode); a failed clean-up is only worth a line on stderr.
fn warn(msg: &str) {
    eprintln!("clawdspace mcp: {msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_arguments_are_readable() {
        let args = |v: Value| v.as_object().cloned();
        let e = parse::<ExecArgs>("exec", args(json!({"name": "a"}))).expect_err("refused");
        assert!(e.0.contains("missing field `command`"), "{e}");
        let e = parse::<ExecArgs>("exec", args(json!({"name": "a", "command": 3})))
            .expect_err("refused");
        assert!(e.0.contains("a string (run by sh -c)"), "{e}");
        let e = parse::<SpaceArgs>("get_space", args(json!({"name": "a", "nme": 1})))
            .expect_err("refused");
        assert!(e.0.contains("unknown field `nme`"), "{e}");
        let ok = parse::<ExecArgs>("exec", args(json!({"name": "a", "command": ["ls", "-l"]})));
        assert!(matches!(ok.map(|a| a.command), Ok(Command::Argv(v)) if v.len() == 2));
        assert!(temp_name("py").starts_with("/tmp/.clawdspace-run-"));
    }
}
