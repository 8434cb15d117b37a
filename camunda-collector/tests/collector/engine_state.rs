//! The pool mirrors what the engine does to tasks beside the task API, in both modes:
//! suspension and activation of process instances (actions on a suspended task answer 409
//! `suspended`), migration to another definition, modification, error and escalation boundary
//! events, and listeners that change a task's name, priority and due date.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use taskpool_api::tasks::{TaskEvent, TaskFold};

use crate::commands::send;
use crate::harness::{data, expect_stream, stream, AppBus, Cluster, Engine, HOOK_ADDRESS};
use crate::setup;
use crate::variables::hook_collector;

/// How the events of a task's stream came (`via` of their metadata).
async fn vias(bus: &AppBus, task: &str) -> Vec<String> {
    stream(bus, task)
        .await
        .iter()
        .map(|e| {
            let m: Value = e
                .metadata
                .as_ref()
                .and_then(|m| serde_json::from_str(m.get()).ok())
                .unwrap_or_default();
            m["via"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

/// The task as its stream folds.
async fn folded(bus: &AppBus, task: &str) -> taskpool_api::tasks::Task {
    let mut fold = TaskFold::default();
    for e in stream(bus, task).await {
        fold.apply(&TaskEvent::from_recorded(&e).expect("a task event"));
    }
    fold.task().expect("a task").clone()
}

fn claim(task: &str) -> Value {
    json!({"taskId": task, "user": "demo", "actor": {"user": "demo", "groups": ["reviewers"]}})
}

/// Suspends an instance, checks that its task shows suspended and refuses actions, then
/// activates it (the other REST call) and claims it. Returns how the two updates came.
async fn suspension(engine: &Engine, bus: &AppBus, app: &str) -> Vec<String> {
    let instance = engine.start("simpleUserTask", "suspend-1", json!({})).await;
    let task = engine.task_id(&instance).await;
    let e = expect_stream(bus, &task, &["TaskCreated"]).await;
    assert_eq!(data(&e[0])["suspended"], false);

    let suspend = json!({"suspended": true});
    let path = format!("/process-instance/{instance}/suspended");
    engine.ok(Method::PUT, &path, Some(suspend)).await;
    let e = expect_stream(bus, &task, &["TaskCreated", "TaskUpdated"]).await;
    assert_eq!(data(&e[1])["suspended"], true);
    assert!(folded(bus, &task).await.suspended);
    assert_eq!(
        send(bus, app, "ClaimTask", claim(&task)).await,
        Err((409, "suspended".into()))
    );
    let engine_task = engine.ok(Method::GET, &format!("/task/{task}"), None).await;
    assert_eq!(engine_task["assignee"], Value::Null, "nothing changed");

    let activate = json!({"processInstanceIds": [instance], "suspended": false});
    engine
        .ok(Method::PUT, "/process-instance/suspended", Some(activate))
        .await;
    let e = expect_stream(bus, &task, &["TaskCreated", "TaskUpdated", "TaskUpdated"]).await;
    assert_eq!(data(&e[2])["suspended"], false);
    send(bus, app, "ClaimTask", claim(&task))
        .await
        .expect("an active task can be claimed");
    let via = vias(bus, &task).await[1..3].to_vec();
    engine.delete_instance(&instance).await;
    via
}

/// Migrates a `simpleUserTask` instance onto `engineEvents` (review → handle): the task keeps
/// its id and gets the new definition and task definition key. Returns how the update came.
async fn migration(engine: &Engine, bus: &AppBus) -> String {
    let instance = engine.start("simpleUserTask", "migrate-1", json!({})).await;
    let task = engine.task_id(&instance).await;
    expect_stream(bus, &task, &["TaskCreated"]).await;
    let source = engine
        .ok(Method::GET, &format!("/process-instance/{instance}"), None)
        .await["definitionId"]
        .clone();
    let target = engine
        .ok(Method::GET, "/process-definition/key/engineEvents", None)
        .await["id"]
        .clone();
    let plan = json!({
        "migrationPlan": {
            "sourceProcessDefinitionId": source,
            "targetProcessDefinitionId": target,
            "instructions": [{"sourceActivityIds": ["review"], "targetActivityIds": ["handle"]}]
        },
        "processInstanceIds": [instance]
    });
    engine
        .ok(Method::POST, "/migration/execute", Some(plan))
        .await;
    let e = expect_stream(bus, &task, &["TaskCreated", "TaskUpdated"]).await;
    assert_eq!(data(&e[1])["taskDefinitionKey"], "handle");
    let moved = folded(bus, &task).await;
    assert_eq!(moved.task_definition_key.as_deref(), Some("handle"));
    assert_eq!(
        moved.source.process_definition_id.as_deref(),
        target.as_str()
    );
    assert_eq!(
        moved.source.process_definition_key.as_deref(),
        Some("engineEvents")
    );
    assert_eq!(moved.source.process_instance_id.as_ref(), Some(&instance));
    let via = vias(bus, &task).await[1].clone();
    engine.delete_instance(&instance).await;
    via
}

/// A modification starts the task's activity again and cancels the old one: the old task is
/// deleted, a new one created.
async fn modification(engine: &Engine, bus: &AppBus) {
    let instance = engine.start("simpleUserTask", "modify-1", json!({})).await;
    let old = engine.task_id(&instance).await;
    expect_stream(bus, &old, &["TaskCreated"]).await;
    let tree = engine
        .ok(
            Method::GET,
            &format!("/process-instance/{instance}/activity-instances"),
            None,
        )
        .await;
    let review = tree["childActivityInstances"][0]["id"].clone();
    let instructions = json!({"instructions": [
        {"type": "startBeforeActivity", "activityId": "review"},
        {"type": "cancel", "activityInstanceId": review}
    ]});
    let path = format!("/process-instance/{instance}/modification");
    engine.ok(Method::POST, &path, Some(instructions)).await;
    let e = expect_stream(bus, &old, &["TaskCreated", "TaskDeleted"]).await;
    assert_ne!(data(&e[1])["deleteReason"], "completed");
    let new = engine.task_id(&instance).await;
    assert_ne!(new, old);
    let e = expect_stream(bus, &new, &["TaskCreated"]).await;
    assert_eq!(data(&e[0])["taskDefinitionKey"], "review");
    engine.delete_instance(&instance).await;
    expect_stream(bus, &new, &["TaskCreated", "TaskDeleted"]).await;
}

/// The assignment listeners rename the task and change its priority and due date; an
/// escalation adds a task beside it, an error ends it and starts the error path.
async fn listeners_and_boundary_events(engine: &Engine, bus: &AppBus) {
    let instance = engine.start("engineEvents", "events-1", json!({})).await;
    let handle = engine.task_id(&instance).await;
    expect_stream(bus, &handle, &["TaskCreated"]).await;
    engine.claim(&handle, "demo").await;
    expect_stream(
        bus,
        &handle,
        &["TaskCreated", "TaskAssigned", "TaskUpdated"],
    )
    .await;
    let taken = folded(bus, &handle).await;
    assert_eq!(taken.name.as_deref(), Some("Handle the case (taken)"));
    assert_eq!(taken.priority, 80);
    assert!(taken.due.is_some(), "due date set by the listener");

    let late = json!({"escalationCode": "late"});
    let path = format!("/task/{handle}/bpmnEscalation");
    engine.ok(Method::POST, &path, Some(late)).await;
    let chase = by_key(engine, &instance, "chase").await;
    expect_stream(bus, &chase, &["TaskCreated"]).await;

    let rejected = json!({"errorCode": "rejected"});
    let path = format!("/task/{handle}/bpmnError");
    engine.ok(Method::POST, &path, Some(rejected)).await;
    let e = expect_stream(
        bus,
        &handle,
        &["TaskCreated", "TaskAssigned", "TaskUpdated", "TaskDeleted"],
    )
    .await;
    assert_ne!(data(&e[3])["deleteReason"], "completed");
    let fix = by_key(engine, &instance, "fix").await;
    let e = expect_stream(bus, &fix, &["TaskCreated"]).await;
    assert_eq!(data(&e[0])["name"], "Fix the case");
    assert_eq!(
        stream(bus, &chase).await.len(),
        1,
        "the escalation path stays"
    );
    engine.delete_instance(&instance).await;
    expect_stream(bus, &fix, &["TaskCreated", "TaskDeleted"]).await;
    expect_stream(bus, &chase, &["TaskCreated", "TaskDeleted"]).await;
}

/// The open task of `instance` at activity `key`.
async fn by_key(engine: &Engine, instance: &str, key: &str) -> String {
    let query = format!("processInstanceId={instance}&taskDefinitionKey={key}");
    engine.tasks(&query, 1).await[0]["id"]
        .as_str()
        .expect("task id")
        .to_owned()
}

#[tokio::test]
async fn poll_mode_mirrors_suspension_modification_boundary_events_and_listeners() {
    let (engine, _cluster, bus, collector) = setup("state-poll", &[]).await;
    // The next reconciliation is minutes away: what follows is the incremental polls' work.
    collector.wait_reconciled(Duration::from_secs(120)).await;
    let via = suspension(&engine, &bus, &collector.app).await;
    assert_eq!(
        via,
        ["poll", "poll"],
        "seen by the poll, not a reconciliation"
    );
    modification(&engine, &bus).await;
    listeners_and_boundary_events(&engine, &bus).await;
}

#[tokio::test]
async fn poll_mode_sees_a_migration_at_the_next_reconciliation() {
    let (engine, _cluster, bus, collector) =
        setup("migrate-poll", &["--reconcile-interval", "2s"]).await;
    collector.wait_reconciled(Duration::from_secs(60)).await;
    assert_eq!(migration(&engine, &bus).await, "reconcile");
}

#[tokio::test]
async fn hook_mode_mirrors_every_engine_state_change() {
    let _hook_address = HOOK_ADDRESS.lock().await;
    let engine = Engine::connect().await;
    let cluster = Cluster::start(&[]).await;
    let collector = hook_collector(&engine, &cluster, "state-hook", &[]).await;
    let bus = AppBus::new(cluster.client(&[1, 2, 3]), &collector.app);
    assert_eq!(
        suspension(&engine, &bus, &collector.app).await,
        ["hook", "hook"]
    );
    assert_eq!(migration(&engine, &bus).await, "hook");
    modification(&engine, &bus).await;
    listeners_and_boundary_events(&engine, &bus).await;
}
