//! The DNS answerer of a space with `allowDomains`: the only resolver it
//! can reach. Its sockets (UDP and TCP on [`LISTEN`] port 53) are made
//! inside the space's own network namespace, so no one else reaches them
//! and no packet of it crosses the host's rules; its space's resolv.conf
//! names it. Queries for allowed names go to the runtime's upstream
//! servers (those other spaces get) from the host; the A records of their
//! answers are added to what the space may reach (set `allowed` of the
//! table of policies, [`super::egress`]), each expiring with its answer's
//! TTL (at least [`MIN_TTL`]), before the answer is handed back, so the
//! connection that follows passes; at most [`MAX_ALLOWED`] at once. Other
//! names are answered NXDOMAIN (and counted); other opcodes NOTIMP,
//! malformed queries FORMERR.
//!
//! Runs as tasks on the daemon's tokio runtime (no blocking call on its
//! threads: the nf_tables transaction goes to a blocking thread), capped
//! in queries in flight, message sizes and addresses per answer.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

use super::egress::{self, MAX_ALLOWED};
use super::nfnl::Batch;
use super::policy::Egress;

/// Where the answerer listens inside the space (its loopback).
pub const LISTEN: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 53);
/// Shortest time an answer's addresses stay allowed.
pub const MIN_TTL: Duration = Duration::from_secs(60);
/// Longest time an answer's addresses stay allowed.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Largest query taken over UDP (a query is a name and a few records).
const MAX_QUERY: usize = 1232;
/// Largest answer read from upstream over UDP.
const MAX_UDP_ANSWER: usize = 4096;
/// Queries (UDP and TCP together) answered at once per space; more are
/// dropped (the client retries).
const MAX_IN_FLIGHT: usize = 64;
/// Time given to each upstream server.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a TCP client has for its whole query.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// Addresses taken from one answer.
const MAX_ADDRS: usize = 32;

const NOERROR: u8 = 0;
const FORMERR: u8 = 1;
const SERVFAIL: u8 = 2;
const NXDOMAIN: u8 = 3;
const NOTIMP: u8 = 4;

/// A running answerer; stopped when dropped.
pub struct Answerer {
    tasks: Vec<JoinHandle<()>>,
    refused: Arc<AtomicU64>,
}

impl Answerer {
    /// Queries answered NXDOMAIN because their name is not allowed.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Answerer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What every query of one space needs.
struct Ctx {
    id: String,
    /// Our table (what the space may reach is in the table of policies).
    table: String,
    /// The space's address.
    addr: Ipv4Addr,
    egress: Egress,
    upstream: Vec<Ipv4Addr>,
    refused: Arc<AtomicU64>,
    /// Until when each address is allowed (as last written to the set).
    allowed: Mutex<HashMap<Ipv4Addr, Instant>>,
    permits: Arc<Semaphore>,
}

/// Starts the answerer of space `id` (address `addr`, policy `egress`,
/// what it may reach kept in our table `table`) in the namespace at
/// `netns`, forwarding to `upstream`. Call on a thread of (or entered
/// into) a tokio runtime; blocking (a short-lived thread joins the
/// namespace to make the sockets).
pub fn start(
    (id, table, addr): (&str, &str, Ipv4Addr),
    netns: &Path,
    egress: Egress,
    upstream: Vec<Ipv4Addr>,
) -> Result<Answerer> {
    let rt = tokio::runtime::Handle::try_current()
        .map_err(|_| Error::Network("the DNS answerer needs the async runtime".into()))?;
    let (udp, tcp) = super::inside::in_netns(netns, || {
        let _entered = rt.enter();
        let fail = |what: &str, e: std::io::Error| {
            Error::Network(format!("DNS answerer: {what} {LISTEN}:53: {e}"))
        };
        // The sockets of an answerer just stopped (its tasks are aborted,
        // not yet dropped) may hold the port for a moment.
        let mut tries = 0;
        let udp = loop {
            match std::net::UdpSocket::bind((LISTEN, 53)) {
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 40 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(25));
                }
                r => break r.map_err(|e| fail("bind udp", e))?,
            }
        };
        udp.set_nonblocking(true)
            .map_err(|e| fail("nonblocking udp", e))?;
        let udp = UdpSocket::from_std(udp).map_err(|e| fail("register udp", e))?;
        let tcp = TcpSocket::new_v4().map_err(|e| fail("tcp socket", e))?;
        tcp.set_reuseaddr(true)
            .map_err(|e| fail("reuseaddr tcp", e))?;
        tcp.bind(SocketAddr::V4(SocketAddrV4::new(LISTEN, 53)))
            .map_err(|e| fail("bind tcp", e))?;
        let tcp = tcp.listen(16).map_err(|e| fail("listen tcp", e))?;
        Ok((udp, tcp))
    })?;
    let refused = Arc::new(AtomicU64::new(0));
    let ctx = Arc::new(Ctx {
        id: id.to_string(),
        table: table.to_string(),
        addr,
        egress,
        upstream,
        refused: refused.clone(),
        allowed: Mutex::new(HashMap::new()),
        permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
    });
    let tasks = vec![
        rt.spawn(serve_udp(Arc::new(udp), ctx.clone())),
        rt.spawn(serve_tcp(tcp, ctx)),
    ];
    Ok(Answerer { tasks, refused })
}

