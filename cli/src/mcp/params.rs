//! The tools' arguments. Their JSON Schemas (schemars) are what MCP clients
//! see, so every field says what it does; unknown fields are refused.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// Only a server.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerArgs {
    /// Server name from `list_servers`; default: the first server (stdio) or this server (HTTP).
    #[serde(default)]
    pub server: Option<String>,
}

/// A space, by name.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SpaceArgs {
    /// Name of the space.
    pub name: String,
    /// Server name from `list_servers`; default: whichever server has the space.
    #[serde(default)]
    pub server: Option<String>,
}

/// `destroy_space`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DestroyArgs {
    /// Name of the space.
    pub name: String,
    /// Also delete its /workspace volume (default false: kept for a new space of the same name).
    #[serde(default)]
    pub remove_volume: bool,
    /// Server name from `list_servers`; default: whichever server has the space.
    #[serde(default)]
    pub server: Option<String>,
}

/// Network mode of a new space.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Outbound internet access through NAT.
    Internet,
    /// Loopback only.
    None,
}

impl Network {
    /// The API's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Internet => "internet",
            Network::None => "none",
        }
    }
}

/// Which GPUs a space gets.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "a number of GPUs or a list of GPU indexes/UUIDs (strings)"
)]
pub enum Gpus {
    /// How many (the lowest indexes).
    Count(u32),
    /// GPU indexes ("0") or UUIDs ("GPU-…").
    Ids(Vec<String>),
}

/// `create_space`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateArgs {
    /// Name of the new space: letters, digits, `_` and `-`, at most 63 characters.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,63}$"))]
    pub name: String,
    /// Server name from `list_servers`; default: chosen by placement (most free memory; GPUs when asked).
    #[serde(default)]
    pub server: Option<String>,
    /// A template of the server to start from (see `list_templates`).
    #[serde(default)]
    pub template: Option<String>,
    /// Image reference, e.g. `ubuntu:24.04`; default: the server's default image.
    #[serde(default)]
    pub image: Option<String>,
    /// Memory limit like `512m` or `2g` (default `2g`).
    #[serde(default)]
    pub memory: Option<String>,
    /// CPU limit in cores, e.g. 0.5 or 2 (default 1).
    #[serde(default)]
    #[schemars(range(min = 0.01))]
    pub cpus: Option<f64>,
    /// Give the space the server's NVIDIA GPUs (all unless `gpus` says which).
    #[serde(default)]
    pub gpu: Option<bool>,
    /// Which GPUs: a count, or a list of indexes/UUIDs (implies `gpu`).
    #[serde(default)]
    pub gpus: Option<Gpus>,
    /// `internet` (outbound through NAT, the default) or `none` (loopback only).
    #[serde(default)]
    pub network: Option<Network>,
    /// Limit on what the space writes to disk, like `10g`.
    #[serde(default)]
    pub disk: Option<String>,
    /// Environment variables of every command in the space (`GITHUB_TOKEN` also authenticates `repoUrl`).
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// Text of a file written into the space (mode 0600), e.g. `.env` lines.
    #[serde(default)]
    pub env_file_text: Option<String>,
    /// Where `envFileText` goes (absolute; default `/workspace/.env`).
    #[serde(default)]
    pub env_file_path: Option<String>,
    /// A git repository to clone into the space (`https://…` or `git@host:path`; the image needs git).
    #[serde(default)]
    pub repo_url: Option<String>,
    /// Branch of `repoUrl` to check out (default: the remote's).
    #[serde(default)]
    pub repo_branch: Option<String>,
    /// Where to clone `repoUrl`, relative to /workspace (default `repo`).
    #[serde(default)]
    pub repo_dest: Option<String>,
}

/// A command: one string run by `sh -c`, or an argv list run without a shell.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "a string (run by sh -c) or a non-empty array of strings (argv, no shell)"
)]
pub enum Command {
    /// Run by `sh -c`.
    Shell(String),
    /// The program and its arguments, no shell.
    Argv(Vec<String>),
}

/// `exec`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecArgs {
    /// Name of the space.
    pub name: String,
    /// The command: a string (run by `sh -c`) or an argv array (no shell).
    pub command: Command,
    /// Absolute working directory (default: the space's home, /home/sandbox; /workspace is the persistent volume).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// User to run as: a name from the space's /etc/passwd (e.g. `root`) or a uid.
    #[serde(default)]
    pub user: Option<String>,
    /// Text written to the command's stdin (then end-of-file); default: no input.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Kill the command (and its process group) after this many seconds; default: no limit.
    #[serde(default)]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: Option<u32>,
    /// Server name from `list_servers`; default: whichever server has the space.
    #[serde(default)]
    pub server: Option<String>,
}

