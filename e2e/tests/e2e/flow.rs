//! A task's life as its users see it: started in the engine, visible to the right people in the
//! task API, claimed in Camunda's own Tasklist, completed through the task API.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use testkit::engine::engine_url;

use e2e::{Browser, Mode, Stack};

/// Camunda's Tasklist, next to the engine's REST API.
fn tasklist() -> String {
    engine_url().replace("/engine-rest", "/camunda/app/tasklist/default/")
}

#[tokio::test]
async fn a_task_from_start_to_completion() {
    let stack = Stack::start("flow", Mode::Hook).await;
    let engine = &stack.engine;
    let key = format!("flow-{}", stack.app);
    let instance = engine
        .start(
            "simpleUserTask",
            &key,
            json!({"amount": {"value": 420, "type": "Long"}}),
        )
        .await;
    let task = engine.task_id(&instance).await;

    // Visible to a reviewer (candidate group), with the engine's data; not to anyone else.
    let seen = stack.visible(&task, "rita", &["reviewers"]).await;
    assert_eq!(seen["source"]["businessKey"], key.as_str());
    assert_eq!(seen["payload"]["amount"], 420);
    assert_eq!(seen["candidateGroups"], json!(["reviewers"]));
    let (status, _) = stack
        .core
        .get(
            &format!("/api/v1/tasks/{}/{task}", stack.app),
            "mallory",
            &["sales"],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "mallory is no reviewer");
    let (_, mine) = stack
        .core
        .get(
            &format!("/api/v1/tasks?filter=task.businessKey={key}"),
            "rita",
            &["reviewers"],
        )
        .await;
    assert_eq!(mine["total"], 1, "{mine}");

    // demo claims it in Camunda's Tasklist, in a real browser.
    let browser = Browser::start().await;
    browser.goto(&tasklist()).await;
    browser.type_into("input[ng-model=username]", "demo").await;
    browser.type_into("input[ng-model=password]", "demo").await;
    browser.click("button[type=submit]").await;
    // The account menu appears once the login went through.
    browser.element(".account.dropdown").await;
    browser.goto(&format!("{}#/?task={task}", tasklist())).await;
    browser.click("button.claim").await;
    let claimed = stack
        .until(
            "the Tasklist claim in the view",
            &task,
            "rita",
            &["reviewers"],
            |t| t["assignee"] == "demo",
        )
        .await;
    assert_eq!(claimed["assignee"], "demo");
    browser.quit().await;

    // The assignee sees it among their own tasks, and completes it through the task API.
    let (_, assigned) = stack
        .core
        .get(
            &format!("/api/v1/tasks?assignedToMe=true&filter=task.businessKey={key}"),
            "demo",
            &[],
        )
        .await;
    assert_eq!(assigned["total"], 1, "{assigned}");
    let (status, done) = stack
        .core
        .call(
            Method::POST,
            &format!("/api/v1/tasks/{}/{task}/complete", stack.app),
            "demo",
            &[],
            Some(json!({"variables": {"approved": true, "comment": "fine"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let (status, _) = stack
        .core
        .get(&format!("/api/v1/tasks/{}/{task}", stack.app), "demo", &[])
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a completed task leaves the list"
    );

    // The engine moved on: the instance ended with the variables the task API sent.
    assert_eq!(engine.instance_state(&instance).await, "COMPLETED");
    assert_eq!(
        engine.history_variable(&instance, "approved").await,
        Value::Bool(true)
    );
}

#[tokio::test]
async fn a_suspended_task_shows_suspended_and_refuses_actions_until_activated() {
    let stack = Stack::start("suspend", Mode::Poll(std::time::Duration::from_secs(1))).await;
    let engine = &stack.engine;
    let key = format!("suspend-{}", stack.app);
    let instance = engine.start("simpleUserTask", &key, json!({})).await;
    let task = engine.task_id(&instance).await;
    let seen = stack.visible(&task, "rita", &["reviewers"]).await;
    assert_eq!(seen["suspended"], false);

    // Suspended in the engine (as Cockpit does it): the list shows it, and a claim is refused.
    let path = format!("/process-instance/{instance}/suspended");
    engine
        .ok(Method::PUT, &path, Some(json!({"suspended": true})))
        .await;
    stack
        .until(
            "the suspension in the view",
            &task,
            "rita",
            &["reviewers"],
            |t| t["suspended"] == true,
        )
        .await;
    let (_, listed) = stack
        .core
        .get(
            &format!("/api/v1/tasks?filter=task.suspended=true&filter=task.businessKey={key}"),
            "rita",
            &["reviewers"],
        )
        .await;
    assert_eq!(listed["total"], 1, "{listed}");
    let claim = format!("/api/v1/tasks/{}/{task}/claim", stack.app);
    let (status, refused) = stack
        .core
        .call(Method::POST, &claim, "rita", &["reviewers"], None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "suspended");
    let assignee = engine.ok(Method::GET, &format!("/task/{task}"), None).await["assignee"].clone();
    assert_eq!(assignee, Value::Null, "the engine was not changed");

    // Activated again: the claim goes through.
    engine
        .ok(Method::PUT, &path, Some(json!({"suspended": false})))
        .await;
    stack
        .until(
            "the activation in the view",
            &task,
            "rita",
            &["reviewers"],
            |t| t["suspended"] == false,
        )
        .await;
    let (status, claimed) = stack
        .core
        .call(Method::POST, &claim, "rita", &["reviewers"], None)
        .await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    engine.delete_instance(&instance).await;
}
