//! The collector against the real engine: change → event latency by hook and by poll (the
//! engine's task timestamp to the bus's acceptance), variable change → payload event, and the cost of one idle poll cycle as
//! the number of open tasks grows, against Camunda's own REST answer to "all open tasks".

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use serde_json::{json, Value};
use taskpool_api::BusClient;
use testkit::Service;

use crate::cluster;
use crate::variable_latency::variable_latencies;
use crate::{render_table, CollectorArgs, CommonArgs};

pub async fn run(common: &CommonArgs, args: &CollectorArgs, dir: &Path) -> bool {
    match bench(common, args, dir).await {
        Ok(table) => {
            print!("{table}");
            true
        }
        Err(e) => {
            eprintln!("collector benchmark failed: {e:#}");
            false
        }
    }
}

/// The engine's REST API as the benchmarks drive it (basic auth demo/demo).
#[derive(Clone)]
pub(crate) struct Engine {
    pub(crate) http: reqwest::Client,
    pub(crate) url: String,
}

impl Engine {
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(Value, usize)> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.url))
            .basic_auth("demo", Some("demo"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.with_context(|| {
            format!("{method} {path}: is the engine up? deploy/scripts/camunda.sh start")
        })?;
        let status = r.status();
        let bytes = r.bytes().await?;
        if !status.is_success() {
            bail!(
                "{method} {path}: {status} {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok((
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            bytes.len(),
        ))
    }

    async fn deploy(&self, repo: &Path, file: &str) -> Result<()> {
        let bytes = std::fs::read(repo.join("deploy/processes").join(file))?;
        self.deploy_bytes(file, bytes).await
    }

    /// Deploys one BPMN file (only when it changed).
    pub(crate) async fn deploy_bytes(&self, file: &str, bytes: Vec<u8>) -> Result<()> {
        let form = testkit::engine::deployment_form(file, bytes);
        let r = self
            .http
            .post(format!("{}/deployment/create", self.url))
            .basic_auth("demo", Some("demo"))
            .multipart(form)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("deploy {file}: {}", r.text().await?);
        }
        Ok(())
    }

    pub(crate) async fn start(&self, key: &str, variables: Value) -> Result<String> {
        let (v, _) = self
            .call(
                reqwest::Method::POST,
                &format!("/process-definition/key/{key}/start"),
                Some(json!({"variables": variables})),
            )
            .await?;
        Ok(v["id"].as_str().context("instance id")?.to_owned())
    }

    pub(crate) async fn delete(&self, ids: &[String]) {
        futures::stream::iter(ids)
            .for_each_concurrent(4, |id| async move {
                let path = format!("/process-instance/{id}?skipCustomListeners=true");
                let _ = self.call(reqwest::Method::DELETE, &path, None).await;
            })
            .await;
    }
}

struct Collector {
    service: Service,
    url: String,
}

