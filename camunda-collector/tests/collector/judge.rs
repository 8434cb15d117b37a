//! The engine judges every command. A command carries its actor (the user and the groups the
//! platform counts for them in this application); the collector acts only when the engine's
//! current state of the task allows it for that user: assignee, candidate users, candidate
//! groups among the actor's groups or the user's groups in the engine. A view that allowed the
//! action proves nothing.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::commands::send;
use crate::harness::{data, expect_stream, stream, types, wait_for};
use crate::setup;

fn actor(user: &str, groups: &[&str]) -> Value {
    json!({ "user": user, "groups": groups })
}

#[tokio::test]
async fn task_commands_run_only_when_the_engine_allows_them_for_the_actor() {
    let (engine, _cluster, bus, collector) = setup("judge", &[]).await;
    let app = collector.app.clone();
    let suffix = &app[app.len() - 8..];
    // A reviewer by the engine's own identity; the others are unknown to the engine. (Engine
    // user ids are letters and digits.)
    let reviewer = format!("rev{suffix}");
    engine.user_in_group(&reviewer, "reviewers").await;
    let (stranger, vouched) = (format!("str{suffix}"), format!("jwt{suffix}"));

    let instance = engine.start("simpleUserTask", "judge-1", json!({})).await;
    let task = engine.task_id(&instance).await;
    expect_stream(&bus, &task, &["TaskCreated"]).await;
    let engine_assignee = || async {
        engine.ok(Method::GET, &format!("/task/{task}"), None).await["assignee"].clone()
    };

    // Neither candidate nor in a candidate group: as if the task were not there.
    let claim = |user: &str, groups: &[&str]| json!({"taskId": task, "user": user, "actor": actor(user, groups)});
    assert_eq!(
        send(&bus, &app, "ClaimTask", claim(&stranger, &[])).await,
        Err((404, "task_not_found".into()))
    );
    assert_eq!(engine_assignee().await, Value::Null);

    // A group the platform vouches for (from a JWT) counts, though the engine does not know it.
    send(&bus, &app, "ClaimTask", claim(&vouched, &["reviewers"]))
        .await
        .expect("claim with a vouched group");
    assert_eq!(engine_assignee().await, json!(vouched));

    // Someone else who may see it: the task is held by another, whatever the action.
    for (kind, extra) in [
        ("ClaimTask", json!({"user": reviewer})),
        ("CompleteTask", json!({"user": reviewer, "variables": {}})),
        ("DeferTask", json!({"followUp": "2031-01-01T00:00:00.000Z"})),
        ("UndeferTask", json!({})),
        ("UnclaimTask", json!({})),
        ("AssignTask", json!({"user": reviewer})),
    ] {
        let mut payload = extra;
        payload["taskId"] = json!(task);
        payload["actor"] = actor(&reviewer, &[]);
        assert_eq!(
            send(&bus, &app, kind, payload).await,
            Err((409, "held_by_other".into())),
            "{kind}"
        );
    }
    assert_eq!(engine_assignee().await, json!(vouched), "nothing changed");

    // The holder gives it back; then the engine's own group membership lets the reviewer act.
    let unclaim = json!({"taskId": task, "actor": actor(&vouched, &[])});
    send(&bus, &app, "UnclaimTask", unclaim)
        .await
        .expect("the holder unclaims");
    let defer = json!({"taskId": task, "followUp": "2031-01-01T00:00:00.000Z",
        "actor": actor(&reviewer, &[])});
    send(&bus, &app, "DeferTask", defer)
        .await
        .expect("defer by the engine's reviewer");
    let complete = json!({"taskId": task, "user": reviewer, "variables": {"ok": true},
        "actor": actor(&reviewer, &[])});
    let r = send(&bus, &app, "CompleteTask", complete)
        .await
        .expect("complete by the engine's reviewer");
    assert_eq!(r["application"], app.as_str());
    assert_eq!(engine.instance_state(&instance).await, "COMPLETED");
    // The claim before the completion is its own engine change: a poll between the two
    // records it as a TaskAssigned of its own, else the completion carries it.
    let e = wait_for(
        "the task's stream to end",
        Duration::from_secs(90),
        || async {
            let events = stream(&bus, &task).await;
            (types(&events).last().map(String::as_str) == Some("TaskCompleted")).then_some(events)
        },
    )
    .await;
    let got = types(&e);
    let before = ["TaskCreated", "TaskAssigned", "TaskAssigned", "TaskUpdated"];
    assert_eq!(got[..4], before, "{got:?}");
    assert!(
        got[4..] == ["TaskCompleted"] || got[4..] == ["TaskAssigned", "TaskCompleted"],
        "{got:?}"
    );
    // Completing a free task claims it first: the completion names who did it.
    let completed = e.last().expect("completed");
    assert_eq!(data(completed)["completedBy"], json!(reviewer));
}

