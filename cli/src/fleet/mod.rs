//! A fleet of independent Clawdspace servers: which servers there are
//! (Tailscale peers) and which one a new space goes to (placement).

pub mod placement;
pub mod tailscale;

pub use placement::{place, NoPlacement, NodeLoad, Placement, Request};
pub use tailscale::{Peer, TailscaleConfig};
