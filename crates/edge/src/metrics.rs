//! Edge metrics in Prometheus' text format: requests by zone and status, origin response time,
//! requests in flight. Counters are updated on the request path in the thread's own shard (one
//! short lock and one atomic, shared with no other worker while there are at most as many
//! workers as shards).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Upper bounds of the origin-time histogram, in seconds: up to the default read timeout (100 s,
/// then 524) and past it for zones that wait longer.
const BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 100.0, 300.0,
];

/// Request counts are kept in this many shards, each thread using its own: workers on
/// different cores never contend for one lock on every request.
const SHARDS: usize = 16;

/// Zone id → status → count (looked up by `&str`: no allocation per request).
type Counts = HashMap<String, HashMap<u16, u64>>;

/// One shard, on cache lines of its own (shards of different cores never share a line).
#[derive(Default)]
#[repr(align(128))]
struct Shard {
    counts: Mutex<ShardCounts>,
    /// Requests started on this shard's threads less those finished there (a request that
    /// finishes on another thread makes one shard's count negative; the sum stays right).
    in_flight: AtomicI64,
}

#[derive(Default)]
struct ShardCounts {
    requests: Counts,
    /// Cache hits the edge answered without its HTTP engine.
    direct_hits: u64,
    /// Requests the edge passed to origins without its HTTP engine.
    direct_passes: u64,
    /// Origin times: how many fell in each bucket (up to its bound, above the one before),
    /// how many in all, and their sum.
    origin_buckets: [u64; BUCKETS.len()],
    origin_count: u64,
    origin_micros: u64,
}

/// Which path answered a request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answered {
    Engine,
    DirectHit,
    DirectPass,
    /// No visitor's request: the edge's own (a stale object's refresh in the background).
    Background,
}

#[derive(Default)]
pub struct EdgeMetrics {
    requests: [Shard; SHARDS],
    connections: AtomicI64,
    parked: AtomicI64,
    refused: AtomicU64,
    handshakes_failed: AtomicU64,
    /// Hits whose bodies were sent from the disk tier's files without a copy.
    hits_from_files: AtomicU64,
}

