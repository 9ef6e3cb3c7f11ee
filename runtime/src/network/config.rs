//! Network configuration: the bridge, the subnet spaces get addresses from,
//! destinations the operator allows, and DNS servers.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Default bridge (`CLAWDSPACE_BRIDGE`).
pub const DEFAULT_BRIDGE: &str = "clawdspace0";
/// Default subnet (`CLAWDSPACE_SUBNET`).
pub const DEFAULT_SUBNET: &str = "10.88.0.0/16";

/// An IPv4 network in CIDR notation (`10.88.0.0/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Net {
    /// The network address (host bits zero).
    pub addr: Ipv4Addr,
    /// Prefix length, 0–32.
    pub prefix: u8,
}

impl Ipv4Net {
    /// The netmask as an integer.
    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// Whether the two networks share any address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// The `n`-th address of the network (0 = the network address).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr).wrapping_add(n))
    }

    /// Number of addresses in the network.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl serde::Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;

    /// `a.b.c.d/len`, or a bare address (`/32`). Host bits must be zero.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid IPv4 network '{s}': {why}");
        let (a, p) = s.trim().split_once('/').unwrap_or((s.trim(), "32"));
        let addr: Ipv4Addr = a.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| bad("prefix must be 0-32"))?;
        let net = Ipv4Net { addr, prefix };
        if u32::from(addr) & !net.mask() != 0 {
            return Err(bad("host bits are set"));
        }
        Ok(net)
    }
}

/// How spaces in mode `internet` are connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Name of our bridge; also the name of our nftables table.
    pub bridge: String,
    /// Addresses of spaces: the first is the bridge's (gateway), the
    /// others are handed to spaces.
    pub subnet: Ipv4Net,
    /// Destinations in blocked ranges (private, link-local, metadata) that
    /// spaces may reach anyway; also reachable on the host itself.
    pub allow: Vec<Ipv4Net>,
    /// DNS servers for spaces; empty = the host's (see `dns.rs`).
    pub dns: Vec<Ipv4Addr>,
    /// How long the bridge and table stay after the last networked space
    /// is destroyed (a space created meanwhile finds them up); zero: they
    /// go at once.
    pub linger: std::time::Duration,
    /// Whether spaces may publish ports on the host's addresses
    /// (`CLAWDSPACE_PUBLISH_PORTS=1`).
    pub publish: bool,
    /// Network namespaces kept ready (with their veth, address and port
    /// binding) while the bridge is up, so that a networked create does
    /// not wait for the kernel to make them (`CLAWDSPACE_NETWORK_SPARES`).
    pub spares: usize,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            bridge: DEFAULT_BRIDGE.into(),
            subnet: Ipv4Net {
                addr: Ipv4Addr::new(10, 88, 0, 0),
                prefix: 16,
            },
            allow: Vec::new(),
            dns: Vec::new(),
            linger: DEFAULT_LINGER,
            publish: false,
            spares: DEFAULT_SPARES,
        }
    }
}

impl NetworkConfig {
    /// A bridge and a /24 of their own, derived from `tag`, so that test or
    /// benchmark runtimes never share them with each other or a daemon.
    pub fn private_for(tag: u32) -> Self {
        let b = tag.to_be_bytes();
        NetworkConfig {
            bridge: format!("cst{tag:08x}"),
            subnet: Ipv4Net {
                addr: Ipv4Addr::new(10, 100 + b[0] % 100, b[1], 0),
                prefix: 24,
            },
            linger: std::time::Duration::ZERO,
            ..Default::default()
        }
    }

    /// Name of our nftables table (`inet` family).
    pub fn table(&self) -> &str {
        &self.bridge
    }

