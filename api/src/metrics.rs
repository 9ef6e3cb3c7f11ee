//! `GET /metrics`: Prometheus text format 0.0.4. Per-space figures read at
//! scrape time (labelled `space`), request latencies of the API (by route
//! template, method and status class), the worker pool and the audit log.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use axum::http::Method;
use clawdspace_runtime::SpaceStatus;

use crate::AppState;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Request figures of this daemon.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, &'static str, &'static str), Histogram>>,
    in_flight: AtomicI64,
}

/// A request being handled: counted in flight while it lives.
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

impl Metrics {
    /// Marks a request as started.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Records a finished request. `route` is the route template
    /// (`/api/spaces/{name}`), never the raw path.
    pub fn observe(&self, route: &str, method: &Method, status: u16, secs: f64) {
        let key = (
            route.to_string(),
            method_label(method),
            status_class(status),
        );
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let h = map.entry(key).or_default();
        for (c, b) in h.counts.iter_mut().zip(BUCKETS) {
            if secs <= b {
                *c += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }
}

/// A label value, escaped (`\`, `"`, newline).
fn esc(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

/// A float as the format writes it.
fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// Writes one metric family: HELP, TYPE and its samples.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", esc(val));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", num(v));
    }
}

/// One space's figures for the per-space families.
struct SpaceRow {
    name: String,
    status: &'static str,
    image: String,
    network: &'static str,
    cpus: f64,
    stats: clawdspace_runtime::SpaceStats,
    live: bool,
    disk_limit: Option<u64>,
    execs: usize,
    last_activity: f64,
}

/// The whole text. Blocking: reads every space's cgroup files.
pub fn render(st: &AppState) -> String {
    let mut o = Out(String::with_capacity(16 << 10));
    let spaces = st.rt.list();
    let rows: Vec<SpaceRow> = spaces
        .iter()
        .map(|s| {
            let live = matches!(s.status, SpaceStatus::Running | SpaceStatus::Paused);
            SpaceRow {
                name: s.name.clone(),
                status: s.status.as_str(),
                image: s.image.clone(),
                network: s.network.mode.as_str(),
                cpus: s.cpus(),
                stats: if live {
                    st.rt.stats(&s.name).unwrap_or_default()
                } else {
                    Default::default()
                },
                live,
                disk_limit: s.disk,
                execs: st.rt.execs_in_flight(&s.name),
                last_activity: s.last_activity.timestamp_millis() as f64 / 1000.0,
            }
        })
        .collect();

    o.family(
        "clawdspace_build_info",
        "gauge",
        "The daemon's version (value 1).",
    );
    o.sample(
        "clawdspace_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );

    o.family(
        "clawdspace_spaces",
        "gauge",
        "Spaces on this server by status.",
    );
    for status in ["running", "paused", "stopped"] {
        let n = rows.iter().filter(|r| r.status == status).count();
        o.sample("clawdspace_spaces", &[("status", status)], n as f64);
    }

    o.family(
        "clawdspace_space_info",
        "gauge",
        "One series per space (value 1) with its status, image and network mode.",
    );
    for r in &rows {
        o.sample(
            "clawdspace_space_info",
            &[
                ("space", &r.name),
                ("status", r.status),
                ("image", &r.image),
                ("network", r.network),
            ],
            1.0,
        );
    }
    type Get = fn(&SpaceRow) -> Option<f64>;
    let families: [(&str, &str, &str, Get); 12] = [
        (
            "clawdspace_space_cpu_seconds_total",
            "counter",
            "CPU time used by the space's processes.",
            |r| r.live.then_some(r.stats.cpu_usage_ns as f64 / 1e9),
        ),
        (
            "clawdspace_space_cpu_limit_cores",
            "gauge",
            "CPU limit of the space, cores.",
            |r| Some(r.cpus),
        ),
        (
            "clawdspace_space_memory_bytes",
            "gauge",
            "Memory charged to the space's cgroup.",
            |r| r.live.then_some(r.stats.memory_bytes as f64),
        ),
        (
            "clawdspace_space_memory_limit_bytes",
            "gauge",
            "Memory limit of the space.",
            |r| {
                r.stats
                    .memory_limit_bytes
                    .filter(|_| r.live)
                    .map(|v| v as f64)
            },
        ),
        (
            "clawdspace_space_pids",
            "gauge",
            "Processes in the space.",
            |r| r.live.then_some(r.stats.pids as f64),
        ),
        (
            "clawdspace_space_network_receive_bytes_total",
            "counter",
            "Bytes received on the space's interfaces (loopback excluded).",
            |r| r.live.then_some(r.stats.network_rx_bytes as f64),
        ),
        (
            "clawdspace_space_network_transmit_bytes_total",
            "counter",
            "Bytes sent on the space's interfaces (loopback excluded).",
            |r| r.live.then_some(r.stats.network_tx_bytes as f64),
        ),
        (
            "clawdspace_space_block_read_bytes_total",
            "counter",
            "Bytes the space read from block devices.",
            |r| r.live.then_some(r.stats.block_read_bytes as f64),
        ),
        (
            "clawdspace_space_block_write_bytes_total",
            "counter",
            "Bytes the space wrote to block devices.",
            |r| r.live.then_some(r.stats.block_write_bytes as f64),
        ),
        (
            "clawdspace_space_disk_limit_bytes",
            "gauge",
            "Disk limit of the space's writable layer and volume.",
            |r| r.disk_limit.map(|v| v as f64),
        ),
        (
            "clawdspace_space_execs_in_flight",
            "gauge",
            "Commands running in the space now (terminals included).",
            |r| Some(r.execs as f64),
        ),
        (
            "clawdspace_space_last_activity_timestamp_seconds",
            "gauge",
            "Last recorded activity of the space (auto-sleep counts from it).",
            |r| Some(r.last_activity),
        ),
    ];
    for (name, kind, help, get) in families {
        o.family(name, kind, help);
        for r in &rows {
            if let Some(v) = get(r) {
                o.sample(name, &[("space", &r.name)], v);
            }
        }
    }

    let pool = st.rt.workers();
    o.family(
        "clawdspace_workers",
        "gauge",
        "Worker processes running libcontainer, by state.",
    );
    o.sample("clawdspace_workers", &[("state", "idle")], pool.idle as f64);
    o.sample(
        "clawdspace_workers",
        &[("state", "busy")],
        pool.size.saturating_sub(pool.idle) as f64,
    );
    o.family(
        "clawdspace_operations_in_flight",
        "gauge",
        "Runtime operations (create, destroy, pause, resume, exec start, pull) running now.",
    );
    o.sample(
        "clawdspace_operations_in_flight",
        &[],
        st.rt.operations_in_flight() as f64,
    );

    let a = st.audit.counts();
    o.family(
        "clawdspace_audit_events_total",
        "counter",
        "Audit events recorded since start.",
    );
    o.sample("clawdspace_audit_events_total", &[], a.recorded as f64);
    o.family(
        "clawdspace_audit_events_dropped_total",
        "counter",
        "Audit events lost since start (queue full or write failed).",
    );
    o.sample(
        "clawdspace_audit_events_dropped_total",
        &[],
        a.dropped as f64,
    );

    o.family(
        "clawdspace_http_requests_in_flight",
        "gauge",
        "API requests being handled now.",
    );
    o.sample(
        "clawdspace_http_requests_in_flight",
        &[],
        st.metrics.in_flight.load(Ordering::Relaxed) as f64,
    );
    o.family(
        "clawdspace_http_request_duration_seconds",
        "histogram",
        "Time to answer API requests (to the response head; streams and WebSocket sessions not included), by route template, method and status class.",
    );
    let map = st
        .metrics
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let name = "clawdspace_http_request_duration_seconds";
    for ((route, method, class), h) in map.iter() {
        let l = [
            ("route", route.as_str()),
            ("method", *method),
            ("status", *class),
        ];
        for (c, b) in h.counts.iter().zip(BUCKETS) {
            let le = num(b);
            o.sample(
                &format!("{name}_bucket"),
                &[l[0], l[1], l[2], ("le", &le)],
                *c as f64,
            );
        }
        o.sample(
            &format!("{name}_bucket"),
            &[l[0], l[1], l[2], ("le", "+Inf")],
            h.count as f64,
        );
        o.sample(&format!("{name}_sum"), &l, h.sum);
        o.sample(&format!("{name}_count"), &l, h.count as f64);
    }
    drop(map);

    if let Some(rss) = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
    {
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        o.family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of the daemon.",
        );
        o.sample("process_resident_memory_bytes", &[], (rss * page) as f64);
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_histograms_cumulative() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let m = Metrics::default();
        m.observe("/api/spaces", &Method::GET, 200, 0.003);
        m.observe("/api/spaces", &Method::GET, 204, 2.0);
        m.observe(
            "/api/spaces",
            &Method::from_bytes(b"BREW").expect("method"),
            500,
            0.1,
        );
        let map = m.requests.lock().expect("lock");
        let h = &map[&("/api/spaces".to_string(), "GET", "2xx")];
        assert_eq!(h.count, 2);
        assert_eq!(h.counts[0], 0); // 1 ms
        assert_eq!(h.counts[2], 1); // 5 ms
        assert_eq!(h.counts[BUCKETS.len() - 1], 2);
        assert!(map.contains_key(&("/api/spaces".to_string(), "OTHER", "5xx")));
    }
}
