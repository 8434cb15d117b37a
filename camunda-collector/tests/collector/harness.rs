//! The real parts of a collector test: the local Camunda engine and PostgreSQL (started by
//! `deploy/scripts/postgres.sh start && deploy/scripts/camunda.sh start`; testkit drives the
//! engine's REST API), a three-node bus, and collector processes.

use std::time::Duration;

use serde_json::{json, Value};
use taskpool_api::bus::RecordedEvent;
use taskpool_api::streams::task_stream;
use taskpool_api::BusClient;
pub use testkit::collector::Collector;
pub use testkit::engine::engine_url;
pub use testkit::{wait_for, Cluster, Engine};

/// The engine posts its hooks to one address: hook-mode tests take turns holding it.
pub static HOOK_ADDRESS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Held by tests that change the audit engine's identity tables, and by those that read them.
pub static AUDIT_ENGINE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A unique application name per test, so tests share the engine but not their state.
pub fn app_name(test: &str) -> String {
    format!("{test}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// The bus as one application's test reads it: its task streams are
/// `task/{application}/{taskId}`. Derefs to the client for everything else.
#[derive(Clone)]
pub struct AppBus {
    client: BusClient,
    pub app: String,
}

impl AppBus {
    pub fn new(client: BusClient, app: &str) -> AppBus {
        AppBus {
            client,
            app: app.to_owned(),
        }
    }
}

impl std::ops::Deref for AppBus {
    type Target = BusClient;

    fn deref(&self) -> &BusClient {
        &self.client
    }
}

/// The events of a task's stream.
pub async fn stream(bus: &AppBus, task_id: &str) -> Vec<RecordedEvent> {
    bus.stream(&task_stream(&bus.app, task_id), 0, 1000)
        .await
        .map(|p| p.events)
        .unwrap_or_default()
}

pub fn types(events: &[RecordedEvent]) -> Vec<String> {
    events.iter().map(|e| e.event_type.clone()).collect()
}

pub fn data(e: &RecordedEvent) -> Value {
    serde_json::from_str(e.data.get()).expect("event data")
}

/// Waits until the task's stream holds exactly `expected` (as event types) and returns it;
/// fails at once if it holds more or different events. The deadline is generous: on a small
/// machine another test's burst of a thousand tasks can hold the engine for a while.
pub async fn expect_stream(bus: &AppBus, task_id: &str, expected: &[&str]) -> Vec<RecordedEvent> {
    wait_for(
        &format!("task {task_id} stream to be {expected:?}"),
        Duration::from_secs(90),
        || async move {
            let events = stream(bus, task_id).await;
            let got = types(&events);
            assert!(
                got.len() <= expected.len() && got.iter().zip(expected).all(|(a, b)| a == b),
                "task {task_id}: stream is {got:?}, expected {expected:?}"
            );
            (got.len() == expected.len()).then_some(events)
        },
    )
    .await
}

/// An instance of `boundaryTimer` whose timer ends its task after a second.
pub async fn start_boundary_timer(engine: &Engine, business_key: &str) -> String {
    let timeout = json!({"timeout": {"value": "PT1S", "type": "String"}});
    engine.start("boundaryTimer", business_key, timeout).await
}

/// An instance of `multiInstance` with three voters: one task each, assigned at creation.
pub async fn start_multi_instance(engine: &Engine, business_key: &str) -> String {
    let voters = json!({"voters": {
        "value": "[\"ann\",\"bob\",\"cid\"]",
        "type": "Object",
        "valueInfo": {"objectTypeName": "java.util.ArrayList<java.lang.String>", "serializationDataFormat": "application/json"}
    }});
    engine.start("multiInstance", business_key, voters).await
}

/// An instance of `callParent` and the instance it called (which holds the task).
pub async fn start_call_parent(engine: &Engine, business_key: &str) -> (String, String) {
    let parent = engine.start("callParent", business_key, json!({})).await;
    let path = format!("/process-instance?superProcessInstance={parent}");
    let children = engine.ok(reqwest::Method::GET, &path, None).await;
    let called = children[0]["id"]
        .as_str()
        .expect("called instance")
        .to_owned();
    (parent, called)
}

/// A standalone task (no process).
pub async fn create_task(engine: &Engine, id: &str, name: &str) {
    let task = json!({"id": id, "name": name});
    engine
        .ok(reqwest::Method::POST, "/task/create", Some(task))
        .await;
}

/// While no collector listened, the engine plugin's circuit breaker may have opened (other
/// tests change tasks too); it drops hooks until a probe goes through. Makes changes until one
/// arrives at `collector`, so the changes a test makes next are not dropped.
pub async fn warm_up_hooks(engine: &Engine, collector: &Collector) {
    let mut warm_up = Vec::new();
    wait_for("a first hook", Duration::from_secs(60), || {
        let id = format!("warm-up-{}", uuid::Uuid::new_v4().simple());
        warm_up.push(id.clone());
        async move {
            create_task(engine, &id, "warm-up").await;
            let m = collector.metrics().await;
            m.contains("collector_hooks_total{outcome=\"accepted\"}")
                .then_some(())
        }
    })
    .await;
    for id in &warm_up {
        engine
            .ok(reqwest::Method::DELETE, &format!("/task/{id}"), None)
            .await;
    }
}
