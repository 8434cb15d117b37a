//! Two process applications on one platform, each with its own engine and database: the
//! local engine and the billing engine (`deploy/scripts/camunda.sh start billing`), a collector
//! each, one bus (each client with its own credential), one taskpool-core. Engine ids are unique only within one engine, so tasks
//! with the same id on both must stay two tasks; users and groups synced from one engine open
//! nothing of the other; every action lands on its own engine only.

use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use testkit::core::mongo_url;
use testkit::engine::billing_engine_url;
use testkit::{wait_for, BusCredential, Cluster, Collector, Core, Engine};

/// A standalone task with `id` (the engine takes any id) and one candidate link.
async fn standalone(engine: &Engine, id: &str, link: Value) {
    let body = json!({"id": id, "name": format!("Collide {id}"), "priority": 50});
    engine.ok(Method::POST, "/task/create", Some(body)).await;
    let path = format!("/task/{id}/identity-links");
    engine.ok(Method::POST, &path, Some(link)).await;
}

async fn assignee(engine: &Engine, id: &str) -> Value {
    engine.ok(Method::GET, &format!("/task/{id}"), None).await["assignee"].clone()
}

/// The ids and applications `user` lists (groups only from the engines' identities).
async fn listed(core: &Core, user: &str) -> Vec<(String, String)> {
    let (status, v) = core.get("/api/v1/tasks?size=1000", user, &[]).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let mut out: Vec<(String, String)> = v["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| {
            let app = t["source"]["application"].as_str().expect("application");
            (app.to_owned(), t["taskId"].as_str().expect("id").to_owned())
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn two_applications_keep_their_tasks_identities_and_actions_apart() {
    let _shared = e2e::stack::use_shared_parts().await;
    let local = Engine::connect().await;
    let billing = Engine::connect_to(&billing_engine_url()).await;
    let sfx = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let (app_a, app_b) = (format!("a-{sfx}"), format!("b-{sfx}"));
    // The same group name in both engines; amy is in it on A, bo on B only.
    let (amy, bo, team) = (
        format!("amy{sfx}"),
        format!("bo{sfx}"),
        format!("team{sfx}"),
    );
    local.user_in_group(&amy, &team).await;
    billing.user_in_group(&bo, &team).await;
    billing.user_in_group(&bo, "starters").await;
    // The billing engine checks authorizations: bo may start startersOnly there, cy (a
    // candidate starter by group too) holds no grant.
    let cy = format!("cy{sfx}");
    billing.user_in_group(&cy, "starters").await;
    billing
        .grant_user(&bo, 6, "startersOnly", &["READ", "CREATE_INSTANCE"])
        .await;
    billing.grant_user(&bo, 8, "*", &["CREATE"]).await;
    let id = format!("c{sfx}");
    standalone(&local, &id, json!({"groupId": team, "type": "candidate"})).await;
    standalone(&billing, &id, json!({"userId": bo, "type": "candidate"})).await;

    // Each client with its own credential and only its role's rights.
    let bus = Cluster::start_with_credentials(
        &[
            BusCredential::collector(&format!("collector-{app_a}"), &app_a),
            BusCredential::collector(&format!("collector-{app_b}"), &app_b),
            BusCredential::core("core"),
        ],
        &[],
    )
    .await;
    let poll = ["--poll-interval", "200ms"];
    let mut collector_a = Collector::start(&app_a, &bus, &poll);
    let billing_url = billing_engine_url();
    let collector_b = Collector::start(
        &app_b,
        &bus,
        &[&poll[..], &["--engine-url", &billing_url]].concat(),
    );
    collector_a.wait_active(Duration::from_secs(60)).await;
    collector_b.wait_active(Duration::from_secs(60)).await;
    // A short command timeout: one action below has no collector to answer it.
    let database = format!("e2e_apps_{sfx}");
    let core = Core::start_on(&bus, &mongo_url(), &database, &["--command-timeout", "5s"]).await;

    // Two tasks with one id, each with its own candidates, each seen by its own users only.
    let a_task = format!("/api/v1/tasks/{app_a}/{id}");
    let b_task = format!("/api/v1/tasks/{app_b}/{id}");
    // (amy sees A's task by her group in A's engine: A's identity is synced by then.)
    wait_for(
        "both tasks and B's identity in the pool",
        Duration::from_secs(90),
        || async {
            let a = core.get(&a_task, &amy, &[]).await.0 == StatusCode::OK;
            let b = core.get(&b_task, &bo, &[]).await.0 == StatusCode::OK;
            let me = core.get("/api/v1/me", &bo, &[]).await.1;
            let synced = me["applications"][&app_b] == json!(["starters", team]);
            (a && b && synced).then_some(())
        },
    )
    .await;
    assert_eq!(listed(&core, &amy).await, [(app_a.clone(), id.clone())]);
    assert_eq!(listed(&core, &bo).await, [(app_b.clone(), id.clone())]);
    let (_, a) = core.get(&a_task, &amy, &[]).await;
    assert_eq!(a["candidateGroups"], json!([team]));
    let (_, b) = core.get(&b_task, &bo, &[]).await;
    assert_eq!(b["candidateUsers"], json!([bo]));
    // bo's group from the billing engine opens nothing of the local application's, anywhere.
    assert_eq!(core.get(&a_task, &bo, &[]).await.0, StatusCode::NOT_FOUND);
    let (_, counts) = core.get("/api/v1/tasks/counts", &bo, &[]).await;
    let mut only_b = serde_json::Map::new();
    only_b.insert(app_b.clone(), json!(1));
    assert_eq!(counts["applications"], Value::Object(only_b), "{counts}");
    for action in ["claim", "complete", "defer", "unclaim"] {
        let body = match action {
            "defer" => Some(json!({"followUp": "2031-01-01"})),
            "complete" => Some(json!({"variables": {}})),
            _ => None,
        };
        let path = format!("{a_task}/{action}");
        let (status, v) = core.call(Method::POST, &path, &bo, &[], body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "bo {action} on A: {v}");
    }
    let (_, me) = core.get("/api/v1/me", &bo, &[]).await;
    assert_eq!(me["applications"][&app_a], json!([]), "{me}");

    // bo's live stream says nothing of A's task.
    let stream = reqwest::Client::new()
        .get(format!("{}/api/v1/tasks/stream", core.url()))
        .header("x-user", &bo)
        .send()
        .await
        .expect("stream");
    let mut body = stream.bytes_stream();

    // Each action lands on its own engine only.
    let (status, v) = core
        .call(Method::POST, &format!("{a_task}/claim"), &amy, &[], None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(assignee(&local, &id).await, json!(amy));
    assert_eq!(assignee(&billing, &id).await, Value::Null);
    let complete = Some(json!({"variables": {}}));
    let (status, v) = core
        .call(
            Method::POST,
            &format!("{b_task}/complete"),
            &bo,
            &[],
            complete,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (gone, _) = billing
        .call(Method::GET, &format!("/task/{id}"), None)
        .await;
    assert_eq!(gone, 404, "B's task completed on the billing engine");
    assert_eq!(
        assignee(&local, &id).await,
        json!(amy),
        "A's task untouched"
    );

    // The stream: B's completion came, A's claim (appended before it) did not.
    let mut parser = taskpool_api::sse::SseParser::new();
    let mut changes: Vec<Value> = Vec::new();
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        while !changes.iter().any(|c| c["type"] == "TaskCompleted") {
            let chunk = body.next().await.expect("open").expect("chunk");
            for m in parser.feed(&chunk) {
                if m.event.as_deref() == Some("task") {
                    changes.push(serde_json::from_str(&m.data).expect("json"));
                }
            }
        }
    })
    .await;
    assert!(got.is_ok(), "no completion on the stream: {changes:?}");
    assert!(
        changes.iter().all(|c| c["application"] == app_b.as_str()),
        "{changes:?}"
    );

    // The same process key on both: who may start it in both must name the application; amy
    // may start it only where the engine lets her (the billing engine grants her nothing).
    let simple = "/api/v1/processes/simpleUserTask/start";
    let (status, v) = core
        .call(Method::POST, simple, "demo", &[], Some(json!({})))
        .await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("ambiguous_process")),
        "{v}"
    );
    let (status, v) = core
        .call(Method::POST, simple, &amy, &[], Some(json!({})))
        .await;
    assert_eq!(
        (status, v["application"].clone()),
        (StatusCode::OK, json!(app_a)),
        "{v}"
    );
    local
        .delete_instance(v["processInstanceId"].as_str().expect("instance"))
        .await;
    let (_, processes) = core.get("/api/v1/processes", &bo, &[]).await;
    let starters: Vec<&str> = processes["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .filter(|p| p["key"] == "startersOnly")
        .filter_map(|p| p["application"].as_str())
        .collect();
    assert_eq!(
        starters,
        [app_b.as_str()],
        "bo starts startersOnly in B only"
    );
    // cy is a candidate starter by the BPMN, but the billing engine's grants say no.
    let (_, processes) = core.get("/api/v1/processes", &cy, &[]).await;
    assert!(
        !processes["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .any(|p| p["key"] == "startersOnly" && p["application"] == app_b.as_str()),
        "{processes}"
    );
    let start_b = format!("/api/v1/processes/{app_b}/startersOnly/start");
    let (status, v) = core
        .call(Method::POST, &start_b, &cy, &[], Some(json!({})))
        .await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (StatusCode::FORBIDDEN, json!("forbidden_by_engine")),
        "{v}"
    );
    let start_a = format!("/api/v1/processes/{app_a}/startersOnly/start");
    let (status, _) = core
        .call(Method::POST, &start_a, &bo, &[], Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, started) = core
        .call(Method::POST, &start_b, &bo, &[], Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(started["application"], app_b.as_str());
    let instance = started["processInstanceId"].as_str().expect("instance");
    billing.delete_instance(instance).await;

    // Killing A's collector leaves B's application working.
    collector_a.kill();
    let second = format!("d{sfx}");
    standalone(
        &billing,
        &second,
        json!({"userId": bo, "type": "candidate"}),
    )
    .await;
    let path = format!("/api/v1/tasks/{app_b}/{second}");
    wait_for(
        "a new B task while A's collector is down",
        Duration::from_secs(60),
        || async { (core.get(&path, &bo, &[]).await.0 == StatusCode::OK).then_some(()) },
    )
    .await;
    let (status, v) = core
        .call(Method::POST, &format!("{path}/claim"), &bo, &[], None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(assignee(&billing, &second).await, json!(bo));
    let (status, v) = core
        .call(Method::POST, &format!("{a_task}/unclaim"), &amy, &[], None)
        .await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "A has no collector: {v}"
    );

    for (engine, task) in [(&local, &id), (&billing, &second)] {
        let _ = engine
            .call(Method::DELETE, &format!("/task/{task}"), None)
            .await;
    }
}
