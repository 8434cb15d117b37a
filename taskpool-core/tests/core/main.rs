//! taskpool-core against real parts: a three-node bus, a MongoDB-compatible server, and (for
//! actions) the Camunda engine with its collector.

mod actions;
mod authz;
mod harness;
mod queries;
mod service;
mod trace;
mod upgrade;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use taskpool_api::streams::{identity_stream, process_definition_stream};
use taskpool_api::task_body::TaskBody;
use taskpool_api::tasks::{
    SourceReference, TaskAssigned, TaskCandidatesChanged, TaskCompleted, TaskDeleted, TaskEvent,
    TaskUpdated, IDENTITY_SYNCED, PROCESS_DEFINITION_REGISTERED,
};
use taskpool_core::store::{Changes, TaskRecord};
use taskpool_core::view::{TaskView, Tombstone, View};

use harness::{append, append_raw, database, event, stored_view, task, wait_for, Cluster, Core};

fn source() -> SourceReference {
    task("x").source
}

#[tokio::test]
async fn every_event_type_is_projected_and_stored() {
    let bus = Cluster::start(&[]).await;
    let client = bus.client(&[1, 2, 3]);
    let db = database("events");
    let core = Core::start(&bus, &db, &[]).await;

    let mut t1 = task("t1");
    t1.candidate_groups = vec!["clerks".into()];
    t1.payload.insert("amount".into(), json!(250));
    t1.payload.insert("customer.name".into(), json!("ACME"));
    let t2 = task("t2");
    let t3 = task("t3");
    append(
        &client,
        &[
            TaskEvent::Created(t1.clone()),
            TaskEvent::Created(t2.clone()),
            TaskEvent::Created(t3.clone()),
        ],
    )
    .await;
    append(
        &client,
        &[
            TaskEvent::Assigned(TaskAssigned {
                task_id: "t1".into(),
                assignee: Some("kermit".into()),
                source: source(),
            }),
            TaskEvent::CandidatesChanged(TaskCandidatesChanged {
                task_id: "t1".into(),
                candidate_users: vec!["piggy".into()],
                candidate_groups: vec!["clerks".into(), "managers".into()],
                source: source(),
            }),
            TaskEvent::Updated(TaskUpdated {
                task_id: "t1".into(),
                source: source(),
                name: Some(Some("Approve order".into())),
                priority: Some(80),
                due: Some(Some("2026-12-01T00:00:00.000Z".into())),
                payload: Some(serde_json::from_value(json!({"amount": 300})).expect("map")),
                ..Default::default()
            }),
            TaskEvent::Completed(TaskCompleted {
                task_id: "t2".into(),
                completed_by: Some("kermit".into()),
                source: source(),
            }),
            TaskEvent::Deleted(TaskDeleted {
                task_id: "t3".into(),
                delete_reason: Some("cancelled".into()),
                source: source(),
            }),
        ],
    )
    .await;
    let definition = json!({
        "application": "camunda", "key": "order", "id": "order:1:abc", "version": 1,
        "name": "Order", "versionTag": null, "startableInTasklist": true,
        "candidateStarterUsers": [], "candidateStarterGroups": [], "formKey": null, "tenantId": null
    });
    let identity = json!({"application": "camunda", "users": [
        {"id": "fozzie", "firstName": "Fozzie", "lastName": "Bear", "email": null, "groups": ["managers"]}
    ]});
    let head = append_raw(
        &client,
        vec![
            event(
                &process_definition_stream("camunda", "order:1:abc"),
                PROCESS_DEFINITION_REGISTERED,
                definition,
            ),
            event(&identity_stream("camunda"), IDENTITY_SYNCED, identity),
            event("unrelated-1", "SomethingElse", json!({"x": 1})),
        ],
    )
    .await;
    core.wait_position(head).await;

    // The API shows the fold of the events.
    let (status, t) = core.get("/api/v1/tasks/camunda/t1", "kermit", &[]).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["name"], "Approve order");
    assert_eq!(t["priority"], 80);
    assert_eq!(t["assignee"], "kermit");
    assert_eq!(t["due"], "2026-12-01T00:00:00.000Z");
    assert_eq!(t["payload"], json!({"amount": 300}));
    assert_eq!(
        t["authorizedPrincipals"],
        json!([
            "group:clerks",
            "group:managers",
            "user:kermit",
            "user:piggy"
        ])
    );
    for gone in ["t2", "t3"] {
        let (status, _) = core
            .get(
                &format!("/api/v1/tasks/camunda/{gone}"),
                "kermit",
                &["clerks"],
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{gone} is finished");
    }
    // Fozzie is in `managers` only through the engine's identity, which counts in its
    // application only.
    let (status, me) = core.get("/api/v1/me", "fozzie", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["groups"], json!([]));
    assert_eq!(me["applications"]["camunda"], json!(["managers"]));
    let (ids, total) = core.ids("", "fozzie", &[]).await;
    assert_eq!((ids, total), (vec!["t1".to_owned()], 1));
    let (status, p) = core.get("/api/v1/processes", "anyone", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(p["processes"][0]["key"], "order");

    // MongoDB holds the same view, up to the same position.
    harness::wait_stored(&harness::mongo_url(), &db, head).await;
    let stored = stored_view(&db).await;
    assert_eq!(stored.position(), head);
    let live_t1: TaskBody = serde_json::from_value(t).expect("task body");
    assert_eq!(
        stored.task("camunda", "t1").map(|t| t.body()),
        Some(live_t1)
    );
    assert_eq!(stored.open_tasks(), 1);
    assert!(stored.tombstone("camunda/t2").is_some() && stored.tombstone("camunda/t3").is_some());
    assert!(stored.definition("camunda/order:1:abc").is_some());
    assert_eq!(stored.groups_of("camunda", "fozzie"), ["managers"]);
}

#[tokio::test]
async fn stored_writes_are_idempotent() {
    let db = database("idempotent");
    let store = harness::store(&db).await;
    let view = |position: u64, name: &str| {
        let mut t = task("t1");
        t.name = Some(name.into());
        TaskRecord::Open(std::sync::Arc::new(TaskView {
            authorized_principals: taskpool_core::view::principals_of(&t),
            task: t,
            position,
            version: position - 1,
            changed: "2026-11-23T10:00:00.000Z".into(),
        }))
    };
    let write = |tasks: Vec<TaskRecord>, position: u64, new: bool| Changes {
        new_tasks: if new {
            ["camunda/t1".to_owned()].into()
        } else {
            Default::default()
        },
        tasks,
        definitions: vec![],
        identities: vec![],
        position,
    };
    // A batch written twice (a crash between the batch and the position), as new and then
    // as known: one document, the latest state, and the position never goes back.
    for _ in 0..2 {
        store
            .write(&write(vec![view(3, "first")], 3, true))
            .await
            .expect("write");
    }
    store
        .write(&write(vec![view(5, "second")], 5, true))
        .await
        .expect("write");
    store
        .write(&write(vec![view(5, "second")], 4, false))
        .await
        .expect("write");
    let mut loaded = View::default();
    assert_eq!(store.load(&mut loaded).await.expect("load"), 5);
    let t = loaded.task("camunda", "t1").expect("stored");
    assert_eq!((t.position, t.task.name.as_deref()), (5, Some("second")));
    assert_eq!(loaded.open_tasks(), 1);
    // A tombstone replaces the task until the stored position passes it.
    let closed = TaskRecord::Closed {
        key: "camunda/t1".into(),
        tombstone: Tombstone { position: 9 },
    };
    store
        .write(&write(vec![closed], 9, false))
        .await
        .expect("write");
    let mut loaded = View::default();
    assert_eq!(store.load(&mut loaded).await.expect("load"), 9);
    assert!(loaded.task("camunda", "t1").is_none());
    assert_eq!(
        loaded.tombstone("camunda/t1"),
        Some(Tombstone { position: 9 })
    );
    assert_eq!(store.purge_tombstones(9).await.expect("purge"), 1);
}

/// The view that a fold of every bus event gives, to compare a stored view with.
/// The fold of node 1's log once it holds `head`: a node restarted a moment ago may still be
/// catching up, and reads are served from each node's own log.
async fn fold_of_bus(bus: &Cluster, head: u64) -> View {
    bus.wait_head(1, head).await;
    let mut view = View::default();
    for e in bus.all_events(1).await {
        let _ = view.apply(&e);
    }
    view
}

fn open_tasks(view: &View) -> Vec<TaskView> {
    let mut tasks: Vec<TaskView> = view.tasks().map(|t| (**t).clone()).collect();
    tasks.sort_by_key(|t| t.key());
    tasks
}

#[tokio::test]
async fn restarts_and_leader_loss_lose_and_double_nothing() {
    let mut bus = Cluster::start(&[]).await;
    let client = bus.client(&[1, 2, 3]);
    let db = database("restart");
    let mut core = Core::start(&bus, &db, &[]).await;

    // 300 tasks created, then a stream of changes; taskpool-core is SIGKILLed and the bus
    // leader too while events flow.
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for round in 0..30u64 {
                let mut events = Vec::new();
                for i in 0..10 {
                    let id = format!("r{}", round * 10 + i);
                    let mut t = task(&id);
                    t.candidate_groups = vec![format!("g{}", i % 3)];
                    events.push(TaskEvent::Created(t));
                    if i % 2 == 0 {
                        events.push(TaskEvent::Assigned(TaskAssigned {
                            task_id: id.clone(),
                            assignee: Some(format!("u{round}")),
                            source: source(),
                        }));
                    }
                    if i % 5 == 0 {
                        events.push(TaskEvent::Completed(TaskCompleted {
                            task_id: id,
                            completed_by: None,
                            source: source(),
                        }));
                    }
                }
                last = append(&client, &events).await;
            }
            last
        })
    };
    wait_for("the view to start", Duration::from_secs(30), || async {
        core.progress().await.filter(|(p, _)| *p > 20)
    })
    .await;
    core.service.kill();
    let leader = bus.leader().await;
    bus.kill(leader);
    core.service.spawn();
    core.wait_ready().await;
    let head = writer.await.expect("writer");
    core.wait_position(head).await;
    core.service.kill();
    bus.spawn(leader);
    core.service.spawn();
    core.wait_ready().await;
    core.wait_position(head).await;

    let expected = fold_of_bus(&bus, head).await;
    assert_eq!(expected.open_tasks(), 240);
    harness::wait_stored(&harness::mongo_url(), &db, head).await;
    let stored = stored_view(&db).await;
    assert_eq!(stored.position(), head);
    assert_eq!(open_tasks(&stored), open_tasks(&expected));
    let (_, total) = core.ids("size=1", "u", &["g0", "g1", "g2"]).await;
    assert_eq!(total, 240, "each open task once in the API");
}

