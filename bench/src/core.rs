//! taskpool-core against the engine's own REST API: "my tasks" (a user and their five groups,
//! first page of 50 by priority then creation, with the total) over the same open tasks in
//! both, and the rate of `taskpool-core rebuild`.
//!
//! The engine gets its tasks from a multi-instance user task (1,000 tasks per start), its
//! users, groups and memberships through the identity REST API; the same tasks go onto the
//! bus as `TaskCreated` events, built from the engine's task list and identity-link log.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::Rng;
use reqwest::Method;
use serde_json::{json, Value};
use taskpool_api::bus::{AppendRequest, NewEvent};
use taskpool_api::streams::task_stream;
use taskpool_api::tasks::{SourceReference, Task, TaskEvent};
use taskpool_api::{BusClient, ClientConfig};
use tokio::process::{Child, Command};

use crate::cluster::{self, Kind};
use crate::collector::Engine;
use crate::{render_table, CommonArgs, CoreArgs};

const KEY: &str = "taskpoolBenchQuery";
const PER_START: usize = 1_000;

fn bpmn() -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
  xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="bench-query" targetNamespace="http://taskpool.dev/bench">
  <bpmn:process id="{KEY}" isExecutable="true" camunda:historyTimeToLive="P1D">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="work" />
    <bpmn:userTask id="work" name="Bench task"
        camunda:candidateUsers="bench-user-${{(loopCounter * 7 + offset) % users}}"
        camunda:candidateGroups="bench-group-${{(loopCounter + offset) % groups}}"
        camunda:priority="${{(loopCounter * 13 + offset) % 100}}">
      <bpmn:multiInstanceLoopCharacteristics camunda:collection="${{items}}" camunda:elementVariable="item" />
    </bpmn:userTask>
    <bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="end" />
    <bpmn:endEvent id="end" />
  </bpmn:process>
</bpmn:definitions>"#
    )
}

pub(crate) fn user(i: usize) -> String {
    format!("bench-user-{i}")
}

/// A user's five groups.
pub(crate) fn groups_of(i: usize, groups: usize) -> Vec<String> {
    (0..5)
        .map(|k| format!("bench-group-{}", (i + k * 10) % groups))
        .collect()
}

pub async fn run(common: &CommonArgs, args: &CoreArgs, dir: &Path) -> bool {
    match bench(common, args, dir).await {
        Ok(table) => {
            print!("{table}");
            true
        }
        Err(e) => {
            eprintln!("core benchmark failed: {e:#}");
            false
        }
    }
}

async fn count(engine: &Engine, query: &str) -> Result<u64> {
    let (v, _) = engine
        .call(Method::GET, &format!("/task/count?{query}"), None)
        .await?;
    v["count"].as_u64().context("count")
}

/// Users, groups and memberships in the engine's identity service (skipped when present).
async fn identities(engine: &Engine, args: &CoreArgs) -> Result<()> {
    let last = user(args.users - 1);
    if engine
        .call(Method::GET, &format!("/user/{last}/profile"), None)
        .await
        .is_ok()
    {
        return Ok(());
    }
    eprintln!(
        "[core] creating {} users and {} groups in the engine",
        args.users, args.groups
    );
    for g in 0..args.groups {
        let id = format!("bench-group-{g}");
        let _ = engine
            .call(
                Method::POST,
                "/group/create",
                Some(json!({"id": id, "name": id, "type": "WORKFLOW"})),
            )
            .await;
    }
    for i in 0..args.users {
        let id = user(i);
        let _ = engine
            .call(Method::POST, "/user/create", Some(json!({
                "profile": {"id": id, "firstName": "Bench", "lastName": i.to_string(), "email": format!("{id}@example.com")},
                "credentials": {"password": "bench-password"}
            })))
            .await;
        for g in groups_of(i, args.groups) {
            let _ = engine
                .call(Method::PUT, &format!("/group/{g}/members/{id}"), None)
                .await;
        }
    }
    Ok(())
}

