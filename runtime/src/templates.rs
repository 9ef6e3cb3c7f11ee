//! Space templates (upstream's later API): YAML documents naming a space's
//! resources, image, network policy and workspace defaults, one file per
//! template in `<state dir>/templates/<name>.yaml`, written atomically.
//!
//! The schema and its messages are upstream's (`name`, `description`,
//! `managed`, `resources`, `security`, `network`, `workspace`), stricter in
//! two ways: a name is checked before it becomes a path (upstream's
//! `..%2F` reaches other files), and unknown keys are refused at every
//! level (upstream drops nested ones silently).

use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize, Serializer};
use serde_yaml::Value;

use crate::error::{Error, IoContext, Result};
use crate::fsutil::{sync_dir, write_atomic};

/// Largest template document accepted or read, in bytes.
pub const MAX_TEMPLATE_YAML: usize = 64 * 1024;
/// Most templates a server keeps.
pub const MAX_TEMPLATES: usize = 1000;
/// Longest template name.
pub const MAX_NAME: usize = 64;
/// The message of a name that breaks the rule (upstream's).
pub const INVALID_TEMPLATE_NAME: &str = "name must be alphanumeric and may include . _ -";
/// Private, link-local, shared and metadata ranges: what the `default` and
/// `gpu` templates block.
pub const PRIVATE_CIDRS: [&str; 5] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
];

/// A template, as its YAML document has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Template {
    /// 1–64 characters, `^[a-z0-9][a-z0-9._-]*$` (any case).
    pub name: String,
    /// At most 200 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Installed and overwritten by the server at each start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<bool>,
    /// Limits, GPU and image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Hardening.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Security>,
    /// Network mode and blocked ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<TemplateNetwork>,
    /// Workspace defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<TemplateWorkspace>,
}

/// `resources` of a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    /// Memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<TemplateMemory>,
    /// CPU limit in cores, in (0, 64].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "compact_cpus"
    )]
    pub cpus: Option<f64>,
    /// GPU space.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<bool>,
    /// Image reference (1–200 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// A template's memory: a positive integer (MiB) or `^\d+[kmgt]?$`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TemplateMemory {
    /// MiB.
    Mib(u64),
    /// `2g`, `512m`, `1024k`, `1t`, `1024` (MiB).
    Text(String),
}

impl TemplateMemory {
    /// The limit written as a create request's `memory` (`^\d+[kmg]?$`,
    /// no suffix = MiB): `t` becomes `g`.
    pub fn as_request(&self) -> String {
        match self {
            TemplateMemory::Mib(n) => n.to_string(),
            TemplateMemory::Text(s) => {
                let lower = s.to_ascii_lowercase();
                match lower.strip_suffix('t').map(str::parse::<u64>) {
                    Some(Ok(n)) => match n.checked_mul(1024) {
                        Some(g) => format!("{g}g"),
                        // Too large either way: the create refuses it.
                        None => format!("{n}0000g"),
                    },
                    _ => lower,
                }
            }
        }
    }
}

/// `security` of a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Security {
    /// `false`: the space's root filesystem is read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writable_rootfs: Option<bool>,
}

/// `network` of a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TemplateNetwork {
    /// `none`, `internet` or `lan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TemplateNetworkMode>,
    /// IPv4 ranges the space may not reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_cidrs: Option<Vec<String>>,
}

/// Network mode of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateNetworkMode {
    /// Loopback only.
    None,
    /// Outbound access.
    Internet,
    /// Outbound access including the LAN.
    Lan,
}

impl TemplateNetworkMode {
    /// The name, as a create request's `network` has it.
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateNetworkMode::None => "none",
            TemplateNetworkMode::Internet => "internet",
            TemplateNetworkMode::Lan => "lan",
        }
    }
}

/// `workspace` of a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TemplateWorkspace {
    /// Where `repoUrl` is cloned when a create names no `repoDest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_repo_dest: Option<String>,
}

/// A template in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateSummary {
    /// Its name.
    pub name: String,
    /// Its description (`""` when it has none).
    pub description: String,
}

/// Whole numbers of cores as integers (`cpus: 4`, as upstream writes it).
fn compact_cpus<S: Serializer>(v: &Option<f64>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match v {
        Some(c) if c.fract() == 0.0 && c.abs() < 1e15 => s.serialize_i64(*c as i64),
        Some(c) => s.serialize_f64(*c),
        None => s.serialize_none(),
    }
}

