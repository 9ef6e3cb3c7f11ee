//! The rules of request fields beyond their JSON type (SPEC section 6 and
//! 5.8): defaults, ranges, size strings, and the contract's error messages.
//! The bodies themselves are the `Deserialize` types of `model.rs`.

use std::time::Duration;

use serde_json::Value;

use clawdspace_runtime::gpu::GpuRequest;
use clawdspace_runtime::network::policy;
use clawdspace_runtime::{
    Command, Egress, EnvFile, ExecRequest, GitPush, NetworkMode, PublishedPort, RepoClone,
    SpaceName, DEFAULT_ENV_FILE_PATH, DEFAULT_REPO_DEST, INVALID_NAME, MAX_ENV_FILE, MIN_DISK,
    MIN_MEMORY,
};

use crate::error::ApiError;
use crate::model::{
    CommandSpec, CpusSpec, CreateSpaceBody, ExecBody, Field, GitPushBody, GpuId, GpusSpec,
    NetworkName, NetworkPolicy, NetworkSpec,
};

/// Default memory: 2 GiB.
pub const DEFAULT_MEMORY: u64 = 2 << 30;

/// The name of a create request, validated (by the runtime's rules).
pub fn name(body: &CreateSpaceBody) -> Result<SpaceName, ApiError> {
    match &body.name {
        Some(Field::Typed(s)) => SpaceName::new(s.as_str()).map_err(ApiError::from),
        _ => Err(ApiError::bad_request(INVALID_NAME)),
    }
}

/// Memory in bytes: `^(\d+)([gmk])?$` case-insensitively (no suffix = MiB),
/// any other string = 2 GiB; non-strings, < 6 MiB and overflow refused.
pub fn memory(body: &CreateSpaceBody) -> Result<u64, ApiError> {
    let invalid = || ApiError::bad_request("Invalid memory");
    let s = match &body.memory {
        None => return Ok(DEFAULT_MEMORY),
        Some(Field::Typed(s)) => s,
        Some(Field::Other(_)) => return Err(invalid()),
    };
    let Some(bytes) = size_bytes(s) else {
        return Ok(DEFAULT_MEMORY);
    };
    let bytes = bytes.ok_or_else(invalid)?;
    if bytes < MIN_MEMORY {
        return Err(ApiError::bad_request(format!(
            "Invalid memory: at least {} MiB",
            MIN_MEMORY >> 20
        )));
    }
    if bytes > i64::MAX as u64 {
        return Err(invalid());
    }
    Ok(bytes)
}

/// A size `^(\d+)([gmk])?$` (case-insensitive, no suffix = MiB) in bytes:
/// `None` when `s` has another form, `Some(None)` when it overflows.
fn size_bytes(s: &str) -> Option<Option<u64>> {
    let lower = s.to_ascii_lowercase();
    let (digits, unit) = match lower.char_indices().last() {
        Some((i, c @ ('g' | 'm' | 'k'))) => (&lower[..i], Some(c)),
        _ => (lower.as_str(), None),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mult: u64 = match unit {
        Some('k') => 1 << 10,
        Some('g') => 1 << 30,
        _ => 1 << 20,
    };
    Some(digits.parse::<u64>().ok().and_then(|n| n.checked_mul(mult)))
}

/// The disk limit (extension): absent/null = none; else a size written
/// like `memory`, at least 1 MiB. Unlike `memory`, any other form is 400.
pub fn disk(body: &CreateSpaceBody) -> Result<Option<u64>, ApiError> {
    match &body.disk {
        None => Ok(None),
        Some(Field::Typed(s)) => disk_size(s).map(Some).map_err(ApiError::bad_request),
        Some(Field::Other(_)) => Err(ApiError::bad_request("Invalid disk")),
    }
}

/// A disk limit in bytes, written like `memory` and at least 1 MiB: what
/// `disk` and `CLAWDSPACE_DEFAULT_DISK` accept.
pub fn disk_size(s: &str) -> Result<u64, &'static str> {
    let bytes = size_bytes(s).flatten().ok_or("Invalid disk")?;
    if bytes < MIN_DISK {
        return Err("Invalid disk: at least 1 MiB");
    }
    if bytes > i64::MAX as u64 {
        return Err("Invalid disk");
    }
    Ok(bytes)
}

