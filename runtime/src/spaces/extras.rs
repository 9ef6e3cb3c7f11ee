//! What a create may add to a new space (environment variables, a file such
//! as `.env`, a git clone) and `git push` from a space. The file and the
//! git steps run inside the space, as its user, through its own network:
//! the kernel resolves their paths as the space sees them, and the space's
//! disk limit applies.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::exec::{self, Command, ExecOutput, ExecRequest};
use crate::git::{self, UrlKind};
use crate::store::Space;

use super::create::CreateSpace;
use super::Runtime;

/// Default path of the environment file.
pub const DEFAULT_ENV_FILE_PATH: &str = "/workspace/.env";
/// Default clone destination under `/workspace`.
pub const DEFAULT_REPO_DEST: &str = "repo";
/// Largest environment file.
pub const MAX_ENV_FILE: usize = 1 << 20;
/// Most variables a create may add.
pub const MAX_ENV_VARS: usize = 256;
/// Largest value of one variable.
pub const MAX_ENV_VALUE: usize = 32 << 10;
/// Largest name of one variable.
const MAX_ENV_NAME: usize = 256;
/// How long a clone may take before the create fails.
const CLONE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a push may take.
const PUSH_TIMEOUT: Duration = Duration::from_secs(300);
/// How long writing the environment file may take.
const FILE_TIMEOUT: Duration = Duration::from_secs(30);
/// Output kept of a step (errors quote its tail).
const STEP_OUTPUT: usize = 64 << 10;
/// Most of a step's stderr quoted in an error.
const QUOTED: usize = 2000;

/// Writes stdin to `$1` with mode 0600, making missing parent directories.
const WRITE_FILE: &str =
    "set -e; mkdir -p -- \"$(dirname -- \"$1\")\"; umask 077; cat > \"$1\"; chmod 600 -- \"$1\"";

/// A file written into a new space as its user, mode 0600.
#[derive(Debug, Clone)]
pub struct EnvFile {
    /// Absolute path inside the space.
    pub path: String,
    /// The bytes.
    pub content: Vec<u8>,
}

/// A git repository cloned into a new space, under `/workspace`.
#[derive(Debug, Clone)]
pub struct RepoClone {
    /// `https://…` or `git@host:path`.
    pub url: String,
    /// Branch to check out (default: the remote's).
    pub branch: Option<String>,
    /// Destination relative to `/workspace` (default `repo`).
    pub dest: String,
}

/// `git push <remote> <branch>` in a repository of a space.
#[derive(Clone)]
pub struct GitPush {
    /// The repository: an absolute path under `/workspace`.
    pub repo_path: String,
    /// Remote name.
    pub remote: String,
    /// Branch name.
    pub branch: String,
    /// Token for an https remote (never logged or written to a file).
    pub token: String,
}

impl std::fmt::Debug for GitPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitPush")
            .field("repo_path", &self.repo_path)
            .field("remote", &self.remote)
            .field("branch", &self.branch)
            .finish_non_exhaustive()
    }
}

/// Checks an environment variable's name and value.
pub fn check_env_var(name: &str, value: &str) -> Result<()> {
    let name_ok = !name.is_empty()
        && name.len() <= MAX_ENV_NAME
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !name_ok {
        return Err(Error::InvalidInput(format!(
            "Invalid env name '{name}' (letters, digits and _, not starting with a digit)"
        )));
    }
    if value.len() > MAX_ENV_VALUE {
        return Err(Error::InvalidInput(format!(
            "env value of '{name}' is longer than {} KiB",
            MAX_ENV_VALUE >> 10
        )));
    }
    if value.contains('\0') {
        return Err(Error::InvalidInput(format!(
            "env value of '{name}' contains a NUL byte"
        )));
    }
    Ok(())
}

