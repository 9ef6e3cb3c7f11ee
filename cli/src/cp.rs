//! `clawdspace cp`: files and directories between this machine and a space,
//! streamed both ways (nothing is held in memory whole). Files go through
//! `PUT`/`GET /api/spaces/<name>/fs`, directories as tar streams through
//! `/archive`; `-` is stdin or stdout. A progress line goes to stderr when
//! it is a terminal.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::Value;
use tokio::io::AsyncReadExt;

use crate::api::encode_segment;
use crate::commands::Ctx;
use crate::discovery::Server;
use crate::style::{self, GREEN};
use crate::Fail;

/// Bytes per chunk read from a local file or stdin.
const CHUNK: usize = 256 << 10;
/// Smallest transfer of known size that shows progress.
const PROGRESS_FROM: u64 = 8 << 20;

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loc {
    /// A path here.
    Local(PathBuf),
    /// Stdin or stdout (`-`).
    Stdio,
    /// `space:/path` (a relative path is under `/workspace`).
    Remote { space: String, path: String },
}

/// Reads a `cp` argument: `-`, `space:path`, or a local path (one with a
/// `/` before any `:`, e.g. `./a:b`, is local).
pub fn parse(arg: &str) -> Loc {
    if arg == "-" {
        return Loc::Stdio;
    }
    if let Some((space, path)) = arg.split_once(':') {
        let is_name = !space.is_empty()
            && space.len() <= 63
            && space
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if is_name {
            let path = if path.starts_with('/') {
                path.to_string()
            } else if path.is_empty() {
                "/workspace".to_string()
            } else {
                format!("/workspace/{path}")
            };
            return Loc::Remote {
                space: space.to_string(),
                path,
            };
        }
    }
    Loc::Local(PathBuf::from(arg))
}

/// `/api/spaces/<name><rest>?path=<path><extra>`.
fn fs_path(space: &str, rest: &str, path: &str, extra: &str) -> String {
    format!(
        "/spaces/{}{rest}?path={}{extra}",
        encode_segment(space),
        encode_segment(path)
    )
}

/// The last name of `p` (`/` for the root).
fn base_name(p: &str) -> &str {
    p.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

/// `dir/name` in a space.
fn join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

/// A progress line on stderr (only when it is a terminal).
struct Progress {
    on: bool,
    total: Option<u64>,
    done: u64,
    start: Instant,
    shown: Instant,
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

impl Progress {
    fn new(total: Option<u64>) -> Progress {
        let now = Instant::now();
        Progress {
            on: std::io::stderr().is_terminal() && total.is_none_or(|t| t >= PROGRESS_FROM),
            total,
            done: 0,
            start: now,
            shown: now,
        }
    }

    fn add(&mut self, n: usize) {
        self.done += n as u64;
        if self.on && self.shown.elapsed() >= Duration::from_millis(250) {
            self.shown = Instant::now();
            self.print();
        }
    }

    fn print(&self) {
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = mib((self.done as f64 / secs) as u64);
        let of = self
            .total
            .map(|t| format!(" / {}", mib(t)))
            .unwrap_or_default();
        eprint!("\r  {}{of}  {rate}/s   ", mib(self.done));
    }

    fn finish(&self) {
        if self.on {
            self.print();
            eprintln!();
        }
    }
}

/// A request body read from `r` in chunks, counted by `progress`.
fn body_from<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    r: R,
    progress: std::sync::Arc<std::sync::Mutex<Progress>>,
) -> reqwest::Body {
    let chunks = futures_util::stream::unfold((r, progress), |(mut r, p)| async move {
        let mut buf = vec![0u8; CHUNK];
        match r.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                if let Ok(mut p) = p.lock() {
                    p.add(n);
                }
                Some((Ok::<_, std::io::Error>(buf), (r, p)))
            }
            Err(e) => Some((Err(e), (r, p))),
        }
    });
    reqwest::Body::wrap_stream(chunks)
}

/// A tar stream of the contents of directory `dir`, made on a thread.
fn tar_body(dir: PathBuf) -> reqwest::Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(8);
    std::thread::spawn(move || {
        let sink = ChannelWriter(tx.clone());
        let mut b = tar::Builder::new(sink);
        b.follow_symlinks(false);
        let r = append_tree(&mut b, &dir, Path::new("")).and_then(|_| b.finish());
        if let Err(e) = r {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let chunks =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    reqwest::Body::wrap_stream(chunks)
}

/// Adds the entries under `dir` (named `rel/...`) to `b`, depth first;
/// symlinks as links, never followed.
fn append_tree<W: Write>(b: &mut tar::Builder<W>, dir: &Path, rel: &Path) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let (path, name) = (e.path(), rel.join(e.file_name()));
        b.append_path_with_name(&path, &name)?;
        if e.file_type()?.is_dir() {
            append_tree(b, &path, &name)?;
        }
    }
    Ok(())
}

