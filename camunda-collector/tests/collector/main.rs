//! The collector against the real engine on PostgreSQL and a three-node bus: each kind of
//! task change, made through the engine, must show up as the exact event sequence of its
//! task stream; commands must take effect on the engine; nothing is lost or doubled when a
//! collector is killed.

#![allow(clippy::unwrap_used)]

mod clock;
mod commands;
mod dedupe;
mod engine_checks;
mod engine_state;
mod failover;
mod faults;
mod harness;
mod hooks;
mod judge;
mod sizes;
mod trace;
mod upgrade;
mod variables;

use commands::{assert_recorded, send};

use std::time::Duration;

use futures::StreamExt;
use harness::{app_name, data, expect_stream, wait_for, AppBus, Cluster, Collector, Engine};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

async fn setup(test: &str, extra: &[&str]) -> (Engine, Cluster, AppBus, Collector) {
    let engine = Engine::connect().await;
    let bus = Cluster::start(&[]).await;
    let collector = Collector::start(&app_name(test), &bus, extra);
    let client = AppBus::new(bus.client(&[1, 2, 3]), &collector.app);
    collector.wait_active(Duration::from_secs(30)).await;
    (engine, bus, client, collector)
}

#[tokio::test]
async fn poll_reports_every_kind_of_change_of_a_task() {
    // Variables reach the payload through the include/exclude filter.
    let (engine, _bus, bus, collector) =
        setup("poll-kinds", &["--variables-exclude", "secret*"]).await;
    let instance = engine
        .start("simpleUserTask", "order-1", json!({"amount": {"value": 42, "type": "Integer"}, "note": {"value": "hi", "type": "String"}, "secretCode": {"value": "x", "type": "String"}}))
        .await;
    let task = engine.task_id(&instance).await;

    let events = expect_stream(&bus, &task, &["TaskCreated"]).await;
    let created = data(&events[0]);
    assert_eq!(created["taskId"], task);
    assert_eq!(created["name"], "Review request");
    assert_eq!(created["taskDefinitionKey"], "review");
    assert_eq!(created["candidateGroups"], json!(["reviewers"]));
    assert_eq!(created["candidateUsers"], json!([]));
    assert_eq!(
        created["payload"],
        json!({"amount": 42, "note": "hi"}),
        "secretCode is excluded"
    );
    assert_eq!(created["source"]["processDefinitionKey"], "simpleUserTask");
    assert_eq!(created["source"]["processInstanceId"], instance);
    assert_eq!(created["source"]["businessKey"], "order-1");
    assert_eq!(created["source"]["processName"], "Simple user task");

    // The definition was announced once, and the engine's users with their groups.
    let definition = created["source"]["processDefinitionId"]
        .as_str()
        .expect("definition id")
        .to_owned();
    let definition_stream =
        taskpool_api::streams::process_definition_stream(&collector.app, &definition);
    let events = wait_for(
        "the definition announced",
        Duration::from_secs(120),
        || async {
            let page = bus.stream(&definition_stream, 0, 10).await.ok()?;
            (!page.events.is_empty()).then_some(page.events)
        },
    )
    .await;
    assert_eq!(harness::types(&events), ["ProcessDefinitionRegistered"]);
    let registered = data(&events[0]);
    assert_eq!(
        (
            registered["key"].as_str(),
            registered["startableInTasklist"].as_bool()
        ),
        (Some("simpleUserTask"), Some(true))
    );
    let identity_stream = taskpool_api::streams::identity_stream(&collector.app);
    let synced = wait_for("the identity synced", Duration::from_secs(120), || async {
        let page = bus.stream(&identity_stream, 0, 10).await.ok()?;
        page.events.last().map(data)
    })
    .await;
    let demo = synced["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["id"] == "demo")
        .cloned()
        .expect("user demo");
    assert!(
        demo["groups"]
            .as_array()
            .expect("groups")
            .contains(&json!("camunda-admin")),
        "{demo}"
    );
    assert!(
        created["created"]
            .as_str()
            .is_some_and(|c| c.ends_with('Z')),
        "{created}"
    );

    let e = every_kind_of_change(&engine, &bus, &task).await;
    // Every event names its source; nothing more comes after the end.
    assert!(e
        .iter()
        .all(|ev| data(ev)["source"]["processInstanceId"] == instance));
}

/// Makes every kind of change to an open task of `simpleUserTask` through the engine
/// (claim, unclaim, assign, candidates added and removed, attributes, complete) and checks
/// that each arrives as its own event; returns the whole stream.
pub(crate) async fn every_kind_of_change(
    engine: &Engine,
    bus: &AppBus,
    task: &str,
) -> Vec<taskpool_api::bus::RecordedEvent> {
    let mut expected = vec!["TaskCreated"];
    let mut step = |t: &'static str| {
        expected.push(t);
        expected.clone()
    };

    engine.claim(task, "demo").await;
    let e = expect_stream(bus, task, &step("TaskAssigned")).await;
    assert_eq!(data(e.last().unwrap())["assignee"], "demo");

    engine
        .ok(Method::POST, &format!("/task/{task}/unclaim"), None)
        .await;
    let e = expect_stream(bus, task, &step("TaskAssigned")).await;
    assert_eq!(data(e.last().unwrap())["assignee"], Value::Null);

    engine
        .ok(
            Method::POST,
            &format!("/task/{task}/assignee"),
            Some(json!({"userId": "mary"})),
        )
        .await;
    let e = expect_stream(bus, task, &step("TaskAssigned")).await;
    assert_eq!(data(e.last().unwrap())["assignee"], "mary");

    candidates(engine, task, "identity-links", ("groupId", "managers")).await;
    let e = expect_stream(bus, task, &step("TaskCandidatesChanged")).await;
    assert_eq!(
        data(e.last().unwrap())["candidateGroups"],
        json!(["managers", "reviewers"])
    );

    candidates(engine, task, "identity-links", ("userId", "kermit")).await;
    let e = expect_stream(bus, task, &step("TaskCandidatesChanged")).await;
    assert_eq!(data(e.last().unwrap())["candidateUsers"], json!(["kermit"]));

    candidates(
        engine,
        task,
        "identity-links/delete",
        ("groupId", "reviewers"),
    )
    .await;
    let e = expect_stream(bus, task, &step("TaskCandidatesChanged")).await;
    assert_eq!(
        data(e.last().unwrap())["candidateGroups"],
        json!(["managers"])
    );

    // PUT replaces every field: send the task back with new priority, due, owner, follow-up.
    let mut t = engine.ok(Method::GET, &format!("/task/{task}"), None).await;
    t["priority"] = json!(80);
    t["owner"] = json!("boss");
    t["due"] = json!("2030-01-02T03:04:05.000+0000");
    t["name"] = json!("Review order 1");
    t["followUp"] = json!("2029-01-02T03:04:05.000+0000");
    engine
        .ok(Method::PUT, &format!("/task/{task}"), Some(t))
        .await;
    let e = expect_stream(bus, task, &step("TaskUpdated")).await;
    let update = data(e.last().unwrap());
    assert_eq!(update["priority"], 80);
    assert_eq!(update["owner"], "boss");
    assert_eq!(update["due"], "2030-01-02T03:04:05.000Z");
    assert_eq!(update["name"], "Review order 1");
    assert_eq!(update["followUp"], "2029-01-02T03:04:05.000Z");
    assert!(
        update.get("description").is_none(),
        "unchanged fields are left out: {update}"
    );

    engine
        .ok(
            Method::POST,
            &format!("/task/{task}/complete"),
            Some(json!({"variables": {}})),
        )
        .await;
    let e = expect_stream(bus, task, &step("TaskCompleted")).await;
    assert_eq!(data(e.last().unwrap())["completedBy"], "mary");
    e
}

