//! One user action is one trace: a claim through the task API carries its W3C trace context
//! (`traceparent`) into the bus command, the collector takes it up, and the JSON logs of
//! taskpool-core and the collector name the same trace id and the same command.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use taskpool_api::trace::Traceparent;
use testkit::core::mongo_url;
use testkit::wait_for;

use e2e::{Mode, Stack};

#[tokio::test]
async fn one_claim_is_one_trace_in_the_logs_of_core_and_collector() {
    let stack = Stack::start_with(
        "trace",
        Mode::Poll(Duration::from_millis(200)),
        &mongo_url(),
        &["--log-json"],
    )
    .await;
    let key = format!("trace-{}", stack.app);
    let instance = stack.engine.start("simpleUserTask", &key, json!({})).await;
    let task = stack.engine.task_id(&instance).await;
    stack.visible(&task, "rita", &["reviewers"]).await;

    let trace = Traceparent::new_root();
    let claim = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/tasks/{}/{task}/claim",
            stack.core.url(),
            stack.app
        ))
        .header("x-user", "rita")
        .header("x-groups", "reviewers")
        .header("traceparent", trace.to_string())
        .send()
        .await
        .expect("claim");
    assert_eq!(claim.status(), StatusCode::OK);
    let answered = claim
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    assert_eq!(
        answered.and_then(Traceparent::parse).map(|t| t.trace_id()),
        Some(trace.trace_id()),
        "the answer names the trace"
    );

    // Core logged the command it sent under the trace; the collector executed that command
    // under the same trace.
    let id = trace.trace_id();
    let sent = wait_for(
        "core's line of the command",
        Duration::from_secs(20),
        || async {
            json_lines(&stack.core.service.log())
                .into_iter()
                .find(|l| message(l) == "command sent" && mentions(l, &id))
        },
    )
    .await;
    let command_id = sent["fields"]["command_id"]
        .as_str()
        .expect("command id")
        .to_owned();
    let executed = wait_for(
        "the collector's line of the command",
        Duration::from_secs(20),
        || async {
            json_lines(&stack.collector.log())
                .into_iter()
                .find(|l| message(l) == "command executed" && mentions(l, &id))
        },
    )
    .await;
    assert!(
        mentions(&executed, &command_id),
        "the collector executed the command core sent: {executed}"
    );
    let in_engine = stack
        .engine
        .ok(reqwest::Method::GET, &format!("/task/{task}"), None)
        .await;
    assert_eq!(in_engine["assignee"], "rita", "the engine did it");
    stack.delete_instances(&key).await;
}

fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

/// Whether `value` stands in the line's fields or in one of the spans around it.
fn mentions(line: &Value, value: &str) -> bool {
    let scopes = std::iter::once(&line["fields"])
        .chain(std::iter::once(&line["span"]))
        .chain(line["spans"].as_array().into_iter().flatten());
    scopes
        .filter_map(Value::as_object)
        .any(|o| o.values().any(|v| v.as_str() == Some(value)))
}
