//! The HTTP/1 server loop, with the limits `axum::serve` lacks: a cap on
//! open connections, a deadline for a request's head (slow or silent
//! clients) and one for idle keep-alive connections. A request being
//! handled (a long exec) is never cut, and an upgraded connection (a
//! WebSocket session) leaves these timers behind; it still counts against
//! the connection cap until it closes.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From accept (or from the first byte of a later request) to a
    /// complete request head.
    pub header_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Open connections at most; more wait in the listen backlog.
    pub max_connections: usize,
}

/// What a connection is doing, in milliseconds since it was accepted.
struct Activity {
    start: Instant,
    /// Requests being handled.
    busy: AtomicUsize,
    /// Requests answered.
    served: AtomicU64,
    /// When the connection last became idle.
    idle_since: AtomicU64,
    /// When the first byte of the next request arrived (`NONE`: not yet).
    head_since: AtomicU64,
    /// Wakes the watchdog when the above change.
    changed: Notify,
}

const NONE: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            busy: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(NONE),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64, plus: Duration) -> Instant {
        self.start + Duration::from_millis(ms) + plus
    }

    /// When the connection must be closed if nothing changes; `None` while
    /// a request is being handled.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let head = self.head_since.load(Ordering::Acquire);
        Some(if self.served.load(Ordering::Acquire) == 0 {
            self.at(0, limits.header_timeout)
        } else if head != NONE {
            self.at(head, limits.header_timeout)
        } else {
            self.at(self.idle_since.load(Ordering::Acquire), limits.idle_timeout)
        })
    }

    /// Bytes arrived: between requests they start the next request's head.
    fn on_read(&self) {
        if self.busy.load(Ordering::Acquire) == 0 && self.head_since.load(Ordering::Acquire) == NONE
        {
            self.head_since.store(self.now(), Ordering::Release);
            self.changed.notify_one();
        }
    }
}

/// Marks a request as being handled while it lives.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(act: &Arc<Activity>) -> Self {
        act.busy.fetch_add(1, Ordering::AcqRel);
        act.head_since.store(NONE, Ordering::Release);
        act.changed.notify_one();
        Busy(act.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let act = &self.0;
        act.idle_since.store(act.now(), Ordering::Release);
        act.served.fetch_add(1, Ordering::AcqRel);
        act.busy.fetch_sub(1, Ordering::AcqRel);
        act.changed.notify_one();
    }
}

/// A TCP connection that reports reads to its [`Activity`] and holds its
/// slot of the connection cap until it closes (also after an upgrade).
struct Tracked {
    io: TcpStream,
    act: Arc<Activity>,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.act.on_read();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets every
/// connection finish its request in flight (idle ones close at once) and
/// returns. Upgraded connections (WebSocket sessions) are not waited for.
pub async fn serve<S>(
    listener: TcpListener,
    app: S,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Dropped at shutdown: tells every connection to finish.
    let (stop_tx, stop_rx) = watch::channel(());
    // Each connection holds a receiver; all gone = all finished.
    let (done_tx, done_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            a = accept(&listener, &slots) => a,
        };
        let (io, permit) = accepted;
        let act = Arc::new(Activity::new());
        let tracked = Tracked {
            io,
            act: act.clone(),
            _permit: permit,
        };
        let svc = {
            let act = act.clone();
            let app = app.clone();
            hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let busy = Busy::new(&act);
                let app = app.clone();
                async move {
                    let resp = app.oneshot(req.map(axum::body::Body::new)).await;
                    drop(busy);
                    resp
                }
            })
        };
        let mut stop = stop_rx.clone();
        let done = done_rx.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tracked), svc)
                .with_upgrades();
            tokio::pin!(conn);
            let mut stopping = false;
            // Close the connection when a deadline passes with no request
            // being handled.
            loop {
                let deadline = act.deadline(&limits);
                let expired = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!("connection: {e}");
                        }
                        break;
                    }
                    () = act.changed.notified() => {}
                    () = expired => {
                        if act.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                            tracing::debug!("closing a slow or idle connection");
                            break;
                        }
                    }
                    _ = stop.changed(), if !stopping => {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(done);
        });
    }
    drop(stop_tx);
    drop(stop_rx);
    drop(done_rx);
    drop(listener);
    done_tx.closed().await;
}

/// Waits for a free connection slot, then for a connection.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> (TcpStream, OwnedSemaphorePermit) {
    loop {
        let permit = match slots.clone().acquire_owned().await {
            Ok(p) => p,
            // The semaphore is never closed.
            Err(_) => std::future::pending().await,
        };
        match listener.accept().await {
            Ok((io, _)) => return (io, permit),
            Err(e) => {
                // Out of descriptors or similar: back off instead of spinning.
                tracing::warn!("accepting a connection: {e}");
                drop(permit);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