#[tokio::test]
async fn a_process_with_candidate_starters_starts_only_for_them() {
    let (engine, _cluster, bus, collector) = setup("starters", &[]).await;
    let app = collector.app.clone();
    let start = |user: &str, groups: &[&str]| {
        json!({"processDefinitionKey": "startersOnly", "businessKey": "starters-1",
            "user": user, "actor": actor(user, groups)})
    };
    assert_eq!(
        send(&bus, &app, "StartProcess", start("kermit", &[]))
            .await
            .map_err(|e| e.0),
        Err(404),
        "kermit is no candidate starter"
    );
    for (user, groups) in [("gonzo", &[][..]), ("piggy", &["starters"][..])] {
        let r = send(&bus, &app, "StartProcess", start(user, groups))
            .await
            .unwrap_or_else(|e| panic!("{user} may start: {e:?}"));
        let instance = r["processInstanceId"]
            .as_str()
            .expect("instance")
            .to_owned();
        engine.delete_instance(&instance).await;
    }
    // The definition announces its starters, for the task list to offer it only to them.
    let definition = wait_for(
        "startersOnly announced",
        std::time::Duration::from_secs(120),
        || async {
            let events = bus.events(1, 10_000).await.ok()?.events;
            events
                .iter()
                .filter(|e| e.stream.starts_with(&format!("process-definition/{app}/")))
                .map(data)
                .find(|d| d["key"] == "startersOnly")
        },
    )
    .await;
    assert_eq!(definition["candidateStarterUsers"], json!(["gonzo"]));
    assert_eq!(definition["candidateStarterGroups"], json!(["starters"]));
}

#[test]
fn an_application_name_that_breaks_the_rule_stops_the_collector_at_start() {
    for bad in [
        "Billing",
        "1app",
        "a_b",
        "",
        "an-application-name-longer-than-forty-chars",
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_camunda-collector"))
            .args(["--application", bad, "--listen", "127.0.0.1:0"])
            .output()
            .expect("run the collector");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad:?} was accepted");
        assert!(
            stderr.contains("[a-z][a-z0-9-]{0,39}") && !stderr.contains("panicked"),
            "{bad:?}: {stderr}"
        );
    }
}

/// `PUT /task/{id}` replaces every field: a claim that lands between the collector's read and
/// its write of a follow-up date is overwritten, and must be put back from the engine's log.
#[tokio::test]
async fn a_follow_up_write_puts_back_a_change_it_overwrote() {
    use camunda_collector::engine::{Engine as Rest, EngineConfig};
    let engine = crate::Engine::connect().await;
    let id = format!("rmw{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let task = json!({"id": id, "name": "Overwritten?", "priority": 50});
    engine.ok(Method::POST, "/task/create", Some(task)).await;
    let rest = Rest::new(
        EngineConfig {
            url: crate::harness::engine_url(),
            user: Some("demo".into()),
            password: Some("demo".into()),
            timeout: std::time::Duration::from_secs(30),
        },
        camunda_collector::metrics::Metrics::new(),
    )
    .expect("engine client");
    let read = rest.task(&id).await.expect("read").expect("the task");
    // The concurrent change, after the read and before the write.
    engine.claim(&id, "peter").await;
    let follow_up = "2031-01-01T00:00:00.000+0000";
    let restored = camunda_collector::follow_up::set(&rest, &read, Some(follow_up.into()))
        .await
        .expect("write");
    assert_eq!(restored, ["assignee"]);
    let now = engine.ok(Method::GET, &format!("/task/{id}"), None).await;
    assert_eq!(
        (now["assignee"].as_str(), now["followUp"].as_str()),
        (Some("peter"), Some(follow_up)),
        "{now}"
    );
    // Without a concurrent change nothing is put back.
    let read = rest.task(&id).await.expect("read").expect("the task");
    let restored = camunda_collector::follow_up::set(&rest, &read, None).await;
    assert_eq!(restored.expect("write"), Vec::<String>::new());
    let _ = engine
        .call(Method::DELETE, &format!("/task/{id}"), None)
        .await;
}