/// Checks a template name; the message is upstream's.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    let n = name.chars().count();
    if n < 1 {
        return Err("String must contain at least 1 character(s)".into());
    }
    if n > MAX_NAME {
        return Err(format!(
            "String must contain at most {MAX_NAME} character(s)"
        ));
    }
    let b = name.as_bytes();
    let ok = b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if !ok {
        return Err(INVALID_TEMPLATE_NAME.into());
    }
    Ok(())
}

/// The JavaScript-style type name of a YAML value, as upstream's messages
/// have it.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.as_f64().is_some_and(f64::is_nan) => "nan",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Sequence(_) => "array",
        Value::Mapping(_) => "object",
        Value::Tagged(t) => type_name(&t.value),
    }
}

/// Collects upstream-style issues (`path: message`) of a document.
struct Issues(Vec<String>);

impl Issues {
    fn add(&mut self, path: &str, msg: impl std::fmt::Display) {
        self.0.push(if path.is_empty() {
            msg.to_string()
        } else {
            format!("{path}: {msg}")
        });
    }

    fn expected(&mut self, path: &str, what: &str, got: &Value) {
        self.add(
            path,
            format!("Expected {what}, received {}", type_name(got)),
        );
    }

    /// The entries of an object with only `keys`; `None` (and an issue)
    /// when `v` is not one.
    fn object<'a>(
        &mut self,
        path: &str,
        v: &'a Value,
        keys: &[&str],
    ) -> Option<Vec<(&'a str, &'a Value)>> {
        let Value::Mapping(m) = v else {
            self.expected(path, "object", v);
            return None;
        };
        let mut entries = Vec::new();
        let mut unknown = Vec::new();
        for (k, v) in m {
            match k.as_str() {
                Some(k) if keys.contains(&k) => entries.push((k, v)),
                Some(k) => unknown.push(format!("'{k}'")),
                None => unknown.push(format!("'{}'", yaml_scalar(k))),
            }
        }
        if !unknown.is_empty() {
            self.add(
                path,
                format!("Unrecognized key(s) in object: {}", unknown.join(", ")),
            );
        }
        Some(entries)
    }

    fn string(&mut self, path: &str, v: &Value, min: usize, max: usize) -> Option<String> {
        let Value::String(s) = v else {
            self.expected(path, "string", v);
            return None;
        };
        let n = s.chars().count();
        if n < min {
            self.add(
                path,
                format!("String must contain at least {min} character(s)"),
            );
        } else if n > max {
            self.add(
                path,
                format!("String must contain at most {max} character(s)"),
            );
        } else {
            return Some(s.clone());
        }
        None
    }

    fn boolean(&mut self, path: &str, v: &Value) {
        if !v.is_bool() {
            self.expected(path, "boolean", v);
        }
    }
}

