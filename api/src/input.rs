//! Parsing and validating request bodies (SPEC section 6 and 5.8).

use std::time::Duration;

use serde_json::Value;

use clawdspace_runtime::gpu::GpuRequest;
use clawdspace_runtime::{is_valid_name, Command, ExecRequest, NetworkMode, MIN_DISK, MIN_MEMORY};

use crate::error::ApiError;

/// The name error message of the contract.
pub const INVALID_NAME: &str = "Invalid name (alphanumeric, _, - only)";

/// Default memory: 2 GiB.
pub const DEFAULT_MEMORY: u64 = 2 << 30;

/// The name of a create request, validated.
pub fn name(body: &Value) -> Result<String, ApiError> {
    match body.get("name") {
        Some(Value::String(s)) if is_valid_name(s) => Ok(s.clone()),
        _ => Err(ApiError::bad_request(INVALID_NAME)),
    }
}

/// Memory in bytes: `^(\d+)([gmk])?$` case-insensitively (no suffix = MiB),
/// any other string = 2 GiB; non-strings, < 6 MiB and overflow refused.
pub fn memory(body: &Value) -> Result<u64, ApiError> {
    let invalid = || ApiError::bad_request("Invalid memory");
    let s = match body.get("memory") {
        None | Some(Value::Null) => return Ok(DEFAULT_MEMORY),
        Some(Value::String(s)) => s,
        Some(_) => return Err(invalid()),
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
pub fn disk(body: &Value) -> Result<Option<u64>, ApiError> {
    match body.get("disk") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => disk_size(s).map(Some).map_err(ApiError::bad_request),
        Some(_) => Err(ApiError::bad_request("Invalid disk")),
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

/// CPUs in nano-CPUs: a number (or numeric string) in [0.01, host cpus].
pub fn cpus(body: &Value, host_cpus: u32) -> Result<u64, ApiError> {
    let invalid = || ApiError::bad_request("Invalid cpus");
    let v = match body.get("cpus") {
        None | Some(Value::Null) => 1.0,
        Some(Value::Number(n)) => n.as_f64().ok_or_else(invalid)?,
        Some(Value::String(s)) => s.trim().parse::<f64>().map_err(|_| invalid())?,
        Some(_) => return Err(invalid()),
    };
    if !v.is_finite() || v < 0.01 || v > f64::from(host_cpus) {
        return Err(invalid());
    }
    Ok((v * 1e9).round() as u64)
}

/// The gpu flag: a JSON boolean (or absent/null = false).
pub fn gpu(body: &Value) -> Result<bool, ApiError> {
    match body.get("gpu") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::bad_request("Invalid gpu")),
    }
}

/// The `network` extension: `"internet"` (default) or `"none"`.
pub fn network(body: &Value) -> Result<NetworkMode, ApiError> {
    match body.get("network") {
        None | Some(Value::Null) => Ok(NetworkMode::Internet),
        Some(Value::String(s)) => s.parse().map_err(ApiError::bad_request),
        Some(_) => Err(ApiError::bad_request(
            "Invalid network (expected \"internet\" or \"none\")",
        )),
    }
}

/// The `gpus` extension: a count (integer ≥ 1), or a non-empty list of
/// GPU indexes (numbers or strings) or UUIDs. Absent or null: none given.
pub fn gpus(body: &Value) -> Result<Option<GpuRequest>, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "Invalid gpus (a count of at least 1, or a list of GPU indexes or UUIDs)",
        )
    };
    match body.get("gpus") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(c) if c >= 1 => Ok(Some(GpuRequest::Count(
                usize::try_from(c).map_err(|_| invalid())?,
            ))),
            _ => Err(invalid()),
        },
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| match v {
                Value::Number(n) => n.as_u64().map(|i| i.to_string()),
                Value::String(s) if !s.is_empty() && !s.contains('\0') => Some(s.clone()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(|ids| Some(GpuRequest::Devices(ids)))
            .ok_or_else(invalid),
        Some(_) => Err(invalid()),
    }
}

