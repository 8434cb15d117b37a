//! Variables in the payload: every way a variable changes (REST, a correlated message, a
//! delegate, a listener, task-local ones) reaches the task's payload in both modes, and hook
//! and poll mode give the same payload for every type of variable.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Map, Value};
use taskpool_api::tasks::{TaskEvent, TaskFold};
use testkit::collector::{hook_listen, hook_secret};

use crate::harness::{
    app_name, expect_stream, stream, wait_for, warm_up_hooks, AppBus, Cluster, Collector, Engine,
    HOOK_ADDRESS,
};

/// The task's payload as its stream folds, and how each event came (`via`).
async fn folded(bus: &AppBus, task: &str) -> Option<(Map<String, Value>, Vec<String>)> {
    let events = stream(bus, task).await;
    let mut fold = TaskFold::default();
    let mut via = Vec::new();
    for e in &events {
        fold.apply(&TaskEvent::from_recorded(e).expect("task event"));
        let m: Value = serde_json::from_str(e.metadata.as_ref()?.get()).ok()?;
        via.push(m["via"].as_str().unwrap_or_default().to_owned());
    }
    Some((fold.task()?.payload.clone(), via))
}

/// Waits until the task's payload on the bus is `expected`; returns how its events came.
async fn expect_payload(bus: &AppBus, task: &str, expected: Value) -> Vec<String> {
    let expected = expected.as_object().expect("an object").clone();
    wait_for(
        &format!("payload of {task} to be {expected:?}"),
        Duration::from_secs(60),
        || async {
            let (payload, via) = folded(bus, task).await?;
            assert!(!payload.contains_key("hidden"), "filtered out: {payload:?}");
            (payload == expected).then_some(via)
        },
    )
    .await
}

/// Changes the variables of a `variableChanges` instance in every way the engine allows and
/// checks that each change reaches the payload. Returns how the events came.
async fn every_kind_of_variable_change(engine: &Engine, bus: &AppBus) -> Vec<String> {
    let start = json!({"amount": {"value": 5, "type": "Integer"}, "hidden": {"value": 1, "type": "Integer"}});
    let instance = engine.start("variableChanges", "vars-1", start).await;
    let task = engine.task_id(&instance).await;
    expect_stream(bus, &task, &["TaskCreated"]).await;
    expect_payload(bus, &task, json!({"amount": 5})).await;

    // REST: one variable set, then a modification that adds one and removes another.
    let path = format!("/process-instance/{instance}/variables");
    let amount = json!({"value": 1500, "type": "Integer"});
    engine
        .ok(Method::PUT, &format!("{path}/amount"), Some(amount))
        .await;
    expect_payload(bus, &task, json!({"amount": 1500})).await;
    let change = json!({"modifications": {"note": {"value": "Grüße ✓", "type": "String"}}, "deletions": ["amount"]});
    engine.ok(Method::POST, &path, Some(change)).await;
    expect_payload(bus, &task, json!({"note": "Grüße ✓"})).await;

    // A task-local variable, which hides the process variable of the same name.
    let local = format!("/task/{task}/localVariables/note");
    let value = json!({"value": "local note", "type": "String"});
    engine.ok(Method::PUT, &local, Some(value)).await;
    expect_payload(bus, &task, json!({"note": "local note"})).await;

    // A message correlated with variables; a delegate and a listener set more.
    let message = json!({"messageName": "dataArrived", "processInstanceId": instance,
        "processVariables": {"customer": {"value": "ACME", "type": "String"}}});
    engine.ok(Method::POST, "/message", Some(message)).await;
    let enriched = json!({"note": "local note", "customer": "ACME", "stage": "enriched", "enrichedBy": "listener"});
    expect_payload(bus, &task, enriched).await;

    // The task-local variable removed: the process variable shows again.
    engine.ok(Method::DELETE, &local, None).await;
    let via = expect_payload(
        bus,
        &task,
        json!({"note": "Grüße ✓", "customer": "ACME", "stage": "enriched", "enrichedBy": "listener"}),
    )
    .await;
    engine.delete_instance(&instance).await;
    via
}

const FILTER: [&str; 2] = ["--variable-filter", "variableChanges:exclude=hidden"];