/// Ports to publish on the host (`ports`); absent or null: none.
pub fn ports(body: &CreateSpaceBody) -> Result<Vec<PublishedPort>, ApiError> {
    match &body.ports {
        None | Some(Field::Other(Value::Null)) => Ok(Vec::new()),
        Some(Field::Typed(v)) => Ok(v
            .iter()
            .map(|p| PublishedPort {
                container: p.container,
                host: p.host,
            })
            .collect()),
        Some(Field::Other(_)) => Err(ApiError::bad_request(
            "Invalid ports (a list of {\"container\": port, \"host\": port}, ports 1-65535)",
        )),
    }
}

/// CPUs in nano-CPUs: a number (or, for compatibility, a numeric string) in
/// [0.01, host cpus].
pub fn cpus(body: &CreateSpaceBody, host_cpus: u32) -> Result<u64, ApiError> {
    let invalid = || ApiError::bad_request("Invalid cpus");
    let v = match &body.cpus {
        None => 1.0,
        Some(Field::Typed(CpusSpec::Number(n))) => *n,
        Some(Field::Typed(CpusSpec::Text(s))) => s.trim().parse::<f64>().map_err(|_| invalid())?,
        Some(Field::Other(_)) => return Err(invalid()),
    };
    if !v.is_finite() || v < 0.01 || v > f64::from(host_cpus) {
        return Err(invalid());
    }
    Ok((v * 1e9).round() as u64)
}

/// The gpu flag: a JSON boolean (or absent/null = false).
pub fn gpu(body: &CreateSpaceBody) -> Result<bool, ApiError> {
    match &body.gpu {
        None => Ok(false),
        Some(Field::Typed(b)) => Ok(*b),
        Some(Field::Other(_)) => Err(ApiError::bad_request("Invalid gpu")),
    }
}

/// The `network` extension: `"internet"` (default), `"lan"` or `"none"`,
/// or `{mode, blockCidrs, allowDomains, allowPorts}` (all optional; mode
/// default `internet`): the mode and the egress policy, checked.
pub fn network(body: &CreateSpaceBody) -> Result<(NetworkMode, Egress), ApiError> {
    let none = Egress::default();
    match &body.network {
        None => Ok((NetworkMode::Internet, none)),
        Some(Field::Typed(NetworkSpec::Mode(n))) => Ok((mode_of(*n), none)),
        Some(Field::Typed(NetworkSpec::Policy(p))) => network_policy(p),
        // The runtime's message names the value it does not know.
        Some(Field::Other(Value::String(s))) => Err(ApiError::bad_request(
            s.parse::<NetworkMode>().err().unwrap_or_default(),
        )),
        Some(Field::Other(Value::Object(m))) => {
            let known = ["mode", "blockCidrs", "allowDomains", "allowPorts"];
            let unknown = m.keys().find(|k| !known.contains(&k.as_str()));
            Err(ApiError::bad_request(format!(
                "Invalid network: unknown field '{}' (expected mode, blockCidrs, allowDomains, allowPorts)",
                unknown.map_or("", |k| k.as_str()).chars().take(64).collect::<String>()
            )))
        }
        Some(Field::Other(_)) => Err(ApiError::bad_request(
            "Invalid network (expected \"internet\", \"lan\" or \"none\", or an object \
             {mode, blockCidrs, allowDomains, allowPorts})",
        )),
    }
}

fn mode_of(n: NetworkName) -> NetworkMode {
    match n {
        NetworkName::Internet => NetworkMode::Internet,
        NetworkName::Lan => NetworkMode::Lan,
        NetworkName::None => NetworkMode::None,
    }
}

/// The object form of `network`.
fn network_policy(p: &NetworkPolicy) -> Result<(NetworkMode, Egress), ApiError> {
    let mode = match &p.mode {
        None | Some(Value::Null) => NetworkMode::Internet,
        Some(Value::String(s)) => s.parse().map_err(ApiError::bad_request)?,
        Some(_) => {
            return Err(ApiError::bad_request(
                "Invalid network: mode must be \"internet\", \"lan\" or \"none\"",
            ))
        }
    };
    let block_cidrs = strings(&p.block_cidrs, "blockCidrs", policy::MAX_CIDRS)?
        .iter()
        .map(|c| policy::parse_cidr(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::bad_request)?;
    let allow_domains = strings(&p.allow_domains, "allowDomains", policy::MAX_DOMAINS)?;
    let allow_ports = match &p.allow_ports {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) if a.len() <= policy::MAX_PORTS => a
            .iter()
            .map(|v| {
                v.as_u64()
                    .filter(|n| (1..=65535).contains(n))
                    .map(|n| n as u16)
                    .ok_or_else(|| ApiError::bad_request("Invalid allowPorts: ports are 1-65535"))
            })
            .collect::<Result<_, _>>()?,
        Some(Value::Array(_)) => {
            return Err(ApiError::bad_request(format!(
                "Invalid allowPorts: at most {} entries",
                policy::MAX_PORTS
            )))
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "Invalid allowPorts: expected a list of ports",
            ))
        }
    };
    let egress = Egress {
        block_cidrs,
        allow_domains,
        allow_ports,
    }
    .normalize(mode)
    .map_err(ApiError::bad_request)?;
    Ok((mode, egress))
}