/// This thread's shard of the request counts.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// An open visitor connection; dropping it counts the connection closed.
pub struct OpenConnection<'a>(&'a AtomicI64);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl EdgeMetrics {
    /// Counts a visitor connection open until the returned guard drops.
    pub fn connection_opened(&self) -> OpenConnection<'_> {
        self.connections.fetch_add(1, Ordering::Relaxed);
        OpenConnection(&self.connections)
    }

    /// A visitor connection accepted: counted open from now, before its task first runs (a
    /// stop that waits for open connections must not miss it), until the guard that
    /// [`EdgeMetrics::connection_served`] gives it drops.
    pub fn connection_accepted(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// The guard of a connection counted when it was accepted.
    pub fn connection_served(&self) -> OpenConnection<'_> {
        OpenConnection(&self.connections)
    }

    /// The connection of `open` is parked: it stays counted open without its guard, until
    /// [`EdgeMetrics::connection_resumed`] gives it one again or [`EdgeMetrics::parked_closed`].
    pub fn connection_parked(&self, open: OpenConnection<'_>) {
        std::mem::forget(open);
        self.parked.fetch_add(1, Ordering::Relaxed);
    }

    /// The guard of a parked connection that is served again.
    pub fn connection_resumed(&self) -> OpenConnection<'_> {
        self.parked.fetch_sub(1, Ordering::Relaxed);
        OpenConnection(&self.connections)
    }

    /// A parked connection closed without being served again.
    pub fn parked_closed(&self) {
        self.parked.fetch_sub(1, Ordering::Relaxed);
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// A connection closed at once because its client had its limit open.
    pub fn connection_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A hit whose body goes from the disk tier's file straight to the visitor (counted before
    /// it is sent, as the hit itself is).
    pub(crate) fn hit_sent_from_file(&self) {
        self.hits_from_files.fetch_add(1, Ordering::Relaxed);
    }

    /// A TLS handshake that did not complete (no or unknown SNI, bad or slow client).
    pub fn handshake_failed(&self) {
        self.handshakes_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Visitor connections open now.
    pub fn open_connections(&self) -> i64 {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn request_started(&self) {
        self.requests[shard()]
            .in_flight
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A finished request: its zone (empty when it was not routed), status and origin time.
    pub fn request_finished(&self, zone: &str, status: u16, origin_time: Option<Duration>) {
        self.finished(zone, status, origin_time, Answered::Engine);
    }

    /// A request the edge made itself (a stale object's refresh in the background), finished:
    /// only its origin time counts, not as a request answered.
    pub fn background_finished(&self, origin_time: Option<Duration>) {
        self.finished("", 0, origin_time, Answered::Background);
    }

    /// A request refused before it began (its header not understood, or its host not the
    /// TLS connection's): counted as answered, never having been in flight.
    pub fn refused_unparsed(&self, status: u16) {
        self.request_started();
        self.finished("", status, None, Answered::Engine);
    }

    /// A request the edge passed to the origin without its HTTP engine, answered.
    pub fn direct_pass_finished(&self, zone: &str, status: u16, origin_time: Option<Duration>) {
        self.finished(zone, status, origin_time, Answered::DirectPass);
    }

    /// A cache hit the edge answered without its HTTP engine, finished.
    pub fn direct_hit_finished(&self, zone: &str, status: u16) {
        self.finished(zone, status, None, Answered::DirectHit);
    }

    fn finished(&self, zone: &str, status: u16, origin_time: Option<Duration>, by: Answered) {
        let shard = &self.requests[shard()];
        shard.in_flight.fetch_sub(1, Ordering::Relaxed);
        let mut counts = shard.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.direct_hits += u64::from(by == Answered::DirectHit);
        counts.direct_passes += u64::from(by == Answered::DirectPass);
        if by != Answered::Background {
            let requests = &mut counts.requests;
            let by_status = match requests.get_mut(zone) {
                Some(by_status) => by_status,
                None => requests.entry(zone.to_owned()).or_default(),
            };
            *by_status.entry(status).or_default() += 1;
        }
        if let Some(t) = origin_time {
            let secs = t.as_secs_f64();
            if let Some(i) = BUCKETS.iter().position(|bound| secs <= *bound) {
                counts.origin_buckets[i] += 1;
            }
            counts.origin_count += 1;
            counts.origin_micros += t.as_micros() as u64;
        }
    }

    /// The metrics in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP parapet_edge_requests_total Requests answered by the edge, by zone and status.\n# TYPE parapet_edge_requests_total counter\n");
        let mut totals: std::collections::BTreeMap<(String, u16), u64> = Default::default();
        let (mut direct_hits, mut direct_passes) = (0, 0);
        let mut origin_buckets = [0u64; BUCKETS.len()];
        let (mut origin_count, mut origin_micros, mut in_flight) = (0, 0, 0);
        for shard in &self.requests {
            in_flight += shard.in_flight.load(Ordering::Relaxed);
            let shard = shard.counts.lock().unwrap_or_else(PoisonError::into_inner);
            direct_hits += shard.direct_hits;
            direct_passes += shard.direct_passes;
            for (total, n) in origin_buckets.iter_mut().zip(shard.origin_buckets) {
                *total += n;
            }
            origin_count += shard.origin_count;
            origin_micros += shard.origin_micros;
            for (zone, by_status) in shard.requests.iter() {
                for (status, n) in by_status {
                    *totals.entry((zone.clone(), *status)).or_default() += n;
                }
            }
        }
        let rows = totals;
        for ((zone, status), n) in rows {
            let _ = writeln!(
                out,
                "parapet_edge_requests_total{{zone=\"{zone}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP parapet_edge_direct_hits_total Cache hits answered from memory without the HTTP engine.\n# TYPE parapet_edge_direct_hits_total counter\nparapet_edge_direct_hits_total {direct_hits}"
        );
        let _ = writeln!(
            out,
            "# HELP parapet_edge_direct_passes_total Requests passed to origins over the edge's own connection pool, without the HTTP engine's proxying.\n# TYPE parapet_edge_direct_passes_total counter\nparapet_edge_direct_passes_total {direct_passes}"
        );
        let _ = writeln!(
            out,
            "# HELP parapet_edge_hits_from_files_total Cache hits whose bodies went from the disk tier's files to visitors without a copy through memory (sendfile).\n# TYPE parapet_edge_hits_from_files_total counter\nparapet_edge_hits_from_files_total {}",
            self.hits_from_files.load(Ordering::Relaxed)
        );
        out.push_str("# HELP parapet_edge_origin_seconds Time from sending a request to the origin to its response header.\n# TYPE parapet_edge_origin_seconds histogram\n");
        // Prometheus' buckets are cumulative.
        let mut below = 0;
        for (bound, n) in BUCKETS.iter().zip(origin_buckets) {
            below += n;
            let _ = writeln!(
                out,
                "parapet_edge_origin_seconds_bucket{{le=\"{bound}\"}} {below}"
            );
        }
        let count = origin_count;
        let _ = writeln!(
            out,
            "parapet_edge_origin_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "parapet_edge_origin_seconds_sum {}",
            origin_micros as f64 / 1e6
        );
        let _ = writeln!(out, "parapet_edge_origin_seconds_count {count}");
        out.push_str("# HELP parapet_edge_requests_in_flight Requests being handled.\n# TYPE parapet_edge_requests_in_flight gauge\n");
        // Shards are read one after another: a request that started on one read already and
        // ended on one read later would count -1.
        let in_flight = in_flight.max(0);
        let _ = writeln!(out, "parapet_edge_requests_in_flight {in_flight}");
        out.push_str("# HELP parapet_edge_connections_open Visitor connections open.\n# TYPE parapet_edge_connections_open gauge\n");
        let _ = writeln!(
            out,
            "parapet_edge_connections_open {}",
            self.connections.load(Ordering::Relaxed)
        );
        out.push_str("# HELP parapet_edge_connections_parked Visitor connections open and idle, parked out of the runtime until they send again.\n# TYPE parapet_edge_connections_parked gauge\n");
        let _ = writeln!(
            out,
            "parapet_edge_connections_parked {}",
            self.parked.load(Ordering::Relaxed)
        );
        out.push_str("# HELP parapet_edge_connections_refused_total Connections closed at once: their client had its limit open.\n# TYPE parapet_edge_connections_refused_total counter\n");
        let _ = writeln!(
            out,
            "parapet_edge_connections_refused_total {}",
            self.refused.load(Ordering::Relaxed)
        );
        out.push_str("# HELP parapet_edge_tls_handshakes_failed_total TLS handshakes from visitors that did not complete.\n# TYPE parapet_edge_tls_handshakes_failed_total counter\n");
        let _ = writeln!(
            out,
            "parapet_edge_tls_handshakes_failed_total {}",
            self.handshakes_failed.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_histogram_render_in_prometheus_format() {
        let m = EdgeMetrics::default();
        m.request_started();
        m.request_finished("z1", 200, Some(Duration::from_millis(20)));
        m.request_started();
        m.request_finished("", 530, None);
        // Buckets count every time up to their bound; +Inf counts them all.
        m.request_started();
        m.direct_pass_finished("z1", 200, Some(Duration::from_millis(300)));
        m.request_started();
        m.direct_pass_finished("z1", 200, Some(Duration::from_secs(20)));
        let text = m.render();
        assert!(text.contains("parapet_edge_requests_total{zone=\"z1\",status=\"200\"} 3"));
        assert!(text.contains("parapet_edge_origin_seconds_bucket{le=\"0.01\"} 0"));
        assert!(text.contains("parapet_edge_origin_seconds_bucket{le=\"0.025\"} 1"));
        assert!(text.contains("parapet_edge_origin_seconds_bucket{le=\"0.25\"} 1"));
        assert!(text.contains("parapet_edge_origin_seconds_bucket{le=\"0.5\"} 2"));
        assert!(text.contains("parapet_edge_origin_seconds_bucket{le=\"10\"} 2"));
        // Up to the read timeout the edge waits by default (100 s).
        assert!(text.contains("parapet_edge_origin_seconds_bucket{le=\"30\"} 3"));
        assert!(text.contains("parapet_edge_origin_seconds_bucket{le=\"100\"} 3"));
        assert!(text.contains("parapet_edge_origin_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("parapet_edge_origin_seconds_sum 20.32"));
        assert!(text.contains("parapet_edge_origin_seconds_count 3"));
        assert!(text.contains("parapet_edge_requests_in_flight 0"));
        // A request refused before it began leaves nothing in flight behind.
        m.request_started();
        m.refused_unparsed(400);
        assert!(m.render().contains("parapet_edge_requests_in_flight 1"));
        let open = m.connection_opened();
        assert!(m.render().contains("parapet_edge_connections_open 1"));
        drop(open);
        assert!(m.render().contains("parapet_edge_connections_open 0"));
    }

    #[test]
    fn a_parked_connection_stays_open_until_it_is_served_again_or_closed() {
        let m = EdgeMetrics::default();
        let gauges = |m: &EdgeMetrics| {
            let text = m.render();
            let value = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                    .map(str::to_owned)
                    .unwrap_or_default()
            };
            (
                value("parapet_edge_connections_open"),
                value("parapet_edge_connections_parked"),
            )
        };
        let (a, b) = (m.connection_opened(), m.connection_opened());
        m.connection_parked(a);
        m.connection_parked(b);
        assert_eq!(gauges(&m), ("2".into(), "2".into()));
        let resumed = m.connection_resumed();
        assert_eq!(gauges(&m), ("2".into(), "1".into()));
        m.parked_closed();
        assert_eq!(gauges(&m), ("1".into(), "0".into()));
        drop(resumed);
        assert_eq!(gauges(&m), ("0".into(), "0".into()));
    }
}
