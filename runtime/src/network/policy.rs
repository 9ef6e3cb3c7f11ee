//! A space's egress policy beyond its mode: networks it may not reach
//! (`blockCidrs`) and an allow-list of domain names (`allowDomains`) with
//! the TCP ports they may be reached on (`allowPorts`). Checked strictly:
//! every request is hostile. Enforced by the space's own nftables table
//! ([`super::egress`]) and, for domains, its DNS answerer
//! ([`super::answer`]).

use serde::{Deserialize, Serialize};

use super::config::Ipv4Net;
use super::NetworkMode;

/// Most entries of `blockCidrs`.
pub const MAX_CIDRS: usize = 64;
/// Most entries of `allowDomains`.
pub const MAX_DOMAINS: usize = 64;
/// Most entries of `allowPorts`.
pub const MAX_PORTS: usize = 16;
/// Longest domain pattern (a DNS name's limit).
pub const MAX_DOMAIN_LEN: usize = 253;
/// Ports allowed to `allowDomains` when `allowPorts` is not given.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// The policy part of a space's network (empty: the mode's defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Egress {
    /// Networks the space may not reach (on top of the mode's rules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block_cidrs: Vec<Ipv4Net>,
    /// When not empty, the only names the space can resolve and reach:
    /// `example.org` (that name) or `*.example.org` (any name below it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_domains: Vec<String>,
    /// TCP ports the addresses of `allow_domains` are reachable on
    /// (filled with [`DEFAULT_PORTS`] at create when not given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_ports: Vec<u16>,
}

impl Egress {
    /// Whether nothing beyond the mode is asked for.
    pub fn is_empty(&self) -> bool {
        self.block_cidrs.is_empty() && self.allow_domains.is_empty() && self.allow_ports.is_empty()
    }

    /// Checks the policy against `mode` and its own limits, removes
    /// duplicates and fills the default ports; the message says what is
    /// wrong.
    pub fn normalize(mut self, mode: NetworkMode) -> Result<Egress, String> {
        if mode == NetworkMode::None && !self.is_empty() {
            return Err(
                "Invalid network: blockCidrs, allowDomains and allowPorts need \
                 mode \"internet\" or \"lan\""
                    .into(),
            );
        }
        if self.block_cidrs.len() > MAX_CIDRS {
            return Err(format!("Invalid blockCidrs: at most {MAX_CIDRS} entries"));
        }
        if self.allow_domains.len() > MAX_DOMAINS {
            return Err(format!(
                "Invalid allowDomains: at most {MAX_DOMAINS} entries"
            ));
        }
        if self.allow_ports.len() > MAX_PORTS {
            return Err(format!("Invalid allowPorts: at most {MAX_PORTS} entries"));
        }
        for d in &self.allow_domains {
            check_domain(d)?;
        }
        if self.allow_ports.contains(&0) {
            return Err("Invalid allowPorts: ports are 1-65535".into());
        }
        if !self.allow_ports.is_empty() && self.allow_domains.is_empty() {
            return Err("Invalid allowPorts: it applies to allowDomains, which is empty".into());
        }
        dedup(&mut self.block_cidrs);
        dedup(&mut self.allow_domains);
        dedup(&mut self.allow_ports);
        if !self.allow_domains.is_empty() && self.allow_ports.is_empty() {
            self.allow_ports = DEFAULT_PORTS.to_vec();
        }
        Ok(self)
    }

    /// Whether `name` (a DNS name, any case, with or without the final
    /// dot) is allowed by `allow_domains`.
    pub fn allows(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        self.allow_domains
            .iter()
            .any(|p| match p.strip_prefix("*.") {
                Some(parent) => name
                    .strip_suffix(parent)
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                None => name == *p,
            })
    }
}

fn dedup<T: PartialEq + Clone>(v: &mut Vec<T>) {
    let mut seen: Vec<T> = Vec::with_capacity(v.len());
    v.retain(|x| {
        if seen.contains(x) {
            false
        } else {
            seen.push(x.clone());
            true
        }
    });
}