async fn serve_udp(sock: Arc<UdpSocket>, ctx: Arc<Ctx>) {
    let mut buf = vec![0u8; MAX_QUERY + 1];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(id = %ctx.id, "DNS answerer: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if n > MAX_QUERY {
            continue;
        }
        let Ok(permit) = ctx.permits.clone().try_acquire_owned() else {
            continue;
        };
        let (q, sock, ctx) = (buf[..n].to_vec(), sock.clone(), ctx.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(a) = ctx.answer(&q, false).await {
                let _ = sock.send_to(&a, peer).await;
            }
        });
    }
}

async fn serve_tcp(listener: TcpListener, ctx: Arc<Ctx>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(permit) = ctx.permits.clone().try_acquire_owned() else {
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(TCP_TIMEOUT, async {
                let q = read_framed(&mut s).await?;
                let a = ctx.answer(&q, true).await?;
                write_framed(&mut s, &a).await
            })
            .await;
        });
    }
}

/// Reads one length-prefixed DNS message.
async fn read_framed(s: &mut TcpStream) -> Option<Vec<u8>> {
    let len = usize::from(s.read_u16().await.ok()?);
    let mut m = vec![0u8; len];
    s.read_exact(&mut m).await.ok()?;
    Some(m)
}

async fn write_framed(s: &mut TcpStream, m: &[u8]) -> Option<()> {
    let len = u16::try_from(m.len()).ok()?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(m);
    s.write_all(&out).await.ok()
}

/// The question of a query: its name (lowercase, dotted) and where the
/// question section ends.
struct Question {
    name: String,
    end: usize,
}

/// Parses the header and the single question of `q` (no compression: a
/// query has nothing to point back to).
fn question(q: &[u8]) -> Option<Question> {
    if q.len() < 12 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*q.get(pos)?);
        pos += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        let label = q.get(pos..pos + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        pos += len;
        if pos - 12 > 255 {
            return None;
        }
    }
    let end = pos + 4; // type, class
    (q.len() >= end).then(|| Question {
        name: labels.join("."),
        end,
    })
}

/// An answer to `q` with only its header and question (up to `end`, or
/// none when the question cannot be read), and `rcode`.
fn reply(q: &[u8], end: Option<usize>, rcode: u8) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    let mut a = q[..end.unwrap_or(12)].to_vec();
    // QR, the query's opcode and RD; RA; rcode.
    a[2] = 0x80 | (q[2] & 0x79);
    a[3] = 0x80 | rcode;
    let qd = u16::from(end.is_some());
    a[4..6].copy_from_slice(&qd.to_be_bytes());
    a[6..12].fill(0);
    Some(a)
}