/// A YAML key that is not a string, written for a message.
fn yaml_scalar(v: &Value) -> String {
    serde_yaml::to_string(v)
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Checks a parsed document against the schema.
fn validate(doc: &Value, issues: &mut Issues) {
    let keys = [
        "name",
        "description",
        "managed",
        "resources",
        "security",
        "network",
        "workspace",
    ];
    let Some(entries) = issues.object("", doc, &keys) else {
        return;
    };
    if !entries.iter().any(|(k, _)| *k == "name") {
        issues.add("name", "Required");
    }
    for (k, v) in entries {
        match k {
            "name" => {
                if let Value::String(s) = v {
                    if let Err(e) = check_name(s) {
                        issues.add("name", e);
                    }
                } else {
                    issues.expected("name", "string", v);
                }
            }
            "description" => {
                issues.string(k, v, 0, 200);
            }
            "managed" => issues.boolean(k, v),
            "resources" => resources(v, issues),
            "security" => {
                for (k2, v2) in issues.object(k, v, &["writableRootfs"]).unwrap_or_default() {
                    issues.boolean(&join(k, k2), v2);
                }
            }
            "network" => network(v, issues),
            "workspace" => {
                for (k2, v2) in issues
                    .object(k, v, &["defaultRepoDest"])
                    .unwrap_or_default()
                {
                    issues.string(&join(k, k2), v2, 0, 128);
                }
            }
            _ => {}
        }
    }
}

fn resources(v: &Value, issues: &mut Issues) {
    let entries = issues
        .object("resources", v, &["memory", "cpus", "gpu", "image"])
        .unwrap_or_default();
    for (k, v) in entries {
        let path = join("resources", k);
        match k {
            "memory" => match v {
                Value::Number(n) => match n.as_u64() {
                    Some(0) => issues.add(&path, "Number must be greater than 0"),
                    Some(_) => {}
                    None if n.as_i64().is_some() => {
                        issues.add(&path, "Number must be greater than 0")
                    }
                    None => issues.add(&path, "Expected integer, received float"),
                },
                Value::String(s) => {
                    let t = s.trim().to_ascii_lowercase();
                    let digits = t.strip_suffix(['k', 'm', 'g', 't']).unwrap_or(&t);
                    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                        issues.add(&path, "memory must look like 2g / 512m / 1024");
                    }
                }
                _ => issues.add(&path, "Invalid input"),
            },
            "cpus" => match v.as_f64() {
                Some(c) if c.is_nan() => issues.expected(&path, "number", v),
                Some(c) if c <= 0.0 => issues.add(&path, "Number must be greater than 0"),
                Some(c) if c > 64.0 => issues.add(&path, "Number must be less than or equal to 64"),
                Some(_) => {}
                None => issues.expected(&path, "number", v),
            },
            "gpu" => issues.boolean(&path, v),
            "image" => {
                issues.string(&path, v, 1, 200);
            }
            _ => {}
        }
    }
}

