//! Every metric of the bus, registered once; `/metrics` renders them in the text format.

use std::sync::LazyLock;

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use service_kit::{Registrar, RequestMetrics};

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static METRICS: LazyLock<Registrar> = LazyLock::new(|| Registrar::new(LATENCY_BUCKETS));

fn gauge(name: &str, help: &str) -> IntGauge {
    METRICS.gauge(name, help)
}

fn counter(name: &str, help: &str) -> IntCounter {
    METRICS.counter(name, help)
}

fn histogram(name: &str, help: &str) -> Histogram {
    METRICS.histogram(name, help)
}

pub static BUILD_INFO: LazyLock<IntGaugeVec> =
    LazyLock::new(|| METRICS.build_info("raftbus", env!("CARGO_PKG_VERSION")));
pub static TERM: LazyLock<IntGauge> = LazyLock::new(|| gauge("raftbus_term", "Current Raft term"));
pub static LEADER_ID: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "raftbus_leader_id",
        "Id of the leader this node knows, 0 when none",
    )
});
pub static IS_LEADER: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("raftbus_is_leader", "1 when this node is the leader"));
pub static COMMIT_INDEX: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "raftbus_commit_index",
        "Last committed log index this node knows",
    )
});
pub static APPLIED_INDEX: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "raftbus_applied_index",
        "Last log index applied to the event store",
    )
});
pub static HEAD_POSITION: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "raftbus_head_position",
        "Last event position in this node's event store",
    )
});
pub static SUBSCRIBERS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "raftbus_subscribers",
        "Open event subscriptions on this node",
    )
});

pub static EVENTS_APPENDED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "raftbus_events_appended_total",
        "Events appended through this node and acknowledged",
    )
});
pub static EVENTS_APPLIED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "raftbus_events_applied_total",
        "Events applied to this node's event store",
    )
});
pub static APPEND_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "raftbus_append_seconds",
        "Time from receiving an append to acknowledging it",
    )
});
pub static LOG_FLUSH_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "raftbus_log_flush_seconds",
        "Time of one group commit of the Raft log (write and fsync)",
    )
});
pub static APPLY_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "raftbus_apply_seconds",
        "Time to apply one batch of committed entries to the event store",
    )
});
pub static APPLY_BATCH_ENTRIES: LazyLock<Histogram> = LazyLock::new(|| {
    METRICS.histogram_with(
        "raftbus_apply_batch_entries",
        "Committed log entries applied together",
        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
    )
});

pub static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    METRICS.counter_vec(
        "raftbus_http_requests_total",
        "HTTP requests by matched route and status",
        &["route", "status"],
    )
});
pub static RPC_STREAM_CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    METRICS.counter_vec(
        "raftbus_rpc_stream_calls_total",
        "Calls served on RPC streams from other nodes, by kind (append, propose)",
        &["kind"],
    )
});
pub static FORBIDDEN: LazyLock<IntCounterVec> = LazyLock::new(|| {
    METRICS.counter_vec(
        "raftbus_forbidden_total",
        "Requests this node refused with 403, by the caller's role",
        &["role"],
    )
});
pub static HTTP_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    METRICS.histogram_vec(
        "raftbus_http_request_seconds",
        "HTTP request latency by matched route",
        &["route"],
    )
});

pub static COMMANDS_SENT: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "raftbus_commands_sent_total",
        "Commands accepted for routing by this node as leader",
    )
});
pub static COMMANDS_ROUTED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "raftbus_commands_routed_total",
        "Deliveries of commands to handlers (a redelivery after a handler left counts again)",
    )
});
pub static COMMANDS_DONE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    METRICS.counter_vec(
        "raftbus_commands_total",
        "Commands answered to senders, by outcome: ok or the error code (timeout, no_handler, ...)",
        &["outcome"],
    )
});
pub static COMMAND_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "raftbus_command_seconds",
        "Command round trip on the leader, sender to result",
    )
});
pub static COMMAND_HANDLERS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    METRICS.gauge_vec(
        "raftbus_command_handlers",
        "Handler connections on the leader, by routing key",
        &["routing_key"],
    )
});

/// The text exposition of every metric.
pub fn render() -> String {
    METRICS.render()
}

/// The HTTP request metrics, for `service_kit::http::track`.
pub fn requests() -> RequestMetrics {
    RequestMetrics::by_route(HTTP_REQUESTS.clone(), HTTP_SECONDS.clone())
}

/// Registers every metric, so `/metrics` lists them before they first change.
pub fn init() {
    LazyLock::force(&BUILD_INFO);
    for g in [
        &TERM,
        &LEADER_ID,
        &IS_LEADER,
        &COMMIT_INDEX,
        &APPLIED_INDEX,
        &HEAD_POSITION,
        &SUBSCRIBERS,
    ] {
        LazyLock::force(g);
    }
    for c in [
        &EVENTS_APPENDED,
        &EVENTS_APPLIED,
        &COMMANDS_SENT,
        &COMMANDS_ROUTED,
    ] {
        LazyLock::force(c);
    }
    for h in [
        &APPEND_SECONDS,
        &LOG_FLUSH_SECONDS,
        &APPLY_SECONDS,
        &APPLY_BATCH_ENTRIES,
        &COMMAND_SECONDS,
    ] {
        LazyLock::force(h);
    }
    LazyLock::force(&HTTP_REQUESTS);
    LazyLock::force(&HTTP_SECONDS);
    LazyLock::force(&RPC_STREAM_CALLS);
    LazyLock::force(&FORBIDDEN);
    LazyLock::force(&COMMANDS_DONE);
    LazyLock::force(&COMMAND_HANDLERS);
}
