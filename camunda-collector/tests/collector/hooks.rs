//! Hook mode: the engine plugin posts signed changes to the collector. The local engine is
//! started (by `deploy/scripts/camunda.sh`) to post to 127.0.0.1:7201 with the secret in
//! `.stack/hook-secret`; this test runs the collector there, polling only once an hour, so
//! every change it reports came by hook.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{app_name, data, expect_stream, AppBus, Cluster, Collector, Engine};
use testkit::collector::{hook_listen, hook_secret};

fn via(e: &taskpool_api::bus::RecordedEvent) -> String {
    let m: Value =
        serde_json::from_str(e.metadata.as_ref().expect("metadata").get()).expect("json");
    m["via"].as_str().unwrap_or_default().to_owned()
}

async fn post(url: &str, body: &[u8], ts: Option<&str>, sig: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(ts) = ts {
        req = req.header("X-Taskpool-Timestamp", ts);
    }
    if let Some(sig) = sig {
        req = req.header("X-Taskpool-Signature", sig);
    }
    let r = req.send().await.expect("post hook");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn hooks_report_changes_and_bad_hooks_are_refused() {
    let _hook_address = crate::harness::HOOK_ADDRESS.lock().await;
    let secret = hook_secret();
    let listen = hook_listen();
    assert!(
        std::net::TcpListener::bind(&listen).is_ok(),
        "{listen} is taken (the local stack's collector?): stop it for this test"
    );
    let engine = Engine::connect().await;
    let cluster = Cluster::start(&[]).await;
    let app = app_name("hooks");
    let bus = AppBus::new(cluster.client(&[1, 2, 3]), &app);
    let collector = Collector::start(
        &app,
        &cluster,
        &[
            "--mode",
            "hook",
            "--hook-secret",
            &secret,
            "--listen",
            &listen,
            "--poll-interval",
            "1h",
        ],
    );
    collector.wait_active(Duration::from_secs(30)).await;
    // From here on only hooks report changes (the next poll is an hour away).
    collector.wait_reconciled(Duration::from_secs(120)).await;
    let url = format!("{}/v1/hooks", collector.url());

    crate::harness::warm_up_hooks(&engine, &collector).await;

    // Every kind of change, by hook only.
    let instance = engine
        .start(
            "simpleUserTask",
            "hook-1",
            json!({"amount": {"value": 9, "type": "Integer"}}),
        )
        .await;
    let task = engine.task_id(&instance).await;
    let e = expect_stream(&bus, &task, &["TaskCreated"]).await;
    let created = data(&e[0]);
    assert_eq!(created["candidateGroups"], json!(["reviewers"]));
    assert_eq!(created["payload"], json!({"amount": 9}));
    assert_eq!(created["source"]["businessKey"], "hook-1");
    assert_eq!(created["source"]["processDefinitionKey"], "simpleUserTask");

    let e = crate::every_kind_of_change(&engine, &bus, &task).await;
    assert!(
        e.iter().all(|ev| via(ev) == "hook"),
        "every event came by hook: {:?}",
        e.iter().map(via).collect::<Vec<_>>()
    );

    // A listener's change, a boundary timer, a standalone task: by hook too.
    let instance = engine.start("candidateListener", "hook-2", json!({})).await;
    let task = engine.task_id(&instance).await;
    let e = expect_stream(&bus, &task, &["TaskCreated"]).await;
    assert_eq!(data(&e[0])["candidateUsers"], json!(["kermit"]));
    engine.delete_instance(&instance).await;
    expect_stream(&bus, &task, &["TaskCreated", "TaskDeleted"]).await;

    let instance = crate::harness::start_boundary_timer(&engine, "hook-3").await;
    let task = engine.task_id(&instance).await;
    expect_stream(&bus, &task, &["TaskCreated", "TaskDeleted"]).await;

    // Multi-instance (one request with three records) and a called process's task.
    let instance = crate::harness::start_multi_instance(&engine, "hook-4").await;
    let tasks = engine
        .tasks(&format!("processInstanceId={instance}"), 3)
        .await;
    for t in &tasks {
        let e = expect_stream(&bus, t["id"].as_str().unwrap(), &["TaskCreated"]).await;
        assert_eq!(data(&e[0])["assignee"], t["assignee"]);
    }
    engine.delete_instance(&instance).await;
    let (parent, called) = crate::harness::start_call_parent(&engine, "hook-5").await;
    let child = engine.task_id(&called).await;
    let e = expect_stream(&bus, &child, &["TaskCreated"]).await;
    assert_eq!(data(&e[0])["source"]["businessKey"], "hook-5");
    engine.delete_instance(&parent).await;
    expect_stream(&bus, &child, &["TaskCreated", "TaskDeleted"]).await;

    let id = format!("standalone-{}", Uuid::new_v4().simple());
    crate::harness::create_task(&engine, &id, "Standalone").await;
    expect_stream(&bus, &id, &["TaskCreated"]).await;
    engine
        .ok(Method::DELETE, &format!("/task/{id}"), None)
        .await;
    let e = expect_stream(&bus, &id, &["TaskCreated", "TaskDeleted"]).await;
    assert!(e.iter().all(|ev| via(ev) == "hook"));

    // Bad hooks: refused with a clear reason, nothing emitted.
    let body = br#"{"engine":"default","tasks":[]}"#;
    let now = chrono_now_ms().to_string();
    let good = camunda_collector::hooks::sign(secret.as_bytes(), &now, body);
    assert_eq!(post(&url, body, Some(&now), Some(&good)).await.0, 204);
    let (status, err) = post(&url, body, Some(&now), None).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("bad_signature"))
    );
    let wrong = camunda_collector::hooks::sign(b"not-the-secret", &now, body);
    assert_eq!(post(&url, body, Some(&now), Some(&wrong)).await.0, 401);
    let old = (chrono_now_ms() - 10 * 60 * 1000).to_string();
    let stale = camunda_collector::hooks::sign(secret.as_bytes(), &old, body);
    assert_eq!(post(&url, body, Some(&old), Some(&stale)).await.0, 401);
    let junk = b"{\"tasks\": [{\"event\": 1}]}";
    let signed = camunda_collector::hooks::sign(secret.as_bytes(), &now, junk);
    let (status, err) = post(&url, junk, Some(&now), Some(&signed)).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("bad_body"))
    );
    let huge = vec![b' '; 5 << 20];
    assert_eq!(post(&url, &huge, Some(&now), Some(&good)).await.0, 413);
    let metrics = collector.metrics().await;
    assert!(
        metrics.contains("collector_hooks_total{outcome=\"bad_signature\"} 3"),
        "{metrics}"
    );
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}