#[tokio::test]
async fn a_store_outage_loses_and_doubles_nothing() {
    let bus = Cluster::start(&[]).await;
    let client = bus.client(&[1, 2, 3]);
    let data = tempfile::tempdir().expect("temp dir");
    let port = harness::free_port();
    let url = format!("mongodb://127.0.0.1:{port}");
    let mut ferretdb = harness::ferretdb(data.path(), port);
    let db = database("outage");
    wait_for("FerretDB up", Duration::from_secs(30), || async {
        let store = taskpool_core::store::Store::connect(&url, &db).await.ok()?;
        store.ping().await.ok()
    })
    .await;
    let core = Core::start_on(&bus, &url, &db, &[]).await;
    let batch = |from: usize| -> Vec<TaskEvent> {
        (from..from + 50)
            .flat_map(|i| {
                let id = format!("o{i}");
                let mut events = vec![TaskEvent::Created(task(&id))];
                if i % 5 == 0 {
                    events.push(TaskEvent::Completed(TaskCompleted {
                        task_id: id,
                        completed_by: None,
                        source: source(),
                    }));
                }
                events
            })
            .collect()
    };
    core.wait_position(append(&client, &batch(0)).await).await;

    // The store dies; events keep coming; it comes back.
    ferretdb.kill();
    let mut head = 0;
    for round in 1..4 {
        head = append(&client, &batch(round * 50)).await;
    }
    // The view has taken those events and failed to store them, before the store is back.
    let metrics_url = format!("{}/metrics", core.url());
    wait_for("a failed view write", Duration::from_secs(30), || {
        let url = metrics_url.clone();
        async move {
            let text = reqwest::get(url).await.ok()?.text().await.ok()?;
            text.contains("taskpool_store_errors_total{operation=\"write\"}")
                .then_some(())
        }
    })
    .await;
    ferretdb.spawn();
    core.wait_position(head).await;
    harness::wait_stored(&url, &db, head).await;
    let stored = harness::stored_view_at(&url, &db).await;
    assert_eq!(stored.position(), head);
    let expected = fold_of_bus(&bus, head).await;
    assert_eq!(expected.open_tasks(), 160);
    assert_eq!(open_tasks(&stored), open_tasks(&expected));
    let (_, total) = core.ids("size=1", "nobody", &["nobody"]).await;
    assert_eq!(total, 0);
    let (status, _) = core.get("/api/v1/tasks/camunda/o7", "u", &[]).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no candidates: visible to nobody"
    );
}

