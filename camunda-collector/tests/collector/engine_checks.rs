//! What the collector checks of its engine: the version it reports, the history level poll
//! mode needs (against the test engine `audit`, whose history level is below full), and
//! tasks the engine forgot without a trace.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use testkit::collector::hook_secret;
use testkit::engine::audit_engine_url;

use crate::harness::{
    app_name, data, expect_stream, wait_for, AppBus, Cluster, Collector, Engine, HOOK_ADDRESS,
};

/// A hook-mode collector on the audit engine (poll mode refuses that engine's history level).
pub(crate) fn audit_hook_collector(bus: &Cluster, test: &str) -> Collector {
    let (url, secret) = (audit_engine_url(), hook_secret());
    Collector::start(
        &app_name(test),
        bus,
        &[
            "--engine-url",
            url.as_str(),
            "--mode",
            "hook",
            "--hook-secret",
            secret.as_str(),
        ],
    )
}

async fn status(collector: &Collector) -> Option<Value> {
    let r = reqwest::get(format!("{}/v1/status", collector.url()))
        .await
        .ok()?;
    r.json().await.ok()
}

/// The collector's `/v1/status` once its engine's history has been judged.
async fn judged(collector: &Collector) -> Value {
    wait_for(
        "the engine's history judged",
        Duration::from_secs(60),
        || async {
            status(collector)
                .await
                .filter(|s| s["engine"]["history"].is_string())
        },
    )
    .await
}

#[tokio::test]
async fn poll_mode_refuses_an_engine_whose_history_is_below_full() {
    let _audit = crate::harness::AUDIT_ENGINE.lock().await;
    let engine = Engine::connect_to(&audit_engine_url()).await;
    // Work to judge by: a task with candidates in an instance with variables.
    engine
        .start(
            "simpleUserTask",
            "audit-1",
            json!({"amount": {"value": 1, "type": "Integer"}}),
        )
        .await;
    let bus = Cluster::start(&[]).await;
    let url = audit_engine_url();
    let mut polling = Collector::start(
        &app_name("audit-poll"),
        &bus,
        &["--engine-url", url.as_str()],
    );
    let exit = wait_for(
        "the poll-mode collector to refuse",
        Duration::from_secs(60),
        || {
            let exited = polling.exited();
            async move { exited }
        },
    )
    .await;
    assert!(!exit.success(), "{exit}");
    let log = polling.log();
    assert!(
        log.contains("camunda.bpm.history-level=full"),
        "the refusal names the setting to change: {log}"
    );

    // Hook mode reads no history for changes: it warns, reports, and runs on.
    let hooked = audit_hook_collector(&bus, "audit-hook");
    let s = judged(&hooked).await;
    assert_eq!(s["engine"]["history"], "too_low", "{s}");
    hooked.wait_active(Duration::from_secs(30)).await;
}

#[tokio::test]
async fn status_and_metrics_name_the_engine_version() {
    let engine = Engine::connect().await;
    engine.start("simpleUserTask", "version-1", json!({})).await;
    let version = engine.ok(Method::GET, "/version", None).await["version"]
        .as_str()
        .expect("version")
        .to_owned();
    let bus = Cluster::start(&[]).await;
    let collector = Collector::start(&app_name("version"), &bus, &[]);
    let s = judged(&collector).await;
    assert_eq!(s["engine"]["version"], version.as_str(), "{s}");
    assert_eq!(s["engine"]["history"], "full", "{s}");
    let info = format!("collector_engine_info{{version=\"{version}\"}} 1");
    assert!(collector.metrics().await.contains(&info), "{info}");
}

#[tokio::test]
async fn a_task_the_engine_forgot_without_history_is_removed_at_reconciliation() {
    let engine = Engine::connect().await;
    let bus = Cluster::start(&[]).await;
    let mut collector = Collector::start(&app_name("vanish"), &bus, &[]);
    let app = AppBus::new(bus.client(&[1, 2, 3]), &collector.app);
    collector.wait_active(Duration::from_secs(30)).await;
    let instance = engine.start("simpleUserTask", "vanish-1", json!({})).await;
    let task = engine.task_id(&instance).await;
    expect_stream(&app, &task, &["TaskCreated"]).await;

    // While the collector is away, the instance goes, and its history with it.
    collector.stop().await;
    engine.delete_instance(&instance).await;
    engine
        .ok(
            Method::DELETE,
            &format!("/history/process-instance/{instance}"),
            None,
        )
        .await;
    let gone = engine
        .ok(Method::GET, &format!("/history/task?taskId={task}"), None)
        .await;
    assert_eq!(gone, json!([]), "history of the task is gone");

    collector.spawn();
    let e = expect_stream(&app, &task, &["TaskCreated", "TaskDeleted"]).await;
    assert_eq!(data(&e[1])["deleteReason"], "vanished");
}

#[tokio::test]
async fn a_task_names_its_camunda_form_whichever_way_it_was_seen() {
    let _hook_address = HOOK_ADDRESS.lock().await;
    let engine = Engine::connect().await;
    let bus = Cluster::start(&[]).await;
    let hooked = crate::variables::hook_collector(&engine, &bus, "form-hook", &[]).await;
    let polled = Collector::start(&app_name("form-poll"), &bus, &[]);
    polled.wait_active(Duration::from_secs(30)).await;
    let instance = engine.start("formRef", "form-1", json!({})).await;
    let task = engine.task_id(&instance).await;
    let expected = json!({"key": "invoiceApproval", "binding": "version", "version": 3});
    for (collector, via) in [(&hooked, "hook"), (&polled, "poll")] {
        let app = AppBus::new(bus.client(&[1, 2, 3]), &collector.app);
        let e = expect_stream(&app, &task, &["TaskCreated"]).await;
        assert_eq!(data(&e[0])["formRef"], expected, "{via}");
    }
    // The start event's form, on the definition's announcement.
    let definition = engine
        .ok(Method::GET, "/process-definition/key/formRef", None)
        .await;
    let id = definition["id"].as_str().expect("a definition id");
    let stream = taskpool_api::streams::process_definition_stream(&polled.app, id);
    let client = bus.client(&[1, 2, 3]);
    let announced = wait_for(
        "the definition announced",
        Duration::from_secs(60),
        || async {
            let page = client.stream(&stream, 0, 1).await.ok()?;
            page.events.first().map(data)
        },
    )
    .await;
    assert_eq!(
        announced["formRef"],
        json!({"key": "invoiceRequest", "binding": "latest", "version": null})
    );
}