/// A list of at most `max` strings (absent or null: empty).
fn strings(v: &Option<Value>, field: &str, max: usize) -> Result<Vec<String>, ApiError> {
    let expected = || ApiError::bad_request(format!("Invalid {field}: expected a list of strings"));
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) if a.len() > max => Err(ApiError::bad_request(format!(
            "Invalid {field}: at most {max} entries"
        ))),
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| s.as_str().map(str::to_string).ok_or_else(expected))
            .collect(),
        Some(_) => Err(expected()),
    }
}

/// `writableRootfs` (extension): whether the root filesystem is to be
/// read-only (`false` given); absent or null: writable.
pub fn readonly_rootfs(body: &CreateSpaceBody) -> Result<bool, ApiError> {
    match &body.writable_rootfs {
        None | Some(Field::Other(Value::Null)) => Ok(false),
        Some(Field::Typed(w)) => Ok(!w),
        Some(Field::Other(_)) => Err(ApiError::bad_request("Invalid writableRootfs")),
    }
}

/// The `template` of a create: a name, or none when absent, null or
/// empty (as upstream has it).
pub fn template(body: &CreateSpaceBody) -> Result<Option<&str>, ApiError> {
    match &body.template {
        None | Some(Field::Other(Value::Null)) => Ok(None),
        Some(Field::Typed(t)) => Ok(Some(t.as_str()).filter(|t| !t.is_empty())),
        Some(Field::Other(_)) => Err(ApiError::bad_request(
            "Invalid template: template must be a string",
        )),
    }
}

/// The `gpus` extension: a count (integer ≥ 1), or a non-empty list of
/// GPU indexes (numbers or strings) or UUIDs. Absent or null: none given.
pub fn gpus(body: &CreateSpaceBody) -> Result<Option<GpuRequest>, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "Invalid gpus (a count of at least 1, or a list of GPU indexes or UUIDs)",
        )
    };
    match &body.gpus {
        None => Ok(None),
        Some(Field::Typed(GpusSpec::Count(c))) if *c >= 1 => Ok(Some(GpuRequest::Count(
            usize::try_from(*c).map_err(|_| invalid())?,
        ))),
        Some(Field::Typed(GpusSpec::Devices(ids))) if !ids.is_empty() => ids
            .iter()
            .map(|id| match id {
                GpuId::Index(i) => Some(i.to_string()),
                GpuId::Name(s) if !s.is_empty() && !s.contains('\0') => Some(s.clone()),
                GpuId::Name(_) => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(|ids| Some(GpuRequest::Devices(ids)))
            .ok_or_else(invalid),
        Some(_) => Err(invalid()),
    }
}

/// The image: given, or the default for the kind of space.
pub fn image(
    body: &CreateSpaceBody,
    gpu: bool,
    default: &str,
    gpu_default: &str,
) -> Result<String, ApiError> {
    match &body.image {
        None => Ok(if gpu { gpu_default } else { default }.to_string()),
        Some(Field::Typed(s)) => {
            clawdspace_runtime::image::validate_reference(s)?;
            Ok(s.clone())
        }
        Some(Field::Other(_)) => Err(ApiError::bad_request("Invalid image")),
    }
}

/// The command of an exec request: a non-empty string (run with `sh -c`)
/// or a non-empty array of strings (argv).
pub fn command(body: &ExecBody) -> Result<Command, ApiError> {
    match &body.command {
        Some(Field::Typed(CommandSpec::Shell(s))) if !s.is_empty() => Ok(Command::Shell(s.clone())),
        Some(Field::Typed(CommandSpec::Argv(a))) if !a.is_empty() => Ok(Command::Argv(a.clone())),
        _ => Err(ApiError::bad_request("Command required")),
    }
}

/// A string field of the later additions (SPEC 12): absent or null is
/// `None`, a string `Some`, anything else a 400 naming it.
fn string<'a>(f: &'a Option<Field<String>>, what: &str) -> Result<Option<&'a str>, ApiError> {
    match f {
        None => Ok(None),
        Some(Field::Typed(s)) => Ok(Some(s)),
        Some(Field::Other(Value::Null)) => Ok(None),
        Some(Field::Other(_)) => Err(ApiError::bad_request(format!("{what} must be a string"))),
    }
}

