//! The whole system end to end, on the real engine: a task created in the engine → visible in
//! the task API (its SSE stream), in hook mode and in poll mode; claim through the task API
//! (answered once the view shows it) in each mode against a claim on the engine's own REST; and
//! a burst of instances until all are visible. Each figure has the engine's own in the same run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

use e2e::{Mode, Stack};

use crate::{ms, p50_p99, render_table, E2eArgs};

const KEY: &str = "simpleUserTask";

pub async fn run(args: &E2eArgs) -> bool {
    match bench(args).await {
        Ok(table) => {
            print!("{table}");
            true
        }
        Err(e) => {
            eprintln!("end-to-end benchmark failed: {e:#}");
            false
        }
    }
}

/// When each process instance's first task reached the SSE stream of a reviewer.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// Follows `/api/v1/tasks/stream` as a reviewer, noting first arrivals by process instance.
async fn follow(stack: &Stack) -> Result<(Arrivals, tokio::task::JoinHandle<()>)> {
    let arrivals: Arrivals = Arc::default();
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/tasks/stream", stack.core.url()))
        .header("x-user", "rita")
        .header("x-groups", "reviewers")
        .send()
        .await?
        .error_for_status()?;
    let seen = arrivals.clone();
    let reader = tokio::spawn(async move {
        let mut body = r.bytes_stream();
        let mut buf = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            let now = Instant::now();
            buf.extend_from_slice(&chunk);
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                let Some(data) = line.strip_prefix(b"data:") else {
                    continue;
                };
                let Ok(v) = serde_json::from_slice::<Value>(data) else {
                    continue;
                };
                if let Some(pi) = v["task"]["source"]["processInstanceId"].as_str() {
                    seen.lock()
                        .expect("arrivals")
                        .entry(pi.to_owned())
                        .or_insert(now);
                }
            }
        }
    });
    Ok((arrivals, reader))
}