/// Parses one `blockCidrs` entry: `a.b.c.d/len` (host bits zero) or an
/// address.
pub fn parse_cidr(s: &str) -> Result<Ipv4Net, String> {
    if s.contains(':') {
        return Err(format!(
            "Invalid blockCidrs: '{}' is IPv6; spaces have no IPv6 (all of it is dropped)",
            s.chars().take(64).collect::<String>()
        ));
    }
    if s.len() > 18 {
        return Err("Invalid blockCidrs: not an IPv4 CIDR".into());
    }
    s.parse::<Ipv4Net>()
        .map_err(|e| format!("Invalid blockCidrs: {e}"))
}

/// Checks one `allowDomains` pattern: lowercase letters, digits and `-`
/// in labels of 1-63 characters (not starting or ending with `-`),
/// separated by dots, optionally starting with `*.`; at most 253
/// characters.
pub fn check_domain(p: &str) -> Result<(), String> {
    let shown: String = p.chars().take(64).collect();
    let bad = |why: &str| Err(format!("Invalid allowDomains: '{shown}' {why}"));
    if p.is_empty() || p.len() > MAX_DOMAIN_LEN {
        return bad("must have 1-253 characters");
    }
    let name = p.strip_prefix("*.").unwrap_or(p);
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("has an empty label or one longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return bad(
                "may hold only lowercase letters, digits, '-' and '.' (and a leading '*.')",
            );
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("has a label starting or ending with '-'");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(cidrs: &[&str], domains: &[&str], ports: &[u16]) -> Egress {
        Egress {
            block_cidrs: cidrs.iter().map(|c| parse_cidr(c).expect("cidr")).collect(),
            allow_domains: domains.iter().map(|d| d.to_string()).collect(),
            allow_ports: ports.to_vec(),
        }
    }

    #[test]
    fn policies_are_checked_and_normalized() {
        let e = egress(&["10.0.0.0/8", "10.0.0.0/8"], &["pypi.org"], &[])
            .normalize(NetworkMode::Internet)
            .expect("ok");
        assert_eq!(e.block_cidrs.len(), 1);
        assert_eq!(e.allow_ports, DEFAULT_PORTS);
        assert!(egress(&[], &[], &[])
            .normalize(NetworkMode::None)
            .expect("empty")
            .is_empty());
        let err = |e: Egress, m| e.normalize(m).expect_err("refused");
        assert!(err(egress(&["1.2.3.4"], &[], &[]), NetworkMode::None).contains("need mode"));
        assert!(err(egress(&[], &[], &[8080]), NetworkMode::Lan).contains("allowDomains"));
        assert!(err(egress(&[], &["a.b"], &[0]), NetworkMode::Lan).contains("1-65535"));
        let many: Vec<String> = (0..=MAX_CIDRS).map(|i| format!("10.0.{i}.0/24")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(err(egress(&many, &[], &[]), NetworkMode::Lan).contains("at most 64"));
    }

    #[test]
    fn cidrs_and_domains_are_strict() {
        assert_eq!(parse_cidr("192.168.0.0/16").expect("ok").prefix, 16);
        assert_eq!(parse_cidr("1.2.3.4").expect("host").prefix, 32);
        assert!(parse_cidr("fc00::/7").expect_err("v6").contains("IPv6"));
        assert!(parse_cidr("10.0.0.1/8")
            .expect_err("bits")
            .contains("host bits"));
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr(&"1".repeat(500)).is_err());
        for ok in ["pypi.org", "*.github.com", "a-b.c0", "localhost", "*.com"] {
            assert_eq!(check_domain(ok), Ok(()), "{ok}");
        }
        let long = format!("{}.org", "a".repeat(64));
        let too_long = ["a"; 130].join(".");
        for bad in [
            "", "*", "*.", "PyPI.org", "a..b", ".a", "a.", "-a.b", "a-.b", "a_b.c", "a*.b",
            "*.*.b", "a b", "ä.org", &long, &too_long,
        ] {
            assert!(check_domain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_match_exactly_or_below_a_wildcard() {
        let e = egress(&[], &["pypi.org", "*.github.com"], &[]);
        for yes in ["pypi.org", "PyPI.org.", "api.github.com", "a.b.github.com"] {
            assert!(e.allows(yes), "{yes}");
        }
        for no in [
            "github.com",
            "xgithub.com",
            "www.pypi.org",
            "pypi.org.evil",
            "",
            ".",
        ] {
            assert!(!e.allows(no), "{no}");
        }
    }
}
