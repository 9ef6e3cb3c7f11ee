//! The MCP server (Model Context Protocol, on the official `rmcp` SDK):
//! tools an agent uses to run code in spaces. It is a thin client of the
//! public REST API (only the endpoints of [`rest::Endpoint`]), served over
//! stdio by `clawdspace mcp` and over streamable HTTP at a daemon's `/mcp`.
//!
//! Every failure of a tool (an API error, a refused space name, bad
//! arguments) is a tool result with `isError: true` and a readable message,
//! never a protocol error; a command that exits non-zero is a normal result
//! carrying its exit code.

pub mod exec;
pub mod files;
pub mod params;
pub mod policy;
pub mod rest;
pub mod servers;
mod tools;

use std::sync::Arc;

use rmcp::handler::server::common::schema_for_input;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use schemars::JsonSchema;

pub use policy::Policy;
pub use servers::{Discover, Source};

use params::*;
use rest::{CallError, Rest};

/// How a server is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the servers come from.
    pub source: Source,
    /// Which spaces the session may touch.
    pub policy: Policy,
    /// Whether `upload_file`/`download_file` exist: only where the MCP
    /// server runs on the client's machine (stdio).
    pub local_files: bool,
    /// The API key (stdio); `None`: each HTTP request's own key.
    pub key: Option<String>,
}

/// The MCP server; cheap to clone (one per HTTP session).
#[derive(Debug, Clone)]
pub struct McpServer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    opts: Options,
    http: reqwest::Client,
}

/// What a tool does to the world, for its annotations.
#[derive(Clone, Copy)]
enum Kind {
    ReadOnly,
    Changes,
    Destroys,
}

fn tool<T: JsonSchema + 'static>(
    name: &'static str,
    kind: Kind,
    description: &'static str,
) -> Tool {
    // The argument types are all objects: this cannot fail (a unit test
    // lists every tool).
    let schema = schema_for_input::<T>().unwrap_or_default();
    let ann = match kind {
        Kind::ReadOnly => ToolAnnotations::new().read_only(true),
        Kind::Changes => ToolAnnotations::new().read_only(false).destructive(false),
        Kind::Destroys => ToolAnnotations::new().read_only(false).destructive(true),
    };
    Tool::new(name, description, schema).annotate(ann)
}

/// Every tool; `local_files` adds the two that touch the client's machine.
pub fn tools(local_files: bool) -> Vec<Tool> {
    use Kind::*;
    let mut t = vec![
        tool::<ServerArgs>("list_servers", ReadOnly,
            "List the Clawdspace servers this session can use, with their status and capabilities (CPUs, memory, GPUs). Pass a name as `server` to other tools to pick one."),
        tool::<ServerArgs>("list_spaces", ReadOnly,
            "List spaces (sandboxed Linux environments) with their status (running, paused, stopped), image and limits; all servers unless `server` is given."),
        tool::<CreateArgs>("create_space", Changes,
            "Create and start a space: an isolated Linux sandbox with its own filesystem, network and persistent /workspace volume. Optionally from a template, with an image, memory/CPU/GPU limits, network mode, environment variables and a git repository cloned into /workspace. Returns the space."),
        tool::<SpaceArgs>("get_space", ReadOnly,
            "Get one space: status, image, limits, network address, creation and last-activity times."),
        tool::<DestroyArgs>("destroy_space", Destroys,
            "Destroy a space: kill its processes and delete its files. Its /workspace volume is kept for a new space of the same name unless removeVolume is true."),
        tool::<SpaceArgs>("pause_space", Changes,
            "Pause a space: freeze its processes (memory kept, no CPU used). exec resumes a paused space by itself."),
        tool::<SpaceArgs>("resume_space", Changes,
            "Resume a paused space, or restart a stopped one (its files are kept)."),
        tool::<ExecArgs>("exec", Changes,
            "Run a command in a space and wait for it to end. Returns exitCode, stdout, stderr (each at most 512 KiB, trimmed; stdoutTruncated/stderrTruncated say when cut) and timedOut. A non-zero exit code is a normal result, not an error. When the request carries a progress token, output is streamed as progress notifications while it runs. For background jobs use `nohup cmd > log 2>&1 &`."),
        tool::<RunCodeArgs>("run_code", Changes,
            "Run a snippet of Python (python3), Node.js, bash or sh in a space: the code is written to a temporary file, run with the interpreter, then removed. Returns exitCode, stdout, stderr as exec does."),
        tool::<ReadFileArgs>("read_file", ReadOnly,
            "Read a file of a space by absolute path: the first maxBytes bytes (default 1 MiB) as text (encoding utf-8) or, for binary data, base64; truncated says whether there is more."),
        tool::<WriteFileArgs>("write_file", Changes,
            "Write a file in a space (absolute path), creating parent directories; the file is replaced atomically. Content is text, or base64 with encoding: base64."),
        tool::<ListFilesArgs>("list_files", ReadOnly,
            "List a directory of a space's persistent /workspace volume: name, type (file, dir, symlink, other), size and modification time of each entry. For other directories run `ls -la` with exec."),
        tool::<ServerArgs>("list_templates", ReadOnly,
            "List the space templates of a server (name and description); pass one as `template` to create_space."),
        tool::<TemplateArgs>("get_template", ReadOnly,
            "Get a template's YAML definition (resources, image, network, workspace settings)."),
        tool::<SaveTemplateArgs>("save_template", Changes,
            "Create or replace a template from its YAML definition."),
        tool::<ServerArgs>("system_status", ReadOnly,
            "A server's status: host CPUs, load, memory, disk, uptime, space counts and capabilities (GPUs)."),
    ];
    if local_files {
        t.push(tool::<UploadArgs>("upload_file", Changes,
            "Copy a file from this machine (where the MCP client runs; absolute localPath) into a space (absolute path), streamed, any size."));
        t.push(tool::<DownloadArgs>("download_file", Changes,
            "Copy a file of a space (absolute path) to this machine (where the MCP client runs; absolute localPath), streamed, any size."));
    }
    t
}

