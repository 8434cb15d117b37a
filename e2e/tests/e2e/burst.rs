//! SIGKILL of a bus node, of the collector and of taskpool-core while 500 process instances
//! start: after the restarts the view holds exactly the engine's open tasks, each once.

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
    let open = stack.engine_tasks(&prefix).await.map(|t| t.len());
    assert_eq!(open, Some(INSTANCES), "one open task per instance");
    let listed = stack.wait_view_matches_engine(&prefix, "the kills").await;
    assert_eq!(listed.len(), INSTANCES, "no task listed twice");

    // The engine is shared with the other tests: leave it as it was.
    stack.delete_instances(&prefix).await;
}
