//! The library half of the `clawdspace-cli` crate: fleet logic that the
//! command and the daemon (`clawdspaced`'s `/api/nodes`) share, so both
//! find servers and choose one the same way.

pub mod fleet;
