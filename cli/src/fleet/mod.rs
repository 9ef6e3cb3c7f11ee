//! A fleet of independent Clawdspace servers: which servers there are
//! (Tailscale peers) and which one a new space goes to (placement).

pub mod placement;
pub mod tailscale;

pub use placement::{
    is_template_name, place, template_wants_gpu, NoPlacement, NodeLoad, Placement, Request,
};
pub use tailscale::{Peer, TailscaleConfig};
