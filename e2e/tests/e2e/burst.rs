//! SIGKILL of a bus node, of the collector and of taskpool-core while 500 process instances
//! start: after the restarts the view holds exactly the engine's open tasks, each once.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use testkit::{wait_for, Engine};

use e2e::{Mode, Stack};

const INSTANCES: usize = 500;
const STARTERS: usize = 4;

/// Waits until `started` has reached `n`.
async fn after(started: &AtomicUsize, n: usize) {
    wait_for(
        &format!("{n} instances started"),
        Duration::from_secs(300),
        || async { (started.load(Ordering::SeqCst) >= n).then_some(()) },
    )
    .await;
}

/// The engine's open tasks of instances whose business key starts with `prefix`.
async fn open_tasks(engine: &Engine, prefix: &str) -> Vec<serde_json::Value> {
    let path = format!("/task?processInstanceBusinessKeyLike={prefix}%25&maxResults=2000");
    let tasks = engine.ok(reqwest::Method::GET, &path, None).await;
    tasks.as_array().expect("tasks").clone()
}

#[tokio::test]
async fn nothing_is_lost_when_every_service_is_killed_during_a_burst() {
    let mut stack = Stack::start("burst", Mode::Hook).await;
    let prefix = format!("burst-{}", stack.app);
    let started = Arc::new(AtomicUsize::new(0));
    let starters: Vec<_> = (0..STARTERS)
        .map(|w| {
            let (started, prefix) = (started.clone(), prefix.clone());
            tokio::spawn(async move {
                let engine = Engine::connect().await;
                for i in (w..INSTANCES).step_by(STARTERS) {
                    engine
                        .start("simpleUserTask", &format!("{prefix}-{i}"), json!({}))
                        .await;
                    started.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    after(&started, 60).await;
    let leader = stack.bus.leader().await;
    stack.bus.kill(leader);
    after(&started, 140).await;
    stack.bus.spawn(leader);

    after(&started, 200).await;
    stack.collector.kill();
    after(&started, 280).await;
    stack.collector.spawn();

    after(&started, 340).await;
    stack.core.service.kill();
    after(&started, 420).await;
    stack.core.service.spawn();

    for s in starters {
        s.await.expect("starter");
    }
    stack.bus.wait_ready(leader).await;
    stack.core.wait_ready().await;

    // The engine's open tasks of the burst, and what the task API lists, until they agree.
    let expected: BTreeSet<String> = open_tasks(&stack.engine, &prefix)
        .await
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(expected.len(), INSTANCES, "one open task per instance");
    let query = format!("filter=task.businessKey%25{prefix}");
    let listed = wait_for(
        "the view to hold the engine's open tasks",
        Duration::from_secs(180),
        || async {
            let listed: Vec<String> = stack
                .all_tasks(&query, "rita", &["reviewers"])
                .await
                .iter()
                .map(|t| t["taskId"].as_str().expect("taskId").to_owned())
                .collect();
            let set: BTreeSet<String> = listed.iter().cloned().collect();
            (set == expected).then_some(listed)
        },
    )
    .await;
    assert_eq!(listed.len(), INSTANCES, "no task listed twice");

    // The engine is shared with the other tests: leave it as it was.
    for t in open_tasks(&stack.engine, &prefix).await {
        let instance = t["processInstanceId"].as_str().expect("instance");
        stack.engine.delete_instance(instance).await;
    }
}