impl McpServer {
    /// A server with `opts`.
    pub fn new(opts: Options) -> Result<McpServer, String> {
        let http = Rest::client().map_err(|e| e.0)?;
        Ok(McpServer {
            inner: Arc::new(Inner { opts, http }),
        })
    }

    /// The REST client with the key of this call: the configured one, or
    /// the HTTP request's (`Authorization: Bearer` or `?key=`, which the
    /// daemon checked before the request got here).
    fn rest(&self, ctx: &RequestContext<RoleServer>) -> Result<Rest, CallError> {
        if let Some(k) = &self.inner.opts.key {
            return Ok(Rest::new(self.inner.http.clone(), k.clone()));
        }
        let parts = ctx
            .extensions
            .get::<http::request::Parts>()
            .ok_or_else(|| CallError("no API key for this session".into()))?;
        request_key(parts)
            .map(|k| Rest::new(self.inner.http.clone(), k))
            .ok_or_else(|| CallError("the request carries no API key".into()))
    }

    fn instructions(&self) -> String {
        let mut s = String::from(
            "Clawdspace runs isolated Linux sandboxes (spaces) on your servers. \
             Typical flow: create_space, then exec / run_code / write_file / read_file in it, \
             then destroy_space when done. Paths in a space are absolute; /workspace is its \
             persistent volume, /home/sandbox the default working directory. API errors come \
             back as tool errors with the server's message.",
        );
        if let Some(p) = self.inner.opts.policy.describe() {
            s.push(' ');
            s.push_str(&p);
        }
        s
    }
}

/// The key a request carries: its bearer token, else its one `key` query
/// parameter.
pub fn request_key(parts: &http::request::Parts) -> Option<String> {
    if let Some(k) = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(k.to_string());
    }
    let keys: Vec<&str> = parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("key="))
        .collect();
    match keys.as_slice() {
        [k] => Some(percent_decode(k)),
        _ => None,
    }
}

fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(c)) => {
                out.push(c);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("clawdspace", env!("CARGO_PKG_VERSION")))
            .with_instructions(self.instructions())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools(
            self.inner.opts.local_files,
        )))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        if !tools(self.inner.opts.local_files)
            .iter()
            .any(|t| t.name == name)
        {
            let why = if matches!(name.as_str(), "upload_file" | "download_file") {
                format!(
                    "Tool {name} exists only over stdio (`clawdspace mcp` on the client's machine)"
                )
            } else {
                format!("Unknown tool: {name}")
            };
            return Err(ErrorData::invalid_params(why, None));
        }
        let result = match self.call(&name, request, &context).await {
            Ok(v) => CallToolResult::structured(v),
            Err(e) => CallToolResult::error(vec![ContentBlock::text(e.0)]),
        };
        Ok(CallToolResponse::Complete(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_an_object_schema_and_a_description() {
        let all = tools(true);
        assert_eq!(all.len(), 18);
        for t in &all {
            assert_eq!(
                t.input_schema.get("type").and_then(|v| v.as_str()),
                Some("object"),
                "{}",
                t.name
            );
            assert!(t.description.as_deref().is_some_and(|d| d.len() > 20));
        }
        let exec = all
            .iter()
            .find(|t| t.name == "exec")
            .map(|t| t.input_schema.clone());
        let props = exec.as_ref().and_then(|s| s.get("properties")).cloned();
        let props = props.unwrap_or_default();
        for k in ["name", "command", "cwd", "env", "user", "timeoutSeconds"] {
            assert!(props.get(k).is_some(), "exec lacks {k}");
        }
        assert_eq!(tools(false).len(), 16);
    }

    #[test]
    fn keys_come_from_the_header_or_one_query_parameter() {
        let parts = |uri: &str, auth: Option<&str>| {
            let mut b = http::Request::builder().uri(uri);
            if let Some(a) = auth {
                b = b.header("authorization", a);
            }
            b.body(()).map(|r| r.into_parts().0).ok()
        };
        let p = parts("/mcp", Some("Bearer k1"));
        assert_eq!(p.as_ref().and_then(request_key).as_deref(), Some("k1"));
        let p = parts("/mcp?key=a%2Bb", None);
        assert_eq!(p.as_ref().and_then(request_key).as_deref(), Some("a+b"));
        let p = parts("/mcp?key=a&key=b", None);
        assert_eq!(p.as_ref().and_then(request_key), None);
    }
}