#[tokio::test]
async fn rebuild_gives_the_live_view() {
    let bus = Cluster::start(&[]).await;
    let client = bus.client(&[1, 2, 3]);
    let live_db = database("live");
    let core = Core::start(&bus, &live_db, &[]).await;
    let mut head = 0;
    for round in 0..20u64 {
        let mut events = Vec::new();
        for i in 0..50 {
            let id = format!("b{}", round * 50 + i);
            let mut t = task(&id);
            t.priority = (i * 7 % 100) as i64;
            t.candidate_users = vec![format!("u{}", i % 4)];
            events.push(TaskEvent::Created(t));
            if i % 3 == 0 {
                events.push(TaskEvent::Deleted(TaskDeleted {
                    task_id: id,
                    delete_reason: None,
                    source: source(),
                }));
            }
        }
        head = append(&client, &events).await;
    }
    core.wait_position(head).await;

    let rebuilt_db = database("rebuilt");
    harness::store(&rebuilt_db).await;
    let nodes: Vec<String> = bus.nodes.iter().map(|n| n.url()).collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_taskpool-core"))
        .args([
            "rebuild",
            "--bus",
            &nodes.join(","),
            "--database",
            &rebuilt_db,
        ])
        .args(["--mongo-url", &harness::mongo_url()])
        .env("TASKPOOL_BUS_TOKEN", harness::TOKEN)
        .output()
        .expect("run rebuild");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rebuild failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!("rebuilt view: {head} events, ")),
        "{stdout}"
    );

    harness::wait_stored(&harness::mongo_url(), &live_db, head).await;
    let live = stored_view(&live_db).await;
    let rebuilt = stored_view(&rebuilt_db).await;
    assert_eq!(rebuilt.position(), head);
    assert_eq!(open_tasks(&rebuilt), open_tasks(&live));
    assert_eq!(open_tasks(&live).len(), 20 * (50 - 17));
}

