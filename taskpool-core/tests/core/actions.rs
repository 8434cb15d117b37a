//! Actions through the real chain: taskpool-core → bus → collector → Camunda → collector →
//! bus → view. Each answer comes after the view shows the effect, so a reload sees it.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use testkit::{wait_for, Collector, Engine};

use crate::harness::{database, Cluster, Core};

async fn act(
    core: &Core,
    user: &str,
    task: &str,
    action: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    core.call(
        Method::POST,
        &format!("/api/v1/tasks/{task}/{action}"),
        user,
        &["reviewers"],
        body,
    )
    .await
}

/// Performs an action and checks that its answer and an immediate reload show `check`.
async fn act_and_reload(
    core: &Core,
    user: &str,
    task: &str,
    action: &str,
    body: Option<Value>,
    field: &str,
    value: Value,
) {
    let (status, answer) = act(core, user, task, action, body).await;
    assert_eq!(status, StatusCode::OK, "{action}: {answer}");
    assert_eq!(answer["task"][field], value, "{action} answer: {answer}");
    let (status, reloaded) = core
        .get(&format!("/api/v1/tasks/{task}"), user, &["reviewers"])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        reloaded[field], value,
        "{action}: a reload shows the effect"
    );
}

#[tokio::test]
async fn every_action_is_read_your_writes() {
    let engine = Engine::connect().await;
    let bus = Cluster::start(&[]).await;
    let app = format!("core-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let _collector = Collector::start(&app, &bus, &[]);
    let core = Core::start(&bus, &database("actions"), &[]).await;

    // The collector announces the engine's definitions; start one through the task API.
    wait_for(
        "simpleUserTask startable",
        Duration::from_secs(90),
        || async {
            let (_, v) = core
                .get("/api/v1/processes", "kermit", &["reviewers"])
                .await;
            v["processes"]
                .as_array()?
                .iter()
                .any(|p| p["key"] == "simpleUserTask")
                .then_some(())
        },
    )
    .await;
    let (status, started) = core
        .call(
            Method::POST,
            "/api/v1/processes/simpleUserTask/start",
            "kermit",
            &["reviewers"],
            Some(json!({"businessKey": "order-7", "variables": {"amount": 5}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(started["application"], app.as_str());
    let task_id = started["taskId"].as_str().expect("first task").to_owned();
    // The task API names a task by its application and id.
    let task = format!("{app}/{task_id}");
    let instance = started["processInstanceId"]
        .as_str()
        .expect("instance")
        .to_owned();
    let (status, t) = core
        .get(&format!("/api/v1/tasks/{task}"), "kermit", &["reviewers"])
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the started task is in the view at once: {t}"
    );
    assert_eq!(t["source"]["businessKey"], "order-7");
    assert_eq!(t["payload"]["amount"], 5);

    act_and_reload(
        &core,
        "kermit",
        &task,
        "claim",
        None,
        "assignee",
        json!("kermit"),
    )
    .await;
    let engine_task = engine
        .ok(Method::GET, &format!("/task/{task_id}"), None)
        .await;
    assert_eq!(engine_task["assignee"], "kermit");
    let (status, body) = act(&core, "piggy", &task, "claim", None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("held_by_other"))
    );

    act_and_reload(
        &core,
        "kermit",
        &task,
        "defer",
        Some(json!({"followUp": "2099-01-01"})),
        "followUp",
        json!("2099-01-01T00:00:00.000Z"),
    )
    .await;
    let (ids, _) = core
        .ids("deferred=true&size=1000", "kermit", &["reviewers"])
        .await;
    assert!(ids.contains(&task_id));
    act_and_reload(
        &core,
        "kermit",
        &task,
        "undefer",
        None,
        "followUp",
        Value::Null,
    )
    .await;
    act_and_reload(
        &core,
        "kermit",
        &task,
        "unclaim",
        None,
        "assignee",
        Value::Null,
    )
    .await;
    act_and_reload(
        &core,
        "kermit",
        &task,
        "assign",
        Some(json!({"user": "piggy"})),
        "assignee",
        json!("piggy"),
    )
    .await;
    let (status, _) = act(
        &core,
        "kermit",
        &task,
        "complete",
        Some(json!({"variables": {}})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "piggy holds it now");
    act_and_reload(
        &core,
        "piggy",
        &task,
        "assign",
        Some(json!({"user": null})),
        "assignee",
        Value::Null,
    )
    .await;

    let (status, done) = act(
        &core,
        "kermit",
        &task,
        "complete",
        Some(json!({"variables": {"approved": true}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["task"], Value::Null);
    let (status, _) = core
        .get(&format!("/api/v1/tasks/{task}"), "kermit", &["reviewers"])
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a completed task leaves the view at once"
    );
    assert_eq!(
        engine.instance_state(&instance).await,
        "COMPLETED",
        "the process moved on"
    );
    assert_eq!(engine.history_variable(&instance, "approved").await, true);
}
