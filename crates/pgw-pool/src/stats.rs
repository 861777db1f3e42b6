//! Counters per pool, lock-free (atomics), in PgBouncer's units (microseconds, bytes), for
//! SHOW STATS / STATS_TOTALS / STATS_AVERAGES and the Prometheus endpoint; and latency
//! histograms of queries, transactions and waits, which PgBouncer does not have.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Histogram bucket upper bounds, seconds (Prometheus `le`).
pub const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A fixed-bucket histogram.
#[derive(Default)]
pub struct Histogram {
    /// Counts per bucket (not cumulative); the last slot is +Inf.
    pub counts: [AtomicU64; 17],
    /// Sum of observations, microseconds.
    pub sum_us: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket, then the total.
    pub fn cumulative(&self) -> ([u64; 17], u64) {
        let mut out = [0u64; 17];
        let mut acc = 0;
        for (i, c) in self.counts.iter().enumerate() {
            acc += c.load(Ordering::Relaxed);
            out[i] = acc;
        }
        (out, acc)
    }

    /// The q-quantile (0..1) estimated from the buckets (upper bound of its bucket), in
    /// seconds; None when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let (cum, total) = self.cumulative();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let i = cum.iter().position(|c| *c >= rank).unwrap_or(16);
        Some(BUCKETS.get(i).copied().unwrap_or(f64::INFINITY))
    }
}

/// One pool's counters.
#[derive(Default)]
pub struct Stats {
    pub xact_count: AtomicU64,
    pub query_count: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub xact_time_us: AtomicU64,
    pub query_time_us: AtomicU64,
    pub wait_time_us: AtomicU64,
    pub server_assignment_count: AtomicU64,
    pub client_parse_count: AtomicU64,
    pub server_parse_count: AtomicU64,
    pub bind_count: AtomicU64,
    pub login_count: AtomicU64,
    /// Query latency (request to ReadyForQuery).
    pub query_latency: Histogram,
    /// Transaction latency (first request to the ReadyForQuery outside a transaction).
    pub xact_latency: Histogram,
    /// Time clients waited for a server connection.
    pub wait_latency: Histogram,
}

impl Stats {
    /// One query done.
    pub fn query(&self, d: Duration) {
        self.query_count.fetch_add(1, Ordering::Relaxed);
        self.query_time_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.query_latency.observe(d);
    }

    /// One transaction done.
    pub fn xact(&self, d: Duration) {
        self.xact_count.fetch_add(1, Ordering::Relaxed);
        self.xact_time_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.xact_latency.observe(d);
    }

    /// A client waited `d` for a server.
    pub fn add_wait(&self, d: Duration) {
        self.wait_time_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        if d >= Duration::from_micros(50) {
            self.wait_latency.observe(d);
        }
    }

    /// A server handed to a client.
    pub fn server_assignment(&self) {
        self.server_assignment_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes from clients and to clients.
    pub fn bytes(&self, received: usize, sent: usize) {
        if received > 0 {
            self.bytes_received
                .fetch_add(received as u64, Ordering::Relaxed);
        }
        if sent > 0 {
            self.bytes_sent.fetch_add(sent as u64, Ordering::Relaxed);
        }
    }

    /// The totals as SHOW STATS_TOTALS' columns, in order.
    pub fn totals(&self) -> [u64; 11] {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            l(&self.xact_count),
            l(&self.query_count),
            l(&self.server_assignment_count),
            l(&self.bytes_received),
            l(&self.bytes_sent),
            l(&self.xact_time_us),
            l(&self.query_time_us),
            l(&self.wait_time_us),
            l(&self.client_parse_count),
            l(&self.server_parse_count),
            l(&self.bind_count),
        ]
    }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_from_buckets() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for _ in 0..90 {
            h.observe(Duration::from_micros(800));
        }
        for _ in 0..10 {
            h.observe(Duration::from_millis(40));
        }
        assert_eq!(h.quantile(0.5), Some(0.001));
        assert_eq!(h.quantile(0.95), Some(0.05));
        assert_eq!(h.cumulative().1, 100);
        h.observe(Duration::from_secs(60));
        assert_eq!(h.quantile(1.0), Some(f64::INFINITY));
    }
}
