//! `/mcp`: the MCP server (streamable HTTP transport of `rmcp`), the same
//! tools as `clawdspace mcp` minus those that touch the client's files.
//! The key is checked like every `/api` route (auth middleware); the tools
//! call this daemon's own REST API over loopback with the caller's key, so
//! they can do nothing the caller could not.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use clawdspace_cli::mcp::{McpServer, Options, Policy, Source};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use crate::AppState;

/// Where this daemon answers on loopback.
fn loopback(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// The `/mcp` service.
pub fn service(st: &AppState) -> StreamableHttpService<McpServer, LocalSessionManager> {
    let opts = Options {
        source: Source::Daemon {
            base: loopback(st.config.listen_addr()),
        },
        policy: Policy::new(
            std::slice::from_ref(&st.config.mcp_allow),
            std::slice::from_ref(&st.config.mcp_deny),
        ),
        local_files: false,
        key: None,
    };
    let server = McpServer::new(opts);
    let config = StreamableHttpServerConfig::default()
        // Any Host: the key, not the name it is reached by, protects it.
        .disable_allowed_hosts()
        .with_cancellation_token(st.mcp_stop.clone());
    StreamableHttpService::new(
        move || server.clone().map_err(std::io::Error::other),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clawdspace_cli::mcp::rest::Endpoint;

    #[test]
    fn the_tools_call_only_documented_endpoints() {
        let doc = serde_json::to_value(crate::openapi::document()).unwrap_or_default();
        let paths = &doc["paths"];
        let about = doc["info"]["description"].as_str().unwrap_or_default();
        for ep in Endpoint::ALL {
            let (method, path) = ep.route();
            if *ep == Endpoint::ExecWs {
                // A WebSocket: OpenAPI cannot describe it; the document names it.
                assert!(about.contains(path), "{path}");
                continue;
            }
            if path.starts_with("/api/templates") && paths.get("/api/templates").is_none() {
                // The templates API (SPEC 12) is not on this branch yet.
                continue;
            }
            let op = &paths[path][method.to_lowercase()];
            assert!(
                op.is_object(),
                "{method} {path} is not in the OpenAPI document"
            );
        }
    }

    #[test]
    fn the_loopback_address_replaces_an_unspecified_one() {
        let a: SocketAddr = ([0, 0, 0, 0], 7777).into();
        assert_eq!(loopback(a), "http://127.0.0.1:7777");
        let a = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 80));
        assert_eq!(loopback(a), "http://[::1]:80");
        let a: SocketAddr = ([10, 1, 2, 3], 1).into();
        assert_eq!(loopback(a), "http://10.1.2.3:1");
    }
}
