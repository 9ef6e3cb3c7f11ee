//! Git inside a space: the rules for what a client may name (repository
//! URLs, branches, remotes, destinations) and the argv and environment of
//! the `git` processes the runtime starts there. Pure: unit-tested without
//! root. Nothing here goes through a shell; every value is one argv entry.

use std::path::Path;

use crate::error::{Error, Result};
use crate::WORKSPACE;

/// Environment variable that carries a token to the credential helper of a
/// `git` process the runtime starts (never written to any file).
const TOKEN_VAR: &str = "CLAWDSPACE_GIT_TOKEN";

/// A credential helper that answers `get` with the token from the process's
/// environment (GitHub accepts any user name with a token as password). The
/// token itself is never part of the configuration, argv or a file.
const TOKEN_HELPER: &str = "!f() { test \"$1\" = get && printf 'username=x-access-token\\npassword=%s\\n' \"$CLAWDSPACE_GIT_TOKEN\"; }; f";

/// Longest accepted repository URL.
const MAX_URL: usize = 2048;
/// Longest accepted ref, remote or destination name.
const MAX_NAME: usize = 255;

fn invalid(what: &str, why: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!("Invalid {what}: {why}"))
}

/// The kind of a repository URL the runtime clones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlKind {
    /// `https://host/path`.
    Https,
    /// `git@host:path` (SSH).
    Ssh,
}

/// Checks a repository URL: `https://host/...` or `git@host:path`, no
/// credentials in it (a token goes in `env.GITHUB_TOKEN`, so it never ends
/// up in the clone's `.git/config`), no whitespace or control characters.
pub fn check_repo_url(url: &str) -> Result<UrlKind> {
    let bad = |why: &str| invalid("repoUrl", why);
    if url.is_empty() {
        return Err(bad("empty"));
    }
    if url.len() > MAX_URL {
        return Err(bad("too long"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains whitespace or control characters"));
    }
    if let Some(rest) = url.strip_prefix("https://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.contains('@') {
            return Err(bad(
                "credentials in the URL are not accepted (put a token in env.GITHUB_TOKEN)",
            ));
        }
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        if host.is_empty() || host.starts_with('-') {
            return Err(bad("no host"));
        }
        return Ok(UrlKind::Https);
    }
    if let Some(rest) = url.strip_prefix("git@") {
        let Some((host, path)) = rest.split_once(':') else {
            return Err(bad("expected git@host:path"));
        };
        let host_ok = !host.is_empty()
            && !host.starts_with(['-', '.'])
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if !host_ok {
            return Err(bad("bad host"));
        }
        if path.is_empty() || path.starts_with('-') {
            return Err(bad("expected git@host:path"));
        }
        return Ok(UrlKind::Ssh);
    }
    Err(bad("only https:// and git@host:path URLs are accepted"))
}

/// Checks a branch name as `git check-ref-format --branch` would, a little
/// more strictly: letters, digits and `._/-+@`, no leading `-`, `.`, `/`
/// or `+`, no `..`, `//`, `@{`, trailing `/`, `.` or `.lock`.
pub fn check_branch(what: &str, b: &str) -> Result<()> {
    let bad = |why: &str| invalid(what, format!("'{b}': {why}"));
    if b.is_empty() {
        return Err(invalid(what, "empty"));
    }
    if b.len() > MAX_NAME {
        return Err(invalid(what, "too long"));
    }
    if !b
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"._/-+@".contains(&c))
    {
        return Err(bad("only letters, digits and ._/-+@ are allowed"));
    }
    // A leading `+` would make a push refspec forced.
    if b.starts_with(['-', '.', '/', '+'])
        || b.ends_with(['/', '.'])
        || b.ends_with(".lock")
        || b.contains("..")
        || b.contains("//")
        || b.contains("/.")
        || b.contains("@{")
        || b == "@"
    {
        return Err(bad("not a valid branch name"));
    }
    Ok(())
}

/// Checks a remote name: letters, digits and `._-`, not starting with `-`
/// or `.`.
pub fn check_remote(r: &str) -> Result<()> {
    if r.is_empty() || r.len() > MAX_NAME {
        return Err(invalid("remote", "empty or too long"));
    }
    if r.starts_with(['-', '.'])
        || !r
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
    {
        return Err(invalid(
            "remote",
            format!("'{r}': a remote name (letters, digits, ._-)"),
        ));
    }
    Ok(())
}

/// The clone destination `/workspace/<dest>` for a relative `dest`: plain
/// names joined by `/` (letters, digits, `._-`), none `.`, `..` or starting
/// with `-`.
pub fn clone_dest(dest: &str) -> Result<String> {
    let bad = |why: &str| invalid("repoDest", format!("'{dest}': {why}"));
    if dest.is_empty() || dest.len() > MAX_NAME {
        return Err(bad("empty or too long"));
    }
    for part in dest.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.starts_with('-') {
            return Err(bad("a relative path of plain names under /workspace"));
        }
        if !part
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
        {
            return Err(bad("only letters, digits and ._- are allowed"));
        }
    }
    Ok(format!("{WORKSPACE}/{dest}"))
}

/// Checks a repository path for a push: absolute, normalized (no `.` or
/// `..`), `/workspace` or below it.
pub fn check_repo_path(p: &str) -> Result<()> {
    let bad = || invalid("repoPath", "an absolute path under /workspace");
    if p.len() > 4096 || p.contains('\0') || !p.starts_with('/') {
        return Err(bad());
    }
    // Segments as written (`Path::components` drops `.` silently).
    if p.split('/').any(|c| c == "." || c == "..") {
        return Err(bad());
    }
    if !Path::new(p).starts_with(WORKSPACE) {
        return Err(bad());
    }
    Ok(())
}

