//! Changes made inside the engine, not through Taskpool, reach the view: candidate groups
//! changed, a process instance cancelled, a boundary timer firing.

use reqwest::Method;
use serde_json::json;

use e2e::{Mode, Stack};

#[tokio::test]
async fn the_view_follows_changes_made_inside_the_engine() {
    let stack = Stack::start("follow", Mode::Hook).await;
    let engine = &stack.engine;

    // Candidate group reviewers → auditors, by the engine's identity-link API.
    let moved = engine
        .start("simpleUserTask", &format!("move-{}", stack.app), json!({}))
        .await;
    let task = engine.task_id(&moved).await;
    stack.visible(&task, "rita", &["reviewers"]).await;
    engine.candidate_group(&task, "auditors", true).await;
    engine.candidate_group(&task, "reviewers", false).await;
    stack
        .until("auditors alone", &task, "audrey", &["auditors"], |t| {
            t["candidateGroups"] == json!(["auditors"])
        })
        .await;
    stack.gone(&task, "rita", &["reviewers"]).await;

    // The process instance cancelled in the engine: its task leaves the view.
    let cancelled = engine
        .start(
            "simpleUserTask",
            &format!("cancel-{}", stack.app),
            json!({}),
        )
        .await;
    let task = engine.task_id(&cancelled).await;
    stack.visible(&task, "rita", &["reviewers"]).await;
    engine
        .ok(
            Method::DELETE,
            &format!("/process-instance/{cancelled}"),
            None,
        )
        .await;
    stack.gone(&task, "rita", &["reviewers"]).await;

    // An interrupting boundary timer, fired by the engine's job executor, ends the task.
    let timed = engine
        .start(
            "boundaryTimer",
            &format!("timer-{}", stack.app),
            json!({"timeout": {"value": "PT5S", "type": "String"}}),
        )
        .await;
    let task = engine.task_id(&timed).await;
    stack.visible(&task, "demo", &[]).await;
    // The engine's job executor fires a due timer at its next acquisition, which an idle
    // engine backs off to a minute: wait for the engine first, then for the view.
    let path = format!("/history/task?taskId={task}");
    let history = testkit::wait_for(
        "the engine's timer to end the task",
        std::time::Duration::from_secs(180),
        || async {
            let history = engine.ok(Method::GET, &path, None).await;
            history[0]["endTime"].is_string().then_some(history)
        },
    )
    .await;
    stack.gone(&task, "demo", &[]).await;
    assert_ne!(
        history[0]["deleteReason"], "completed",
        "the timer deleted the task: {history}"
    );
}
