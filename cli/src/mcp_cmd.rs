//! `clawdspace mcp`: the MCP server over stdio, for an agent on this
//! machine (Claude Desktop, Claude Code, any MCP client), on the servers
//! this CLI discovers, with its key.

use std::sync::Arc;

use clawdspace_cli::mcp::{Discover, McpServer, Options, Policy, Source};
use rmcp::ServiceExt;

use crate::commands::{CmdResult, Ctx};
use crate::discovery;
use crate::Fail;

impl Ctx<'_> {
    /// Serves MCP on stdin/stdout until the client closes stdin.
    pub async fn mcp(
        &self,
        allow: Vec<String>,
        deny: Vec<String>,
        no_local_files: bool,
    ) -> CmdResult {
        let (settings, api) = (self.settings.clone(), self.api.clone());
        let discover: Discover = Arc::new(move || {
            let (s, a) = (settings.clone(), api.clone());
            Box::pin(async move {
                discovery::servers(&s, &a, false)
                    .await
                    .into_iter()
                    .map(|x| (x.name, x.url))
                    .collect()
            })
        });
        let server = McpServer::new(Options {
            source: Source::Discovered(discover),
            policy: Policy::new(&allow, &deny),
            local_files: !no_local_files,
            key: Some(self.api.key().to_string()),
        })
        .map_err(Fail::error)?;
        let running = server
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| Fail::error(format!("MCP session did not start: {e}")))?;
        running
            .waiting()
            .await
            .map_err(|e| Fail::error(format!("MCP session ended: {e}")))?;
        Ok(0)
    }
}