/// The `env` of a create: an object of strings (the runtime checks names
/// and sizes).
pub fn create_env(body: &CreateSpaceBody) -> Result<Vec<(String, String)>, ApiError> {
    match &body.env {
        None | Some(Field::Other(Value::Null)) => Ok(Vec::new()),
        Some(Field::Typed(m)) => Ok(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        Some(Field::Other(_)) => Err(ApiError::bad_request("env must be an object of strings")),
    }
}

/// The environment file of a create: `envFileText` or `envFileBase64`
/// (not both), at `envFilePath` (default `/workspace/.env`).
pub fn env_file(body: &CreateSpaceBody) -> Result<Option<EnvFile>, ApiError> {
    use base64::Engine;
    // Empty content is no file, as upstream has it.
    let text = string(&body.env_file_text, "envFileText")?.filter(|t| !t.is_empty());
    let b64 = string(&body.env_file_base64, "envFileBase64")?.filter(|t| !t.is_empty());
    let path = string(&body.env_file_path, "envFilePath")?;
    let content = match (text, b64) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "envFileText and envFileBase64 are exclusive",
            ))
        }
        (Some(t), None) => t.as_bytes().to_vec(),
        (None, Some(b)) => {
            // Decoded size is at most 3/4 of the text: refuse before decoding.
            if b.len() / 4 * 3 > MAX_ENV_FILE + 3 {
                return Err(ApiError::bad_request("env file larger than 1 MiB"));
            }
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|e| ApiError::bad_request(format!("envFileBase64: invalid base64: {e}")))?
        }
        // As upstream: a path alone writes nothing.
        (None, None) => return Ok(None),
    };
    Ok(Some(EnvFile {
        path: path.unwrap_or(DEFAULT_ENV_FILE_PATH).to_string(),
        content,
    }))
}

/// The repository of a create: `repoUrl`, `repoBranch`, `repoDest`
/// (default `repo`); the runtime checks them.
pub fn repo(body: &CreateSpaceBody) -> Result<Option<RepoClone>, ApiError> {
    let url = string(&body.repo_url, "repoUrl")?;
    let branch = string(&body.repo_branch, "repoBranch")?;
    let dest = string(&body.repo_dest, "repoDest")?;
    // As upstream: no URL (or an empty one), no clone.
    let Some(url) = url.filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    Ok(Some(RepoClone {
        url: url.to_string(),
        branch: branch.filter(|b| !b.is_empty()).map(str::to_string),
        dest: dest
            .filter(|d| !d.is_empty())
            .unwrap_or(DEFAULT_REPO_DEST)
            .to_string(),
    }))
}

/// A `git push` request: `repoPath`, `remote` (default `origin`), `branch`
/// (default `main`), `token` (required; checked by the runtime).
pub fn git_push(body: &GitPushBody) -> Result<GitPush, ApiError> {
    let token = string(&body.token, "token")?.unwrap_or("");
    if token.is_empty() {
        return Err(ApiError::bad_request("token required"));
    }
    let repo_path = string(&body.repo_path, "repoPath")?
        .ok_or_else(|| ApiError::bad_request("repoPath required"))?;
    Ok(GitPush {
        repo_path: repo_path.to_string(),
        remote: string(&body.remote, "remote")?
            .unwrap_or("origin")
            .to_string(),
        branch: string(&body.branch, "branch")?
            .unwrap_or("main")
            .to_string(),
        token: token.to_string(),
    })
}

/// A string extension field; other JSON types are ignored, as they always
/// were.
fn text(f: &Option<Field<String>>) -> Option<&str> {
    match f {
        Some(Field::Typed(s)) => Some(s),
        _ => None,
    }
}

