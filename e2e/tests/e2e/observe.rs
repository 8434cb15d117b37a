//! Prometheus scrapes every service with `deploy/prometheus.yml`'s jobs; the metrics show what
//! the test did, and every metric the Grafana dashboard charts exists.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use testkit::engine::REPO;
use testkit::wait_for;

use e2e::{Mode, Prometheus, Stack};

#[tokio::test]
async fn prometheus_scrapes_every_service_and_sees_what_happened() {
    let stack = Stack::start("observe", Mode::Hook).await;
    // The second process application's collector, polling the billing engine.
    let billing_url = testkit::engine::billing_engine_url();
    let billing = testkit::Collector::start(
        &format!("{}-billing", stack.app),
        &stack.bus,
        &["--engine-url", &billing_url, "--poll-interval", "1s"],
    );
    let bus = |id: u64| stack.bus.node(id).addr.clone();
    let prometheus = Prometheus::start(&[
        ("bus1:7101", bus(1)),
        ("bus2:7102", bus(2)),
        ("bus3:7103", bus(3)),
        ("collector:7201", stack.collector.listen.clone()),
        ("collector-billing:7202", billing.listen.clone()),
        ("taskpool-core:7301", stack.core.listen.clone()),
    ])
    .await;

    let targets = wait_for("every target up", Duration::from_secs(60), || async {
        let t = prometheus.targets().await;
        (t.len() == 7 && t.iter().all(|(_, h)| h == "up")).then_some(t)
    })
    .await;
    let jobs: BTreeSet<&str> = targets.iter().map(|(j, _)| j.as_str()).collect();
    assert_eq!(
        jobs,
        BTreeSet::from([
            "camunda-collector",
            "prometheus",
            "raft-bus",
            "taskpool-core"
        ])
    );

    // Three tasks, one claimed through the task API, then exactly five task-list requests.
    let mut tasks = Vec::new();
    for i in 0..3 {
        let instance = stack
            .engine
            .start(
                "simpleUserTask",
                &format!("observe-{i}-{}", stack.app),
                json!({}),
            )
            .await;
        tasks.push(stack.engine.task_id(&instance).await);
    }
    for task in &tasks {
        stack.visible(task, "rita", &["reviewers"]).await;
    }
    let (status, claimed) = stack
        .core
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/tasks/{}/{}/claim", stack.app, tasks[0]),
            "rita",
            &["reviewers"],
            None,
        )
        .await;
    assert!(status.is_success(), "{claimed}");
    for _ in 0..5 {
        let (status, _) = stack
            .core
            .get("/api/v1/tasks", "rita", &["reviewers"])
            .await;
        assert!(status.is_success());
    }

    let value = |expr: &'static str| {
        let prometheus = &prometheus;
        async move { prometheus.query(expr).await.first().map(|(_, v)| *v) }
    };
    wait_for(
        "five task-list requests counted",
        Duration::from_secs(30),
        || async {
            let n =
                value(r#"sum(taskpool_http_requests_total{route="/api/v1/tasks",status="200"})"#)
                    .await;
            (n == Some(5.0)).then_some(())
        },
    )
    .await;
    // The view holds what both engines hold; all nodes and the view at one head position.
    let billing_engine = testkit::Engine::connect_to(&billing_url).await;
    wait_for(
        "view open tasks = both engines' open tasks",
        Duration::from_secs(60),
        || async {
            let mut open = 0.0;
            for engine in [&stack.engine, &billing_engine] {
                let (_, count) = engine.call(reqwest::Method::GET, "/task/count", None).await;
                open += count["count"].as_f64()?;
            }
            let view = value("taskpool_open_tasks").await?;
            (view == open).then_some(())
        },
    )
    .await;
    wait_for(
        "bus heads and view position agree",
        Duration::from_secs(30),
        || async {
            let low = value("min(raftbus_head_position)").await?;
            let high = value("max(raftbus_head_position)").await?;
            let view = value("taskpool_view_position").await?;
            (low == high && high == view && view > 0.0).then_some(())
        },
    )
    .await;
    // The one claim: sent by taskpool-core, routed by the bus, executed by the collector.
    wait_for(
        "one command counted by each service",
        Duration::from_secs(30),
        || async {
            for expr in [
                r#"sum(taskpool_commands_total{outcome="ok"})"#,
                r#"sum(collector_commands_total{outcome="ok"})"#,
                "sum(raftbus_commands_routed_total)",
            ] {
                let n = value(expr).await;
                assert!(
                    n.is_none_or(|n| n <= 1.0),
                    "{expr} = {n:?}: more than the one claim"
                );
                n.filter(|n| *n == 1.0)?;
            }
            Some(())
        },
    )
    .await;
    let leaders = value("sum(raftbus_is_leader)").await;
    assert_eq!(leaders, Some(1.0), "exactly one leader");
    let hooks = value(r#"sum(collector_hooks_total{outcome="accepted"})"#).await;
    assert!(
        hooks.is_some_and(|n| n >= 3.0),
        "the three tasks came by hook: {hooks:?}"
    );

    // Every metric the dashboard charts is one the services export.
    let names: BTreeSet<String> = prometheus.metric_names().await.into_iter().collect();
    let dashboard =
        std::fs::read_to_string(format!("{REPO}/deploy/grafana/taskpool-dashboard.json"))
            .expect("dashboard");
    let charted = metric_names_in(&dashboard);
    assert!(charted.len() >= 15, "{charted:?}");
    for name in charted {
        assert!(
            names.contains(&name),
            "the dashboard charts {name}, which no service exports"
        );
    }
}

/// The metric names in PromQL expressions: words starting with one of our prefixes or `up`.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut word = String::new();
    for c in text.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if ["raftbus_", "collector_", "taskpool_"]
            .iter()
            .any(|p| word.starts_with(p))
        {
            out.insert(word.clone());
        }
        word.clear();
    }
    out
}
