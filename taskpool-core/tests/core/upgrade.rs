//! Upgrading a stack written before application keys. The bus holds streams of the first
//! layout (`task-{id}`, `process-definition-{id}`, `identity-{application}`): they are read as
//! belonging to the application in their data. A view stored in the old layout (keys without
//! application) is dropped at start and replayed from the bus. A task the upgraded collector
//! continues on its keyed stream stays one task.

use mongodb::bson::{doc, Document};
use reqwest::StatusCode;
use serde_json::json;
use taskpool_api::streams::task_stream;
use taskpool_api::tasks::{
    SourceReference, TaskAssigned, TaskCompleted, TaskEvent, IDENTITY_SYNCED,
    PROCESS_DEFINITION_REGISTERED,
};

use crate::harness::{append_raw, database, event, mongo_url, task, Cluster, Core};

fn local(id: &str) -> taskpool_api::tasks::Task {
    let mut t = task(id);
    t.source.application = "local".into();
    t.candidate_groups = vec!["clerks".into()];
    t
}

fn on(stream: &str, e: &TaskEvent) -> taskpool_api::bus::NewEvent {
    let data: serde_json::Value =
        serde_json::from_str(e.to_json().expect("encode").get()).expect("json");
    event(stream, e.event_type(), data)
}

#[tokio::test]
async fn a_bus_and_a_view_of_the_first_layout_are_read_after_an_upgrade() {
    let bus = Cluster::start(&[]).await;
    let client = bus.client(&[1, 2, 3]);
    let db = database("upgrade");
    let source = || SourceReference {
        application: "local".into(),
        ..local("x").source
    };

    // What the previous version wrote to the bus.
    let definition = json!({
        "application": "local", "key": "order", "id": "order:1:abc", "version": 1,
        "name": "Order", "versionTag": null, "startableInTasklist": true,
        "candidateStarterUsers": [], "candidateStarterGroups": [], "formKey": null, "tenantId": null
    });
    let identity = json!({"application": "local", "users": [
        {"id": "fozzie", "firstName": null, "lastName": null, "email": null, "groups": ["clerks"]}
    ]});
    let old_head = append_raw(
        &client,
        vec![
            on("task-7", &TaskEvent::Created(local("7"))),
            on("task-8", &TaskEvent::Created(local("8"))),
            on(
                "task-8",
                &TaskEvent::Completed(TaskCompleted {
                    task_id: "8".into(),
                    completed_by: None,
                    source: source(),
                }),
            ),
            event(
                "process-definition-order:1:abc",
                PROCESS_DEFINITION_REGISTERED,
                definition,
            ),
            event("identity-local", IDENTITY_SYNCED, identity),
        ],
    )
    .await;
    // ... and its stored view: documents keyed by task id alone, no layout in the position.
    let mongo = mongodb::Client::with_uri_str(mongo_url())
        .await
        .expect("mongo client");
    let stored = mongo.database(&db);
    stored
        .collection::<Document>("tasks")
        .insert_one(doc! {"_id": "7", "state": "open", "position": 1_i64, "name": "stale"})
        .await
        .expect("old task document");
    stored
        .collection::<Document>("view_position")
        .insert_one(doc! {"_id": "view", "position": old_head as i64})
        .await
        .expect("old position");

    let core = Core::start(&bus, &db, &[]).await;
    core.wait_position(old_head).await;
    // The old streams, under the application in their data; the engine's groups count there.
    let (status, t) = core.get("/api/v1/tasks/local/7", "fozzie", &[]).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(
        t["name"], "Task 7",
        "replayed from the bus, not the stale document"
    );
    let (status, _) = core.get("/api/v1/tasks/local/8", "fozzie", &[]).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "completed before the upgrade"
    );
    let (status, p) = core.get("/api/v1/processes", "fozzie", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(p["processes"][0]["application"], "local");

    // The upgraded collector goes on with task 7 on its keyed stream.
    let mut renamed = local("7");
    renamed.name = Some("Task 7, continued".into());
    let head = append_raw(
        &client,
        vec![
            on(
                &task_stream("local", "7"),
                &TaskEvent::Created(renamed.clone()),
            ),
            on(
                &task_stream("local", "7"),
                &TaskEvent::Assigned(TaskAssigned {
                    task_id: "7".into(),
                    assignee: Some("fozzie".into()),
                    source: source(),
                }),
            ),
        ],
    )
    .await;
    core.wait_position(head).await;
    let (ids, total) = core.ids("size=100", "fozzie", &[]).await;
    assert_eq!((ids, total), (vec!["7".to_owned()], 1), "one task, not two");
    let (_, t) = core.get("/api/v1/tasks/local/7", "fozzie", &[]).await;
    assert_eq!(
        (t["name"].as_str(), t["assignee"].as_str()),
        (Some("Task 7, continued"), Some("fozzie"))
    );
    crate::harness::wait_stored(&mongo_url(), &db, head).await;
    let old_documents = stored
        .collection::<Document>("tasks")
        .count_documents(doc! {"_id": "7"})
        .await
        .expect("count");
    assert_eq!(old_documents, 0, "the old layout's documents are gone");
}