impl Collector {
    async fn start(
        args: &CollectorArgs,
        bus: &testkit::Cluster,
        app: &str,
        extra: &[&str],
        listen: &str,
        log: PathBuf,
    ) -> Result<Collector> {
        if !args.collector_bin.exists() {
            bail!(
                "{} not found: run cargo build --release -p camunda-collector",
                args.collector_bin.display()
            );
        }
        let _ = std::fs::remove_file(&log);
        let flags = [
            ("--application", app),
            ("--engine-url", &args.engine_url),
            ("--engine-user", "demo"),
            ("--bus", &bus.urls().join(",")),
            ("--database-url", &args.database_url),
            ("--listen", listen),
        ];
        let argv = flags
            .iter()
            .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
            .chain(extra.iter().map(|s| s.to_string()))
            .collect();
        let env = vec![
            ("COLLECTOR_ENGINE_PASSWORD".into(), "demo".into()),
            (
                "COLLECTOR_BUS_TOKEN".into(),
                bus.token().unwrap_or_default().to_owned(),
            ),
        ];
        let service = Service::start_logging_to(
            &format!("collector {app}"),
            &args.collector_bin,
            argv,
            env,
            log,
        );
        let c = Collector {
            service,
            url: format!("http://{listen}"),
        };
        // Active, and done with its first import of what the engine holds.
        let deadline = Instant::now() + Duration::from_secs(600);
        while metric(
            &c.metrics().await.unwrap_or_default(),
            "collector_poll_cycles_total{kind=\"reconcile\",outcome=\"ok\"}",
        ) < 1.0
        {
            if Instant::now() > deadline {
                bail!("collector {app} did not finish its first reconciliation in 10 minutes");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(c)
    }

    async fn metrics(&self) -> Result<String> {
        Ok(reqwest::get(format!("{}/metrics", self.url))
            .await?
            .text()
            .await?)
    }

    async fn stop(mut self) {
        self.service.kill();
    }
}

/// Sum of every sample whose line starts with `prefix` (a name, or a name with labels).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `p50 / p99` of sorted samples with `decimals` places.
fn p50_p99_text(sorted: &[f64], decimals: usize) -> String {
    let (p50, p99) = (percentile(sorted, 0.5), percentile(sorted, 0.99));
    format!("{p50:.decimals$} / {p99:.decimals$}")
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Starts `n` instances (`concurrency` at a time) and returns, per task created, the time from the
/// engine's timestamp of the task to the bus accepting its `TaskCreated`, in ms.
async fn latencies(
    engine: &Engine,
    bus: &BusClient,
    app: &str,
    n: usize,
    concurrency: usize,
) -> Result<(Vec<f64>, Vec<String>)> {
    let head = bus.cluster().await?.head_position;
    let instances: Vec<String> = futures::stream::iter(0..n)
        .map(|_| engine.start("simpleUserTask", json!({})))
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut found = Vec::new();
    let mut from = head + 1;
    while found.len() < n {
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} TaskCreated events of {app} arrived within 2 minutes",
                found.len()
            );
        }
        let page = bus.events(from, 1000).await?;
        if page.events.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        for e in &page.events {
            from = e.position + 1;
            let Some(meta) = e
                .metadata
                .as_ref()
                .and_then(|m| serde_json::from_str::<Value>(m.get()).ok())
            else {
                continue;
            };
            if e.event_type != "TaskCreated" || meta["application"] != app {
                continue;
            }
            let changed = meta["engineChangedAt"]
                .as_str()
                .and_then(|s| humantime::parse_rfc3339(s).ok());
            let accepted = humantime::parse_rfc3339(&e.timestamp).ok();
            if let (Some(c), Some(a)) = (changed, accepted) {
                found.push(a.duration_since(c).unwrap_or_default().as_secs_f64() * 1000.0);
            }
        }
    }
    found.sort_by(f64::total_cmp);
    Ok((found, instances))
}

/// The collector's default `--overlap`.
const OVERLAP: Duration = Duration::from_secs(10);

struct Idle {
    cycles: f64,
    calls_per_cycle: f64,
    bytes_per_cycle: f64,
    ms_per_cycle: f64,
}