#[tokio::test]
async fn poll_mode_follows_every_kind_of_variable_change() {
    let engine = Engine::connect().await;
    let cluster = Cluster::start(&[]).await;
    let collector = Collector::start(&app_name("vars-poll"), &cluster, &FILTER);
    let bus = AppBus::new(cluster.client(&[1, 2, 3]), &collector.app);
    collector.wait_active(Duration::from_secs(30)).await;
    every_kind_of_variable_change(&engine, &bus).await;
}

/// A collector in hook mode on the engine's hook address, polling once an hour (after its
/// first reconciliation, every change it reports came by hook), once hooks reach it.
pub(crate) async fn hook_collector(
    engine: &Engine,
    cluster: &Cluster,
    test: &str,
    extra: &[&str],
) -> Collector {
    let (secret, listen) = (hook_secret(), hook_listen());
    let mut flags = vec![
        "--mode",
        "hook",
        "--hook-secret",
        &secret,
        "--listen",
        &listen,
        "--poll-interval",
        "1h",
    ];
    flags.extend_from_slice(extra);
    let collector = Collector::start(&app_name(test), cluster, &flags);
    collector.wait_active(Duration::from_secs(30)).await;
    collector.wait_reconciled(Duration::from_secs(120)).await;
    warm_up_hooks(engine, &collector).await;
    collector
}

#[tokio::test]
async fn hook_mode_follows_every_kind_of_variable_change() {
    let _hook_address = HOOK_ADDRESS.lock().await;
    let engine = Engine::connect().await;
    let cluster = Cluster::start(&[]).await;
    let collector = hook_collector(&engine, &cluster, "vars-hook", &FILTER).await;
    let bus = AppBus::new(cluster.client(&[1, 2, 3]), &collector.app);
    let via = every_kind_of_variable_change(&engine, &bus).await;
    assert!(via.iter().all(|v| v == "hook"), "{via:?}");
}

/// One variable of every type Camunda has, as the REST API takes it, and what the payload
/// holds for it (`None`: left out, it has no plain form).
fn every_type() -> Vec<(&'static str, Value, Option<Value>)> {
    // The engine keeps a String in a 4,000-character column; longer text goes as Json.
    let long: String = "Grüße ✓ 🚀 ".repeat(300);
    let large = serde_json::to_string(&"Grüße ✓ 🚀 ".repeat(3_000)).expect("json text");
    let json_object = json!({"objectTypeName": "java.util.LinkedHashMap", "serializationDataFormat": "application/json"});
    vec![
        (
            "text",
            json!({"value": "Grüße ✓ 🚀", "type": "String"}),
            Some(json!("Grüße ✓ 🚀")),
        ),
        (
            "long",
            json!({"value": long, "type": "String"}),
            Some(json!(long)),
        ),
        (
            "large",
            json!({"value": large, "type": "Json"}),
            Some(serde_json::from_str(&large).expect("json")),
        ),
        (
            "empty",
            json!({"value": "", "type": "String"}),
            Some(json!("")),
        ),
        (
            "flag",
            json!({"value": true, "type": "Boolean"}),
            Some(json!(true)),
        ),
        (
            "small",
            json!({"value": 7, "type": "Short"}),
            Some(json!(7)),
        ),
        (
            "count",
            json!({"value": -42, "type": "Integer"}),
            Some(json!(-42)),
        ),
        (
            "big",
            json!({"value": 5_000_000_000_i64, "type": "Long"}),
            Some(json!(5_000_000_000_i64)),
        ),
        (
            "ratio",
            json!({"value": 1.25, "type": "Double"}),
            Some(json!(1.25)),
        ),
        (
            "when",
            json!({"value": "2026-01-02T03:04:05.678+0000", "type": "Date"}),
            Some(json!("2026-01-02T03:04:05.678Z")),
        ),
        (
            "nothing",
            json!({"value": null, "type": "Null"}),
            Some(Value::Null),
        ),
        (
            "doc",
            json!({"value": "{\"a\":[1,2],\"ü\":null}", "type": "Json"}),
            Some(json!({"a": [1, 2], "ü": null})),
        ),
        (
            "markup",
            json!({"value": "<order id=\"1\">ü</order>", "type": "Xml"}),
            Some(json!("<order id=\"1\">ü</order>")),
        ),
        (
            "order",
            json!({"value": "{\"n\":1}", "type": "Object", "valueInfo": json_object}),
            Some(json!({"n": 1})),
        ),
        ("blob", json!({"value": "AAEC", "type": "Bytes"}), None),
    ]
}

