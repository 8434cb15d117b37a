//! The collector's metrics, rendered on `/metrics` in Prometheus' text format.

use std::time::Duration;

use prometheus::{GaugeVec, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};
use service_kit::metrics::Shared;
use service_kit::Registrar;

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

pub type Metrics = Shared<Inner>;

pub struct Inner {
    registrar: Registrar,
    pub poll_cycles: IntCounterVec,
    pub poll_cycle_seconds: HistogramVec,
    engine_requests: IntCounterVec,
    engine_request_seconds: HistogramVec,
    engine_response_bytes: IntCounterVec,
    pub events_emitted: IntCounterVec,
    pub change_to_event_seconds: HistogramVec,
    pub hooks: IntCounterVec,
    pub commands: IntCounterVec,
    pub active: IntGauge,
    pub watermark_lag_seconds: IntGauge,
    pub open_tasks: IntGauge,
    pub engine_info: IntGaugeVec,
    pub poll_failures: IntGaugeVec,
    pub poll_backoff_seconds: GaugeVec,
    pub payloads_truncated: IntCounter,
    pub identity_parts: IntGauge,
    pub engine_clock_offset_seconds: IntGauge,
}

impl Default for Inner {
    fn default() -> Inner {
        let r = Registrar::new(LATENCY_BUCKETS);
        r.build_info("collector", env!("CARGO_PKG_VERSION"));
        Inner {
            poll_cycles: r.counter_vec("collector_poll_cycles_total", "Poll cycles by kind (incremental, reconcile) and outcome", &["kind", "outcome"]),
            poll_cycle_seconds: r.histogram_vec("collector_poll_cycle_seconds", "Duration of one poll cycle", &["kind"]),
            engine_requests: r.counter_vec("collector_engine_requests_total", "Calls to the engine's REST API by endpoint and HTTP status", &["endpoint", "status"]),
            engine_request_seconds: r.histogram_vec("collector_engine_request_seconds", "Latency of REST calls to the engine", &["endpoint"]),
            engine_response_bytes: r.counter_vec("collector_engine_response_bytes_total", "Bytes of the engine's REST answers by endpoint", &["endpoint"]),
            events_emitted: r.counter_vec("collector_events_emitted_total", "Events appended to the bus by type and how the change was seen (poll, hook, command, reconcile)", &["type", "via"]),
            change_to_event_seconds: r.histogram_vec("collector_change_to_event_seconds", "From the engine's timestamp of a change to its event being acknowledged by the bus", &["via"]),
            hooks: r.counter_vec("collector_hooks_total", "Hook requests by outcome (accepted, bad_signature, bad_body, standby, failed)", &["outcome"]),
            commands: r.counter_vec("collector_commands_total", "Commands executed by type and outcome (ok or error code)", &["type", "outcome"]),
            active: r.gauge("collector_active", "1 while this collector holds its application's lock and works"),
            watermark_lag_seconds: r.gauge("collector_watermark_lag_seconds", "How far the task watermark trails the engine's clock"),
            open_tasks: r.gauge("collector_open_tasks", "Open tasks the collector tracks, as of the last reconciliation"),
            engine_info: r.gauge_vec("collector_engine_info", "1, labelled with the engine's version (GET /version)", &["version"]),
            poll_failures: r.gauge_vec("collector_poll_failures", "Poll cycles of a kind that failed in a row (0: the last went through)", &["kind"]),
            poll_backoff_seconds: r.register(GaugeVec::new(Opts::new("collector_poll_backoff_seconds", "The pause before the next try after a failed cycle (0: none)"), &["kind"]).expect("valid gauge")),
            payloads_truncated: r.counter("collector_payloads_truncated_total", "Task observations whose payload left variables out to fit --max-event-bytes"),
            identity_parts: r.gauge("collector_identity_parts", "Events the last identity sync was split into (to fit --max-event-bytes)"),
            engine_clock_offset_seconds: r.gauge("collector_engine_clock_offset_seconds", "The engine's clock less this host's, in whole seconds (from its Date header)"),
            registrar: r,
        }
    }
}

impl Inner {
    pub fn engine_bytes(&self, endpoint: &str, bytes: usize) {
        self.engine_response_bytes
            .with_label_values(&[endpoint])
            .inc_by(bytes as u64);
    }

    pub fn engine_call(&self, endpoint: &str, status: &str, took: Duration) {
        self.engine_requests
            .with_label_values(&[endpoint, status])
            .inc();
        self.engine_request_seconds
            .with_label_values(&[endpoint])
            .observe(took.as_secs_f64());
    }

    pub fn render(&self) -> String {
        self.registrar.render()
    }
}