/// What the running poll-mode collector spends per incremental cycle while nothing changes.
/// First waits until the last changes left the overlap window (two cycles that started after
/// it), so that what is measured is a quiet cycle.
async fn idle(c: &Collector, secs: u64) -> Result<Idle> {
    let cycles = |t: &str| metric(t, "collector_poll_cycles_total{kind=\"incremental\"");
    let quiet_from = Instant::now() + OVERLAP + Duration::from_secs(2);
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut at_quiet = None;
    loop {
        let done = cycles(&c.metrics().await?);
        match at_quiet {
            None if Instant::now() >= quiet_from => at_quiet = Some(done),
            Some(n) if done >= n + 2.0 => break,
            _ if Instant::now() > deadline => {
                bail!("the collector did not become idle in 30 minutes")
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let read = |t: &str| {
        (
            metric(t, "collector_poll_cycles_total{kind=\"incremental\""),
            metric(t, "collector_engine_requests_total"),
            metric(t, "collector_engine_response_bytes_total"),
            metric(t, "collector_poll_cycle_seconds_sum{kind=\"incremental\"}"),
        )
    };
    let before = read(&c.metrics().await?);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let after = read(&c.metrics().await?);
    let cycles = (after.0 - before.0).max(1.0);
    Ok(Idle {
        cycles,
        calls_per_cycle: (after.1 - before.1) / cycles,
        bytes_per_cycle: (after.2 - before.2) / cycles,
        ms_per_cycle: (after.3 - before.3) * 1000.0 / cycles,
    })
}

async fn open_tasks(engine: &Engine) -> Result<u64> {
    let (v, _) = engine
        .call(reqwest::Method::GET, "/task/count", None)
        .await?;
    v["count"].as_u64().context("task count")
}

async fn bench(common: &CommonArgs, args: &CollectorArgs, dir: &Path) -> Result<String> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let engine = Engine {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()?,
        url: args.engine_url.clone(),
    };
    for f in ["simple-user-task.bpmn", "multi-instance.bpmn"] {
        engine.deploy(&repo, f).await?;
    }
    let cluster = cluster::start_bus(common, dir).await?;
    let bus = cluster::client_from(&cluster, 0)?;
    let run = &crate::run_id();
    let mut rows = vec![["collector", "ours", "anchor", "note"].map(String::from)];
    let mut cleanup = Vec::new();

    // Hook mode: the engine plugin posts to TASKPOOL_HOOK_URL, signed with the stack's secret.
    let secret = std::fs::read_to_string(&args.hook_secret_file).with_context(|| {
        format!(
            "{}: start the engine with deploy/scripts/camunda.sh start",
            args.hook_secret_file.display()
        )
    })?;
    let hook_listen = args
        .hook_url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let app = format!("bench-hook-{run}");
    eprintln!("[collector] hook mode: {} changes", args.changes);
    let c = Collector::start(
        args,
        &cluster,
        &app,
        &["--mode", "hook", "--hook-secret", secret.trim()],
        &hook_listen,
        dir.join("collector-hook.log"),
    )
    .await?;
    // One change at a time (the latency goal), then four at a time (under load).
    let (hook, ids) = latencies(&engine, &bus, &app, args.changes, 1).await?;
    cleanup.extend(ids);
    let (hook4, ids) = latencies(&engine, &bus, &app, args.changes, 4).await?;
    let hook_vars = variable_latencies(&engine, &bus, &app, &ids).await?;
    cleanup.extend(ids);
    c.stop().await;

    // Poll mode at the default interval.
    let app = format!("bench-poll-{run}");
    eprintln!("[collector] poll mode: {} changes", args.changes);
    let listen = format!("127.0.0.1:{}", testkit::free_port());
    let c = Collector::start(
        args,
        &cluster,
        &app,
        &[
            "--mode",
            "poll",
            "--reconcile-interval",
            "1h",
            "--variables-exclude",
            "voters",
        ],
        &listen,
        dir.join("collector-poll.log"),
    )
    .await?;
    let (poll, ids) = latencies(&engine, &bus, &app, args.changes, 1).await?;
    let poll_vars = variable_latencies(&engine, &bus, &app, &ids).await?;
    cleanup.extend(ids);
    rows.push([
        "change → event, hook, p50 / p99 (ms)".into(),
        p50_p99_text(&hook, 1),
        "-".into(),
        format!("goal p99 < 50 ms; {} tasks, one at a time", hook.len()),
    ]);
    rows.push([
        "change → event, hook, 4 at once, p50 / p99 (ms)".into(),
        p50_p99_text(&hook4, 1),
        "-".into(),
        format!("{} tasks", hook4.len()),
    ]);
    rows.push([
        "change → event, poll 1 s, p50 / p99 (ms)".into(),
        p50_p99_text(&poll, 0),
        "-".into(),
        format!(
            "poll/hook p50 = {:.0}x",
            percentile(&poll, 0.5) / percentile(&hook, 0.5)
        ),
    ]);

    rows.push([
        "variable change → payload event, hook, p50 / p99 (ms)".into(),
        p50_p99_text(&hook_vars, 1),
        "-".into(),
        format!(
            "goal p50 < 50 ms; {} changes, one at a time",
            hook_vars.len()
        ),
    ]);
    rows.push([
        "variable change → payload event, poll 1 s, p50 / p99 (ms)".into(),
        p50_p99_text(&poll_vars, 0),
        "-".into(),
        format!("goal within one interval; {} changes", poll_vars.len()),
    ]);

    // Idle poll cycles, before and after adding many open tasks.
    let small = open_tasks(&engine).await?;
    let before = idle(&c, args.idle_secs).await?;
    eprintln!("[collector] creating {} open tasks", args.open_tasks);
    let per = 1000.min(args.open_tasks.max(1));
    let voters: Vec<String> = (0..per).map(|i| format!("voter-{i}")).collect();
    let list = json!({"value": serde_json::to_string(&voters)?, "type": "Object",
        "valueInfo": {"objectTypeName": "java.util.ArrayList<java.lang.String>", "serializationDataFormat": "application/json"}});
    let created_at = Instant::now();
    let emitted_before = metric(
        &c.metrics().await?,
        "collector_events_emitted_total{type=\"TaskCreated\"",
    );
    let mut big = Vec::new();
    for _ in 0..args.open_tasks.div_ceil(per) {
        big.push(
            engine
                .start("multiInstance", json!({"voters": list}))
                .await?,
        );
    }
    let want = emitted_before + (big.len() * per) as f64;
    while metric(
        &c.metrics().await?,
        "collector_events_emitted_total{type=\"TaskCreated\"",
    ) < want
    {
        if created_at.elapsed() > Duration::from_secs(1800) {
            bail!("the collector did not report the new tasks within 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let import = created_at.elapsed();
    let large = open_tasks(&engine).await?;
    let after = idle(&c, args.idle_secs).await?;
    let full = Instant::now();
    let (_, full_bytes) = engine
        .call(
            reqwest::Method::GET,
            &format!("/task?maxResults={}", large + 10),
            None,
        )
        .await?;
    let full_ms = full.elapsed().as_secs_f64() * 1000.0;
    c.stop().await;
    rows.push([
        format!("idle cycle at {small} open tasks: calls / KiB / ms"),
        format!(
            "{:.1} / {:.1} / {:.1}",
            before.calls_per_cycle,
            before.bytes_per_cycle / 1024.0,
            before.ms_per_cycle
        ),
        "-".into(),
        format!("{:.0} cycles", before.cycles),
    ]);
    rows.push([
        format!("idle cycle at {large} open tasks: calls / KiB / ms"),
        format!(
            "{:.1} / {:.1} / {:.1}",
            after.calls_per_cycle,
            after.bytes_per_cycle / 1024.0,
            after.ms_per_cycle
        ),
        format!("1 / {:.0} / {:.0}", full_bytes as f64 / 1024.0, full_ms),
        format!(
            "anchor: GET /task of all open tasks; bytes ratio {:.4}",
            after.bytes_per_cycle / full_bytes as f64
        ),
    ]);
    rows.push([
        format!("{} new tasks reported by polling", big.len() * per),
        format!(
            "{:.0} tasks/s",
            (big.len() * per) as f64 / import.as_secs_f64()
        ),
        "-".into(),
        format!(
            "{:.1} s from first start to last event",
            import.as_secs_f64()
        ),
    ]);

    eprintln!("[collector] removing the benchmark's instances");
    engine.delete(&big).await;
    engine.delete(&cleanup).await;
    Ok(render_table(&rows))
}
