//! One action's trace through the collector: a command sent with a `traceparent` is logged
//! under its trace id.

use std::time::Duration;

use serde_json::{json, Value};
use taskpool_api::commands::CommandRequest;
use taskpool_api::trace::Traceparent;
use uuid::Uuid;

use crate::harness::wait_for;
use crate::setup;

#[tokio::test]
async fn a_command_is_logged_under_the_trace_id_it_was_sent_with() {
    let (_engine, _cluster, bus, collector) = setup("trace", &["--log-json"]).await;
    let context = Traceparent::new_root();
    let request = CommandRequest {
        id: Uuid::new_v4(),
        command_type: "ClaimTask".into(),
        routing_key: collector.app.clone(),
        payload: json!({"taskId": "no-such-task", "user": "demo"}),
        timeout_ms: Some(20_000),
        traceparent: Some(context.to_string()),
    };
    match bus.send_command(&request).await {
        Err(taskpool_api::ClientError::Api { status, body }) => {
            assert_eq!((status, body.error.code.as_str()), (404, "task_not_found"))
        }
        other => panic!("a claim of no task: {other:?}"),
    }
    let trace_id = context.trace_id();
    let line = wait_for(
        "the command's log line",
        Duration::from_secs(10),
        || async {
            collector
                .log()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|l| l["fields"]["message"] == "command failed")
        },
    )
    .await;
    assert_eq!(line["span"]["trace_id"], trace_id.as_str(), "{line}");
    assert_eq!(line["span"]["command_id"], request.id.to_string(), "{line}");
    assert_eq!(line["span"]["type"], "ClaimTask", "{line}");
    assert_eq!(line["fields"]["code"], "task_not_found", "{line}");
}