/// Starts instances until the engine holds `args.tasks` open bench tasks (the run removes
/// them at its end, so other work on the engine does not meet them).
async fn fill(engine: &Engine, args: &CoreArgs) -> Result<()> {
    engine
        .deploy_bytes("bench-query.bpmn", bpmn().into_bytes())
        .await?;
    let mut open = count(engine, &format!("processDefinitionKey={KEY}")).await? as usize;
    let started = Instant::now();
    let mut offset = open / PER_START;
    while open < args.tasks {
        let items: Vec<usize> = (0..PER_START).collect();
        engine
            .start(KEY, json!({
                "items": {"value": serde_json::to_string(&items)?, "type": "Object",
                          "valueInfo": {"objectTypeName": "java.util.ArrayList", "serializationDataFormat": "application/json"}},
                "offset": {"value": offset, "type": "Integer"},
                "users": {"value": args.users, "type": "Integer"},
                "groups": {"value": args.groups, "type": "Integer"},
            }))
            .await?;
        offset += 1;
        open += PER_START;
        eprintln!(
            "[core] engine: {open}/{} open tasks ({:.0} s)",
            args.tasks,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The engine's bench tasks as `TaskCreated` events: task list pages plus the identity-link
/// log for candidates.
async fn task_events(engine: &Engine) -> Result<Vec<Task>> {
    let mut candidates: HashMap<String, (Vec<String>, Vec<String>)> = HashMap::new();
    let page = 10_000;
    for first in (0..).step_by(page) {
        let (v, _) = engine
            .call(Method::GET, &format!("/history/identity-link-log?processDefinitionKey={KEY}&type=candidate&sortBy=time&sortOrder=asc&firstResult={first}&maxResults={page}"), None)
            .await?;
        let rows = v.as_array().context("identity links")?;
        for r in rows {
            let (Some(task), Some(op)) = (r["taskId"].as_str(), r["operationType"].as_str()) else {
                continue;
            };
            let entry = candidates.entry(task.to_owned()).or_default();
            if op != "add" {
                continue;
            }
            if let Some(u) = r["userId"].as_str() {
                entry.0.push(u.to_owned());
            }
            if let Some(g) = r["groupId"].as_str() {
                entry.1.push(g.to_owned());
            }
        }
        if rows.len() < page {
            break;
        }
    }
    let mut tasks = Vec::new();
    for first in (0..).step_by(page) {
        let (v, _) = engine
            .call(Method::GET, &format!("/task?processDefinitionKey={KEY}&sortBy=id&sortOrder=asc&firstResult={first}&maxResults={page}"), None)
            .await?;
        let rows = v.as_array().context("tasks")?;
        for t in rows {
            let id = t["id"].as_str().context("task id")?.to_owned();
            let (users, groups) = candidates.remove(&id).unwrap_or_default();
            let created = t["created"]
                .as_str()
                .and_then(|c| chrono::DateTime::parse_from_str(c, "%Y-%m-%dT%H:%M:%S%.3f%z").ok())
                .map(|d| {
                    d.with_timezone(&chrono::Utc)
                        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                        .to_string()
                })
                .context("created")?;
            tasks.push(Task {
                task_id: id,
                name: t["name"].as_str().map(str::to_owned),
                task_definition_key: t["taskDefinitionKey"].as_str().map(str::to_owned),
                priority: t["priority"].as_i64().unwrap_or(50),
                created,
                assignee: t["assignee"].as_str().map(str::to_owned),
                candidate_users: users,
                candidate_groups: groups,
                source: SourceReference {
                    application: "camunda".into(),
                    engine: "default".into(),
                    process_definition_key: Some(KEY.into()),
                    process_definition_id: t["processDefinitionId"].as_str().map(str::to_owned),
                    process_instance_id: t["processInstanceId"].as_str().map(str::to_owned),
                    execution_id: t["executionId"].as_str().map(str::to_owned),
                    ..Default::default()
                },
                ..Default::default()
            });
        }
        if rows.len() < page {
            break;
        }
    }
    Ok(tasks)
}

struct Core {
    child: Child,
    url: String,
}

async fn start_core(
    args: &CoreArgs,
    bus: &cluster::Cluster,
    database: &str,
    dir: &Path,
) -> Result<Core> {
    if !args.view.core_bin.exists() {
        bail!(
            "{} not found: run cargo build --release -p taskpool-core",
            args.view.core_bin.display()
        );
    }
    let port = cluster::free_ports(1)?[0];
    let log = std::fs::File::create(dir.join("taskpool-core.log"))?;
    let child = Command::new(&args.view.core_bin)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--bus",
            &bus.urls.join(","),
        ])
        .args([
            "--mongo-url",
            &args.view.mongo_url,
            "--database",
            database,
            "--trust-identity-headers",
        ])
        .env("TASKPOOL_BUS_TOKEN", bus.token.clone().unwrap_or_default())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    Ok(Core {
        child,
        url: format!("http://127.0.0.1:{port}"),
    })
}

/// p50, p99 (ms) and answers per second of `n` sequential calls of `ask`.
async fn latencies<F, Fut>(n: usize, mut ask: F) -> Result<(f64, f64, f64)>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    for i in 0..(n / 10).max(3) {
        ask(i).await?;
    }
    let mut ms = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        ask(i).await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let (p50, p99) = crate::p50_p99(ms);
    Ok((p50, p99, rate))
}