/// The image: given, or the default for the kind of space.
pub fn image(
    body: &Value,
    gpu: bool,
    default: &str,
    gpu_default: &str,
) -> Result<String, ApiError> {
    match body.get("image") {
        None | Some(Value::Null) => Ok(if gpu { gpu_default } else { default }.to_string()),
        Some(Value::String(s)) => {
            clawdspace_runtime::image::validate_reference(s)?;
            Ok(s.clone())
        }
        Some(_) => Err(ApiError::bad_request("Invalid image")),
    }
}

/// The command of an exec request: a non-empty string (run with `sh -c`)
/// or a non-empty array of strings (argv).
pub fn command(body: &Value) -> Result<Command, ApiError> {
    let required = || ApiError::bad_request("Command required");
    match body.get("command") {
        Some(Value::String(s)) if !s.is_empty() => Ok(Command::Shell(s.clone())),
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| v.as_str().map(String::from))
            .collect::<Option<Vec<_>>>()
            .map(Command::Argv)
            .ok_or_else(required),
        _ => Err(required()),
    }
}

/// An exec request: the command plus the optional extensions `cwd`,
/// `env` (object of strings), `user`, `stdin` (string) and `timeoutMs`.
pub fn exec_request(body: &Value) -> Result<ExecRequest, ApiError> {
    let command = command(body)?;
    if command.argv().iter().any(|a| a.contains('\0')) {
        return Err(ApiError::bad_request("command contains a NUL byte"));
    }
    let mut req = ExecRequest::new(command);
    if let Some(cwd) = body.get("cwd").and_then(Value::as_str) {
        if !cwd.starts_with('/') || cwd.contains('\0') {
            return Err(ApiError::bad_request("cwd must be an absolute path"));
        }
        req.cwd = Some(cwd.to_string());
    }
    match body.get("env") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let Some(v) = v.as_str() else {
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
        }
        Some(_) => return Err(ApiError::bad_request("env must be an object of strings")),
    }
    if let Some(u) = body.get("user").and_then(Value::as_str) {
        if u.contains('\0') {
            return Err(ApiError::bad_request("user contains a NUL byte"));
        }
        req.user = Some(u.to_string());
    }
    if let Some(s) = body.get("stdin").and_then(Value::as_str) {
        req.stdin = Some(s.as_bytes().to_vec());
    }
    match body.get("timeoutMs") {
        None | Some(Value::Null) => {}
        Some(v) => match v.as_u64() {
            Some(ms) if ms > 0 => req.timeout = Some(Duration::from_millis(ms)),
            _ => {
                return Err(ApiError::bad_request(
                    "timeoutMs must be a positive integer",
                ))
            }
        },
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mem(v: Value) -> Result<u64, u16> {
        memory(&json!({ "memory": v })).map_err(|e| e.status.as_u16())
    }

    #[test]
    fn memory_follows_the_original_rules() {
        assert_eq!(memory(&json!({})).ok(), Some(2147483648));
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
        let d = |v: Value| disk(&json!({ "disk": v })).map_err(|e| e.status.as_u16());
        assert_eq!(disk(&json!({})).ok(), Some(None));
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
        let c = |v: Value| cpus(&json!({ "cpus": v }), 4).map_err(|e| e.status.as_u16());
        assert_eq!(cpus(&json!({}), 4).ok(), Some(1_000_000_000));
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
        assert!(name(&json!({"name": "ok-1_x"})).is_ok());
        for bad in [json!(123), json!("a b"), json!(""), json!(null)] {
            assert!(name(&json!({ "name": bad })).is_err());
        }
        assert_eq!(gpu(&json!({"gpu": true})).ok(), Some(true));
        assert!(gpu(&json!({"gpu": "false"})).is_err());
        assert_eq!(
            command(&json!({"command": "ls"})).ok(),
            Some(Command::Shell("ls".into()))
        );
        assert_eq!(
            command(&json!({"command": ["echo", "$HOME"]})).ok(),
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
            assert!(command(&json!({ "command": bad })).is_err(), "{bad}");
        }
        assert!(command(&json!({})).is_err());
        assert!(exec_request(&json!({"command": "a\u{0}b"})).is_err());
        assert!(exec_request(&json!({"command": "x", "env": {"A": "b\u{0}"}})).is_err());
    }
}