impl Ctx {
    /// The answer to query `q` (None: nothing to send).
    async fn answer(&self, q: &[u8], tcp: bool) -> Option<Vec<u8>> {
        if q.len() < 12 || q[2] & 0x80 != 0 {
            return None; // too short to answer, or itself an answer
        }
        let Some(question) = question(q) else {
            return reply(q, None, FORMERR);
        };
        if (q[2] >> 3) & 0xf != 0 {
            return reply(q, Some(question.end), NOTIMP);
        }
        if !self.egress.allows(&question.name) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(id = %self.id, name = %question.name, "DNS query refused");
            return reply(q, Some(question.end), NXDOMAIN);
        }
        let Some(a) = self.upstream(q, tcp).await else {
            return reply(q, Some(question.end), SERVFAIL);
        };
        if !answers(&a, q, question.end) {
            return reply(q, Some(question.end), SERVFAIL);
        }
        if a[3] & 0xf == NOERROR {
            if let Err(e) = self.allow(a_records(&a)).await {
                tracing::warn!(id = %self.id, "DNS answerer: allowing addresses: {e}");
                return reply(q, Some(question.end), SERVFAIL);
            }
        }
        Some(a)
    }

    /// Asks the upstream servers in turn.
    async fn upstream(&self, q: &[u8], tcp: bool) -> Option<Vec<u8>> {
        for server in &self.upstream {
            let to = SocketAddr::V4(SocketAddrV4::new(*server, 53));
            let r = if tcp {
                tokio::time::timeout(UPSTREAM_TIMEOUT, exchange_tcp(to, q)).await
            } else {
                tokio::time::timeout(UPSTREAM_TIMEOUT, exchange_udp(to, q)).await
            };
            match r {
                Ok(Some(a)) => return Some(a),
                _ => {
                    tracing::debug!(id = %self.id, server = %server, "DNS upstream did not answer")
                }
            }
        }
        None
    }

    /// Writes `addrs` (address, TTL) into the space's set, unless each is
    /// already allowed for at least half of its new time.
    async fn allow(&self, addrs: Vec<(Ipv4Addr, u32)>) -> Result<()> {
        let now = Instant::now();
        let mut due: Vec<Ipv4Addr> = Vec::new();
        let mut longest = MIN_TTL;
        {
            let mut held = self.allowed.lock().unwrap_or_else(|p| p.into_inner());
            if held.len() + addrs.len() > MAX_ALLOWED as usize {
                held.retain(|_, until| *until > now);
            }
            for (addr, ttl) in addrs {
                let t = Duration::from_secs(u64::from(ttl)).clamp(MIN_TTL, MAX_TTL);
                if held.get(&addr).is_some_and(|until| *until > now + t / 2) {
                    continue;
                }
                longest = longest.max(t);
                due.push(addr);
            }
            if due.is_empty() {
                return Ok(());
            }
            let new = due.iter().filter(|a| !held.contains_key(a)).count();
            if held.len() + new > MAX_ALLOWED as usize {
                return Err(Error::Network(format!(
                    "space {}: {MAX_ALLOWED} addresses allowed by DNS answers already; \
                     more are answered SERVFAIL until some expire (at most 24 h)",
                    self.id
                )));
            }
            for a in &due {
                held.insert(*a, now + longest);
            }
        }
        let (table, addr) = (self.table.clone(), self.addr);
        let ms = u64::try_from(longest.as_millis()).unwrap_or(u64::MAX);
        let list = due.clone();
        let r = tokio::task::spawn_blocking(move || {
            let mut b = Batch::new();
            egress::allow(&mut b, &table, addr, &list, ms);
            b.commit()
        })
        .await
        .map_err(|e| Error::Network(format!("DNS answerer task: {e}")))
        .and_then(|r| r);
        if r.is_err() {
            let mut held = self.allowed.lock().unwrap_or_else(|p| p.into_inner());
            for a in &due {
                held.remove(a);
            }
        }
        r
    }
}

async fn exchange_udp(to: SocketAddr, q: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.ok()?;
    s.connect(to).await.ok()?;
    s.send(q).await.ok()?;
    let mut buf = vec![0u8; MAX_UDP_ANSWER];
    loop {
        let n = s.recv(&mut buf).await.ok()?;
        // Anything but the answer to this query's id is ignored.
        if n >= 12 && buf[..2] == q[..2] {
            buf.truncate(n);
            return Some(buf);
        }
    }
}

async fn exchange_tcp(to: SocketAddr, q: &[u8]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(to).await.ok()?;
    write_framed(&mut s, q).await?;
    read_framed(&mut s).await
}

/// Whether `a` answers `q`: same id, an answer, the same question.
fn answers(a: &[u8], q: &[u8], end: usize) -> bool {
    a.len() >= end
        && a[..2] == q[..2]
        && a[2] & 0x80 != 0
        && a[4..6] == q[4..6]
        && a[12..end].eq_ignore_ascii_case(&q[12..end])
}

