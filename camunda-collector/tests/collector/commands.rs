//! Task commands from the bus, executed on the real engine: each takes effect there and names
//! the event that records it; the engine's errors come back as clear statuses.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use taskpool_api::commands::CommandRequest;
use taskpool_api::BusClient;
use uuid::Uuid;

use crate::harness::{data, stream, wait_for, AppBus};
use crate::setup;

pub(crate) async fn send(
    bus: &BusClient,
    app: &str,
    kind: &str,
    payload: Value,
) -> Result<Value, (u16, String)> {
    let request = CommandRequest {
        id: Uuid::new_v4(),
        command_type: kind.into(),
        routing_key: app.into(),
        payload,
        timeout_ms: Some(20_000),
        traceparent: None,
    };
    match bus.send_command(&request).await {
        Ok(r) => Ok(r.result),
        Err(taskpool_api::ClientError::Api { status, body }) => Err((status, body.error.code)),
        Err(e) => panic!("command {kind}: {e}"),
    }
}

/// The result names the event that records the command's effect.
pub(crate) async fn assert_recorded(bus: &AppBus, result: &Value, event_type: &str) -> Value {
    let task = result["taskId"].as_str().expect("taskId");
    let position = result["position"].as_u64().expect("position");
    // The node that answers the read may apply the event a moment after the leader did.
    let at = wait_for(
        &format!("event at {result}"),
        Duration::from_secs(10),
        || async move {
            stream(bus, task)
                .await
                .into_iter()
                .find(|e| e.position == position)
        },
    )
    .await;
    assert_eq!(at.event_type, event_type, "{result}");
    data(&at)
}

/// Sends a command that must succeed; returns the event that records it, of `event_type`.
async fn recorded(bus: &AppBus, app: &str, kind: &str, payload: Value, event_type: &str) -> Value {
    let r = send(bus, app, kind, payload).await.expect(kind);
    assert_recorded(bus, &r, event_type).await
}

#[tokio::test]
async fn commands_take_effect_on_the_engine_and_name_their_event() {
    let (engine, _bus, bus, collector) = setup("commands", &[]).await;
    let app = collector.app.clone();

    let r = send(&bus, &app, "StartProcess", json!({"processDefinitionKey": "simpleUserTask", "businessKey": "cmd-1", "variables": {"amount": 7}})).await.expect("start");
    let created = assert_recorded(&bus, &r, "TaskCreated").await;
    assert_eq!(created["payload"]["amount"], 7);
    assert_eq!(created["source"]["businessKey"], "cmd-1");
    let task = r["taskId"].as_str().unwrap().to_owned();

    assert_eq!(
        recorded(
            &bus,
            &app,
            "ClaimTask",
            json!({"taskId": task, "user": "demo"}),
            "TaskAssigned"
        )
        .await["assignee"],
        "demo"
    );
    assert_eq!(
        engine.ok(Method::GET, &format!("/task/{task}"), None).await["assignee"],
        "demo"
    );

    // Claimed by someone else: a clear conflict, nothing changes.
    assert_eq!(
        send(
            &bus,
            &app,
            "ClaimTask",
            json!({"taskId": task, "user": "mary"})
        )
        .await,
        Err((409, "already_claimed".into()))
    );

    assert_eq!(
        recorded(
            &bus,
            &app,
            "UnclaimTask",
            json!({"taskId": task}),
            "TaskAssigned"
        )
        .await["assignee"],
        Value::Null
    );

    assert_eq!(
        recorded(
            &bus,
            &app,
            "AssignTask",
            json!({"taskId": task, "user": "mary"}),
            "TaskAssigned"
        )
        .await["assignee"],
        "mary"
    );

    assert_eq!(
        recorded(
            &bus,
            &app,
            "DeferTask",
            json!({"taskId": task, "followUp": "2031-05-06T07:08:09.000Z"}),
            "TaskUpdated"
        )
        .await["followUp"],
        "2031-05-06T07:08:09.000Z"
    );
    let t = engine.ok(Method::GET, &format!("/task/{task}"), None).await;
    assert_eq!(t["followUp"], "2031-05-06T07:08:09.000+0000");
    assert_eq!(
        t["assignee"], "mary",
        "the read-modify-write keeps every other field"
    );

    assert_eq!(
        recorded(
            &bus,
            &app,
            "UndeferTask",
            json!({"taskId": task}),
            "TaskUpdated"
        )
        .await["followUp"],
        Value::Null
    );

    assert_eq!(
        recorded(&bus, &app, "CompleteTask", json!({"taskId": task, "user": "mary", "variables": {"approved": true, "score": 3.5, "comment": "fine"}}), "TaskCompleted").await["completedBy"],
        "mary"
    );
    let vars = engine
        .ok(
            Method::GET,
            &format!(
                "/history/variable-instance?processInstanceId={}",
                created["source"]["processInstanceId"].as_str().unwrap()
            ),
            None,
        )
        .await;
    let by_name: HashMap<String, Value> = vars
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_owned(), v["value"].clone()))
        .collect();
    assert_eq!(by_name.get("approved"), Some(&json!(true)));
    assert_eq!(by_name.get("score"), Some(&json!(3.5)));
    assert_eq!(by_name.get("comment"), Some(&json!("fine")));

    // Errors map to clear statuses.
    assert_eq!(
        send(
            &bus,
            &app,
            "ClaimTask",
            json!({"taskId": "no-such-task", "user": "demo"})
        )
        .await,
        Err((404, "task_not_found".into()))
    );
    assert_eq!(
        send(&bus, &app, "CompleteTask", json!({"taskId": task})).await,
        Err((404, "task_not_found".into()))
    );
    assert_eq!(
        send(&bus, &app, "ClaimTask", json!({"taskId": task})).await,
        Err((422, "bad_payload".into()))
    );
    assert_eq!(
        send(
            &bus,
            &app,
            "DeferTask",
            json!({"taskId": task, "followUp": "tomorrow"})
        )
        .await,
        Err((422, "bad_payload".into()))
    );
    assert_eq!(
        send(
            &bus,
            &app,
            "StartProcess",
            json!({"processDefinitionKey": "noSuchProcess"})
        )
        .await
        .map_err(|e| e.0),
        Err(404)
    );
}
