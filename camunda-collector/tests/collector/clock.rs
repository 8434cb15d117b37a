//! Clock skew: the collector's host clock is off from the engine's by 45 s either way, and
//! nothing is missed or delayed, because every watermark is kept in the engine's time (its
//! `Date` header). The reconciliation is ten minutes away, so what arrives came by the
//! incremental polls; the offset shows on `/v1/status` and `/metrics`.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use taskpool_api::tasks::{TaskEvent, TaskFold};

use crate::harness::{
    app_name, data, expect_stream, stream, wait_for, AppBus, Cluster, Collector, Engine,
};

async fn offset(collector: &Collector) -> i64 {
    wait_for(
        "the clock offset on /v1/status",
        Duration::from_secs(30),
        || async {
            let r = reqwest::get(format!("{}/v1/status", collector.url()))
                .await
                .ok()?;
            let s: Value = r.json().await.ok()?;
            s["engine"]["clockOffsetSeconds"].as_i64()
        },
    )
    .await
}

/// Changes made right after the collector started and after its first reconciliation all
/// arrive; those after it by the incremental polls.
async fn nothing_missed(engine: &Engine, bus: &AppBus, collector: &Collector) {
    let early = engine
        .start("simpleUserTask", "skew-early", json!({}))
        .await;
    let early_task = engine.task_id(&early).await;
    engine.claim(&early_task, "demo").await;
    // Seen claimed, whether first looked at before or after the claim.
    wait_for(
        "the early task claimed on the bus",
        Duration::from_secs(60),
        || async {
            let events = stream(bus, &early_task).await;
            let mut fold = TaskFold::default();
            for e in &events {
                fold.apply(&TaskEvent::from_recorded(e).ok()?);
            }
            (fold.task()?.assignee.as_deref() == Some("demo")).then_some(())
        },
    )
    .await;
    collector.wait_reconciled(Duration::from_secs(120)).await;

    let instance = engine.start("simpleUserTask", "skew-1", json!({})).await;
    let task = engine.task_id(&instance).await;
    expect_stream(bus, &task, &["TaskCreated"]).await;
    engine.claim(&task, "demo").await;
    let amount = json!({"value": 1500, "type": "Integer"});
    let path = format!("/process-instance/{instance}/variables/amount");
    engine.ok(Method::PUT, &path, Some(amount)).await;
    let e = expect_stream(bus, &task, &["TaskCreated", "TaskAssigned", "TaskUpdated"]).await;
    assert_eq!(data(&e[2])["payload"]["amount"], 1500);
    let complete = format!("/task/{task}/complete");
    engine.ok(Method::POST, &complete, Some(json!({}))).await;
    let e = expect_stream(
        bus,
        &task,
        &[
            "TaskCreated",
            "TaskAssigned",
            "TaskUpdated",
            "TaskCompleted",
        ],
    )
    .await;
    for event in &e {
        let m: Value = serde_json::from_str(event.metadata.as_ref().expect("metadata").get())
            .expect("metadata json");
        assert_eq!(m["via"], "poll", "{m}");
    }
    engine.delete_instance(&early).await;
}

#[tokio::test]
async fn a_collector_whose_clock_is_off_misses_nothing() {
    let engine = Engine::connect().await;
    for (name, skew, expected) in [("skew-ahead", "+45s", -45), ("skew-behind", "-45s", 45)] {
        let cluster = Cluster::start(&[]).await;
        let collector = Collector::start_skewed(&app_name(name), &cluster, &[], skew);
        collector.wait_active(Duration::from_secs(30)).await;
        let bus = AppBus::new(cluster.client(&[1, 2, 3]), &collector.app);
        nothing_missed(&engine, &bus, &collector).await;
        let seen = offset(&collector).await;
        assert!(
            (seen - expected).abs() <= 2,
            "offset {seen}, expected about {expected}"
        );
        let metrics = collector.metrics().await;
        assert!(
            metrics.contains("collector_engine_clock_offset_seconds"),
            "{metrics}"
        );
    }
}