    /// The bridge's own address, the spaces' default gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.nth(1)
    }

    /// Checks names and sizes; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let b = &self.bridge;
        if b.is_empty()
            || b.len() > 15
            || !b.starts_with(|c: char| c.is_ascii_alphabetic())
            || !b.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            return Err(format!(
                "invalid bridge name '{b}': 1-15 letters, digits or _, starting with a letter"
            ));
        }
        if !(8..=29).contains(&self.subnet.prefix) {
            return Err(format!(
                "subnet {} must have a prefix between /8 and /29",
                self.subnet
            ));
        }
        Ok(())
    }

    /// Reads `CLAWDSPACE_BRIDGE`, `CLAWDSPACE_SUBNET`,
    /// `CLAWDSPACE_ALLOW_NETS` and `CLAWDSPACE_DNS` (comma-separated lists).
    pub fn from_env() -> Result<Self, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let mut c = NetworkConfig::default();
        if let Some(b) = var("CLAWDSPACE_BRIDGE") {
            c.bridge = b.trim().to_string();
        }
        if let Some(s) = var("CLAWDSPACE_SUBNET") {
            c.subnet = s.parse()?;
        }
        if let Some(a) = var("CLAWDSPACE_ALLOW_NETS") {
            c.allow = parse_list(&a)?;
        }
        if let Some(d) = var("CLAWDSPACE_DNS") {
            c.dns = parse_list(&d)?;
        }
        if let Some(ms) = var("CLAWDSPACE_NETWORK_LINGER_MS") {
            c.linger = parse_linger(&ms)?;
        }
        if let Some(n) = var("CLAWDSPACE_NETWORK_SPARES") {
            c.spares = n
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= MAX_SPARES)
                .ok_or_else(|| {
                    format!("invalid CLAWDSPACE_NETWORK_SPARES '{n}': 0 to {MAX_SPARES}")
                })?;
        }
        if let Some(p) = var("CLAWDSPACE_PUBLISH_PORTS") {
            c.publish = match p.trim() {
                "1" | "true" => true,
                "0" | "false" => false,
                _ => return Err(format!("invalid CLAWDSPACE_PUBLISH_PORTS '{p}': 1 or 0")),
            };
        }
        c.validate()?;
        Ok(c)
    }
}

/// Default of [`NetworkConfig::spares`].
pub const DEFAULT_SPARES: usize = 1;
/// Most [`NetworkConfig::spares`] allowed.
pub const MAX_SPARES: usize = 64;

/// Default of [`NetworkConfig::linger`].
pub const DEFAULT_LINGER: std::time::Duration = std::time::Duration::from_secs(60);

/// Parses `CLAWDSPACE_NETWORK_LINGER_MS` (milliseconds).
pub fn parse_linger(ms: &str) -> Result<std::time::Duration, String> {
    ms.trim()
        .parse::<u64>()
        .map(std::time::Duration::from_millis)
        .map_err(|_| format!("invalid CLAWDSPACE_NETWORK_LINGER_MS '{ms}': milliseconds"))
}

/// Parses a comma-separated list (empty items ignored).
pub fn parse_list<T: FromStr>(s: &str) -> Result<Vec<T>, String>
where
    T::Err: fmt::Display,
{
    s.split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(|i| i.parse::<T>().map_err(|e| format!("'{i}': {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_reject_host_bits() {
        let n: Ipv4Net = "10.88.0.0/16".parse().expect("net");
        assert!(n.contains(Ipv4Addr::new(10, 88, 255, 7)));
        assert!(!n.contains(Ipv4Addr::new(10, 89, 0, 1)));
        assert_eq!(n.nth(1), Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(n.size(), 65536);
        assert_eq!("1.2.3.4".parse::<Ipv4Net>().expect("host").prefix, 32);
        assert!("10.88.0.1/16".parse::<Ipv4Net>().is_err());
        assert!("10.88.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("fc00::/7".parse::<Ipv4Net>().is_err());
        let p: Ipv4Net = "0.0.0.0/0".parse().expect("all");
        assert!(p.contains(Ipv4Addr::new(8, 8, 8, 8)));
        assert!(n.overlaps(&"10.0.0.0/8".parse().expect("net")));
    }

    #[test]
    fn names_and_sizes_are_checked() {
        assert!(NetworkConfig::default().validate().is_ok());
        assert!(NetworkConfig::private_for(0xdeadbeef).validate().is_ok());
        for bad in ["", "0abc", "has-dash", "muchtoolongname0"] {
            let c = NetworkConfig {
                bridge: bad.into(),
                ..Default::default()
            };
            assert!(c.validate().is_err(), "{bad}");
        }
        let c = NetworkConfig {
            subnet: "10.0.0.0/30".parse().expect("net"),
            ..Default::default()
        };
        assert!(c.validate().is_err());
        assert_eq!(
            parse_list::<Ipv4Net>(" 10.1.0.0/16, ,192.168.5.5").expect("list"),
            vec![
                "10.1.0.0/16".parse().expect("a"),
                "192.168.5.5/32".parse().expect("b")
            ]
        );
    }
}
