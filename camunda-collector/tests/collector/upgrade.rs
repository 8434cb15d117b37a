//! A collector upgraded from the first stream layout (`task-{taskId}`): its state store says
//! what it last emitted on the old stream, at a version the keyed stream does not have. The
//! first change it reports starts the keyed stream with the task's whole state, so the view,
//! which reads both layouts as one task, loses nothing.

use std::time::Duration;

use camunda_collector::store::{Store, Stored};
use serde_json::json;
use taskpool_api::tasks::{SourceReference, Task};

use crate::harness::{app_name, data, expect_stream, AppBus, Cluster, Collector, Engine};

#[tokio::test]
async fn an_upgraded_collector_starts_each_keyed_stream_with_the_whole_task() {
    let engine = Engine::connect().await;
    let app = app_name("upgrade");
    let instance = engine
        .start("simpleUserTask", &format!("{app}-1"), json!({}))
        .await;
    let task = engine.task_id(&instance).await;
    engine.claim(&task, "demo").await;

    // What the previous version remembered: the task unclaimed, at version 4 of `task-{id}`.
    let store = Store::connect(&testkit::collector::database_url(), &app)
        .await
        .expect("the collector's state store (deploy/scripts/postgres.sh start)");
    let before = Stored {
        version: 4,
        position: 40,
        changed_at: "2026-01-01T00:00:00.000Z".into(),
        finished: false,
        task: Task {
            task_id: task.clone(),
            name: Some("Review request".into()),
            candidate_groups: vec!["reviewers".into()],
            source: SourceReference {
                application: app.clone(),
                engine: "default".into(),
                ..Default::default()
            },
            ..Default::default()
        },
    };
    store.save(&task, &before).await.expect("old state");

    let cluster = Cluster::start(&[]).await;
    let bus = AppBus::new(cluster.client(&[1, 2, 3]), &app);
    let collector = Collector::start(&app, &cluster, &[]);
    collector.wait_active(Duration::from_secs(30)).await;
    // The first look (the start's reconciliation) finds the claim: one event with the whole task.
    let events = expect_stream(&bus, &task, &["TaskCreated"]).await;
    let created = data(&events[0]);
    assert_eq!(created["assignee"], "demo", "{created}");
    assert_eq!(created["source"]["application"], app.as_str());
    engine.delete_instance(&instance).await;
    expect_stream(&bus, &task, &["TaskCreated", "TaskDeleted"]).await;
}