/// Checks everything a create adds to its space before anything is made.
pub(super) fn check(req: &CreateSpace) -> Result<()> {
    if req.env.len() > MAX_ENV_VARS {
        return Err(Error::InvalidInput(format!(
            "env: at most {MAX_ENV_VARS} variables"
        )));
    }
    for (k, v) in &req.env {
        check_env_var(k, v)?;
    }
    if let Some(f) = &req.env_file {
        let p = &f.path;
        if !p.starts_with('/') || p.ends_with('/') || p.len() > 4096 || p.contains('\0') {
            return Err(Error::InvalidInput(
                "Invalid envFilePath: an absolute path of a file".into(),
            ));
        }
        if f.content.len() > MAX_ENV_FILE {
            return Err(Error::InvalidInput(format!(
                "env file larger than {} MiB",
                MAX_ENV_FILE >> 20
            )));
        }
    }
    if let Some(r) = &req.repo {
        git::check_repo_url(&r.url)?;
        if let Some(b) = &r.branch {
            git::check_branch("repoBranch", b)?;
        }
        git::clone_dest(&r.dest)?;
    }
    Ok(())
}

/// Whether a create asks for steps run in the new space.
pub(super) fn wanted(req: &CreateSpace) -> bool {
    req.env_file.is_some() || req.repo.is_some()
}

/// `base` with `extra` added, a name already there replaced in place.
pub(super) fn merge_env(base: &mut Vec<String>, extra: &[(String, String)]) {
    for (k, v) in extra {
        let entry = format!("{k}={v}");
        match base
            .iter_mut()
            .find(|e| e.split_once('=').is_some_and(|(n, _)| n == k))
        {
            Some(e) => *e = entry,
            None => base.push(entry),
        }
    }
}

/// The last [`QUOTED`] characters of a step's stderr, trimmed.
fn quote(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let t = text.trim();
    let start = t
        .char_indices()
        .rev()
        .nth(QUOTED)
        .map_or(0, |(i, c)| i + c.len_utf8());
    t[start..].to_string()
}

/// A step that could not run its program: 127 and the executor's message.
fn not_found(out: &ExecOutput) -> bool {
    out.exit_code == 127 && String::from_utf8_lossy(&out.stderr).contains("command not found")
}

impl Runtime {
    /// Writes the environment file and clones the repository a create asked
    /// for, in that order, in the space `s` that has just started (its
    /// create holds the space's lock). Any failure is an invalid-input
    /// error that says which step failed; the caller rolls the space back.
    pub(super) async fn apply_extras(&self, s: &Space, req: &CreateSpace) -> Result<()> {
        if let Some(f) = &req.env_file {
            let argv = ["sh", "-c", WRITE_FILE, "clawdspace-env-file", &f.path];
            let out = self
                .step(s, &argv, Vec::new(), Some(f.content.clone()), FILE_TIMEOUT)
                .await?;
            if not_found(&out) {
                return Err(Error::InvalidInput(
                    "envFile: the image has no sh to write it with".into(),
                ));
            }
            if out.exit_code != 0 || out.timed_out {
                return Err(Error::InvalidInput(format!(
                    "envFile: could not write {}: {}",
                    f.path,
                    quote(&out.stderr)
                )));
            }
        }
        if let Some(r) = &req.repo {
            let kind = git::check_repo_url(&r.url)?;
            let dest = git::clone_dest(&r.dest)?;
            let token = req
                .env
                .iter()
                .find(|(k, _)| k == "GITHUB_TOKEN")
                .map(|(_, v)| v.as_str())
                .filter(|t| kind == UrlKind::Https && !t.is_empty());
            let argv = git::clone_argv(&r.url, r.branch.as_deref(), &dest);
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let out = self
                .step(s, &argv, git::git_env(token), None, CLONE_TIMEOUT)
                .await?;
            if not_found(&out) {
                return Err(Error::InvalidInput(
                    "repo: git is not installed in the image".into(),
                ));
            }
            if out.timed_out {
                return Err(Error::InvalidInput(format!(
                    "repo: cloning {} took longer than {} s",
                    r.url,
                    CLONE_TIMEOUT.as_secs()
                )));
            }
            if out.exit_code != 0 {
                return Err(Error::InvalidInput(format!(
                    "repo: cloning {} failed (exit {}): {}",
                    r.url,
                    out.exit_code,
                    quote(&out.stderr)
                )));
            }
            tracing::info!(space = %s.name, dest = %dest, "repository cloned");
        }
        Ok(())
    }

