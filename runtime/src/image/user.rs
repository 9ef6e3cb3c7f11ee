//! Resolving a user name against an image's `/etc/passwd` and `/etc/group`.

use std::fs;
use std::path::PathBuf;

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
    /// Supplementary groups (from `/etc/group`).
    pub groups: Vec<u32>,
}

/// Finds `name` in the image whose layers are `layers` (topmost first): the
/// topmost layer holding `etc/passwd` wins, as in the merged view.
pub fn resolve_user(layers: &[PathBuf], name: &str) -> Option<PasswdEntry> {
    let read = |rel: &str| {
        layers
            .iter()
            .find_map(|l| fs::read_to_string(l.join(rel)).ok())
            .unwrap_or_default()
    };
    let mut entry = parse_passwd(&read("etc/passwd"), name)?;
    entry.groups = parse_groups(&read("etc/group"), name, entry.gid);
    Some(entry)
}

fn parse_passwd(text: &str, name: &str) -> Option<PasswdEntry> {
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || f[0] != name {
            return None;
        }
        Some(PasswdEntry {
            name: name.to_string(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5].to_string(),
            groups: Vec::new(),
        })
    })
}

fn parse_groups(text: &str, name: &str, primary: u32) -> Vec<u32> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || !f[3].split(',').any(|m| m == name) {
                return None;
            }
            f[2].parse::<u32>().ok().filter(|g| *g != primary)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_user_and_groups() {
        let p = "root:x:0:0:root:/root:/bin/sh\nsandbox:x:1000:1000::/home/sandbox:/bin/bash\n";
        let e = parse_passwd(p, "sandbox").expect("sandbox");
        assert_eq!(
            (e.uid, e.gid, e.home.as_str()),
            (1000, 1000, "/home/sandbox")
        );
        assert!(parse_passwd(p, "nobody").is_none());
        let g = "sandbox:x:1000:\nsudo:x:27:sandbox,other\nwheel:x:10:other\n";
        assert_eq!(parse_groups(g, "sandbox", 1000), vec![27]);
    }
}
