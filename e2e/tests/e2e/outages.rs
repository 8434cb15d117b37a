//! Outages of the parts around Taskpool, one after the other while tasks change: the engine
//! stopped for a minute, PostgreSQL restarted (under the engine and the collector), the view's MongoDB
//! server restarted, and the bus without a quorum. After each, the view equals the engine's
//! open tasks, each once.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::core::ferretdb;
use testkit::engine::REPO;
use testkit::{free_port, wait_for, Engine};

use e2e::{Mode, Stack};

/// `deploy/scripts/<part>.sh <action>` with the environment `scripts/test` set up.
fn script(part: &str, action: &str) {
    let out = Command::new(format!("{REPO}/deploy/scripts/{part}.sh"))
        .arg(action)
        .output()
        .unwrap_or_else(|e| panic!("{part}.sh {action}: {e}"));
    assert!(
        out.status.success(),
        "{part}.sh {action}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How long the engine stays down: long enough for every retry and reconnect path of the
/// collector and the command round trip to run out at least once.
const ENGINE_DOWN: Duration = Duration::from_secs(60);

/// Starts `n` instances with business keys `{prefix}-{i}`.
async fn start(engine: &Engine, prefix: &str, from: usize, n: usize) {
    for i in from..from + n {
        engine
            .start("simpleUserTask", &format!("{prefix}-{i}"), json!({}))
            .await;
    }
}

/// Waits until the task API lists exactly the engine's open tasks of `prefix`, once each.
async fn converged(stack: &Stack, prefix: &str, after: &str) {
    let listed = stack.wait_view_matches_engine(prefix, after).await;
    let once: BTreeSet<&String> = listed.iter().collect();
    assert_eq!(
        once.len(),
        listed.len(),
        "no task listed twice after {after}"
    );
}

#[tokio::test]
async fn the_view_recovers_from_engine_database_store_and_bus_outages() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut store = ferretdb(dir.path(), port);
    let mut stack = Stack::start_to_take_down_shared_parts(
        "outages",
        Mode::Hook,
        &format!("mongodb://127.0.0.1:{port}"),
    )
    .await;
    let prefix = format!("outage-{}", stack.app);
    start(&stack.engine, &prefix, 0, 10).await;
    converged(&stack, &prefix, "the first tasks").await;

    // The engine stopped for a minute: the task list goes on answering from the view, an
    // action fails with a clear answer and changes nothing, and once the engine is back the
    // collector finds what changed.
    let down = Instant::now();
    script("camunda", "stop");
    let listed = stack.reviewer_tasks(&prefix).await;
    assert_eq!(
        listed.len(),
        10,
        "the task list answers while the engine is down"
    );
    // Not the task of instance 0, which is deleted meanwhile.
    let target = listed
        .iter()
        .find(|t| t["source"]["businessKey"] != json!(format!("{prefix}-0")))
        .and_then(|t| t["taskId"].as_str())
        .expect("a task")
        .to_owned();
    let (status, body) = stack
        .core
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/tasks/{}/{target}/claim", stack.app),
            "rita",
            &["reviewers"],
            None,
        )
        .await;
    assert!(
        status.is_server_error() && body["error"]["code"].is_string(),
        "a claim while the engine is down fails clearly: {status} {body}"
    );
    // The outage's length, not a wait for a condition: the engine stays down a full minute.
    tokio::time::sleep_until((down + ENGINE_DOWN).into()).await;
    script("camunda", "start");
    let engine = Engine::connect().await;
    start(&engine, &prefix, 10, 5).await;
    let first = engine
        .ok(
            reqwest::Method::GET,
            &format!("/task?processInstanceBusinessKey={prefix}-0"),
            None,
        )
        .await;
    let instance = first[0]["processInstanceId"]
        .as_str()
        .expect("instance")
        .to_owned();
    engine.delete_instance(&instance).await;
    converged(&stack, &prefix, "the engine came back").await;
    let (_, task) = stack
        .core
        .get(
            &format!("/api/v1/tasks/{}/{target}", stack.app),
            "rita",
            &["reviewers"],
        )
        .await;
    assert_eq!(
        task["assignee"],
        json!(null),
        "the failed claim changed nothing"
    );
    let in_engine = engine
        .ok(reqwest::Method::GET, &format!("/task/{target}"), None)
        .await;
    assert_eq!(in_engine["assignee"], json!(null), "nor in the engine");

    // PostgreSQL restarted under the engine and the collector.
    script("postgres", "stop");
    script("postgres", "start");
    wait_for(
        "the engine answers again",
        Duration::from_secs(60),
        || async {
            let (status, _) = engine.call(reqwest::Method::GET, "/task/count", None).await;
            (status == 200).then_some(())
        },
    )
    .await;
    start(&engine, &prefix, 15, 5).await;
    converged(&stack, &prefix, "PostgreSQL came back").await;

    // The view's MongoDB server restarted while tasks change.
    store.kill();
    start(&engine, &prefix, 20, 5).await;
    store.spawn();
    converged(&stack, &prefix, "the store came back").await;

    // The bus without a quorum: two of three nodes down while tasks change.
    let leader = stack.bus.leader().await;
    let other = (1..=3).find(|n| *n != leader).expect("another node");
    stack.bus.kill(leader);
    stack.bus.kill(other);
    start(&engine, &prefix, 25, 5).await;
    stack.bus.spawn(leader);
    stack.bus.spawn(other);
    converged(&stack, &prefix, "the bus had its quorum back").await;

    // And the stored view, as a restarted taskpool-core loads it, is the same.
    stack.core.service.kill();
    stack.core.service.spawn();
    stack.core.wait_ready().await;
    converged(&stack, &prefix, "taskpool-core restarted").await;

    let open = stack.engine_tasks(&prefix).await.map(|t| t.len());
    assert_eq!(open, Some(29), "30 started, one deleted");
    stack.delete_instances(&prefix).await;
}
