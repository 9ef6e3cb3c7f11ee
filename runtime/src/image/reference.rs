//! Validation of image references before they touch the store.

use crate::error::{Error, Result};

/// Rejects references that are empty, too long, contain NUL, whitespace,
/// `..` segments, start with `/`, or have upper-case repository names
/// (SPEC 6.5, R12).
pub fn validate_reference(r: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidInput(format!(
            "Invalid image reference '{r}': {why}"
        )))
    };
    if r.is_empty() {
        return bad("empty");
    }
    if r.len() > 512 {
        return bad("too long");
    }
    if r.starts_with('/') {
        return bad("absolute paths are not image references");
    }
    if r.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("control characters or whitespace");
    }
    // The repository part: before '@', and before a ':' tag that follows the last '/'.
    let name = r.split('@').next().unwrap_or(r);
    let repo = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    };
    if repo.is_empty() {
        return bad("no repository name");
    }
    for seg in repo.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return bad("empty, '.' or '..' path segment");
        }
    }
    // The first segment may be a registry host (may have upper case and a port).
    let segs: Vec<&str> = repo.split('/').collect();
    let first_is_host = segs.len() > 1
        && (segs[0].contains('.') || segs[0].contains(':') || segs[0] == "localhost");
    for (i, seg) in segs.iter().enumerate() {
        if i == 0 && first_is_host {
            continue;
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            return bad("repository names are lower-case letters, digits, '.', '_' and '-'");
        }
    }
    if let Some(d) = r.split_once('@').map(|x| x.1) {
        let ok = d
            .strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ok {
            return bad("digest must be sha256:<64 hex>");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_reference as v;

    #[test]
    fn accepts_usual_references() {
        for r in [
            "clawdspace:latest",
            "ubuntu",
            "ubuntu:24.04",
            "library/ubuntu:24.04",
            "127.0.0.1:5000/test/busybox:1",
            "ghcr.io/org/x:1",
            "Registry.Example.com:5000/x",
            "localhost/x",
            "pytorch/pytorch:2.1.0-cuda12.1-cudnn8-runtime",
        ] {
            assert!(v(r).is_ok(), "{r}");
        }
        assert!(v(&format!("busybox@sha256:{}", "a".repeat(64))).is_ok());
    }

    #[test]
    fn rejects_references_that_could_escape_the_store() {
        for r in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "Ubuntu",
            "a\0b",
            "a b",
            "x@sha256:zz",
            "./x",
        ] {
            assert!(v(r).is_err(), "{r:?}");
        }
    }
}
