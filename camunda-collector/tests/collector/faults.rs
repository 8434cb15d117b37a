//! Faults around the collector: the bus leader killed while changes flow, and the engine out
//! of reach for a while (a TCP relay in front of the real engine is cut and restored). Every
//! change must still arrive exactly once, in order.

use std::time::Duration;

use serde_json::json;
use testkit::relay::Link;

use crate::harness::{app_name, engine_url, expect_stream, AppBus, Cluster, Collector, Engine};

#[tokio::test]
async fn changes_survive_a_killed_bus_leader() {
    let engine = Engine::connect().await;
    let mut cluster = Cluster::start(&[]).await;
    let app = app_name("bus-fault");
    let bus = AppBus::new(cluster.client(&[1, 2, 3]), &app);
    let collector = Collector::start(&app, &cluster, &[]);
    collector.wait_active(Duration::from_secs(30)).await;

    let mut tasks = Vec::new();
    let mut instances = Vec::new();
    for i in 0..10 {
        let instance = engine
            .start("simpleUserTask", &format!("bf-{i}"), json!({}))
            .await;
        tasks.push(engine.task_id(&instance).await);
        instances.push(instance);
    }
    // Seen as created first, so that each claim below must arrive as its own event (a poller
    // that first sees a task already claimed reports it created with its assignee).
    for task in &tasks {
        expect_stream(&bus, task, &["TaskCreated"]).await;
    }
    let leader = cluster.leader().await;
    cluster.kill(leader);
    for task in &tasks {
        engine.claim(task, "demo").await;
    }
    for task in &tasks {
        expect_stream(&bus, task, &["TaskCreated", "TaskAssigned"]).await;
    }
    for instance in &instances {
        engine.delete_instance(instance).await;
    }
    for task in &tasks {
        expect_stream(&bus, task, &["TaskCreated", "TaskAssigned", "TaskDeleted"]).await;
    }
}

#[tokio::test]
async fn changes_made_while_the_engine_is_out_of_reach_arrive_after() {
    let engine = Engine::connect().await;
    let cluster = Cluster::start(&[]).await;
    let app = app_name("engine-fault");
    let bus = AppBus::new(cluster.client(&[1, 2, 3]), &app);
    let link = Link::new();
    let url = link.relayed(&engine_url()).await;
    let collector = Collector::start(&app, &cluster, &["--engine-url", &url]);
    collector.wait_active(Duration::from_secs(30)).await;

    let instance = engine.start("simpleUserTask", "ef-1", json!({})).await;
    let task = engine.task_id(&instance).await;
    expect_stream(&bus, &task, &["TaskCreated"]).await;

    // The engine goes out of reach; changes go on behind the collector's back.
    link.refuse();
    engine.claim(&task, "demo").await;
    let second = engine.start("simpleUserTask", "ef-2", json!({})).await;
    let second_task = engine.task_id(&second).await;
    crate::harness::wait_for("failed poll cycles", Duration::from_secs(30), || async {
        let m = collector.metrics().await;
        m.contains("collector_poll_cycles_total{kind=\"incremental\",outcome=\"error\"}")
            .then_some(())
    })
    .await;
    assert_eq!(crate::harness::stream(&bus, &second_task).await.len(), 0);

    link.restore();
    expect_stream(&bus, &task, &["TaskCreated", "TaskAssigned"]).await;
    expect_stream(&bus, &second_task, &["TaskCreated"]).await;
    engine.delete_instance(&instance).await;
    engine.delete_instance(&second).await;
    expect_stream(&bus, &task, &["TaskCreated", "TaskAssigned", "TaskDeleted"]).await;
}