async fn bench(common: &CommonArgs, args: &CoreArgs, dir: &Path) -> Result<String> {
    let engine = Engine {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()?,
        url: args.engine_url.clone(),
    };
    identities(&engine, args).await?;
    fill(&engine, args).await?;
    eprintln!("[core] reading the engine's tasks");
    let tasks = task_events(&engine).await?;
    eprintln!("[core] {} tasks; starting three bus nodes", tasks.len());
    let cluster = cluster::start(Kind::Bus, &common.raft_bus_bin, dir, common.bus_threads).await?;
    let bus = BusClient::new(ClientConfig::new(
        cluster.urls.clone(),
        cluster.token.clone(),
    ))?;
    let mut head = 0;
    for chunk in tasks.chunks(100) {
        let events = chunk
            .iter()
            .map(|t| {
                Ok(NewEvent::new(
                    task_stream(&t.source.application, &t.task_id),
                    "TaskCreated",
                    &TaskEvent::Created(t.clone()).to_json()?,
                )?)
            })
            .collect::<Result<Vec<_>>>()?;
        let r = bus
            .append(&AppendRequest {
                events,
                expected_versions: Default::default(),
            })
            .await?;
        head = r.events.last().map_or(head, |e| e.position);
    }
    let database = format!("bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut core = start_core(args, &cluster, &database, dir).await?;
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let ready = http.get(format!("{}/health/ready", core.url)).send().await;
        let position = match ready {
            Ok(r) => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["viewPosition"].as_u64()),
            Err(_) => None,
        };
        if position.is_some_and(|p| p >= head) {
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("taskpool-core did not project {head} events in 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let projected = started.elapsed();
    eprintln!(
        "[core] view holds {} tasks after {:.1} s",
        tasks.len(),
        projected.as_secs_f64()
    );

    let picks: Vec<usize> = {
        let mut rng = rand::thread_rng();
        (0..args.queries.max(args.engine_queries) * 2)
            .map(|_| rng.gen_range(0..args.users))
            .collect()
    };
    // The same question to both, checked on a few users: the totals must agree.
    let ours = |i: usize| {
        let (http, url, u) = (http.clone(), core.url.clone(), picks[i]);
        let groups = groups_of(u, args.groups).join(",");
        async move {
            let r = http
                .get(format!("{url}/api/v1/tasks?sort=-priority,created&size=50"))
                .header("x-user", user(u))
                .header("x-groups", groups)
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("taskpool-core answered {}", r.status());
            }
            let v: Value = r.json().await?;
            Ok(v["total"].as_u64().unwrap_or(0))
        }
    };
    let by_user = |i: usize| format!("candidateUser={}&includeAssignedTasks=true", user(picks[i]));
    let by_groups = |i: usize| {
        format!(
            "candidateGroups={}&includeAssignedTasks=true",
            groups_of(picks[i], args.groups).join(",")
        )
    };
    let engine_list = |q: String| {
        let engine = engine.clone();
        async move {
            engine
                .call(
                    Method::GET,
                    &format!(
                        "/task?{q}&sortBy=priority&sortOrder=desc&firstResult=0&maxResults=50"
                    ),
                    None,
                )
                .await?;
            let (v, _) = engine
                .call(Method::GET, &format!("/task/count?{q}"), None)
                .await?;
            Ok::<u64, anyhow::Error>(v["count"].as_u64().unwrap_or(0))
        }
    };
    // The very question taskpool-core answers: assignee, candidate user or one of five groups.
    let same_question = |i: usize| {
        let engine = engine.clone();
        let u = user(picks[i]);
        let body = json!({
            "orQueries": [{"assignee": u, "candidateUser": u, "candidateGroups": groups_of(picks[i], args.groups), "includeAssignedTasks": true}],
            "sorting": [{"sortBy": "priority", "sortOrder": "desc"}, {"sortBy": "created", "sortOrder": "asc"}],
        });
        async move {
            engine
                .call(
                    Method::POST,
                    "/task?firstResult=0&maxResults=50",
                    Some(body.clone()),
                )
                .await?;
            let (v, _) = engine.call(Method::POST, "/task/count", Some(body)).await?;
            Ok::<u64, anyhow::Error>(v["count"].as_u64().unwrap_or(0))
        }
    };
    let mut mismatches = 0;
    for (i, pick) in picks.iter().enumerate().take(5) {
        let a = ours(i).await?;
        let b = same_question(i).await?;
        if a != b {
            mismatches += 1;
            eprintln!(
                "[core] totals differ for {}: taskpool-core {a}, engine {b}",
                user(*pick)
            );
        }
    }

    eprintln!(
        "[core] measuring {} answers of taskpool-core, {} of each engine query",
        args.queries, args.engine_queries
    );
    let (p50, p99, rate) = latencies(args.queries, |i| {
        let f = ours(i);
        async move { f.await.map(|_| ()) }
    })
    .await?;
    let (u50, u99, urate) = latencies(args.engine_queries, |i| {
        let f = engine_list(by_user(i));
        async move { f.await.map(|_| ()) }
    })
    .await?;
    let (s50, s99, srate) = latencies(args.engine_queries, |i| {
        let f = same_question(i);
        async move { f.await.map(|_| ()) }
    })
    .await?;
    let (g50, g99, grate) = latencies(args.engine_queries, |i| {
        let f = engine_list(by_groups(i));
        async move { f.await.map(|_| ()) }
    })
    .await?;

    // Rebuild into a fresh database.
    let _ = core.child.kill().await;
    let rebuilt = format!("{database}_rebuilt");
    let line = crate::rebuild::rebuild(&args.view, &cluster, &rebuilt).await?;

    let mongo = mongodb::Client::with_uri_str(&args.view.mongo_url).await?;
    for db in [&database, &rebuilt] {
        mongo.database(db).drop().await?;
    }
    eprintln!("[core] removing the benchmark's process instances from the engine");
    let (v, _) = engine
        .call(
            Method::GET,
            &format!("/process-instance?processDefinitionKey={KEY}"),
            None,
        )
        .await?;
    let instances: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    engine.delete(&instances).await;

    let n = tasks.len();
    let mut rows = vec![[
        format!(
            "\"my tasks\" over {n} open tasks, {} users, {} groups",
            args.users, args.groups
        ),
        "p50 / p99 ms".to_string(),
        "answers/s".to_string(),
        "note".to_string(),
    ]];
    rows.push([
        "taskpool-core GET /api/v1/tasks (user + 5 groups, page of 50, total)".into(),
        format!("{p50:.2} / {p99:.2}"),
        format!("{rate:.0}"),
        "goal: p99 < 20 ms".into(),
    ]);
    rows.push([
        "Camunda POST /task {orQueries: assignee|candidateUser|5 groups, sorted} + count".into(),
        format!("{s50:.1} / {s99:.1}"),
        format!("{srate:.1}"),
        format!(
            "the same question; ratio p99 {:.0}x (goal ≥ 10x)",
            s99 / p99
        ),
    ]);
    rows.push([
        "Camunda GET /task?candidateUser=…&includeAssignedTasks=true + /task/count".into(),
        format!("{u50:.1} / {u99:.1}"),
        format!("{urate:.1}"),
        format!("ratio p99 {:.0}x", u99 / p99),
    ]);
    rows.push([
        "Camunda GET /task?candidateGroups=5 groups&includeAssignedTasks=true + count".into(),
        format!("{g50:.1} / {g99:.1}"),
        format!("{grate:.1}"),
        format!("ratio p99 {:.0}x", g99 / p99),
    ]);
    rows.push([
        "live projection of the TaskCreated events into the view".into(),
        "-".into(),
        format!("{:.0} events/s", n as f64 / projected.as_secs_f64()),
        format!("{:.1} s", projected.as_secs_f64()),
    ]);
    rows.push([
        "taskpool-core rebuild".into(),
        "-".into(),
        "-".into(),
        format!("{line} (goal ≥ 20,000 events/s)"),
    ]);
    if mismatches > 0 {
        rows.push([
            "WARNING: totals differed".into(),
            mismatches.to_string(),
            "-".into(),
            "see stderr".into(),
        ]);
    }
    Ok(render_table(&rows))
}