fn expected(vars: &[(&str, Value, Option<Value>)]) -> Value {
    let map: Map<String, Value> = vars
        .iter()
        .filter_map(|(name, _, plain)| Some(((*name).to_owned(), plain.clone()?)))
        .collect();
    Value::Object(map)
}

#[tokio::test]
async fn hook_and_poll_give_one_payload_for_every_variable_type() {
    let _hook_address = HOOK_ADDRESS.lock().await;
    let engine = Engine::connect().await;
    let cluster = Cluster::start(&[]).await;
    let hooked = hook_collector(&engine, &cluster, "types-hook", &[]).await;
    let polled = Collector::start(&app_name("types-poll"), &cluster, &[]);
    polled.wait_active(Duration::from_secs(30)).await;
    let hook_bus = AppBus::new(cluster.client(&[1, 2, 3]), &hooked.app);
    let poll_bus = AppBus::new(cluster.client(&[1, 2, 3]), &polled.app);

    let vars = every_type();
    let start: Map<String, Value> = vars
        .iter()
        .map(|(name, typed, _)| ((*name).to_owned(), typed.clone()))
        .collect();
    let instance = engine
        .start("simpleUserTask", "types-1", Value::Object(start))
        .await;
    let task = engine.task_id(&instance).await;
    let via = expect_payload(&hook_bus, &task, expected(&vars)).await;
    assert_eq!(via, ["hook"]);
    expect_payload(&poll_bus, &task, expected(&vars)).await;

    // Each value changed through REST, in one call: both modes follow alike.
    let changed: Vec<(&str, Value, Option<Value>)> = vec![
        (
            "text",
            json!({"value": "東京", "type": "String"}),
            Some(json!("東京")),
        ),
        (
            "count",
            json!({"value": 43, "type": "Integer"}),
            Some(json!(43)),
        ),
        (
            "doc",
            json!({"value": "[true]", "type": "Json"}),
            Some(json!([true])),
        ),
        (
            "when",
            json!({"value": "2027-06-30T23:59:59.000+0000", "type": "Date"}),
            Some(json!("2027-06-30T23:59:59.000Z")),
        ),
    ];
    let modifications: Map<String, Value> = changed
        .iter()
        .map(|(name, typed, _)| ((*name).to_owned(), typed.clone()))
        .collect();
    let body = json!({"modifications": modifications, "deletions": ["large"]});
    let path = format!("/process-instance/{instance}/variables");
    engine.ok(Method::POST, &path, Some(body)).await;
    let mut after: Vec<(&str, Value, Option<Value>)> = vars
        .into_iter()
        .filter(|(name, _, _)| *name != "large" && !changed.iter().any(|c| c.0 == *name))
        .collect();
    after.extend(changed);
    let via = expect_payload(&hook_bus, &task, expected(&after)).await;
    assert!(via.iter().all(|v| v == "hook"), "{via:?}");
    expect_payload(&poll_bus, &task, expected(&after)).await;
    engine.delete_instance(&instance).await;
}

#[tokio::test]
async fn a_subtask_sees_its_parent_tasks_variables_in_poll_mode() {
    let engine = Engine::connect().await;
    let cluster = Cluster::start(&[]).await;
    let collector = Collector::start(&app_name("vars-subtask"), &cluster, &[]);
    let bus = AppBus::new(cluster.client(&[1, 2, 3]), &collector.app);
    collector.wait_active(Duration::from_secs(30)).await;
    let parent = format!("parent-{}", uuid::Uuid::new_v4().simple());
    let child = format!("child-{}", uuid::Uuid::new_v4().simple());
    crate::harness::create_task(&engine, &parent, "Parent").await;
    let value = json!({"value": "from the parent", "type": "String"});
    let path = format!("/task/{parent}/localVariables/context");
    engine.ok(Method::PUT, &path, Some(value)).await;
    let sub = json!({"id": child, "name": "Child", "parentTaskId": parent});
    engine.ok(Method::POST, "/task/create", Some(sub)).await;
    expect_payload(&bus, &child, json!({"context": "from the parent"})).await;
    for id in [&child, &parent] {
        engine
            .ok(Method::DELETE, &format!("/task/{id}"), None)
            .await;
    }
}
