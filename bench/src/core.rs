//! taskpool-core against the engine's own REST API: "my tasks" (a user and their five groups,
//! first page of 50 by priority then creation, with the total) over the same open tasks in
//! both, the same tasks spread over two applications, and the rate of `taskpool-core rebuild`.
//!
//! The engine gets its tasks from a multi-instance user task (engine.rs); the same tasks go
//! onto a bus as `TaskCreated` events of one application, and onto a second bus as events of
//! two applications (every other task, by id), each projected by its own taskpool-core into
//! its own database; a third taskpool-core projects the one-application events again (started
//! after the two-application one, as the first was before it), to show how far two processes
//! of the same data differ and to pool with the first. The views are asked the same users' questions,
//! one request at a time, each user's in turn starting with another view, so the machine's
//! drift falls on all alike.

mod engine;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rand::Rng;
use serde_json::Value;
use taskpool_api::bus::{AppendRequest, NewEvent};
use taskpool_api::streams::task_stream;
use taskpool_api::tasks::{Task, TaskEvent};
use testkit::Service;

use crate::cluster;
use crate::collector::Engine;
use crate::{ms, p50_p99, render_table, CommonArgs, CoreArgs};
pub(crate) use engine::{groups_of, user};

/// The application of the one-application view.
const ONE: &str = "camunda";
/// The applications of the two-application view: task `i` (by id) goes to `TWO[i % 2]`.
const TWO: [&str; 2] = ["camunda", "billing"];

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

/// One bus holding the tasks' `TaskCreated` events and one taskpool-core projecting them.
struct View {
    name: String,
    cluster: testkit::Cluster,
    service: Service,
    url: String,
    database: String,
    /// How long the live projection of every event took.
    projected: Duration,
}

impl View {
    /// A fresh bus with `tasks` on it, then taskpool-core on a fresh database, once its view
    /// holds them all.
    async fn start(
        name: &str,
        common: &CommonArgs,
        args: &CoreArgs,
        tasks: &[Task],
        dir: &Path,
    ) -> Result<View> {
        if !args.view.core_bin.exists() {
            bail!(
                "{} not found: run cargo build --release -p taskpool-core",
                args.view.core_bin.display()
            );
        }
        eprintln!("[core] {name}: starting three bus nodes");
        let cluster = cluster::start_bus(common, dir).await?;
        let bus = cluster::client_from(&cluster, 0)?;
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
        let database = format!("bench_{}", &crate::run_id());
        let port = testkit::free_port();
        let listen = format!("127.0.0.1:{port}");
        let bus_nodes = cluster.urls().join(",");
        let argv = [
            "serve",
            "--listen",
            &listen,
            "--bus",
            &bus_nodes,
            "--mongo-url",
            &args.view.mongo_url,
            "--database",
            &database,
            "--trust-identity-headers",
        ]
        .map(str::to_owned)
        .to_vec();
        let env = vec![(
            "TASKPOOL_BUS_TOKEN".to_owned(),
            cluster.token().unwrap_or_default().to_owned(),
        )];
        let log = dir.join(format!("taskpool-core-{database}.log"));
        let _ = std::fs::remove_file(&log);
        let service = Service::start_logging_to(
            &format!("taskpool-core {name}"),
            &args.view.core_bin,
            argv,
            env,
            log,
        );
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let ready = http.get(format!("{url}/health/ready")).send().await;
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
                bail!("{name}: taskpool-core did not project {head} events in 30 minutes");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let projected = started.elapsed();
        eprintln!(
            "[core] {name}: view holds {} tasks after {:.1} s",
            tasks.len(),
            projected.as_secs_f64()
        );
        Ok(View {
            name: name.to_owned(),
            cluster,
            service,
            url,
            database,
            projected,
        })
    }
}