/// Adds (`identity-links`) or removes (`identity-links/delete`) a candidate of a task: a
/// `userId` or a `groupId`.
async fn candidates(engine: &Engine, task: &str, action: &str, (kind, id): (&str, &str)) {
    let path = format!("/task/{task}/{action}");
    let link = json!({ kind: id, "type": "candidate" });
    engine.ok(Method::POST, &path, Some(link)).await;
}

#[tokio::test]
async fn poll_sees_listener_changes_timers_multi_instance_call_activities_and_standalone_tasks() {
    let (engine, _bus, bus, _collector) = setup("poll-processes", &[]).await;

    // A create listener adds a candidate user inside the engine's transaction.
    let instance = engine.start("candidateListener", "l-1", json!({})).await;
    let task = engine.task_id(&instance).await;
    let e = expect_stream(&bus, &task, &["TaskCreated"]).await;
    assert_eq!(data(&e[0])["candidateUsers"], json!(["kermit"]));
    assert_eq!(data(&e[0])["candidateGroups"], json!(["approvers"]));

    // A boundary timer removes the task.
    let instance = harness::start_boundary_timer(&engine, "t-1").await;
    let task = engine.task_id(&instance).await;
    let e = expect_stream(&bus, &task, &["TaskCreated", "TaskDeleted"]).await;
    let reason = data(&e[1])["deleteReason"].clone();
    assert!(
        reason.is_string() && reason != "completed",
        "deleteReason {reason}"
    );

    // Multi-instance: one task per voter, each assigned at creation.
    let instance = harness::start_multi_instance(&engine, "m-1").await;
    let tasks = engine
        .tasks(&format!("processInstanceId={instance}"), 3)
        .await;
    let mut assignees = Vec::new();
    for t in &tasks {
        let e = expect_stream(&bus, t["id"].as_str().unwrap(), &["TaskCreated"]).await;
        assignees.push(
            data(&e[0])["assignee"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assignees.sort();
    assert_eq!(assignees, ["ann", "bob", "cid"]);
    engine.delete_instance(&instance).await;
    for t in &tasks {
        expect_stream(
            &bus,
            t["id"].as_str().unwrap(),
            &["TaskCreated", "TaskDeleted"],
        )
        .await;
    }

    // A call activity: the task belongs to the called process, with the business key passed on.
    let (parent, called) = harness::start_call_parent(&engine, "c-1").await;
    let task = engine.task_id(&called).await;
    let e = expect_stream(&bus, &task, &["TaskCreated"]).await;
    assert_eq!(
        data(&e[0])["source"]["processDefinitionKey"],
        "simpleUserTask"
    );
    assert_eq!(data(&e[0])["source"]["businessKey"], "c-1");
    engine.delete_instance(&parent).await;

    // A standalone task (no process), changed, then deleted.
    let id = format!("standalone-{}", Uuid::new_v4().simple());
    engine
        .ok(
            Method::POST,
            "/task/create",
            Some(json!({"id": id, "name": "Call the customer", "priority": 10})),
        )
        .await;
    let e = expect_stream(&bus, &id, &["TaskCreated"]).await;
    assert_eq!(data(&e[0])["source"]["processInstanceId"], Value::Null);
    engine.claim(&id, "demo").await;
    expect_stream(&bus, &id, &["TaskCreated", "TaskAssigned"]).await;
    engine
        .ok(Method::DELETE, &format!("/task/{id}"), None)
        .await;
    expect_stream(&bus, &id, &["TaskCreated", "TaskAssigned", "TaskDeleted"]).await;
}

#[tokio::test]
async fn a_task_created_and_completed_between_two_polls_is_reported() {
    // Polls far apart: the task lives and ends before the next look.
    let (engine, _bus, bus, _collector) = setup("poll-between", &["--poll-interval", "3s"]).await;
    let instance = engine.start("simpleUserTask", "between-1", json!({})).await;
    let task = engine.task_id(&instance).await;
    engine.claim(&task, "demo").await;
    engine
        .ok(
            Method::POST,
            &format!("/task/{task}/complete"),
            Some(json!({})),
        )
        .await;
    let e = expect_stream(&bus, &task, &["TaskCreated", "TaskCompleted"]).await;
    assert_eq!(data(&e[0])["candidateGroups"], json!(["reviewers"]));
    assert_eq!(data(&e[1])["completedBy"], "demo");
}

#[tokio::test]
async fn a_burst_arrives_complete_even_when_the_collector_is_killed_mid_burst() {
    let (engine, _bus, bus, mut collector) = setup("burst", &["--concurrency", "16"]).await;
    const N: usize = 1000;
    let business = format!("burst-{}", Uuid::new_v4().simple());
    let starts = futures::stream::iter(0..N)
        .map(|i| {
            let engine = engine.clone();
            let bk = format!("{business}-{i}");
            async move {
                engine
                    .start(
                        "simpleUserTask",
                        &bk,
                        json!({"i": {"value": i, "type": "Integer"}}),
                    )
                    .await
            }
        })
        .buffer_unordered(8);
    let mut starts = Box::pin(starts);
    let mut instances = Vec::new();
    while let Some(id) = starts.next().await {
        instances.push(id);
        if instances.len() == N / 2 {
            collector.kill();
            collector.spawn();
        }
    }
    // Every task of the burst, from the engine's side.
    let mut tasks = Vec::new();
    for chunk in instances.chunks(100) {
        let ids = chunk.join(",");
        let found = engine
            .tasks(
                &format!("processInstanceIdIn={ids}&maxResults=1000"),
                chunk.len(),
            )
            .await;
        tasks.extend(found.iter().map(|t| t["id"].as_str().unwrap().to_owned()));
    }
    assert_eq!(tasks.len(), N);
    collector.wait_active(Duration::from_secs(30)).await;
    for task in &tasks {
        let e = expect_stream(&bus, task, &["TaskCreated"]).await;
        assert!(data(&e[0])["source"]["businessKey"]
            .as_str()
            .unwrap()
            .starts_with(&business));
    }
    futures::stream::iter(&instances)
        .for_each_concurrent(8, |id| engine.delete_instance(id))
        .await;
    for task in &tasks {
        expect_stream(&bus, task, &["TaskCreated", "TaskDeleted"]).await;
    }
}

#[tokio::test]
async fn a_standby_collector_takes_over_when_the_active_one_dies() {
    let (engine, bus_cluster, bus, mut first) = setup("failover", &[]).await;
    let second = Collector::start(&first.app, &bus_cluster, &[]);
    // Only one of the two works.
    wait_for("second collector up", Duration::from_secs(30), || async {
        reqwest::get(format!("{}/health/ready", second.url()))
            .await
            .ok()
            .filter(|r| r.status().is_success())
    })
    .await;
    assert!(first.is_active().await);
    assert!(!second.is_active().await);

    let instance = engine.start("simpleUserTask", "fo-1", json!({})).await;
    let task = engine.task_id(&instance).await;
    expect_stream(&bus, &task, &["TaskCreated"]).await;

    first.kill();
    let killed_at = std::time::Instant::now();
    second.wait_active(Duration::from_secs(10)).await;
    let takeover = killed_at.elapsed();
    assert!(
        takeover < Duration::from_secs(10),
        "takeover took {takeover:?}"
    );

    engine.claim(&task, "demo").await;
    expect_stream(&bus, &task, &["TaskCreated", "TaskAssigned"]).await;
    // Commands reach the new active collector too.
    let r = send(&bus, &second.app, "UnclaimTask", json!({"taskId": task}))
        .await
        .expect("unclaim");
    assert_recorded(&bus, &r, "TaskAssigned").await;
    expect_stream(
        &bus,
        &task,
        &["TaskCreated", "TaskAssigned", "TaskAssigned"],
    )
    .await;
    engine.delete_instance(&instance).await;
    let metrics = second.metrics().await;
    assert!(metrics.contains("collector_active 1"), "{metrics}");
    // SIGTERM: steps down, releases the lock, exits cleanly.
    let mut second = second;
    second.stop().await;
}
