//! Prometheus metrics: request counts and latencies by route pattern and status, open tenant
//! stores. Served at `/metrics` when `metrics.enabled`; loopback peers only by default, others
//! need `Authorization: Bearer <metrics.token>`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

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
    /// `flowguard_runs_queued{tenant,application}`: runs waiting for a runner, per application
    /// (refreshed at each scrape; the Helm chart's HPA scales agents on it).
    pub runs_queued: IntGaugeVec,
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
            ),
            &["method", "route"],
        )?;
        let open_stores = IntGauge::new(
            "flowguard_open_tenant_stores",
            "Tenant stores currently open",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(open_stores.clone()))?;
        let runs_queued = IntGaugeVec::new(
            Opts::new(
                "flowguard_runs_queued",
                "Queued runs waiting for a runner, per application",
            ),
            &["tenant", "application"],
        )?;
        registry.register(Box::new(runs_queued.clone()))?;
        Ok(Self {
            registry,
            requests,
            latency,
            open_stores,
            runs_queued,
        })
    }

    /// Text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
