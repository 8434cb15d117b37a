//! taskpool-core's metrics, rendered on `/metrics` in Prometheus' text format.

use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge};
use service_kit::metrics::Shared;
use service_kit::{Registrar, RequestMetrics};

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub type Metrics = Shared<Inner>;

pub struct Inner {
    registrar: Registrar,
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

impl Default for Inner {
    fn default() -> Inner {
        let r = Registrar::new(LATENCY_BUCKETS);
        r.build_info("taskpool", env!("CARGO_PKG_VERSION"));
        Inner {
            http_requests: r.counter_vec(
                "taskpool_http_requests_total",
                "HTTP requests by matched route, method and status",
                &["route", "method", "status"],
            ),
            http_request_seconds: r.histogram_vec(
                "taskpool_http_request_seconds",
                "HTTP request latency by matched route and method",
                &["route", "method"],
            ),
            events_applied: r.counter_vec(
                "taskpool_events_applied_total",
                "Bus events applied to the view by type (skipped replays not counted)",
                &["type"],
            ),
            bad_events: r.counter(
                "taskpool_bad_events_total",
                "Bus events the view could not read (logged and skipped)",
            ),
            view_position: r.gauge(
                "taskpool_view_position",
                "The last bus position applied to the view",
            ),
            view_lag_positions: r.gauge(
                "taskpool_view_lag_positions",
                "Bus head position minus the view position",
            ),
            view_lag_seconds: r.gauge(
                "taskpool_view_lag_seconds",
                "Age of the oldest bus event not yet in the view (0 when caught up)",
            ),
            open_tasks: r.gauge("taskpool_open_tasks", "Open tasks in the view"),
            store_write_seconds: r.histogram_vec(
                "taskpool_store_write_seconds",
                "Duration of one batch write to MongoDB",
                &["outcome"],
            ),
            store_errors: r.counter_vec(
                "taskpool_store_errors_total",
                "Failed MongoDB operations by operation",
                &["operation"],
            ),
            commands: r.counter_vec(
                "taskpool_commands_total",
                "Task actions sent as bus commands by type and outcome",
                &["type", "outcome"],
            ),
            stream_subscribers: r.gauge("taskpool_stream_subscribers", "Open SSE task streams"),
            registrar: r,
        }
    }
}

impl Inner {
    /// The HTTP request metrics, for `service_kit::http::track`.
    pub fn requests(&self) -> RequestMetrics {
        RequestMetrics::by_route_and_method(
            self.http_requests.clone(),
            self.http_request_seconds.clone(),
        )
    }

    pub fn render(&self) -> String {
        self.registrar.render()
    }
}