/// Starts `n` instances one after the other; per instance, the engine's answer to the start
/// and the arrival of its task in the task API, both from just before the start request.
async fn creation(
    stack: &Stack,
    n: usize,
    label: &str,
) -> Result<(Vec<f64>, Vec<f64>, Vec<String>)> {
    let (arrivals, reader) = follow(stack).await?;
    let (mut engine_ms, mut visible_ms, mut instances) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let t0 = Instant::now();
        let instance = stack
            .engine
            .start(KEY, &format!("bench-{label}-{i}-{}", stack.app), json!({}))
            .await;
        engine_ms.push(ms(t0.elapsed()));
        let deadline = Instant::now() + Duration::from_secs(30);
        let arrived = loop {
            if let Some(at) = arrivals.lock().expect("arrivals").get(&instance) {
                break *at;
            }
            if Instant::now() > deadline {
                bail!("{label}: the task of instance {instance} did not reach the task API within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        visible_ms.push(ms(arrived - t0));
        instances.push(instance);
        if (i + 1) % 50 == 0 {
            eprintln!("[e2e] {label}: {}/{n}", i + 1);
        }
    }
    reader.abort();
    Ok((engine_ms, visible_ms, instances))
}

async fn cleanup(stack: &Stack, instances: &[String]) {
    for i in instances {
        stack.engine.delete_instance(i).await;
    }
}

async fn bench(args: &E2eArgs) -> Result<String> {
    let mut rows = vec![[
        "end to end".to_owned(),
        "Taskpool".to_owned(),
        "engine's own".to_owned(),
        "ratio / goal".to_owned(),
    ]];

    eprintln!("[e2e] hook mode: {} tasks, one at a time", args.instances);
    let stack = Stack::start("bench", Mode::Hook).await;
    let (engine_ms, visible_ms, mut created) = creation(&stack, args.instances, "hook").await?;
    let (e50, e99) = p50_p99(engine_ms);
    let (v50, v99) = p50_p99(visible_ms);
    rows.push([
        "created → visible, hook mode p50 (ms)".into(),
        format!("{v50:.1}"),
        format!("{e50:.1}"),
        format!("goal < 50: {}", if v50 < 50.0 { "met" } else { "NOT met" }),
    ]);
    rows.push([
        "created → visible, hook mode p99 (ms)".into(),
        format!("{v99:.1}"),
        format!("{e99:.1}"),
        format!(
            "goal < 250: {}",
            if v99 < 250.0 { "met" } else { "NOT met" }
        ),
    ]);

    eprintln!(
        "[e2e] hook mode: {} claims through the task API, {} on the engine",
        args.claims, args.claims
    );
    let (claim_tasks, engine_claim_tasks) = created.split_at(args.claims.min(created.len() / 2));
    let claimed = claims(&stack, claim_tasks, engine_claim_tasks).await?;
    rows.extend(claim_rows("hook mode", claimed));
    // The poll-mode claim rows come after these.
    let poll_claims_at = rows.len();

    // A burst: instances started by 8 concurrent clients; until the engine has answered every
    // start, and until the task API lists every task.
    eprintln!("[e2e] burst of {} instances", args.burst);
    let prefix = format!("bench-burst-{}", stack.app);
    let t0 = Instant::now();
    let started: Vec<Vec<String>> = futures::future::join_all((0..8).map(|w| {
        let prefix = prefix.clone();
        let n = args.burst;
        async move {
            let engine = testkit::Engine::connect().await;
            let mut ids = Vec::new();
            for i in (w..n).step_by(8) {
                ids.push(engine.start(KEY, &format!("{prefix}-{i}"), json!({})).await);
            }
            ids
        }
    }))
    .await;
    let engine_done = t0.elapsed();
    let query = format!("/api/v1/tasks?filter=task.businessKey%25{prefix}&size=1");
    loop {
        let (status, v) = stack.core.get(&query, "rita", &["reviewers"]).await;
        if status.is_success() && v["total"].as_u64() == Some(args.burst as u64) {
            break;
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!(
                "burst: not all {} tasks visible after 10 minutes: {v}",
                args.burst
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let visible_done = t0.elapsed();
    rows.push([
        format!("burst of {} instances: all visible (s)", args.burst),
        format!("{:.2}", visible_done.as_secs_f64()),
        format!("{:.2}", engine_done.as_secs_f64()),
        format!(
            "{:.2}x",
            visible_done.as_secs_f64() / engine_done.as_secs_f64()
        ),
    ]);
    created.extend(started.into_iter().flatten());
    cleanup(&stack, &created).await;
    drop(stack);

    // Poll mode: the collector asks the engine every --poll-interval.
    let interval = args.poll_interval;
    eprintln!(
        "[e2e] poll mode every {interval:?}: {} tasks",
        args.poll_instances
    );
    let stack = Stack::start("bench-poll", Mode::Poll(interval)).await;
    let (engine_ms, visible_ms, created) = creation(&stack, args.poll_instances, "poll").await?;
    let (e50, _) = p50_p99(engine_ms);
    let (v50, v99) = p50_p99(visible_ms);
    let goal = ms(interval) + 250.0;
    rows.push([
        format!(
            "created → visible, poll every {} ms p50 (ms)",
            interval.as_millis()
        ),
        format!("{v50:.1}"),
        format!("{e50:.1}"),
        String::new(),
    ]);
    rows.push([
        format!(
            "created → visible, poll every {} ms p99 (ms)",
            interval.as_millis()
        ),
        format!("{v99:.1}"),
        String::new(),
        format!(
            "goal < {goal:.0}: {}",
            if v99 < goal { "met" } else { "NOT met" }
        ),
    ]);

    // Claims in poll mode: on tasks the view already holds (started together, then waited
    // for), so that only the claim's own round trip is timed, not the next poll.
    let n = args.claims * 2;
    eprintln!(
        "[e2e] poll mode: {} claims through the task API, {} on the engine",
        args.claims, args.claims
    );
    let prefix = format!("bench-poll-claim-{}", stack.app);
    let mut to_claim = Vec::with_capacity(n);
    for i in 0..n {
        to_claim.push(
            stack
                .engine
                .start(KEY, &format!("{prefix}-{i}"), json!({}))
                .await,
        );
    }
    let query = format!("/api/v1/tasks?filter=task.businessKey%25{prefix}&size=1");
    let t0 = Instant::now();
    loop {
        let (status, v) = stack.core.get(&query, "rita", &["reviewers"]).await;
        if status.is_success() && v["total"].as_u64() == Some(n as u64) {
            break;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            bail!("poll mode: not all {n} tasks to claim visible after 2 minutes: {v}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (claim_tasks, engine_claim_tasks) = to_claim.split_at(n / 2);
    let claimed = claims(&stack, claim_tasks, engine_claim_tasks).await?;
    let poll_rows = claim_rows(&format!("poll mode ({} ms)", interval.as_millis()), claimed);
    rows.splice(poll_claims_at..poll_claims_at, poll_rows);
    cleanup(&stack, &created).await;
    cleanup(&stack, &to_claim).await;
    Ok(render_table(&rows))
}

/// Claims as rita: through the task API on the tasks of the instances `api` (answered only
/// once the view shows the new assignee), and on the engine's own REST on those of `own`.
/// Both sets of latencies (ms).
async fn claims(stack: &Stack, api: &[String], own: &[String]) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut api_ms = Vec::new();
    for instance in api {
        let task = stack.engine.task_id(instance).await;
        let t0 = Instant::now();
        let (status, v) = stack
            .core
            .call(
                Method::POST,
                &format!("/api/v1/tasks/{}/{task}/claim", stack.app),
                "rita",
                &["reviewers"],
                None,
            )
            .await;
        api_ms.push(ms(t0.elapsed()));
        if !status.is_success() || v["task"]["assignee"] != "rita" {
            bail!("claim {task}: {status} {v}");
        }
    }
    let mut engine_ms = Vec::new();
    for instance in own.iter().take(api.len()) {
        let task = stack.engine.task_id(instance).await;
        let t0 = Instant::now();
        stack.engine.claim(&task, "rita").await;
        engine_ms.push(ms(t0.elapsed()));
    }
    Ok((api_ms, engine_ms))
}

/// The p50 and p99 rows of one mode's claims, Taskpool beside the engine's own REST.
fn claim_rows(mode: &str, (api_ms, engine_ms): (Vec<f64>, Vec<f64>)) -> [[String; 4]; 2] {
    let (a50, a99) = p50_p99(api_ms);
    let (c50, c99) = p50_p99(engine_ms);
    [
        [
            format!("claim round trip, {mode} p50 (ms)"),
            format!("{a50:.1}"),
            format!("{c50:.1}"),
            format!(
                "goal < 100: {}",
                if a50 < 100.0 { "met" } else { "NOT met" }
            ),
        ],
        [
            format!("claim round trip, {mode} p99 (ms)"),
            format!("{a99:.1}"),
            format!("{c99:.1}"),
            format!("{:.1}x", a99 / c99),
        ],
    ]
}
