//! The Prometheus endpoint (`--metrics host:port`, `GET /metrics`): per-pool client and
//! server counts, the SHOW STATS counters, and latency histograms of queries,
//! transactions and waits for a server (so the 50 ms p95 target can be alerted on),
//! encoded by prometheus-client from the pools' own atomics at scrape time (a
//! [`Collector`], so the hot path only bumps counters).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::ctx::Ctx;
use crate::stats::{Histogram, BUCKETS};

struct Pools(Arc<Ctx>);

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pools")
    }
}

type Labels = Vec<(&'static str, String)>;

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, i64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(*value).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(*value).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, &Histogram)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in rows {
        let mut buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .zip(h.counts.iter())
            .map(|(b, c)| (*b, c.load(Ordering::Relaxed)))
            .collect();
        buckets.push((f64::MAX, h.counts[BUCKETS.len()].load(Ordering::Relaxed)));
        let count = buckets.iter().map(|(_, c)| c).sum();
        let sum = h.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        m.encode_family(labels)?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                sum, count, &buckets, None,
            )?;
    }
    Ok(())
}

impl Collector for Pools {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let pools = self.0.pools();
        let label = |p: &crate::pool::Pool| -> Labels {
            vec![("database", p.db.clone()), ("user", p.user.clone())]
        };
        let g = |f: &dyn Fn(&crate::pool::Pool) -> i64| -> Vec<(Labels, i64)> {
            pools.iter().map(|p| (label(p), f(p))).collect()
        };
        gauge(
            &mut enc,
            "pgwarden_pool_client_active",
            "Clients linked to the pool and not waiting",
            &g(&|p| {
                p.cl_active
                    .load(Ordering::Relaxed)
                    .saturating_sub(p.cl_waiting.load(Ordering::Relaxed)) as i64
            }),
        )?;
        gauge(
            &mut enc,
            "pgwarden_pool_client_waiting",
            "Clients waiting for a server connection",
            &g(&|p| p.cl_waiting.load(Ordering::Relaxed) as i64),
        )?;
        gauge(
            &mut enc,
            "pgwarden_pool_server_active",
            "Server connections lent to clients",
            &g(&|p| p.sv_active.load(Ordering::Relaxed) as i64),
        )?;
        gauge(
            &mut enc,
            "pgwarden_pool_server_idle",
            "Idle server connections",
            &g(&|p| p.sv_idle() as i64),
        )?;
        gauge(
            &mut enc,
            "pgwarden_pool_server_login",
            "Server connections logging in",
            &g(&|p| p.sv_login.load(Ordering::Relaxed) as i64),
        )?;
        gauge(
            &mut enc,
            "pgwarden_pool_size",
            "Configured pool size",
            &g(&|p| i64::from(p.settings().size)),
        )?;
        gauge(
            &mut enc,
            "pgwarden_pool_maxwait_seconds",
            "How long the oldest waiting client has waited",
            &g(&|p| {
                let since = p.oldest_wait_us.load(Ordering::Relaxed);
                if since > 0 {
                    (crate::stats::now_us() - since).max(0) / 1_000_000
                } else {
                    0
                }
            }),
        )?;
        let c = |f: &dyn Fn(&crate::pool::Pool) -> u64| -> Vec<(Labels, u64)> {
            pools.iter().map(|p| (label(p), f(p))).collect()
        };
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut enc,
            "pgwarden_pool_transactions",
            "Transactions pooled",
            &c(&|p| l(&p.stats.xact_count)),
        )?;
        counter(
            &mut enc,
            "pgwarden_pool_queries",
            "Queries pooled",
            &c(&|p| l(&p.stats.query_count)),
        )?;
        counter(
            &mut enc,
            "pgwarden_pool_received_bytes",
            "Bytes received from clients",
            &c(&|p| l(&p.stats.bytes_received)),
        )?;
        counter(
            &mut enc,
            "pgwarden_pool_sent_bytes",
            "Bytes sent to clients",
            &c(&|p| l(&p.stats.bytes_sent)),
        )?;
        counter(
            &mut enc,
            "pgwarden_pool_server_assignments",
            "Server connections handed to clients",
            &c(&|p| l(&p.stats.server_assignment_count)),
        )?;
        counter(
            &mut enc,
            "pgwarden_pool_logins",
            "Client logins",
            &c(&|p| l(&p.stats.login_count)),
        )?;
        counter(
            &mut enc,
            "pgwarden_pool_client_parses",
            "Parse messages from clients",
            &c(&|p| l(&p.stats.client_parse_count)),
        )?;
        counter(
            &mut enc,
            "pgwarden_pool_server_parses",
            "Parse messages sent to servers",
            &c(&|p| l(&p.stats.server_parse_count)),
        )?;
        let h = |f: &dyn for<'a> Fn(&'a crate::pool::Pool) -> &'a Histogram| -> Vec<(Labels, &Histogram)> {
            pools.iter().map(|p| (label(p), f(p))).collect()
        };
        histogram(
            &mut enc,
            "pgwarden_pool_query_duration_seconds",
            "Query latency through the pool (request to ReadyForQuery)",
            &h(&|p| &p.stats.query_latency),
        )?;
        histogram(
            &mut enc,
            "pgwarden_pool_transaction_duration_seconds",
            "Transaction latency through the pool",
            &h(&|p| &p.stats.xact_latency),
        )?;
        histogram(
            &mut enc,
            "pgwarden_pool_wait_duration_seconds",
            "Time clients waited for a server connection",
            &h(&|p| &p.stats.wait_latency),
        )?;
        let m = enc.encode_descriptor(
            "pgwarden_pool_clients",
            "Connected clients, all pools",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.0.client_count.load(Ordering::Relaxed) as i64).encode(m)?;
        Ok(())
    }
}

/// Serves `/metrics` on `listener` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, ctx: Arc<Ctx>) {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Pools(ctx)));
    let registry = Arc::new(registry);
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(registry);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!(error = %e, "metrics endpoint stopped");
    }
}

async fn scrape(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