/// Language of a `run_code` snippet.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Run with `python3`.
    Python,
    /// Run with `node`.
    Node,
    /// Run with `bash`.
    Bash,
    /// Run with `sh` (POSIX shell; every image has one).
    Sh,
}

impl Language {
    /// The interpreter and the file name extension.
    pub fn program(self) -> (&'static str, &'static str) {
        match self {
            Language::Python => ("python3", "py"),
            Language::Node => ("node", "js"),
            Language::Bash => ("bash", "sh"),
            Language::Sh => ("sh", "sh"),
        }
    }
}

/// `run_code`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunCodeArgs {
    /// Name of the space.
    pub name: String,
    /// `python` (python3), `node`, `bash` or `sh`; the interpreter must exist in the space's image.
    pub language: Language,
    /// The program's source text.
    pub code: String,
    /// Absolute working directory (default: the space's home).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// User to run as: a name from the space's /etc/passwd (e.g. `root`) or a uid.
    #[serde(default)]
    pub user: Option<String>,
    /// Text written to the program's stdin (then end-of-file).
    #[serde(default)]
    pub stdin: Option<String>,
    /// Kill the program after this many seconds; default: no limit.
    #[serde(default)]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: Option<u32>,
    /// Server name from `list_servers`; default: whichever server has the space.
    #[serde(default)]
    pub server: Option<String>,
}

/// `read_file`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReadFileArgs {
    /// Name of the space.
    pub name: String,
    /// Absolute path of a regular file in the space.
    pub path: String,
    /// Return at most this many bytes from the start (default 1 MiB, at most 8 MiB).
    #[serde(default)]
    #[schemars(range(min = 1, max = 8388608))]
    pub max_bytes: Option<u32>,
    /// Server name from `list_servers`; default: whichever server has the space.
    #[serde(default)]
    pub server: Option<String>,
}

/// How `write_file`'s content is written.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
pub enum Encoding {
    /// The text as is.
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
    /// Base64 of the bytes.
    #[serde(rename = "base64")]
    Base64,
}

/// `write_file`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WriteFileArgs {
    /// Name of the space.
    pub name: String,
    /// Absolute path of the file in the space (created or replaced atomically; parent directories are made).
    pub path: String,
    /// The content: text, or base64 with `encoding: "base64"`.
    pub content: String,
    /// `utf-8` (default) or `base64`.
    #[serde(default)]
    pub encoding: Encoding,
    /// Octal permission bits, e.g. `0755` (default `0644`).
    #[serde(default)]
    #[schemars(regex(pattern = r"^[0-7]{1,4}$"))]
    pub mode: Option<String>,
    /// Server name from `list_servers`; default: whichever server has the space.
    #[serde(default)]
    pub server: Option<String>,
}

/// `list_files`' arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListFilesArgs {
    /// Name of the space.
    pub name: String,
    /// A directory of the persistent volume: `/workspace/…`, or a path relative to /workspace (default: /workspace itself).
    #[serde(default)]
    pub path: Option<String>,
    /// Server name from `list_servers`; default: whichever server has the space.
    #[serde(default)]
    pub server: Option<String>,
}

/// `upload_file`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UploadArgs {
    /// Name of the space.
    pub name: String,
    /// Absolute path of a regular file on this machine (where the MCP client runs).
    pub local_path: String,
    /// Absolute destination path in the space (parent directories are created).
    pub path: String,
    /// Octal permission bits, e.g. `0755` (default `0644`).
    #[serde(default)]
    #[schemars(regex(pattern = r"^[0-7]{1,4}$"))]
    pub mode: Option<String>,
    /// Server name from `list_servers`; default: whichever server has the space.
    #[serde(default)]
    pub server: Option<String>,
}

/// `download_file`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DownloadArgs {
    /// Name of the space.
    pub name: String,
    /// Absolute path of a regular file in the space.
    pub path: String,
    /// Absolute destination path on this machine (where the MCP client runs).
    pub local_path: String,
    /// Replace `localPath` when it exists (default false).
    #[serde(default)]
    pub overwrite: bool,
    /// Server name from `list_servers`; default: whichever server has the space.
    #[serde(default)]
    pub server: Option<String>,
}

/// `get_template`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TemplateArgs {
    /// Name of the template.
    pub name: String,
    /// Server name from `list_servers`; default: the first server (stdio) or this server (HTTP).
    #[serde(default)]
    pub server: Option<String>,
}

/// `save_template`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SaveTemplateArgs {
    /// The template as YAML (`name`, `description`, `resources{memory, cpus, gpu, image}`, `network{mode}`, …); replaces one of the same name.
    pub yaml: String,
    /// Server name from `list_servers`; default: the first server (stdio) or this server (HTTP).
    #[serde(default)]
    pub server: Option<String>,
}
