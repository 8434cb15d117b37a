//! The real parts of a taskpool-core test: a MongoDB-compatible server (locally FerretDB:
//! `deploy/scripts/ferretdb.sh start`), a three-node bus, and taskpool-core processes.

use serde_json::Value;
use taskpool_api::bus::{AppendRequest, NewEvent};
use taskpool_api::streams::task_stream;
use taskpool_api::tasks::{SourceReference, Task, TaskEvent};
use taskpool_api::BusClient;
use taskpool_core::store::Store;
use taskpool_core::view::View;
pub use testkit::core::{ferretdb, mongo_url, Core, JWT_SECRET};
pub use testkit::{free_port, wait_for, Cluster, TOKEN};

/// A database of its own per test.
pub fn database(test: &str) -> String {
    format!(
        "t_{test}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// The view store of `database`; fails with how to start the server when it is not there.
pub async fn store(database: &str) -> Store {
    store_at(&mongo_url(), database).await
}

pub async fn store_at(url: &str, database: &str) -> Store {
    let store = Store::connect(url, database).await.expect("mongo url");
    if let Err(e) = store.ping().await {
        panic!(
            "the MongoDB-compatible server at {url} does not answer ({e}); start it with: deploy/scripts/ferretdb.sh start"
        );
    }
    store
}

/// Waits until the stored view of `database` has reached `position`. The projection publishes a
/// batch to readers before it writes it to MongoDB, so the stored view may be a batch behind
/// the position `/health/ready` shows.
pub async fn wait_stored(url: &str, database: &str, position: u64) {
    wait_for(
        &format!("the stored view at position {position}"),
        std::time::Duration::from_secs(60),
        || async {
            let store = Store::connect(url, database).await.ok()?;
            (store.position().await.ok()? >= position).then_some(())
        },
    )
    .await;
}

/// The stored view of `database`, as a restart would load it.
pub async fn stored_view(database: &str) -> View {
    stored_view_at(&mongo_url(), database).await
}

pub async fn stored_view_at(url: &str, database: &str) -> View {
    let mut view = View::default();
    store_at(url, database)
        .await
        .load(&mut view)
        .await
        .expect("load the stored view");
    view
}

/// A task as a collector would report it.
pub fn task(id: &str) -> Task {
    Task {
        task_id: id.into(),
        name: Some(format!("Task {id}")),
        priority: 50,
        created: "2026-11-23T10:00:00.000Z".into(),
        source: SourceReference {
            application: "camunda".into(),
            engine: "default".into(),
            process_definition_key: Some("order".into()),
            process_instance_id: Some(format!("pi-{id}")),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Appends task events (each to its task's stream) in one batch; returns the last position.
pub async fn append(bus: &BusClient, events: &[TaskEvent]) -> u64 {
    let events = events
        .iter()
        .map(|e| NewEvent {
            stream: task_stream(&e.source().application, e.task_id()),
            event_type: e.event_type().into(),
            data: e.to_json().expect("encode"),
            metadata: None,
            id: uuid::Uuid::new_v4(),
        })
        .collect();
    append_raw(bus, events).await
}

pub async fn append_raw(bus: &BusClient, events: Vec<NewEvent>) -> u64 {
    let r = bus
        .append(&AppendRequest {
            events,
            expected_versions: Default::default(),
        })
        .await
        .expect("append");
    r.events.last().map(|e| e.position).expect("appended")
}

/// Any event as JSON data.
pub fn event(stream: &str, event_type: &str, data: Value) -> NewEvent {
    NewEvent::new(stream, event_type, &data).expect("encode")
}
