//! Bandwidth caps of the port proxy: one token bucket per space and
//! direction (`CLAWDSPACE_PORT_BANDWIDTH` bytes per second, a second's worth
//! of burst), shared by every proxied connection, preview link and tunnel
//! of that space. A connection wrapped in [`Throttled`] reads and writes
//! only as many bytes as its space's bucket holds and otherwise waits.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A token bucket: `rate` bytes per second, at most `rate` saved up.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(rate: u64) -> Bucket {
        let rate = rate as f64;
        Bucket {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// How many bytes may pass now (at most `want`), or how long to wait
    /// for the first one.
    fn allowance(&self, want: usize) -> Result<usize, Duration> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.rate);
        s.1 = now;
        if s.0 >= 1.0 {
            Ok(want.min(s.0 as usize).max(1))
        } else {
            // At least a millisecond, so a trickle is not a busy loop.
            Err(Duration::from_secs_f64(
                ((1.0 - s.0) / self.rate).max(0.001),
            ))
        }
    }

    fn spend(&self, n: usize) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.0 -= n as f64;
    }
}

/// The two buckets of one space: into the space and out of it.
#[derive(Debug, Clone)]
pub struct Caps {
    to_space: Arc<Bucket>,
    from_space: Arc<Bucket>,
}

/// Every space's buckets (none when the rate is 0: no cap).
#[derive(Debug, Default)]
pub struct Bandwidth {
    rate: u64,
    spaces: Mutex<HashMap<String, Caps>>,
}

impl Bandwidth {
    /// Caps of `rate` bytes per second per space and direction (0: none).
    pub fn new(rate: u64) -> Bandwidth {
        Bandwidth {
            rate,
            spaces: Mutex::default(),
        }
    }

    /// The buckets of `space`, shared with its other open connections.
    pub fn caps(&self, space: &str) -> Option<Caps> {
        if self.rate == 0 {
            return None;
        }
        let mut spaces = self.spaces.lock().unwrap_or_else(|p| p.into_inner());
        // Buckets no connection holds any more are forgotten.
        spaces.retain(|_, c| Arc::strong_count(&c.to_space) > 1);
        Some(
            spaces
                .entry(space.to_string())
                .or_insert_with(|| Caps {
                    to_space: Arc::new(Bucket::new(self.rate)),
                    from_space: Arc::new(Bucket::new(self.rate)),
                })
                .clone(),
        )
    }
}

/// A connection to a space that keeps to its space's caps (or to none).
pub struct Throttled<S> {
    inner: S,
    caps: Option<Caps>,
    read_wait: Option<Pin<Box<Sleep>>>,
    write_wait: Option<Pin<Box<Sleep>>>,
    scratch: Vec<u8>,
}

impl<S> Throttled<S> {
    /// `inner` under `caps` (`None`: unlimited).
    pub fn new(inner: S, caps: Option<Caps>) -> Throttled<S> {
        Throttled {
            inner,
            caps,
            read_wait: None,
            write_wait: None,
            scratch: Vec::new(),
        }
    }
}

/// Waits out `wait` if set; `Ready` once there is nothing to wait for.
fn waited(wait: &mut Option<Pin<Box<Sleep>>>, cx: &mut Context<'_>) -> Poll<()> {
    if let Some(s) = wait {
        if s.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        *wait = None;
    }
    Poll::Ready(())
}

impl<S: AsyncRead + Unpin> AsyncRead for Throttled<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(caps) = this.caps.clone().filter(|_| buf.remaining() > 0) else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        loop {
            if waited(&mut this.read_wait, cx).is_pending() {
                return Poll::Pending;
            }
            match caps.from_space.allowance(buf.remaining()) {
                Err(d) => this.read_wait = Some(Box::pin(tokio::time::sleep(d))),
                Ok(n) if n >= buf.remaining() => {
                    let before = buf.filled().len();
                    let r = Pin::new(&mut this.inner).poll_read(cx, buf);
                    if let Poll::Ready(Ok(())) = r {
                        caps.from_space.spend(buf.filled().len() - before);
                    }
                    return r;
                }
                Ok(n) => {
                    // Fewer bytes than asked: through a buffer of that size.
                    this.scratch.resize(n, 0);
                    let mut part = ReadBuf::new(&mut this.scratch);
                    let r = Pin::new(&mut this.inner).poll_read(cx, &mut part);
                    if let Poll::Ready(Ok(())) = r {
                        let got = part.filled();
                        caps.from_space.spend(got.len());
                        buf.put_slice(got);
                    }
                    return r;
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Throttled<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let Some(caps) = this.caps.clone() else {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        };
        loop {
            if waited(&mut this.write_wait, cx).is_pending() {
                return Poll::Pending;
            }
            match caps.to_space.allowance(data.len()) {
                Err(d) => this.write_wait = Some(Box::pin(tokio::time::sleep(d))),
                Ok(n) => {
                    let r = Pin::new(&mut this.inner).poll_write(cx, &data[..n]);
                    if let Poll::Ready(Ok(w)) = r {
                        caps.to_space.spend(w);
                    }
                    return r;
                }
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_capped_space_moves_about_its_rate_in_both_directions() {
        let bw = Bandwidth::new(64 * 1024);
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut t = Throttled::new(a, bw.caps("s"));
        let start = Instant::now();
        let writer = tokio::spawn(async move {
            let data = vec![7u8; 192 * 1024];
            b.write_all(&data).await.map(|_| b)
        });
        let mut got = vec![0u8; 192 * 1024];
        t.read_exact(&mut got).await.expect("read");
        // A second's burst, then 64 KiB/s: 192 KiB take about 2 s.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1800), "{took:?}");
        assert!(took < Duration::from_secs(4), "{took:?}");
        assert!(got.iter().all(|&x| x == 7));
        let _peer = writer.await.expect("join").expect("write");
        // Writes into the space keep to their own bucket.
        let start = Instant::now();
        t.write_all(&vec![1u8; 128 * 1024]).await.expect("write");
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(900), "{took:?}");
    }

    #[tokio::test]
    async fn no_rate_means_no_cap() {
        let bw = Bandwidth::new(0);
        assert!(bw.caps("s").is_none());
    }

    #[tokio::test]
    async fn connections_of_one_space_share_its_bucket() {
        let bw = Bandwidth::new(1000);
        let a = bw.caps("s").expect("caps");
        let b = bw.caps("s").expect("caps");
        assert!(Arc::ptr_eq(&a.to_space, &b.to_space));
        let other = bw.caps("t").expect("caps");
        assert!(!Arc::ptr_eq(&a.to_space, &other.to_space));
        drop((a, b));
        // Forgotten once no connection holds them.
        let c = bw.caps("s").expect("caps");
        assert_eq!(Arc::strong_count(&c.to_space), 2);
    }
}