/// `GET {url}{path}` of taskpool-core as user `u` with their five groups (trusted headers, so
/// the groups count in every application).
async fn ask_as(
    http: &reqwest::Client,
    url: &str,
    path: &str,
    u: usize,
    groups: usize,
) -> Result<Value> {
    let r = http
        .get(format!("{url}{path}"))
        .header("x-user", user(u))
        .header("x-groups", groups_of(u, groups).join(","))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("taskpool-core answered {}", r.status());
    }
    Ok(r.json().await?)
}

/// taskpool-core's "my tasks" for user `u`: the total.
async fn my_tasks(http: &reqwest::Client, url: &str, u: usize, groups: usize) -> Result<u64> {
    let path = "/api/v1/tasks?sort=-priority,created&size=50";
    let v = ask_as(http, url, path, u, groups).await?;
    Ok(v["total"].as_u64().unwrap_or(0))
}

/// How many tasks user `u` sees per application (`GET /api/v1/tasks/counts`).
async fn counts(http: &reqwest::Client, url: &str, u: usize, groups: usize) -> Result<Value> {
    ask_as(http, url, "/api/v1/tasks/counts", u, groups).await
}

/// p50, p99 (ms) and answers per second of `n` sequential calls of `ask`.
async fn latencies<F, Fut>(n: usize, mut ask: F) -> Result<(f64, f64, f64)>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<u64>>,
{
    for i in 0..(n / 10).max(3) {
        ask(i).await?;
    }
    let mut samples = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        ask(i).await?;
        samples.push(ms(t.elapsed()));
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let (p50, p99) = p50_p99(samples);
    Ok((p50, p99, rate))
}

/// One view's measured answers: p50, p99 (ms), answers per second.
struct Measured {
    p50: f64,
    p99: f64,
    rate: f64,
}

impl Measured {
    fn of(samples: &[f64]) -> Measured {
        let (p50, p99) = p50_p99(samples.to_vec());
        Measured {
            p50,
            p99,
            rate: samples.len() as f64 * 1000.0 / samples.iter().sum::<f64>(),
        }
    }
}

/// `n` answers of each view to the same users (after a tenth as many unmeasured), one request
/// at a time, each user's question to every view in turn, starting with another view each
/// time; all views' totals must agree. Returns each view's latencies (ms) and the number of
/// users on whose totals they disagreed.
async fn rotated(
    http: &reqwest::Client,
    views: &[&View],
    picks: &[usize],
    n: usize,
    groups: usize,
) -> Result<(Vec<Vec<f64>>, usize)> {
    let warm = (n / 10).max(3);
    let mut samples: Vec<Vec<f64>> = views.iter().map(|_| Vec::with_capacity(n)).collect();
    let mut differed = 0;
    for (i, &u) in picks.iter().enumerate().take(warm + n) {
        let mut answers = vec![(0, 0.0); views.len()];
        for k in (0..views.len()).map(|k| (i + k) % views.len()) {
            let t = Instant::now();
            let total = my_tasks(http, &views[k].url, u, groups).await?;
            answers[k] = (total, ms(t.elapsed()));
        }
        if answers.iter().any(|a| a.0 != answers[0].0) {
            differed += 1;
            let totals: Vec<String> = views
                .iter()
                .zip(&answers)
                .map(|(v, a)| format!("{} {}", v.name, a.0))
                .collect();
            eprintln!(
                "[core] totals differ for {}: {}",
                user(u),
                totals.join(", ")
            );
        }
        if i >= warm {
            for (s, a) in samples.iter_mut().zip(&answers) {
                s.push(a.1);
            }
        }
    }
    // The spread between fifths of the run shows how far the figures move by chance.
    for (view, s) in views.iter().zip(&samples) {
        let fifths: Vec<String> = s
            .chunks(n.div_ceil(5))
            .map(|c| {
                let (p50, p99) = p50_p99(c.to_vec());
                format!("{p50:.2}/{p99:.2}")
            })
            .collect();
        eprintln!(
            "[core] {}: p50/p99 ms by fifth of the run: {}",
            view.name,
            fifths.join(", ")
        );
    }
    Ok((samples, differed))
}