/// Skips the (possibly compressed) name at `pos`; where it ends.
fn skip_name(m: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *m.get(pos)?;
        match len & 0xc0 {
            0xc0 => return Some(pos + 2),
            0 if len == 0 => return Some(pos + 1),
            0 => pos += 1 + usize::from(len),
            _ => return None,
        }
    }
}

/// The IPv4 addresses (and TTLs) in the answer section of `m`.
fn a_records(m: &[u8]) -> Vec<(Ipv4Addr, u32)> {
    let mut out = Vec::new();
    let (Some(qd), Some(an)) = (m.get(4..6), m.get(6..8)) else {
        return out;
    };
    let (qd, an) = (
        u16::from_be_bytes([qd[0], qd[1]]),
        u16::from_be_bytes([an[0], an[1]]),
    );
    let mut pos = 12;
    for _ in 0..qd {
        let Some(p) = skip_name(m, pos) else {
            return out;
        };
        pos = p + 4;
    }
    for _ in 0..an {
        let Some(p) = skip_name(m, pos) else {
            return out;
        };
        let Some(rr) = m.get(p..p + 10) else {
            return out;
        };
        let kind = u16::from_be_bytes([rr[0], rr[1]]);
        let class = u16::from_be_bytes([rr[2], rr[3]]);
        let ttl = u32::from_be_bytes([rr[4], rr[5], rr[6], rr[7]]);
        let len = usize::from(u16::from_be_bytes([rr[8], rr[9]]));
        let data = p + 10;
        if kind == 1 && class == 1 && len == 4 {
            if let Some(d) = m.get(data..data + 4) {
                out.push((Ipv4Addr::new(d[0], d[1], d[2], d[3]), ttl));
            }
        }
        if out.len() >= MAX_ADDRS {
            break;
        }
        pos = data + len;
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A query for `name` (type A, class IN, RD) with id `id`.
    pub fn query(id: u16, name: &str) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    /// The answer to `q` with A records `addrs` (owner: a pointer to the
    /// question's name), TTL `ttl`.
    pub fn answer_with(q: &[u8], addrs: &[Ipv4Addr], ttl: u32) -> Vec<u8> {
        let mut a = q.to_vec();
        a[2] |= 0x80;
        a[3] = 0x80;
        a[6..8].copy_from_slice(&(addrs.len() as u16).to_be_bytes());
        for ip in addrs {
            a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            a.extend_from_slice(&ttl.to_be_bytes());
            a.extend_from_slice(&[0, 4]);
            a.extend_from_slice(&ip.octets());
        }
        a
    }

    #[test]
    fn questions_parse_and_refusals_echo_them() {
        let q = query(0xbeef, "PyPI.org");
        let qu = question(&q).expect("question");
        assert_eq!(qu.name, "pypi.org");
        assert_eq!(qu.end, q.len());
        let r = reply(&q, Some(qu.end), NXDOMAIN).expect("reply");
        assert_eq!(&r[..2], &[0xbe, 0xef]);
        assert_eq!(r[2] & 0x80, 0x80, "an answer");
        assert_eq!(r[3] & 0xf, NXDOMAIN);
        assert_eq!(&r[12..], &q[12..]);
        // Two questions, a label too long, a name running off the end.
        let mut two = q.clone();
        two[5] = 2;
        assert!(question(&two).is_none());
        let mut long = query(1, "a");
        long[12] = 64;
        assert!(question(&long).is_none());
        assert!(question(&q[..q.len() - 3]).is_none());
        assert_eq!(reply(&two, None, FORMERR).expect("formerr").len(), 12);
        assert!(reply(&q[..5], None, FORMERR).is_none());
    }

    #[test]
    fn a_records_are_read_from_answers() {
        let q = query(7, "pypi.org");
        let addrs = [Ipv4Addr::new(151, 101, 0, 223), Ipv4Addr::new(1, 2, 3, 4)];
        let a = answer_with(&q, &addrs, 300);
        assert!(answers(&a, &q, q.len()));
        assert!(!answers(&a, &query(8, "pypi.org"), q.len()));
        assert_eq!(a_records(&a), vec![(addrs[0], 300), (addrs[1], 300)]);
        // Truncated or looping data yields what could be read.
        assert_eq!(a_records(&a[..a.len() - 2]), vec![(addrs[0], 300)]);
        let mut bad = a.clone();
        bad[q.len()] = 0x80;
        assert!(a_records(&bad).is_empty());
        assert!(a_records(&[0; 5]).is_empty());
    }
}
