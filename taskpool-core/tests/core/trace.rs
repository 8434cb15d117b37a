//! One user action's trace: the `traceparent` a request brings names its log lines in
//! taskpool-core and goes on with the commands it sends.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use taskpool_api::tasks::TaskEvent;
use taskpool_api::trace::Traceparent;

use crate::harness::{append, database, task, wait_for, Cluster, Core};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test]
async fn a_request_names_its_trace_in_the_answer_and_in_the_json_log() {
    let bus = Cluster::start(&[]).await;
    let client = bus.client(&[1, 2, 3]);
    let core = Core::start(
        &bus,
        &database("trace"),
        &["--log-json", "--command-timeout", "2s"],
    )
    .await;
    let mut t = task("t1");
    t.candidate_users = vec!["kermit".into()];
    core.wait_position(append(&client, &[TaskEvent::Created(t)]).await)
        .await;

    // No collector serves the application: the claim's command fails, and that is logged.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/api/v1/tasks/camunda/t1/claim", core.url()))
        .header("x-user", "kermit")
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .send()
        .await
        .expect("claim");
    assert!(r.status().is_server_error(), "{}", r.status());
    let answered = r.headers().get("traceparent").and_then(|v| v.to_str().ok());
    assert_eq!(
        answered.and_then(Traceparent::parse).map(|t| t.trace_id()),
        Some(TRACE_ID.to_owned())
    );

    // A request without one begins a trace of its own, and says which.
    let r = http
        .get(format!("{}/api/v1/tasks", core.url()))
        .header("x-user", "kermit")
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), StatusCode::OK);
    let fresh = r.headers().get("traceparent").and_then(|v| v.to_str().ok());
    let fresh = fresh.and_then(Traceparent::parse).expect("a traceparent");
    assert_ne!(fresh.trace_id(), TRACE_ID);

    // The command's line names the trace, and so does the request's span on every line.
    let lines = wait_for(
        "the command's log line",
        Duration::from_secs(10),
        || async {
            let lines: Vec<Value> = core
                .service
                .log()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .filter(|l: &Value| in_trace(l))
                .collect();
            let sent = lines.iter().any(|l| {
                l["fields"]["message"] == "command sent" && l["fields"]["trace_id"] == TRACE_ID
            });
            let failed = lines
                .iter()
                .any(|l| l["fields"]["message"] == "request failed");
            (sent && failed).then_some(lines)
        },
    )
    .await;
    let command = lines
        .iter()
        .find(|l| l["fields"]["message"] == "command sent")
        .expect("command line");
    assert_eq!(command["fields"]["command"], "ClaimTask");
    let spans: Vec<&str> = command["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(spans, ["request", "action", "execute"], "{command}");
}

/// Whether one of the spans around a log line is of the trace.
fn in_trace(line: &Value) -> bool {
    line["spans"]
        .as_array()
        .is_some_and(|spans| spans.iter().any(|s| s["trace_id"] == TRACE_ID))
}