/// The environment of a `git` process the runtime starts: no prompts, and
/// when a token is given, a credential helper that hands it over from the
/// environment (`GIT_CONFIG_*` is configuration of this process only: the
/// repository's `.git/config` never sees it). Earlier helpers are reset so
/// none configured in the image is asked first.
pub fn git_env(token: Option<&str>) -> Vec<String> {
    let mut env = vec!["GIT_TERMINAL_PROMPT=0".to_string()];
    if let Some(t) = token {
        env.extend([
            "GIT_CONFIG_COUNT=2".to_string(),
            "GIT_CONFIG_KEY_0=credential.helper".to_string(),
            "GIT_CONFIG_VALUE_0=".to_string(),
            "GIT_CONFIG_KEY_1=credential.helper".to_string(),
            format!("GIT_CONFIG_VALUE_1={TOKEN_HELPER}"),
            format!("{TOKEN_VAR}={t}"),
        ]);
    }
    env
}

/// argv of `git clone` of `url` (branch `branch`) into `dest`.
pub fn clone_argv(url: &str, branch: Option<&str>, dest: &str) -> Vec<String> {
    let mut a: Vec<String> = ["git", "clone", "--quiet"].map(String::from).into();
    if let Some(b) = branch {
        a.extend(["--branch".to_string(), b.to_string()]);
    }
    a.extend(["--".to_string(), url.to_string(), dest.to_string()]);
    a
}

/// argv of `git push <remote> <branch>` (both checked: neither can be
/// taken for an option).
pub fn push_argv(remote: &str, branch: &str) -> Vec<String> {
    ["git", "push", remote, branch].map(String::from).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_https_or_scp_like_ssh_only() {
        assert_eq!(
            check_repo_url("https://github.com/a/b.git").ok(),
            Some(UrlKind::Https)
        );
        assert_eq!(
            check_repo_url("https://198.18.0.2:8443/r.git").ok(),
            Some(UrlKind::Https)
        );
        assert_eq!(
            check_repo_url("git@github.com:a/b.git").ok(),
            Some(UrlKind::Ssh)
        );
        for bad in [
            "",
            "http://github.com/a/b",
            "ftp://x/y",
            "file:///etc",
            "/srv/repo",
            "-uhttps://x",
            "--upload-pack=touch /tmp/x",
            "ext::sh -c touch% /tmp/pwned",
            "https://user:tok@github.com/a/b",
            "https://tok@github.com/a/b",
            "https:///path",
            "https://-oProxyCommand=x/",
            "https://x/a b",
            "https://x/a\nb",
            "git@-oProxyCommand=x:y",
            "git@host",
            "git@host:-x",
            "git@ho st:x",
            "ssh://git@github.com/a/b",
        ] {
            assert!(check_repo_url(bad).is_err(), "{bad:?}");
        }
        assert!(check_repo_url(&format!("https://x/{}", "a".repeat(3000))).is_err());
    }

    #[test]
    fn branches_follow_ref_rules() {
        for ok in ["main", "feature/x-1", "v1.2.3", "release+1", "a@b"] {
            assert!(check_branch("branch", ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "-f", "--force", ".hidden", "/abs", "a..b", "a//b", "a/", "a.", "x.lock", "a/.b",
            "a@{1}", "@", "a b", "a:b", "a~1", "a^", "a*", "a\\b", "+main",
        ] {
            assert!(check_branch("branch", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn remotes_and_destinations_are_plain_names() {
        assert!(check_remote("origin").is_ok());
        assert!(check_remote("up-stream_2.x").is_ok());
        for bad in ["", "-f", "--mirror", ".x", "a/b", "a b", "https://x/y"] {
            assert!(check_remote(bad).is_err(), "{bad:?}");
        }
        assert_eq!(clone_dest("repo").ok().as_deref(), Some("/workspace/repo"));
        assert_eq!(
            clone_dest("a/b.c").ok().as_deref(),
            Some("/workspace/a/b.c")
        );
        for bad in [
            "", "/abs", "..", "a/../..", "./x", "-x", "a//b", "a/", "a b",
        ] {
            assert!(clone_dest(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn push_paths_stay_under_the_workspace() {
        for ok in ["/workspace", "/workspace/repo", "/workspace/a/b/"] {
            assert!(check_repo_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "repo",
            "workspace/repo",
            "/workspace/../etc",
            "/workspace/./x",
            "/workspaces",
            "/etc",
            "/",
        ] {
            assert!(check_repo_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_token_travels_in_the_environment_only() {
        let env = git_env(Some("s3cret"));
        assert!(env.contains(&"CLAWDSPACE_GIT_TOKEN=s3cret".to_string()));
        let with_secret: Vec<_> = env.iter().filter(|e| e.contains("s3cret")).collect();
        assert_eq!(with_secret.len(), 1, "only in its own variable: {env:?}");
        assert!(!git_env(None).iter().any(|e| e.starts_with("GIT_CONFIG")));
        let argv = clone_argv("https://x/r", Some("main"), "/workspace/repo");
        assert_eq!(
            argv,
            [
                "git",
                "clone",
                "--quiet",
                "--branch",
                "main",
                "--",
                "https://x/r",
                "/workspace/repo"
            ]
        );
        assert_eq!(
            push_argv("origin", "main"),
            ["git", "push", "origin", "main"]
        );
    }
}