/// An exec request: the command plus the optional extensions `cwd`,
/// `env` (object of strings), `user`, `stdin` (string) and `timeoutMs`.
pub fn exec_request(body: &ExecBody) -> Result<ExecRequest, ApiError> {
    let command = command(body)?;
    if command.argv().iter().any(|a| a.contains('\0')) {
        return Err(ApiError::bad_request("command contains a NUL byte"));
    }
    let mut req = ExecRequest::new(command);
    if let Some(cwd) = text(&body.cwd) {
        if !cwd.starts_with('/') || cwd.contains('\0') {
            return Err(ApiError::bad_request("cwd must be an absolute path"));
        }
        req.cwd = Some(cwd.to_string());
    }
    match &body.env {
        None => {}
        Some(Field::Typed(m)) => env(&mut req, m.iter().map(|(k, v)| (k, Some(v.as_str()))))?,
        // An object with a value that is not a string: checked in key order
        // like the others, so the first bad entry is the one reported.
        Some(Field::Other(Value::Object(m))) => {
            env(&mut req, m.iter().map(|(k, v)| (k, v.as_str())))?
        }
        Some(Field::Other(_)) => {
            return Err(ApiError::bad_request("env must be an object of strings"))
        }
    }
    if let Some(u) = text(&body.user) {
        if u.contains('\0') {
            return Err(ApiError::bad_request("user contains a NUL byte"));
        }
        req.user = Some(u.to_string());
    }
    if let Some(s) = text(&body.stdin) {
        req.stdin = Some(s.as_bytes().to_vec());
    }
    match &body.timeout_ms {
        None => {}
        Some(Field::Typed(ms)) if *ms > 0 => req.timeout = Some(Duration::from_millis(*ms)),
        Some(_) => {
            return Err(ApiError::bad_request(
                "timeoutMs must be a positive integer",
            ))
        }
    }
    Ok(req)
}