/// Sends what is written as chunks on a channel.
struct ChannelWriter(tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(buf.to_vec()))
            .map_err(|_| std::io::Error::other("upload ended"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads what arrives on a channel (a response body, on a thread).
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Ctx<'_> {
    /// `cp SRC DST`: exactly one side is a space.
    pub async fn cp(&self, server: Option<String>, src: String, dst: String) -> Result<i32, Fail> {
        match (parse(&src), parse(&dst)) {
            (Loc::Remote { space, path }, to @ (Loc::Local(_) | Loc::Stdio)) => {
                let target = self.find_space(&space, server.as_deref(), false).await?;
                self.download(&target, &space, &path, to).await
            }
            (from @ (Loc::Local(_) | Loc::Stdio), Loc::Remote { space, path }) => {
                let target = self.find_space(&space, server.as_deref(), false).await?;
                self.upload(&target, &space, from, &path).await
            }
            _ => Err(Fail::error("one side of cp must be a space (name:/path), the other local or -")
                .hint("Usage: clawdspace cp ./file dev:/workspace/ | clawdspace cp dev:/workspace/dir ./here")),
        }
    }

    /// `GET …/fs/stat`: the JSON, or None when there is nothing there.
    async fn remote_stat(
        &self,
        t: &Server,
        space: &str,
        path: &str,
    ) -> Result<Option<Value>, Fail> {
        match self.api.get(t, &fs_path(space, "/fs/stat", path, "")).await {
            Ok(v) => Ok(Some(v)),
            // The space exists (found first): a 404 is about the path.
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.fail(self.api, t)),
        }
    }

    async fn upload(&self, t: &Server, space: &str, from: Loc, path: &str) -> Result<i32, Fail> {
        let remote_is_dir = self
            .remote_stat(t, space, path)
            .await?
            .is_some_and(|v| v["type"] == "dir");
        let local = match from {
            Loc::Local(p) => p,
            _ => {
                let progress = std::sync::Arc::new(std::sync::Mutex::new(Progress::new(None)));
                let body = body_from(tokio::io::stdin(), progress.clone());
                let url = fs_path(space, "/fs", path, "&mkdirs=true");
                self.put(t, &url, body).await?;
                let n = progress.lock().map(|p| {
                    p.finish();
                    p.done
                });
                self.copied(n.unwrap_or(0), &format!("{space}:{path}"));
                return Ok(0);
            }
        };
        let meta = std::fs::metadata(&local)
            .map_err(|e| Fail::error(format!("{}: {e}", local.display())))?;
        let name = local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dest = if remote_is_dir && !name.is_empty() {
            join(path, &name)
        } else {
            path.to_string()
        };
        if meta.is_dir() {
            let url = fs_path(space, "/archive", &dest, "");
            self.put(t, &url, tar_body(local.clone())).await?;
            println!(
                "{}",
                style::out(
                    GREEN,
                    &format!("✓ Copied {} to {space}:{dest}", local.display())
                )
            );
            return Ok(0);
        }
        let file = tokio::fs::File::open(&local)
            .await
            .map_err(|e| Fail::error(format!("{}: {e}", local.display())))?;
        let progress = std::sync::Arc::new(std::sync::Mutex::new(Progress::new(Some(meta.len()))));
        let mode = format!("&mode=0{:o}&mkdirs=true", meta.permissions().mode() & 0o777);
        let url = fs_path(space, "/fs", &dest, &mode);
        self.put(t, &url, body_from(file, progress.clone())).await?;
        if let Ok(p) = progress.lock() {
            p.finish();
        }
        self.copied(meta.len(), &format!("{space}:{dest}"));
        Ok(0)
    }

    async fn put(&self, t: &Server, url: &str, body: reqwest::Body) -> Result<(), Fail> {
        self.api
            .stream(t, Method::PUT, url, Some(body))
            .await
            .map(drop)
            .map_err(|e| e.fail(self.api, t))
    }

    fn copied(&self, bytes: u64, to: &str) {
        println!(
            "{}",
            style::out(GREEN, &format!("✓ Copied {bytes} bytes to {to}"))
        );
    }

    async fn download(&self, t: &Server, space: &str, path: &str, to: Loc) -> Result<i32, Fail> {
        let Some(stat) = self.remote_stat(t, space, path).await? else {
            return Err(Fail::error(format!(
                "{space}:{path}: no such file or directory"
            )));
        };
        let is_dir = stat["type"] == "dir";
        let url = if is_dir {
            fs_path(space, "/archive", path, "")
        } else {
            fs_path(space, "/fs", path, "")
        };
        let resp = self
            .api
            .stream(t, Method::GET, &url, None)
            .await
            .map_err(|e| e.fail(self.api, t))?;
        let mut progress = Progress::new(resp.content_length());
        let mut body = resp.bytes_stream();
        let broken = |e: reqwest::Error| Fail::error(format!("the transfer broke off: {e}"));
        let Loc::Local(local) = to else {
            // Stdout: the file's bytes, or the directory as a tar stream.
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(broken)?;
                out.write_all(&chunk)
                    .map_err(|e| Fail::error(format!("stdout: {e}")))?;
                progress.add(chunk.len());
            }
            out.flush()
                .map_err(|e| Fail::error(format!("stdout: {e}")))?;
            progress.finish();
            return Ok(0);
        };
        let name = base_name(path);
        let dest = if local.is_dir() && !name.is_empty() {
            local.join(name)
        } else {
            local.clone()
        };
        if is_dir {
            std::fs::create_dir_all(&dest)
                .map_err(|e| Fail::error(format!("{}: {e}", dest.display())))?;
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
            let into = dest.clone();
            let unpack = std::thread::spawn(move || {
                let mut a = tar::Archive::new(ChannelReader {
                    rx,
                    buf: Vec::new(),
                    pos: 0,
                });
                a.set_overwrite(true);
                // Every entry stays inside `into` (tar's unpack_in checks).
                a.unpack(&into)
            });
            let mut fed = Ok(());
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(c) => {
                        progress.add(c.len());
                        if tx.send(c.to_vec()).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        fed = Err(broken(e));
                        break;
                    }
                }
            }
            drop(tx);
            let unpacked = tokio::task::spawn_blocking(move || unpack.join())
                .await
                .map_err(|e| Fail::error(format!("unpacking: {e}")))?
                .map_err(|_| Fail::error("unpacking failed"))?;
            fed?;
            unpacked.map_err(|e| Fail::error(format!("unpacking into {}: {e}", dest.display())))?;
            progress.finish();
            println!(
                "{}",
                style::out(
                    GREEN,
                    &format!("✓ Copied {space}:{path} to {}", dest.display())
                )
            );
            return Ok(0);
        }
        // A file: written next to its place, renamed over it when complete.
        let part = dest.with_file_name(format!(
            ".{}.clawdspace-part",
            dest.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        let written = async {
            let mut f = tokio::fs::File::create(&part).await?;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(std::io::Error::other)?;
                tokio::io::AsyncWriteExt::write_all(&mut f, &chunk).await?;
                progress.add(chunk.len());
            }
            f.sync_all().await?;
            if let Some(mode) = stat["mode"].as_u64() {
                let perm = std::fs::Permissions::from_mode(mode as u32 & 0o777);
                tokio::fs::set_permissions(&part, perm).await?;
            }
            tokio::fs::rename(&part, &dest).await
        }
        .await;
        if let Err(e) = written {
            let _ = std::fs::remove_file(&part);
            return Err(Fail::error(format!("{}: {e}", dest.display())));
        }
        progress.finish();
        println!(
            "{}",
            style::out(
                GREEN,
                &format!("✓ Copied {} bytes to {}", progress.done, dest.display())
            )
        );
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_name_a_side() {
        assert_eq!(parse("-"), Loc::Stdio);
        assert_eq!(
            parse("dev:/etc/x"),
            Loc::Remote {
                space: "dev".into(),
                path: "/etc/x".into()
            }
        );
        assert_eq!(
            parse("dev:src/a"),
            Loc::Remote {
                space: "dev".into(),
                path: "/workspace/src/a".into()
            }
        );
        assert_eq!(
            parse("dev:"),
            Loc::Remote {
                space: "dev".into(),
                path: "/workspace".into()
            }
        );
        for local in ["./a:b", "/tmp/x", "file", "a b:c", ":x"] {
            assert_eq!(parse(local), Loc::Local(local.into()), "{local}");
        }
        assert_eq!(base_name("/a/b/"), "b");
        assert_eq!(join("/a/", "b"), "/a/b");
        assert_eq!(
            fs_path("d", "/fs", "/a b", "&mkdirs=true"),
            "/spaces/d/fs?path=%2Fa%20b&mkdirs=true"
        );
    }
}
