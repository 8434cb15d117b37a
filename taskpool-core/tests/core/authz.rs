//! The authorization matrix: users × groups × two applications × tasks × actions. A user sees
//! a task when they are its assignee or a candidate user, or one of their groups in the task's
//! application is a candidate group (their credentials' groups count everywhere, a group an
//! engine's identity gives them only in that engine's application); every other task is 404 to
//! them, in the list, one by one, in counts and for every action; a task someone else holds is
//! 409 to every action. Both applications hold tasks with the same ids.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use taskpool_api::commands::{CommandMessage, CommandResult};
use taskpool_api::handler::{self, HandlerConfig, MemoryDedupe};
use taskpool_api::streams::identity_stream;
use taskpool_api::task_commands::TaskCommand;
use taskpool_api::tasks::{Task, TaskEvent, IDENTITY_SYNCED};
use testkit::wait_for;

use crate::harness::{append, append_raw, database, event, task, Cluster, Core};

const APPS: [&str; 2] = ["camunda", "other"];

/// The one group an engine's identity gives: eve is in g1 in the engine of "other" only.
const SYNCED: (&str, &str, &str) = ("other", "eve", "g1");

const USERS: [(&str, &[&str]); 5] = [
    ("alice", &["g2"]),
    ("bob", &[]),
    ("carol", &["g1"]),
    ("dave", &["g1", "g2"]),
    ("eve", &[]),
];

fn tasks() -> Vec<Task> {
    let with = |app: &str, id: &str, assignee: Option<&str>, users: &[&str], groups: &[&str]| {
        let mut t = task(id);
        t.source.application = app.to_owned();
        t.assignee = assignee.map(str::to_owned);
        t.candidate_users = users.iter().map(|s| s.to_string()).collect();
        t.candidate_groups = groups.iter().map(|s| s.to_string()).collect();
        t
    };
    vec![
        with("camunda", "held-by-alice", Some("alice"), &[], &["g1"]),
        with("camunda", "for-bob", None, &["bob"], &[]),
        with("camunda", "for-g1", None, &[], &["g1"]),
        with("camunda", "for-g2-and-eve", None, &["eve"], &["g2"]),
        with("camunda", "for-nobody", None, &[], &[]),
        // The same ids in another engine, with other candidates.
        with("other", "held-by-alice", Some("bob"), &[], &["g2"]),
        with("other", "for-bob", None, &["carol"], &[]),
        with("other", "for-g1", None, &[], &["g1"]),
        with("other", "for-g2-and-eve", None, &[], &["g2"]),
        with("other", "for-nobody", None, &[], &[]),
    ]
}

fn may_see(t: &Task, user: &str, groups: &[&str]) -> bool {
    let app = t.source.application.as_str();
    let synced = (app, user) == (SYNCED.0, SYNCED.1);
    t.assignee.as_deref() == Some(user)
        || t.candidate_users.iter().any(|u| u == user)
        || t.candidate_groups
            .iter()
            .any(|g| groups.contains(&g.as_str()) || (synced && g == SYNCED.2))
}

fn key(t: &Task) -> String {
    format!("{}/{}", t.source.application, t.task_id)
}

/// An action's body for a user.
type Body = fn(&str) -> Option<Value>;

const ACTIONS: [(&str, Body); 6] = [
    ("claim", |_| None),
    ("unclaim", |_| None),
    ("assign", |user| Some(json!({ "user": user }))),
    ("complete", |_| Some(json!({ "variables": {"ok": true} }))),
    ("defer", |_| Some(json!({ "followUp": "2030-01-01" }))),
    ("undefer", |_| None),
];