#[tokio::test]
async fn the_stream_delivers_changes_to_my_tasks_only() {
    use futures::StreamExt;
    let bus = Cluster::start(&[]).await;
    let client = bus.client(&[1, 2, 3]);
    let core = Core::start(&bus, &database("sse"), &[]).await;
    let mut mine = task("s1");
    mine.candidate_groups = vec!["clerks".into()];
    let other = task("s2");
    core.wait_position(
        append(
            &client,
            &[TaskEvent::Created(mine), TaskEvent::Created(other.clone())],
        )
        .await,
    )
    .await;

    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/tasks/stream", core.url()))
        .header("x-user", "kermit")
        .header("x-groups", "clerks")
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    let mut parser = taskpool_api::sse::SseParser::new();
    let mut messages = Vec::new();
    let ready = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let chunk = body.next().await.expect("open").expect("chunk");
            messages.extend(parser.feed(&chunk));
            if !messages.is_empty() {
                break;
            }
        }
    })
    .await;
    assert!(ready.is_ok(), "no ready event");
    assert_eq!(messages[0].event.as_deref(), Some("ready"));
    append(
        &client,
        &[
            TaskEvent::Assigned(TaskAssigned {
                task_id: "s2".into(),
                assignee: Some("x".into()),
                source: source(),
            }),
            TaskEvent::Assigned(TaskAssigned {
                task_id: "s1".into(),
                assignee: Some("piggy".into()),
                source: source(),
            }),
            TaskEvent::Completed(TaskCompleted {
                task_id: "s1".into(),
                completed_by: None,
                source: source(),
            }),
        ],
    )
    .await;
    let mut changes: Vec<Value> = Vec::new();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        while changes.len() < 2 {
            let chunk = body.next().await.expect("open").expect("chunk");
            for m in parser.feed(&chunk) {
                if m.event.as_deref() == Some("task") {
                    changes.push(serde_json::from_str(&m.data).expect("json"));
                }
            }
        }
    })
    .await;
    assert!(got.is_ok(), "changes not delivered: {changes:?}");
    assert_eq!(changes[0]["taskId"], "s1");
    assert_eq!(changes[0]["application"], "camunda");
    assert_eq!(changes[0]["type"], "TaskAssigned");
    assert_eq!(changes[0]["task"]["assignee"], "piggy");
    assert_eq!(changes[1]["type"], "TaskCompleted");
    assert_eq!(changes[1]["task"], Value::Null);
}