async fn bench(common: &CommonArgs, args: &CoreArgs, dir: &Path) -> Result<String> {
    let engine = Engine {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()?,
        url: args.engine_url.clone(),
    };
    engine::identities(&engine, args).await?;
    engine::fill(&engine, args).await?;
    eprintln!("[core] reading the engine's tasks");
    let tasks = engine::tasks(&engine, ONE).await?;
    let spread: Vec<Task> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut t = t.clone();
            t.source.application = TWO[i % 2].into();
            t
        })
        .collect();
    eprintln!("[core] {} tasks", tasks.len());
    let mut one = View::start("one application", common, args, &tasks, dir).await?;
    let mut two = View::start("two applications", common, args, &spread, dir).await?;
    // The one-application events again, in a process started after the two-application one
    // as the first was before it: how far processes of the same data differ, and pooled with
    // the first, the one-application figure the two-application one is judged against.
    let mut again = View::start("one application again", common, args, &tasks, dir).await?;

    let http = reqwest::Client::new();
    let picks: Vec<usize> = {
        let mut rng = rand::thread_rng();
        (0..args.queries.max(args.engine_queries) * 2)
            .map(|_| rng.gen_range(0..args.users))
            .collect()
    };
    // The same question to all three, checked on a few users: the totals must agree, and the
    // two-application view must give the user tasks of both applications.
    let mut mismatches = 0;
    for &u in picks.iter().take(5) {
        let a = my_tasks(&http, &one.url, u, args.groups).await?;
        let b = engine::my_tasks(&engine, u, args.groups).await?;
        let c = counts(&http, &two.url, u, args.groups).await?;
        let per_app: Vec<u64> = TWO
            .iter()
            .map(|app| c["applications"][app].as_u64().unwrap_or(0))
            .collect();
        if a != b || c["total"].as_u64() != Some(a) || per_app.contains(&0) {
            mismatches += 1;
            eprintln!(
                "[core] totals differ for {}: taskpool-core {a}, engine {b}, two applications {c}",
                user(u)
            );
        }
    }

    eprintln!(
        "[core] measuring {} answers of each view, {} of each engine query",
        args.queries, args.engine_queries
    );
    let (samples, differed) = rotated(
        &http,
        &[&one, &two, &again],
        &picks,
        args.queries,
        args.groups,
    )
    .await?;
    // The one-application processes were started before and after the two-application one:
    // pooled, a drift with the order the processes started in falls on both sides alike.
    let first = Measured::of(&samples[0]);
    let spread_out = Measured::of(&samples[1]);
    let third = Measured::of(&samples[2]);
    let ours = Measured::of(&[samples[0].as_slice(), samples[2].as_slice()].concat());
    mismatches += differed;
    let by_user = |i: usize| format!("candidateUser={}&includeAssignedTasks=true", user(picks[i]));
    let by_groups = |i: usize| {
        format!(
            "candidateGroups={}&includeAssignedTasks=true",
            groups_of(picks[i], args.groups).join(",")
        )
    };
    let (u50, u99, urate) = latencies(args.engine_queries, |i| {
        let (engine, q) = (engine.clone(), by_user(i));
        async move { engine::list(&engine, &q).await }
    })
    .await?;
    let (s50, s99, srate) = latencies(args.engine_queries, |i| {
        let (engine, u) = (engine.clone(), picks[i]);
        async move { engine::my_tasks(&engine, u, args.groups).await }
    })
    .await?;
    let (g50, g99, grate) = latencies(args.engine_queries, |i| {
        let (engine, q) = (engine.clone(), by_groups(i));
        async move { engine::list(&engine, &q).await }
    })
    .await?;

    // Rebuild the one-application bus into a fresh database.
    one.service.kill();
    two.service.kill();
    again.service.kill();
    let rebuilt = format!("{}_rebuilt", one.database);
    let line = crate::rebuild::rebuild(&args.view, &one.cluster, &rebuilt).await?;

    let mongo = mongodb::Client::with_uri_str(&args.view.mongo_url).await?;
    for db in [&one.database, &two.database, &again.database, &rebuilt] {
        mongo.database(db).drop().await?;
    }
    eprintln!("[core] removing the benchmark's process instances from the engine");
    engine::remove(&engine).await?;

    let n = tasks.len();
    let half = n.div_ceil(2);
    let mut rows = vec![[
        format!(
            "\"my tasks\" over {n} open tasks, {} users, {} groups",
            args.users, args.groups
        ),
        "p50 / p99 ms".to_string(),
        "answers/s".to_string(),
        "note".to_string(),
    ]];
    let goal = |p99: f64| if p99 < 20.0 { "met" } else { "NOT met" };
    rows.push([
        "taskpool-core GET /api/v1/tasks, one application, first process (started first)".into(),
        format!("{:.2} / {:.2}", first.p50, first.p99),
        format!("{:.0}", first.rate),
        "user + 5 groups, page of 50, total".into(),
    ]);
    rows.push([
        "taskpool-core GET /api/v1/tasks, one application, third process (started last)".into(),
        format!("{:.2} / {:.2}", third.p50, third.p99),
        format!("{:.0}", third.rate),
        format!(
            "third / first process: p50 {:.2}x, p99 {:.2}x (how far processes of the same data differ)",
            third.p50 / first.p50,
            third.p99 / first.p99
        ),
    ]);
    rows.push([
        "taskpool-core GET /api/v1/tasks, one application, both processes pooled".into(),
        format!("{:.2} / {:.2}", ours.p50, ours.p99),
        format!("{:.0}", ours.rate),
        format!("goal p99 < 20 ms: {}", goal(ours.p99)),
    ]);
    rows.push([
        format!(
            "taskpool-core GET /api/v1/tasks, the same tasks in two applications ({half} + {}), second process",
            n - half
        ),
        format!("{:.2} / {:.2}", spread_out.p50, spread_out.p99),
        format!("{:.0}", spread_out.rate),
        format!(
            "goal p99 < 20 ms: {}; two / one application (pooled): p50 {:.2}x, p99 {:.2}x",
            goal(spread_out.p99),
            spread_out.p50 / ours.p50,
            spread_out.p99 / ours.p99
        ),
    ]);
    rows.push([
        "Camunda POST /task {orQueries: assignee|candidateUser|5 groups, sorted} + count".into(),
        format!("{s50:.1} / {s99:.1}"),
        format!("{srate:.1}"),
        format!(
            "the same question; ratio p99 {:.0}x one application (pooled), {:.0}x two (goal ≥ 10x)",
            s99 / ours.p99,
            s99 / spread_out.p99
        ),
    ]);
    rows.push([
        "Camunda GET /task?candidateUser=…&includeAssignedTasks=true + /task/count".into(),
        format!("{u50:.1} / {u99:.1}"),
        format!("{urate:.1}"),
        format!("ratio p99 {:.0}x", u99 / ours.p99),
    ]);
    rows.push([
        "Camunda GET /task?candidateGroups=5 groups&includeAssignedTasks=true + count".into(),
        format!("{g50:.1} / {g99:.1}"),
        format!("{grate:.1}"),
        format!("ratio p99 {:.0}x", g99 / ours.p99),
    ]);
    for (view, what) in [(&one, "one application"), (&two, "two applications")] {
        rows.push([
            format!("live projection of the TaskCreated events into the view, {what}"),
            "-".into(),
            format!("{:.0} events/s", n as f64 / view.projected.as_secs_f64()),
            format!("{:.1} s", view.projected.as_secs_f64()),
        ]);
    }
    rows.push([
        "taskpool-core rebuild (one application)".into(),
        "-".into(),
        "-".into(),
        format!("{line} (goal ≥ 20,000 events/s)"),
    ]);
    rows.push([
        "totals checked: the three views agree (every user asked); = engine (5 users)".into(),
        format!("{} users", args.queries + (args.queries / 10).max(3)),
        "-".into(),
        if mismatches == 0 {
            "all agree".into()
        } else {
            format!("WARNING: {mismatches} differed, see stderr")
        },
    ]);
    Ok(render_table(&rows))
}