#[tokio::test]
async fn users_see_and_act_on_exactly_the_tasks_they_may() {
    let bus = Cluster::start(&[]).await;
    let db = database("authz");
    let core = Core::start(&bus, &db, &[]).await;
    let tasks = tasks();
    let events: Vec<TaskEvent> = tasks.iter().cloned().map(TaskEvent::Created).collect();
    append(&bus.client(&[1, 2, 3]), &events).await;
    let identity = serde_json::json!({"application": SYNCED.0, "users": [
        {"id": SYNCED.1, "firstName": null, "lastName": null, "email": null, "groups": [SYNCED.2]}
    ]});
    let position = append_raw(
        &bus.client(&[1, 2, 3]),
        vec![event(&identity_stream(SYNCED.0), IDENTITY_SYNCED, identity)],
    )
    .await;
    core.wait_position(position).await;
    // In the collector's place, a handler that notes every command it is given and refuses it
    // (422), so an allowed action is told apart from a refusal (404, 409) and changes nothing.
    let reached: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let noted = reached.clone();
    let handler = tokio::spawn(handler::run(
        bus.client(&[1, 2, 3]),
        HandlerConfig {
            handler_id: "authz-refuser".into(),
            types: TaskCommand::TYPES.iter().map(|s| s.to_string()).collect(),
            routing_keys: APPS.map(str::to_owned).to_vec(),
            concurrency: 4,
        },
        Arc::new(MemoryDedupe::new(1000)),
        move |c: CommandMessage| {
            let task = c.payload["taskId"].as_str().unwrap_or_default();
            let key = format!("{}/{task}", c.routing_key);
            noted.lock().expect("noted").push((c.command_type, key));
            async { CommandResult::failure("", 422, "refused_by_test", "the test refuses all") }
        },
        stopped,
    ));
    wait_for(
        "the refusing handler on the bus",
        Duration::from_secs(30),
        || async {
            let r = core
                .call(
                    Method::POST,
                    "/api/v1/tasks/camunda/for-g1/claim",
                    "carol",
                    &["g1"],
                    None,
                )
                .await;
            (r.0 == StatusCode::UNPROCESSABLE_ENTITY).then_some(())
        },
    )
    .await;
    reached.lock().expect("reached").clear();

    let mut checked = 0;
    let mut allowed = Vec::new();
    for (user, groups) in USERS {
        let visible: BTreeSet<String> = tasks
            .iter()
            .filter(|t| may_see(t, user, groups))
            .map(key)
            .collect();
        let (_, page) = core.get("/api/v1/tasks?size=1000", user, groups).await;
        let listed: BTreeSet<String> = page["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .map(|t| {
                format!(
                    "{}/{}",
                    t["source"]["application"].as_str().unwrap_or_default(),
                    t["taskId"].as_str().unwrap_or_default()
                )
            })
            .collect();
        let total = page["total"].as_u64().expect("total");
        assert_eq!(listed, visible, "{user} lists");
        assert_eq!(total as usize, visible.len(), "{user}'s total");
        let (_, counts) = core.get("/api/v1/tasks/counts", user, groups).await;
        assert_eq!(counts["total"], visible.len(), "{user}'s counts: {counts}");

        for app in APPS {
            let mine = visible
                .iter()
                .filter(|k| k.starts_with(&format!("{app}/")))
                .count();
            let shown = counts["applications"][app].as_u64().unwrap_or(0) as usize;
            assert_eq!(shown, mine, "{user}'s count in {app}: {counts}");
        }

        for t in &tasks {
            let sees = visible.contains(&key(t));
            let (status, _) = core
                .get(&format!("/api/v1/tasks/{}", key(t)), user, groups)
                .await;
            let expected = if sees {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            assert_eq!(status, expected, "{user} reads {}", key(t));
            let held_by_other = t.assignee.as_deref().is_some_and(|a| a != user);
            for (action, body) in ACTIONS {
                let path = format!("/api/v1/tasks/{}/{action}", key(t));
                let (status, answer) = core
                    .call(Method::POST, &path, user, groups, body(user))
                    .await;
                let what = format!("{user} {action} {}: {status} {answer}", key(t));
                if !sees {
                    assert_eq!(status, StatusCode::NOT_FOUND, "{what}");
                } else if held_by_other {
                    assert_eq!(status, StatusCode::CONFLICT, "{what}");
                } else if status != StatusCode::OK {
                    // Allowed: sent as a command, which the handler refused. (200: nothing to
                    // change, such as claiming your own task, is answered without a command.)
                    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "allowed: {what}");
                    assert_eq!(answer["error"]["code"], "refused_by_test", "{what}");
                    allowed.push(key(t));
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, USERS.len() * tasks.len() * ACTIONS.len());
    // Exactly the allowed actions reached the handler; no refused one did.
    let reached: Vec<String> = reached
        .lock()
        .expect("reached")
        .iter()
        .map(|(_, t)| t.clone())
        .collect();
    assert_eq!(reached, allowed);
    assert!(allowed.len() >= 40, "{allowed:?}");
    let _ = stop.send(true);
    let _ = handler.await;
    // Nothing changed: every refusal and every unhandled command left the view as it was.
    let (listed, _) = core.ids("size=1000", "dave", &["g1", "g2"]).await;
    assert_eq!(listed.len(), 6);
    let (_, held) = core
        .get("/api/v1/tasks/camunda/held-by-alice", "alice", &[])
        .await;
    assert_eq!(held["assignee"], "alice");
    assert_eq!(held["followUp"], Value::Null);
}
