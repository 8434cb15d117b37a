//! taskpool-core's metrics, rendered on `/metrics` in Prometheus' text format.

use std::sync::Arc;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

pub struct Inner {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_request_seconds: HistogramVec,
    pub events_applied: IntCounterVec,
    pub bad_events: IntCounter,
    pub view_position: IntGauge,
    pub view_lag_positions: IntGauge,
    pub view_lag_seconds: IntGauge,
    pub open_tasks: IntGauge,
    pub store_write_seconds: HistogramVec,
    pub store_errors: IntCounterVec,
    pub commands: IntCounterVec,
    pub stream_subscribers: IntGauge,
}

impl std::ops::Deref for Metrics {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    reg(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"),
    )
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    reg(r, HistogramVec::new(opts, labels).expect("valid histogram"))
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    reg(r, IntGauge::new(name, help).expect("valid gauge"))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        Metrics(Arc::new(Inner {
            http_requests: counter(
                &r,
                "taskpool_http_requests_total",
                "HTTP requests by matched route, method and status",
                &["route", "method", "status"],
            ),
            http_request_seconds: histogram(
                &r,
                "taskpool_http_request_seconds",
                "HTTP request latency by matched route and method",
                &["route", "method"],
            ),
            events_applied: counter(
                &r,
                "taskpool_events_applied_total",
                "Bus events applied to the view by type (skipped replays not counted)",
                &["type"],
            ),
            bad_events: reg(
                &r,
                IntCounter::new(
                    "taskpool_bad_events_total",
                    "Bus events the view could not read (logged and skipped)",
                )
                .expect("valid counter"),
            ),
            view_position: gauge(
                &r,
                "taskpool_view_position",
                "The last bus position applied to the view",
            ),
            view_lag_positions: gauge(
                &r,
                "taskpool_view_lag_positions",
                "Bus head position minus the view position",
            ),
            view_lag_seconds: gauge(
                &r,
                "taskpool_view_lag_seconds",
                "Age of the oldest bus event not yet in the view (0 when caught up)",
            ),
            open_tasks: gauge(&r, "taskpool_open_tasks", "Open tasks in the view"),
            store_write_seconds: histogram(
                &r,
                "taskpool_store_write_seconds",
                "Duration of one batch write to MongoDB",
                &["outcome"],
            ),
            store_errors: counter(
                &r,
                "taskpool_store_errors_total",
                "Failed MongoDB operations by operation",
                &["operation"],
            ),
            commands: counter(
                &r,
                "taskpool_commands_total",
                "Task actions sent as bus commands by type and outcome",
                &["type", "outcome"],
            ),
            stream_subscribers: gauge(&r, "taskpool_stream_subscribers", "Open SSE task streams"),
            registry: r,
        }))
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
