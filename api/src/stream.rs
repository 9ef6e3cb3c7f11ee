//! Bridges between HTTP bodies and the runtime's blocking file operations,
//! a bounded channel of chunks each way, so no file is ever held whole in
//! memory: at most [`DEPTH`] chunks are in flight.

use std::io::{self, Read, Write};

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// Chunks buffered between the network and the disk.
const DEPTH: usize = 16;
/// Size of the chunks read from a file.
const READ_CHUNK: usize = 1 << 20;
/// What of a body is still read, and dropped, once its reader gave up (a
/// full disk: 507): so that the client, still sending, gets the answer
/// instead of a reset connection. At most this many bytes...
const DRAIN_BYTES: usize = 256 << 20;
/// ...for at most this long.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

enum Chunk {
    Data(Bytes),
    End,
    Failed(io::Error),
}

/// A blocking reader of a request body (for the blocking pool). A body
/// that breaks off (the client hung up) is an error, never an early EOF.
pub struct BodyReader {
    rx: mpsc::Receiver<Chunk>,
    cur: Bytes,
    done: bool,
}

/// A reader of `body`; a task of its own moves its frames along.
pub fn body_reader(body: Body) -> BodyReader {
    let (tx, rx) = mpsc::channel(DEPTH);
    tokio::spawn(async move {
        let mut s = body.into_data_stream();
        while let Some(frame) = s.next().await {
            let chunk = match frame {
                Ok(b) if b.is_empty() => continue,
                Ok(b) => Chunk::Data(b),
                Err(e) => Chunk::Failed(io::Error::other(format!("request body: {e}"))),
            };
            let failed = matches!(chunk, Chunk::Failed(_));
            if failed {
                return;
            }
            if tx.send(chunk).await.is_err() {
                // The reader gave up: let the client finish sending (a
                // bounded amount), so that it reads the error answer.
                let drain = async {
                    let mut left = DRAIN_BYTES;
                    while let Some(Ok(b)) = s.next().await {
                        left = left.saturating_sub(b.len());
                        if left == 0 {
                            return;
                        }
                    }
                };
                let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
                return;
            }
        }
        let _ = tx.send(Chunk::End).await;
    });
    BodyReader {
        rx,
        cur: Bytes::new(),
        done: false,
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Chunk::Data(b)) => self.cur = b,
                Some(Chunk::End) => self.done = true,
                Some(Chunk::Failed(e)) => return Err(e),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the request body ended early",
                    ))
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// A response body fed by a blocking writer (an archive being written).
/// Writes fail with `BrokenPipe` once the client is gone.
pub struct BodyWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
}

impl BodyWriter {
    /// Ends the body with an error: the client sees a broken response,
    /// never a short one that looks complete.
    pub fn fail(self, e: io::Error) {
        let _ = self.tx.blocking_send(Err(e));
    }
}

impl Write for BodyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A writer and the response body that streams what it writes.
pub fn body_writer() -> (BodyWriter, Body) {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(DEPTH);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (BodyWriter { tx }, Body::from_stream(stream))
}

/// A response body of `len` bytes of `file` from its current offset, read
/// on the blocking pool.
pub fn file_body(mut file: std::fs::File, len: u64) -> Body {
    let (w, body) = body_writer();
    tokio::task::spawn_blocking(move || {
        let mut left = len;
        while left > 0 {
            let want = READ_CHUNK.min(left as usize);
            let mut buf = bytes::BytesMut::zeroed(want);
            match file.read(&mut buf) {
                Ok(0) => {
                    // Shrunk while being sent: the response cannot be whole.
                    w.fail(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank"));
                    return;
                }
                Ok(n) => {
                    buf.truncate(n);
                    if w.tx.blocking_send(Ok(buf.freeze())).is_err() {
                        return; // the client went away
                    }
                    left -= n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    w.fail(e);
                    return;
                }
            }
        }
    });
    body
}