fn network(v: &Value, issues: &mut Issues) {
    let entries = issues
        .object("network", v, &["mode", "blockCidrs"])
        .unwrap_or_default();
    for (k, v) in entries {
        let path = join("network", k);
        match k {
            "mode" => match v {
                Value::String(s) if ["none", "internet", "lan"].contains(&s.as_str()) => {}
                Value::String(s) => issues.add(
                    &path,
                    format!(
                        "Invalid enum value. Expected 'none' | 'internet' | 'lan', received '{s}'"
                    ),
                ),
                _ => issues.add(
                    &path,
                    format!(
                        "Expected 'none' | 'internet' | 'lan', received {}",
                        type_name(v)
                    ),
                ),
            },
            "blockCidrs" => {
                let Value::Sequence(items) = v else {
                    issues.expected(&path, "array", v);
                    continue;
                };
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    if let Some(s) = issues.string(&p, item, 3, 64) {
                        // Stricter than upstream: a range must be one.
                        if let Err(e) = s.parse::<crate::network::Ipv4Net>() {
                            issues.add(&p, e);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

impl Template {
    /// Parses and checks a YAML document (at most [`MAX_TEMPLATE_YAML`]
    /// bytes). Errors are [`Error::InvalidInput`] with upstream's messages
    /// (`path: message`, several joined with `; `).
    pub fn from_yaml(text: &str) -> Result<Template> {
        if text.len() > MAX_TEMPLATE_YAML {
            return Err(Error::InvalidInput(format!(
                "yaml larger than {} KiB",
                MAX_TEMPLATE_YAML >> 10
            )));
        }
        let doc: Value = serde_yaml::from_str(text)
            .map_err(|e| Error::InvalidInput(format!("Invalid YAML: {e}")))?;
        let mut issues = Issues(Vec::new());
        validate(&doc, &mut issues);
        if !issues.0.is_empty() {
            return Err(Error::InvalidInput(issues.0.join("; ")));
        }
        let mut t: Template = serde_yaml::from_value(doc)
            .map_err(|e| Error::InvalidInput(format!("Invalid template: {e}")))?;
        // Upstream trims the memory string.
        if let Some(TemplateMemory::Text(s)) = t.resources.as_mut().and_then(|r| r.memory.as_mut())
        {
            *s = s.trim().to_string();
        }
        Ok(t)
    }

    /// The YAML document of this template.
    pub fn to_yaml(&self) -> Result<String> {
        serde_yaml::to_string(self).map_err(|e| Error::State(format!("template to YAML: {e}")))
    }

    /// The templates every server has: `default`, `gpu` (managed: it is
    /// rewritten at each start, with `gpu_image`), `offline` and `lan`.
    pub fn defaults(gpu_image: &str) -> Vec<Template> {
        let blocks = || Some(PRIVATE_CIDRS.iter().map(|c| c.to_string()).collect());
        let t = |name: &str,
                 description: &str,
                 memory: &str,
                 cpus: f64,
                 mode: TemplateNetworkMode,
                 block_cidrs: Option<Vec<String>>| Template {
            name: name.into(),
            description: Some(description.into()),
            managed: None,
            resources: Some(Resources {
                memory: Some(TemplateMemory::Text(memory.into())),
                cpus: Some(cpus),
                gpu: Some(false),
                image: None,
            }),
            security: Some(Security {
                writable_rootfs: Some(true),
            }),
            network: Some(TemplateNetwork {
                mode: Some(mode),
                block_cidrs,
            }),
            workspace: Some(TemplateWorkspace {
                default_repo_dest: Some("repo".into()),
            }),
        };
        use TemplateNetworkMode::{Internet, Lan};
        let mut gpu = t(
            "gpu",
            "GPU-enabled space (internet) using the server's GPU image",
            "8g",
            4.0,
            Internet,
            blocks(),
        );
        gpu.managed = Some(true);
        if let Some(r) = gpu.resources.as_mut() {
            r.gpu = Some(true);
            r.image = Some(gpu_image.into());
        }
        vec![
            t(
                "default",
                "Internet access, block LAN + metadata by policy",
                "2g",
                1.0,
                Internet,
                blocks(),
            ),
            gpu,
            t(
                "offline",
                "No network",
                "2g",
                1.0,
                TemplateNetworkMode::None,
                Some(Vec::new()),
            ),
            t(
                "lan",
                "Internet + LAN access (no CIDR blocks)",
                "2g",
                1.0,
                Lan,
                Some(Vec::new()),
            ),
        ]
    }
}

/// The templates of a server, one YAML file each in a directory.
#[derive(Debug)]
pub struct Templates {
    dir: PathBuf,
    /// Serializes writers (the count check and the write of a new one).
    write: Mutex<()>,
}

impl Templates {
    /// Opens (creating it, root-only) `<state_dir>/templates`. Blocking.
    pub fn open(state_dir: &Path) -> Result<Templates> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = state_dir.join("templates");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .ctx(|| format!("create {}", dir.display()))?;
        Ok(Templates {
            dir,
            write: Mutex::new(()),
        })
    }

    /// Installs the default templates: a missing one is written; the
    /// managed ones are always rewritten (with `gpu_image`). Blocking.
    pub fn install_defaults(&self, gpu_image: &str) -> Result<()> {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        for t in Template::defaults(gpu_image) {
            let path = self.path(&t.name)?;
            if t.managed != Some(true) && fs::symlink_metadata(&path).is_ok() {
                continue;
            }
            // A server's GPU image the schema refuses (over 200
            // characters, say) is not written into a template.
            let yaml = t.to_yaml()?;
            if let Err(e) = Template::from_yaml(&yaml) {
                tracing::warn!(template = %t.name, "default template not installed: {e}");
                continue;
            }
            write_atomic(&path, yaml.as_bytes(), true)?;
        }
        Ok(())
    }

    /// The file of template `name`, once the name is known to be one
    /// (anything else is not found: it never becomes a path).
    fn path(&self, name: &str) -> Result<PathBuf> {
        check_name(name).map_err(|_| Error::TemplateNotFound)?;
        Ok(self.dir.join(format!("{name}.yaml")))
    }

    /// Every valid template, by name. Blocking.
    pub fn list(&self) -> Result<Vec<TemplateSummary>> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.dir).ctx(|| format!("read {}", self.dir.display()))?;
        for e in entries.flatten() {
            let file = e.file_name();
            let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".yaml")) else {
                continue;
            };
            if check_name(name).is_err() {
                continue;
            }
            match self.get(name) {
                Ok(t) if t.name == name => out.push(TemplateSummary {
                    name: t.name,
                    description: t.description.unwrap_or_default(),
                }),
                Ok(t) => {
                    tracing::warn!(file = %name, named = %t.name, "template file of another name skipped")
                }
                Err(e) => tracing::warn!(template = %name, "template skipped: {e}"),
            }
        }
        out.sort_by(|a, b| (a.name.to_lowercase(), &a.name).cmp(&(b.name.to_lowercase(), &b.name)));
        Ok(out)
    }

    /// The YAML document of template `name`. Blocking.
    pub fn yaml(&self, name: &str) -> Result<String> {
        let path = self.path(name)?;
        // Only a regular file (never a link) of bounded size is read.
        let f = match fs::File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => f,
            Err(e)
                if matches!(e.kind(), std::io::ErrorKind::NotFound)
                    || e.raw_os_error() == Some(libc::ELOOP) =>
            {
                return Err(Error::TemplateNotFound)
            }
            Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
        };
        let meta = f.metadata().ctx(|| format!("stat {}", path.display()))?;
        if !meta.is_file() {
            return Err(Error::TemplateNotFound);
        }
        let mut text = String::new();
        f.take(MAX_TEMPLATE_YAML as u64 + 1)
            .read_to_string(&mut text)
            .ctx(|| format!("read {}", path.display()))?;
        Ok(text)
    }

    /// Template `name`, parsed and checked. Blocking.
    pub fn get(&self, name: &str) -> Result<Template> {
        Template::from_yaml(&self.yaml(name)?)
    }

    /// Adds or replaces the template a YAML document describes; stores it
    /// as upstream does (the parsed template written back). Blocking.
    pub fn put_yaml(&self, text: &str) -> Result<Template> {
        let t = Template::from_yaml(text)?;
        let path = self.path(&t.name)?;
        let yaml = t.to_yaml()?;
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        if fs::symlink_metadata(&path).is_err() && self.count()? >= MAX_TEMPLATES {
            return Err(Error::InvalidInput(format!(
                "too many templates (at most {MAX_TEMPLATES})"
            )));
        }
        write_atomic(&path, yaml.as_bytes(), true)?;
        Ok(t)
    }

    /// Removes template `name`. Blocking.
    pub fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::TemplateNotFound),
            Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
        }
    }

    fn count(&self) -> Result<usize> {
        Ok(fs::read_dir(&self.dir)
            .ctx(|| format!("read {}", self.dir.display()))?
            .flatten()
            .filter(|e| e.file_name().to_str().is_some_and(|f| f.ends_with(".yaml")))
            .count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> String {
        match Template::from_yaml(yaml) {
            Err(Error::InvalidInput(m)) => m,
            other => panic!("{yaml:?}: {other:?}"),
        }
    }

    #[test]
    fn a_full_document_parses_and_round_trips() {
        let t = Template::from_yaml(
            "name: big\ndescription: x\nresources:\n  memory: ' 4G '\n  cpus: 2.5\n  gpu: false\n  image: alpine:3\nsecurity:\n  writableRootfs: false\nnetwork:\n  mode: lan\n  blockCidrs: [10.0.0.0/8]\nworkspace:\n  defaultRepoDest: src\n",
        )
        .expect("parse");
        let r = t.resources.clone().expect("resources");
        assert_eq!(r.memory, Some(TemplateMemory::Text("4G".into())));
        assert_eq!(r.cpus, Some(2.5));
        assert_eq!(
            t.network.as_ref().and_then(|n| n.mode),
            Some(TemplateNetworkMode::Lan)
        );
        let again = Template::from_yaml(&t.to_yaml().expect("yaml")).expect("again");
        assert_eq!(again, t);
        let t = Template::from_yaml("name: n\nresources: {memory: 1024, cpus: 4}").expect("n");
        let yaml = t.to_yaml().expect("yaml");
        assert!(
            yaml.contains("memory: 1024") && yaml.contains("cpus: 4\n"),
            "{yaml}"
        );
    }

    #[test]
    fn memory_becomes_a_request_size() {
        let m = |s: &str| TemplateMemory::Text(s.into()).as_request();
        assert_eq!(m("2g"), "2g");
        assert_eq!(m("1T"), "1024g");
        assert_eq!(m("512M"), "512m");
        assert_eq!(TemplateMemory::Mib(300).as_request(), "300");
    }

    #[test]
    fn messages_are_upstreams() {
        assert_eq!(err("description: x"), "name: Required");
        assert_eq!(
            err("name: ../etc"),
            format!("name: {INVALID_TEMPLATE_NAME}")
        );
        assert_eq!(err("name: _x"), format!("name: {INVALID_TEMPLATE_NAME}"));
        assert_eq!(
            err(&format!("name: {}", "a".repeat(65))),
            "name: String must contain at most 64 character(s)"
        );
        assert_eq!(err("name: 5"), "name: Expected string, received number");
        assert_eq!(
            err("name: a\nresources: {cpus: 65}"),
            "resources.cpus: Number must be less than or equal to 64"
        );
        assert_eq!(
            err("name: a\nresources: {cpus: 0}"),
            "resources.cpus: Number must be greater than 0"
        );
        assert_eq!(
            err("name: a\nresources: {cpus: '2'}"),
            "resources.cpus: Expected number, received string"
        );
        assert_eq!(
            err("name: a\nresources: {memory: 2x}"),
            "resources.memory: memory must look like 2g / 512m / 1024"
        );
        assert_eq!(
            err("name: a\nresources: {memory: 0}"),
            "resources.memory: Number must be greater than 0"
        );
        assert_eq!(
            err("name: a\nnetwork: {mode: wan}"),
            "network.mode: Invalid enum value. Expected 'none' | 'internet' | 'lan', received 'wan'"
        );
        assert_eq!(
            err("name: a\nfoo: 1\nbar: 2"),
            "Unrecognized key(s) in object: 'foo', 'bar'"
        );
        // Stricter than upstream: nested unknown keys are refused too.
        assert_eq!(
            err("name: a\nresources: {memroy: 2g}"),
            "resources: Unrecognized key(s) in object: 'memroy'"
        );
        assert_eq!(
            err("name: a\nnetwork: {blockCidrs: [nope]}"),
            "network.blockCidrs[0]: invalid IPv4 network 'nope': not an IPv4 address"
        );
        assert_eq!(
            err(&format!("name: a\ndescription: {}", "d".repeat(201))),
            "description: String must contain at most 200 character(s)"
        );
        assert_eq!(err("- a\n- b"), "Expected object, received array");
        assert_eq!(
            err("name: 'a'\nresources: {gpu: yes please}"),
            "resources.gpu: Expected boolean, received string"
        );
        // Several issues at once.
        assert_eq!(
            err("resources: {cpus: 100}"),
            "name: Required; resources.cpus: Number must be less than or equal to 64"
        );
        assert!(err("name: [unclosed").starts_with("Invalid YAML: "));
        assert!(err(&"#".repeat(MAX_TEMPLATE_YAML + 1)).contains("larger than"));
    }

    #[test]
    fn names_never_become_other_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Templates::open(dir.path()).expect("open");
        fs::write(dir.path().join("secret.yaml"), "name: secret\n").expect("write");
        for bad in ["../secret", "..%2Fsecret", "", ".hidden", "a/b", "a\0b"] {
            assert!(
                matches!(t.yaml(bad), Err(Error::TemplateNotFound)),
                "{bad:?}"
            );
            assert!(matches!(t.delete(bad), Err(Error::TemplateNotFound)));
        }
    }

    #[test]
    fn store_installs_defaults_and_keeps_edits_but_not_of_managed_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Templates::open(dir.path()).expect("open");
        t.install_defaults("gpu-image:1").expect("defaults");
        let names: Vec<String> = t
            .list()
            .expect("list")
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["default", "gpu", "lan", "offline"]);
        let gpu = t.get("gpu").expect("gpu");
        let r = gpu.resources.expect("resources");
        assert_eq!(
            (r.gpu, r.cpus, r.image.as_deref()),
            (Some(true), Some(4.0), Some("gpu-image:1"))
        );
        t.put_yaml("name: default\ndescription: mine\n")
            .expect("put");
        t.put_yaml("name: gpu\ndescription: mine\n").expect("put");
        t.install_defaults("gpu-image:2").expect("defaults again");
        let list = t.list().expect("list");
        assert_eq!(list[0].description, "mine");
        assert_eq!(
            t.get("gpu").expect("gpu").resources.and_then(|r| r.image),
            Some("gpu-image:2".into())
        );
        // No description: "" in the list.
        t.put_yaml("name: bare").expect("bare");
        assert!(t.list().expect("list").contains(&TemplateSummary {
            name: "bare".into(),
            description: String::new()
        }));
        t.delete("bare").expect("delete");
        assert!(matches!(t.delete("bare"), Err(Error::TemplateNotFound)));
        assert!(matches!(t.get("bare"), Err(Error::TemplateNotFound)));
        // A hand-written broken file is skipped, not fatal.
        fs::write(dir.path().join("templates/broken.yaml"), "name: [").expect("write");
        assert_eq!(t.list().expect("list").len(), 4);
    }
}