    /// Runs `argv` in `s` as its user in `/`, with `env` added, to the end.
    async fn step(
        &self,
        s: &Space,
        argv: &[&str],
        env: Vec<String>,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<ExecOutput> {
        let req = ExecRequest {
            cwd: Some("/".into()),
            env,
            timeout: Some(timeout),
            output_limit: STEP_OUTPUT,
            stdin: stdin.as_ref().map(|_| Vec::new()),
            ..ExecRequest::new(Command::Argv(argv.iter().map(|a| a.to_string()).collect()))
        };
        let handle = self.spawn_in(s, &req).await?;
        Ok(exec::collect(handle, stdin, STEP_OUTPUT, Some(timeout)).await)
    }

    /// `git push <remote> <branch>` in the repository `p.repo_path` of space
    /// `name`, as the space's user, with `p.token` handed to git for an
    /// https remote by a credential helper from the environment (never on
    /// the command line or in a file). A push that fails is an
    /// invalid-input error quoting git's stderr.
    pub async fn git_push(&self, name: &str, p: GitPush) -> Result<ExecOutput> {
        if p.token.is_empty() {
            return Err(Error::InvalidInput("token required".into()));
        }
        if p.token.contains('\0') || p.token.len() > MAX_ENV_VALUE {
            return Err(Error::InvalidInput("Invalid token".into()));
        }
        git::check_repo_path(&p.repo_path)?;
        git::check_remote(&p.remote)?;
        git::check_branch("branch", &p.branch)?;
        let req = ExecRequest {
            cwd: Some(p.repo_path.clone()),
            env: git::git_env(Some(&p.token)),
            timeout: Some(PUSH_TIMEOUT),
            output_limit: STEP_OUTPUT,
            ..ExecRequest::new(Command::Argv(git::push_argv(&p.remote, &p.branch)))
        };
        let out = self.exec(name, req).await?;
        if not_found(&out) {
            return Err(Error::InvalidInput(
                "git is not installed in the space".into(),
            ));
        }
        if out.exit_code != 0 || out.timed_out {
            return Err(Error::InvalidInput(format!(
                "git push failed (exit {}): {}",
                out.exit_code,
                quote(&out.stderr)
            )));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_are_checked() {
        assert!(check_env_var("GITHUB_TOKEN", "x").is_ok());
        assert!(check_env_var("_a1", "").is_ok());
        for bad in ["", "1A", "A=B", "A B", "A-B", "Ä", "A\0"] {
            assert!(check_env_var(bad, "v").is_err(), "{bad:?}");
        }
        assert!(check_env_var("A", "x\0y").is_err());
        assert!(check_env_var("A", &"x".repeat(MAX_ENV_VALUE + 1)).is_err());
    }

    #[test]
    fn merged_env_replaces_in_place() {
        let mut e = vec!["PATH=/bin".to_string(), "HOME=/h".to_string()];
        merge_env(
            &mut e,
            &[("HOME".into(), "/w".into()), ("A".into(), "1=2".into())],
        );
        assert_eq!(e, ["PATH=/bin", "HOME=/w", "A=1=2"]);
    }

    #[test]
    fn quotes_keep_the_tail() {
        let long = format!("{}end", "é".repeat(3000));
        let q = quote(long.as_bytes());
        assert!(q.ends_with("end"));
        assert_eq!(q.chars().count(), QUOTED);
        assert_eq!(quote(b"  fatal: x\n"), "fatal: x");
    }
}