/// Adds `env` entries (name, value if a string) to `req`, in order.
fn env<'a>(
    req: &mut ExecRequest,
    entries: impl Iterator<Item = (&'a String, Option<&'a str>)>,
) -> Result<(), ApiError> {
    for (k, v) in entries {
        let Some(v) = v else {
            return Err(ApiError::bad_request("env values must be strings"));
        };
        if v.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "env value of '{k}' contains a NUL byte"
            )));
        }
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(ApiError::bad_request(format!("invalid env name '{k}'")));
        }
        req.env.push(format!("{k}={v}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create(v: Value) -> CreateSpaceBody {
        crate::body::fields(v).expect("fields")
    }

    fn exec(v: Value) -> ExecBody {
        crate::body::fields(v).expect("fields")
    }

    fn mem(v: Value) -> Result<u64, u16> {
        memory(&create(json!({ "memory": v }))).map_err(|e| e.status.as_u16())
    }

    #[test]
    fn create_extras_are_typed() {
        let b =
            create(json!({"env": {"A": "1"}, "envFileText": "K=V\n", "repoUrl": "https://x/r"}));
        assert_eq!(create_env(&b).ok(), Some(vec![("A".into(), "1".into())]));
        let f = env_file(&b).ok().flatten().expect("file");
        assert_eq!(
            (f.path.as_str(), f.content.as_slice()),
            ("/workspace/.env", &b"K=V\n"[..])
        );
        let r = repo(&b).ok().flatten().expect("repo");
        assert_eq!((r.dest.as_str(), r.branch), ("repo", None));
        let f = env_file(&create(
            json!({"envFileBase64": "aGk=", "envFilePath": "/w/x"}),
        ))
        .ok()
        .flatten()
        .expect("file");
        assert_eq!(
            (f.path.as_str(), f.content.as_slice()),
            ("/w/x", &b"hi"[..])
        );
        for bad in [
            json!({"env": {"A": 1}}),
            json!({"env": "A=1"}),
            json!({"envFileText": "a", "envFileBase64": "YQ=="}),
            json!({"envFileBase64": "%%%"}),
            json!({"envFileText": 5}),
            json!({"repoUrl": ["https://x"]}),
            json!({"repoBranch": 1, "repoUrl": "https://x/r"}),
        ] {
            let b = create(bad.clone());
            let r = create_env(&b)
                .and_then(|_| env_file(&b))
                .and_then(|_| repo(&b));
            assert_eq!(r.err().map(|e| e.status.as_u16()), Some(400), "{bad}");
        }
        let b = create(json!({"envFilePath": "/x", "repoBranch": "main", "envFileText": ""}));
        assert!(
            matches!(env_file(&b), Ok(None)),
            "a path alone writes nothing"
        );
        assert!(
            matches!(repo(&b), Ok(None)),
            "a branch alone clones nothing"
        );
        let big = "A".repeat(2 << 20);
        assert!(env_file(&create(json!({ "envFileBase64": big }))).is_err());
    }

    #[test]
    fn git_push_needs_a_token_and_a_path() {
        let p =
            |v: Value| git_push(&crate::body::fields(v).expect("fields")).map_err(|e| e.message);
        assert_eq!(
            p(json!({"repoPath": "/workspace/r"})).err().as_deref(),
            Some("token required")
        );
        assert_eq!(
            p(json!({"repoPath": "/workspace/r", "token": ""}))
                .err()
                .as_deref(),
            Some("token required")
        );
        assert!(p(json!({"token": "t"})).is_err());
        let ok = p(json!({"repoPath": "/workspace/r", "token": "t"})).expect("ok");
        assert_eq!((ok.remote.as_str(), ok.branch.as_str()), ("origin", "main"));
    }

    #[test]
    fn memory_follows_the_original_rules() {
        assert_eq!(memory(&create(json!({}))).ok(), Some(2147483648));
        assert_eq!(mem(json!("2g")), Ok(2147483648));
        assert_eq!(mem(json!("4G")), Ok(4294967296));
        assert_eq!(mem(json!("512m")), Ok(536870912));
        assert_eq!(mem(json!("256M")), Ok(268435456));
        assert_eq!(mem(json!("1024k")), Err(400));
        assert_eq!(mem(json!("10240k")), Ok(10485760));
        assert_eq!(mem(json!("512")), Ok(536870912));
        for junk in ["invalid", "", "2gb", " 2g", "1.5g"] {
            assert_eq!(mem(json!(junk)), Ok(2147483648), "{junk}");
        }
        assert_eq!(mem(json!(512)), Err(400));
        assert_eq!(mem(json!("0")), Err(400));
        assert_eq!(mem(json!("99999999999999999999g")), Err(400));
    }

    #[test]
    fn disk_is_written_like_memory_but_strictly() {
        let d = |v: Value| disk(&create(json!({ "disk": v }))).map_err(|e| e.status.as_u16());
        assert_eq!(disk(&create(json!({}))).ok(), Some(None));
        assert_eq!(d(Value::Null), Ok(None));
        assert_eq!(d(json!("10g")), Ok(Some(10 << 30)));
        assert_eq!(d(json!("512")), Ok(Some(512 << 20)));
        assert_eq!(d(json!("1024K")), Ok(Some(1 << 20)));
        for bad in [
            json!("1023k"),
            json!("0"),
            json!("lots"),
            json!("1.5g"),
            json!(5),
        ] {
            assert_eq!(d(bad.clone()), Err(400), "{bad}");
        }
        assert_eq!(d(json!("99999999999999999999g")), Err(400));
    }

    #[test]
    fn cpus_are_bounded() {
        let c = |v: Value| cpus(&create(json!({ "cpus": v })), 4).map_err(|e| e.status.as_u16());
        assert_eq!(cpus(&create(json!({})), 4).ok(), Some(1_000_000_000));
        assert_eq!(c(json!(0.5)), Ok(500_000_000));
        assert_eq!(c(json!("2")), Ok(2_000_000_000));
        for bad in [
            json!(0),
            json!(-1),
            json!(5),
            json!(true),
            json!("x"),
            json!(0.001),
        ] {
            assert_eq!(c(bad.clone()), Err(400), "{bad}");
        }
    }

    #[test]
    fn names_gpu_and_commands() {
        assert!(name(&create(json!({"name": "ok-1_x"}))).is_ok());
        for bad in [json!(123), json!("a b"), json!(""), json!(null)] {
            assert!(name(&create(json!({ "name": bad }))).is_err());
        }
        assert_eq!(gpu(&create(json!({"gpu": true}))).ok(), Some(true));
        assert!(gpu(&create(json!({"gpu": "false"}))).is_err());
        assert_eq!(
            command(&exec(json!({"command": "ls"}))).ok(),
            Some(Command::Shell("ls".into()))
        );
        assert_eq!(
            command(&exec(json!({"command": ["echo", "$HOME"]}))).ok(),
            Some(Command::Argv(vec!["echo".into(), "$HOME".into()]))
        );
        for bad in [
            json!(null),
            json!(""),
            json!(false),
            json!(0),
            json!([]),
            json!([1]),
            json!({}),
        ] {
            assert!(command(&exec(json!({ "command": bad }))).is_err(), "{bad}");
        }
        assert!(command(&exec(json!({}))).is_err());
        assert!(exec_request(&exec(json!({"command": "a\u{0}b"}))).is_err());
        assert!(exec_request(&exec(json!({"command": "x", "env": {"A": "b\u{0}"}}))).is_err());
    }

    #[test]
    fn bodies_that_are_not_objects_have_no_fields() {
        for v in [json!([]), json!("x"), json!(5), json!(null)] {
            assert_eq!(
                name(&create(v.clone()))
                    .map_err(|e| e.message)
                    .err()
                    .as_deref(),
                Some(INVALID_NAME)
            );
            assert_eq!(
                command(&exec(v)).map_err(|e| e.message).err().as_deref(),
                Some("Command required")
            );
        }
        // null is absent: the defaults apply.
        let b =
            create(json!({"name": "a", "memory": null, "cpus": null, "gpu": null, "disk": null}));
        assert_eq!(memory(&b).ok(), Some(DEFAULT_MEMORY));
        assert_eq!(cpus(&b, 4).ok(), Some(1_000_000_000));
        assert_eq!(disk(&b).ok(), Some(None));
    }

    #[test]
    fn messages_name_the_value_in_the_contracts_order() {
        let msg = |r: Result<ExecRequest, ApiError>| r.err().map(|e| e.message);
        // env entries are checked in key order, whatever their type.
        assert_eq!(
            msg(exec_request(&exec(
                json!({"command": "x", "env": {"A": "a\u{0}", "B": 1}})
            )))
            .as_deref(),
            Some("env value of 'A' contains a NUL byte")
        );
        assert_eq!(
            msg(exec_request(&exec(
                json!({"command": "x", "env": {"A": 1, "B": "b\u{0}"}})
            )))
            .as_deref(),
            Some("env values must be strings")
        );
        assert_eq!(
            msg(exec_request(&exec(json!({"command": "x", "env": ["A=b"]})))).as_deref(),
            Some("env must be an object of strings")
        );
        // Other types of the string extensions are ignored, as before.
        let r = exec_request(&exec(
            json!({"command": "x", "cwd": 5, "user": false, "env": {"K": "v"}}),
        ));
        assert!(r
            .as_ref()
            .is_ok_and(|r| r.cwd.is_none() && r.user.is_none() && r.env == ["K=v"]));
        assert_eq!(
            msg(exec_request(&exec(
                json!({"command": "x", "timeoutMs": 1.5})
            )))
            .as_deref(),
            Some("timeoutMs must be a positive integer")
        );
        let net = |v: Value| {
            network(&create(json!({ "network": v })))
                .map(|n| n.0)
                .map_err(|e| e.message)
        };
        assert_eq!(net(json!("none")), Ok(NetworkMode::None));
        assert_eq!(net(json!("internet")), Ok(NetworkMode::Internet));
        assert_eq!(net(json!("lan")), Ok(NetworkMode::Lan));
        assert_eq!(net(json!({})), Ok(NetworkMode::Internet));
        assert_eq!(net(json!({"mode": "lan"})), Ok(NetworkMode::Lan));
        assert_eq!(
            net(json!("bridge")),
            Err("Invalid network 'bridge' (expected \"internet\", \"lan\" or \"none\")".into())
        );
        assert!(net(json!(1)).is_err_and(|m| m.starts_with("Invalid network (expected")));
        let policy = |v: Value| network(&create(json!({ "network": v }))).map_err(|e| e.message);
        let (mode, e) = policy(
            json!({"mode": "internet", "blockCidrs": ["10.0.0.0/8", "1.2.3.4"],
                                      "allowDomains": ["pypi.org", "*.github.com"]}),
        )
        .expect("policy");
        assert_eq!(mode, NetworkMode::Internet);
        assert_eq!(e.block_cidrs.len(), 2);
        assert_eq!(e.allow_ports, [80, 443], "default ports");
        for (bad, why) in [
            (json!({"mode": 1}), "Invalid network: mode must be"),
            (json!({"mode": "wan"}), "Invalid network 'wan'"),
            (
                json!({"blockCidr": []}),
                "Invalid network: unknown field 'blockCidr'",
            ),
            (
                json!({"blockCidrs": "10.0.0.0/8"}),
                "Invalid blockCidrs: expected a list",
            ),
            (
                json!({"blockCidrs": [8]}),
                "Invalid blockCidrs: expected a list",
            ),
            (
                json!({"blockCidrs": ["10.0.0.1/8"]}),
                "Invalid blockCidrs: invalid IPv4 network",
            ),
            (
                json!({"blockCidrs": ["::/0"]}),
                "Invalid blockCidrs: '::/0' is IPv6",
            ),
            (
                json!({"allowDomains": ["Pypi.org"]}),
                "Invalid allowDomains: 'Pypi.org'",
            ),
            (json!({"allowDomains": ["*"]}), "Invalid allowDomains: '*'"),
            (
                json!({"allowDomains": ["a"], "allowPorts": [0]}),
                "Invalid allowPorts: ports are 1-65535",
            ),
            (
                json!({"allowDomains": ["a"], "allowPorts": [70000]}),
                "Invalid allowPorts: ports are 1-65535",
            ),
            (
                json!({"allowDomains": ["a"], "allowPorts": "443"}),
                "Invalid allowPorts: expected a list",
            ),
            (
                json!({"allowPorts": [443]}),
                "Invalid allowPorts: it applies to allowDomains",
            ),
            (
                json!({"mode": "none", "blockCidrs": ["1.2.3.4"]}),
                "Invalid network: blockCidrs, allowDomains and allowPorts need mode",
            ),
        ] {
            let got = policy(bad.clone()).expect_err("refused");
            assert!(got.starts_with(why), "{bad}: {got}");
        }
        let many: Vec<String> = (0..65).map(|i| format!("d{i}.org")).collect();
        assert_eq!(
            policy(json!({"allowDomains": many})).expect_err("many"),
            "Invalid allowDomains: at most 64 entries"
        );
        let g = |v: Value| gpus(&create(json!({ "gpus": v }))).map_err(|e| e.status.as_u16());
        assert_eq!(g(json!(2)), Ok(Some(GpuRequest::Count(2))));
        assert_eq!(
            g(json!([0, "GPU-x"])),
            Ok(Some(GpuRequest::Devices(vec!["0".into(), "GPU-x".into()])))
        );
        for bad in [
            json!(0),
            json!(1.5),
            json!([]),
            json!([-1]),
            json!([""]),
            json!("1"),
        ] {
            assert_eq!(g(bad.clone()), Err(400), "{bad}");
        }
    }

    /// The document's request bodies list exactly the fields the handlers
    /// read: each documented property, sent with a wrong type, reaches the
    /// body type as that field, and there are no others.
    #[test]
    fn document_lists_exactly_the_fields_parsed() {
        let doc = serde_json::to_value(crate::openapi::document()).expect("document");
        let check = |schema: &str, debug: &dyn Fn(Value) -> String| {
            let props = doc["components"]["schemas"][schema]["properties"]
                .as_object()
                .expect("properties");
            let empty = debug(json!({}));
            assert_eq!(
                empty.matches(": None").count(),
                props.len(),
                "{schema}: {empty}"
            );
            for p in props.keys() {
                let got = debug(json!({ p.as_str(): [[true]] }));
                assert_eq!(
                    got.matches("Other(Array [Array [Bool(true)]])").count(),
                    1,
                    "{schema}.{p}: {got}"
                );
            }
        };
        check("CreateSpaceBody", &|v| format!("{:?}", create(v)));
        check("ExecBody", &|v| format!("{:?}", exec(v)));
    }

    #[test]
    fn a_streaming_exec_start_is_an_exec_body_plus_a_terminal() {
        let s: crate::model::ExecStart = crate::body::fields(json!({
            "command": ["sh"], "env": {"A": "b"}, "timeoutMs": 5, "tty": true, "cols": 100, "rows": "x"
        }))
        .expect("fields");
        assert_eq!(s.tty, Some(Field::Typed(true)));
        assert_eq!(s.cols, Some(Field::Typed(100)));
        assert_eq!(s.rows, Some(Field::Other(json!("x"))));
        let r = exec_request(&s.exec).expect("exec request");
        assert_eq!(r.env, ["A=b"]);
        assert_eq!(r.timeout, Some(Duration::from_millis(5)));
    }
}