/// An identity sync in parts replaces the users of each part's id range, in the view and in
/// MongoDB (which writes only those users), and leaves every other user as it was.
#[tokio::test]
async fn an_identity_in_parts_replaces_each_range_and_nothing_else() {
    let bus = Cluster::start(&[]).await;
    let client = bus.client(&[1, 2, 3]);
    let db = database("identity-parts");
    let core = Core::start(&bus, &db, &[]).await;
    let user = |id: &str, group: &str| json!({"id": id, "firstName": null, "lastName": null, "email": null, "groups": [group]});
    let stream = identity_stream("camunda");
    let whole = json!({"application": "camunda", "users": [
        user("ann", "g1"), user("bob", "g1"), user("cid", "g1"), user("dan", "g1"), user("eve", "g1")
    ]});
    // Two parts of a later sync: [.., "c") and ["c", "e"); "eve" lies in neither.
    let first = json!({"application": "camunda", "users": [user("ann", "g2")],
        "part": {"from": null, "until": "c", "index": 0, "count": 3}});
    let second = json!({"application": "camunda", "users": [user("cid", "g2"), user("cal", "g3")],
        "part": {"from": "c", "until": "e", "index": 1, "count": 3}});
    append_raw(&client, vec![event(&stream, IDENTITY_SYNCED, whole)]).await;
    let head = append_raw(
        &client,
        vec![
            event(&stream, IDENTITY_SYNCED, first),
            event(&stream, IDENTITY_SYNCED, second),
        ],
    )
    .await;
    core.wait_position(head).await;
    let expected = [
        ("ann", vec!["g2"]),
        ("bob", vec![]),
        ("cal", vec!["g3"]),
        ("cid", vec!["g2"]),
        ("dan", vec![]),
        ("eve", vec!["g1"]),
    ];
    for (id, groups) in &expected {
        let (_, me) = core.get("/api/v1/me", id, &[]).await;
        let live = me["applications"]["camunda"].clone();
        let live = if live.is_null() { json!([]) } else { live };
        assert_eq!(live, json!(groups), "{id} in the view");
    }
    harness::wait_stored(&harness::mongo_url(), &db, head).await;
    let stored = stored_view(&db).await;
    for (id, groups) in &expected {
        assert_eq!(stored.groups_of("camunda", id), *groups, "{id} in MongoDB");
    }
}
