//! Prometheus metrics: request counts and latencies by route pattern and status, open tenant
//! stores, open and refused connections. Served at `/metrics` when `metrics.enabled`; loopback peers only by default, others
//! need `Authorization: Bearer <metrics.token>`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Upper bounds (s) of the request-latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// The metric families of one process.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `flowguard_http_requests_total{method,route,status}`.
    pub requests: IntCounterVec,
    /// `flowguard_http_request_duration_seconds{method,route}`.
    pub latency: HistogramVec,
    /// `flowguard_open_tenant_stores`.
    pub open_stores: IntGauge,
    /// `flowguard_busy_tenant_stores`: open tenant stores ranked busy by the last 5-s pass whose
    /// write connection got the busy-store page cache sized from their file
    /// (`store.busy_page_cache_kib`, `store.busy_page_cache_budget_kib`).
    pub busy_stores: IntGauge,
    /// `flowguard_connections_refused_total{reason}`: connections closed at accept, before TLS,
    /// because their client address (`per_client`) or the server (`total`) was at its cap.
    pub connections_refused: IntCounterVec,
    /// `flowguard_connections_open`: connections open now (TLS handshakes included).
    pub connections_open: IntGauge,
    /// `flowguard_runs_queued{tenant,application}`: runs waiting for a runner, per application
    /// (refreshed at each scrape; the Helm chart's HPA scales agents on it).
    pub runs_queued: IntGaugeVec,
    /// `flowguard_store_wal_bytes{store}`: size of the `-wal` file of the catalog
    /// (`store="catalog"`) and of each open tenant store (`store="<tenant id>"`), at each scrape.
    pub wal_bytes: IntGaugeVec,
    /// `flowguard_data_dir_free_bytes`: bytes available to the server on the data dir's file
    /// system (`statvfs` `f_bavail × f_frsize`), at each scrape.
    pub data_dir_free_bytes: IntGauge,
}

impl Metrics {
    /// Register the families.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "flowguard_http_requests_total",
                "HTTP requests by route pattern and status",
            ),
            &["method", "route", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "flowguard_http_request_duration_seconds",
                "HTTP request latency in seconds",
            )
            // Finer than Prometheus' defaults between 1 and 25 ms, where the latency goals
            // sit (BENCHMARKS.md: run list p99 < 20 ms, also during ingest, issue 25 P8).
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route"],
        )?;
        let open_stores = IntGauge::new(
            "flowguard_open_tenant_stores",
            "Tenant stores currently open",
        )?;
        let busy_stores = IntGauge::new(
            "flowguard_busy_tenant_stores",
            "Open tenant stores ranked busy by the last page-cache pass (their page cache sized from their file)",
        )?;
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "flowguard_connections_refused_total",
                "Connections closed at accept because a connection cap was reached",
            ),
            &["reason"],
        )?;
        let connections_open = IntGauge::new("flowguard_connections_open", "Connections open now")?;
        // Both reasons are exported from the start (as 0), so a dashboard sees the series.
        for reason in ["per_client", "total"] {
            connections_refused.with_label_values(&[reason]);
        }
        registry.register(Box::new(connections_refused.clone()))?;
        registry.register(Box::new(connections_open.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(open_stores.clone()))?;
        registry.register(Box::new(busy_stores.clone()))?;
        let runs_queued = IntGaugeVec::new(
            Opts::new(
                "flowguard_runs_queued",
                "Queued runs waiting for a runner, per application",
            ),
            &["tenant", "application"],
        )?;
        registry.register(Box::new(runs_queued.clone()))?;
        let wal_bytes = IntGaugeVec::new(
            Opts::new(
                "flowguard_store_wal_bytes",
                "Size of the write-ahead log of the catalog and of each open tenant store, bytes",
            ),
            &["store"],
        )?;
        registry.register(Box::new(wal_bytes.clone()))?;
        let data_dir_free_bytes = IntGauge::new(
            "flowguard_data_dir_free_bytes",
            "Bytes available on the data dir's file system",
        )?;
        registry.register(Box::new(data_dir_free_bytes.clone()))?;
        Ok(Self {
            registry,
            requests,
            latency,
            open_stores,
            busy_stores,
            connections_refused,
            connections_open,
            runs_queued,
            wal_bytes,
            data_dir_free_bytes,
        })
    }

    /// Text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
