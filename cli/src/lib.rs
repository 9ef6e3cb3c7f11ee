//! The library half of the `clawdspace-cli` crate: fleet logic that the
//! command and the daemon (`clawdspaced`'s `/api/nodes`) share, so both
//! find servers and choose one the same way, and the MCP server that
//! `clawdspace mcp` serves over stdio and the daemon at `/mcp`.

pub mod fleet;
pub mod mcp;
