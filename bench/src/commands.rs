//! `taskpool-bench commands`: the round trip of one command through raft-bus (sender -> a
//! node -> the leader's router -> a handler's stream -> the handler's result -> the sender)
//! in closed loops, at one sender and at `--senders`.
//!
//! The handlers run in this process with the handler library, each through its own client
//! on a different follower, and answer at once: the figures are the bus's routing cost, not
//! a handler's work. There is no etcd anchor for commands, so the table shows the goals.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use rand::distributions::{Alphanumeric, DistString};
use serde_json::{json, Value};
use taskpool_api::commands::{CommandMessage, CommandRequest, CommandResult};
use taskpool_api::handler::{self, HandlerConfig, MemoryDedupe};
use taskpool_api::{BusClient, ClientError};
use tokio::sync::watch;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::cluster;
use crate::load::{self, Op, Stats};
use crate::{render_table, report, CommandArgs, CommonArgs};

const COMMAND_TYPE: &str = "BenchCommand";
const ROUTING_KEY: &str = "bench";
/// Below the client's 10 s request timeout, so a command nobody answers ends as the bus's
/// 504 `timeout` rather than as a cut connection that the client would retry.
const COMMAND_TIMEOUT_MS: u64 = 5_000;
/// Command ids the handlers remember; more than a run at the goal rate sends.
const DEDUPE_CAPACITY: usize = 200_000;
const HANDLERS_TIMEOUT: Duration = Duration::from_secs(30);

const GOAL_P50_MS: f64 = 2.0;
const GOAL_P99_MS: f64 = 10.0;
const GOAL_COMMANDS_PER_SEC: f64 = 5_000.0;

/// Runs the benchmark and prints its table; false if it failed.
pub async fn run(common: &CommonArgs, args: &CommandArgs, dir: &Path) -> bool {
    match bench(common, args, dir).await {
        Ok(results) => {
            print!("{}", table(common, args, &results));
            true
        }
        Err(e) => {
            eprintln!("commands benchmark failed: {e:#}");
            false
        }
    }
}

struct Results {
    /// Indexes into the cluster's nodes (node id = index + 1).
    leader: usize,
    followers: Vec<usize>,
    single: Stats,
    loaded: Stats,
}

async fn bench(common: &CommonArgs, args: &CommandArgs, dir: &Path) -> Result<Results> {
    let mut cluster = cluster::start_bus(common, dir).await?;
    let leader = cluster
        .try_leader(cluster::READY_TIMEOUT)
        .await
        .map_err(|e| anyhow!(e))? as usize
        - 1;
    let followers: Vec<usize> = (0..cluster.nodes.len()).filter(|&i| i != leader).collect();

    // Two handlers of one routing key share the load; they share one dedupe store, as
    // handlers that can take over each other's commands must.
    let (stop, stopped) = watch::channel(false);
    let dedupe = Arc::new(MemoryDedupe::new(DEDUPE_CAPACITY));
    let mut handlers = JoinSet::new();
    for &node in &followers {
        let handler_id = format!("bench-handler-{}", node + 1);
        let config = HandlerConfig {
            handler_id: handler_id.clone(),
            types: vec![COMMAND_TYPE.into()],
            routing_keys: vec![ROUTING_KEY.into()],
            // Never the limit: a handler has at most one command per sender in flight.
            concurrency: args.senders,
        };
        let execute = move |_: CommandMessage| {
            let answer = CommandResult::success(handler_id.clone(), json!({"ok": true}));
            async move { answer }
        };
        let client = cluster::client_from(&cluster, node)?;
        handlers.spawn(handler::run(
            client,
            config,
            dedupe.clone(),
            execute,
            stopped.clone(),
        ));
    }
    wait_for_handlers(&cluster, leader, followers.len()).await?;
    eprintln!(
        "[commands] leader node {}, handlers on nodes {}",
        leader + 1,
        node_ids(&followers)
    );

    let senders = Arc::new(Senders {
        clients: (0..cluster.nodes.len())
            .map(|node| cluster::client_from(&cluster, node))
            .collect::<Result<_>>()?,
        payload: json!({
            "p": Alphanumeric.sample_string(&mut rand::thread_rng(), args.command_payload_bytes)
        }),
    });
    let warmup = Duration::from_secs(common.warmup_secs);
    let duration = Duration::from_secs(common.duration_secs);
    let phase = |n: usize| {
        eprintln!("[commands] {n} sender(s)");
        load::measure(load::start_op(senders.clone(), n, 1), warmup, duration)
    };
    let single = phase(1).await;
    report("commands", "1 sender", &single);
    let loaded = phase(args.senders).await;
    report("commands", &format!("{} senders", args.senders), &loaded);

    // handler::run returns once it sees the stop; dropping the JoinSet aborts any that did not.
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while handlers.join_next().await.is_some() {}
    })
    .await;
    cluster.stop().await;
    Ok(Results {
        leader,
        followers,
        single,
        loaded,
    })
}

/// Waits until the leader's router has `n` handlers for the key, so no phase starts with
/// one handler taking all the commands.
async fn wait_for_handlers(cluster: &testkit::Cluster, leader: usize, n: usize) -> Result<()> {
    let series = format!("raftbus_command_handlers{{routing_key=\"{ROUTING_KEY}\"}}");
    let deadline = Instant::now() + HANDLERS_TIMEOUT;
    loop {
        let url = cluster.node(leader as u64 + 1).url();
        let seen = metric(&url, &series).await.ok().flatten();
        if seen.is_some_and(|v| v >= n as f64) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {n} handlers registered on the leader after {HANDLERS_TIMEOUT:?}",
                seen.unwrap_or(0.0)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one series (name and labels, as `/metrics` prints it) at the node `url`.
async fn metric(url: &str, series: &str) -> Result<Option<f64>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let resp = http.get(format!("{url}/metrics")).send().await?;
    let text = resp.error_for_status()?.text().await?;
    Ok(text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|v| v.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }))
}

/// The senders. `clients[i]` starts at node i and is shared by all senders (its pool opens a
/// connection per concurrent call). Request `seq` of sender `conn` goes to node
/// `(conn + seq) % 3`: every sender takes turns at the leader and the followers, so even the
/// one-sender phase measures both paths.
struct Senders {
    clients: Vec<BusClient>,
    payload: Value,
}

impl Op for Senders {
    async fn call(&self, conn: usize, seq: u64) -> (usize, Result<(), String>) {
        let n = self.clients.len();
        let node = (conn + (seq % n as u64) as usize) % n;
        let request = CommandRequest {
            id: Uuid::new_v4(),
            command_type: COMMAND_TYPE.into(),
            routing_key: ROUTING_KEY.into(),
            payload: self.payload.clone(),
            timeout_ms: Some(COMMAND_TIMEOUT_MS),
            traceparent: None,
        };
        let result = match self.clients[node].send_command(&request).await {
            Ok(answer) if answer.id == request.id => Ok(()),
            Ok(_) => Err("answer for another command".into()),
            Err(e) => Err(error_label(&e)),
        };
        (node, result)
    }
}

/// Groups errors in the report by status and code, without per-request details.
fn error_label(e: &ClientError) -> String {
    match e {
        ClientError::Api { status, body } => format!("HTTP {status} {}", body.error.code),
        ClientError::Unavailable(_) => "unavailable".into(),
        ClientError::Decode(_) => "undecodable answer".into(),
    }
}

fn node_ids(nodes: &[usize]) -> String {
    let ids: Vec<String> = nodes.iter().map(|i| (i + 1).to_string()).collect();
    ids.join(", ")
}

fn table(common: &CommonArgs, args: &CommandArgs, r: &Results) -> String {
    let mut out = format!(
        "commands: sender -> bus -> handler -> sender; each sender round-robin over the leader \
         (node {}) and the followers (nodes {}); 2 handlers, on the followers\n",
        r.leader + 1,
        node_ids(&r.followers)
    );
    // One row: metric, value with `decimals`, and an optional goal (its text, whether met).
    let row =
        |metric: String, value: Option<f64>, decimals: usize, goal: Option<(String, bool)>| {
            let (goal, met) = match goal {
                Some((text, met)) => (text, if met { "yes" } else { "NO" }.to_string()),
                None => (String::new(), String::new()),
            };
            let value = value.map_or("-".to_string(), |v| format!("{v:.decimals$}"));
            [metric, value, goal, met]
        };
    let below = |v: Option<f64>, max: f64| Some((format!("< {max}"), v.is_some_and(|v| v < max)));
    let (one, many) = (&r.single, &r.loaded);
    let n = args.senders;
    let (p50, p99) = (one.percentile_ms(0.5), one.percentile_ms(0.99));
    let rate = many.requests_per_sec();
    let lines = [
        ["metric", "raft-bus", "goal", "goal met"].map(String::from),
        row(
            "1 sender commands/s".into(),
            Some(one.requests_per_sec()),
            0,
            None,
        ),
        row(
            "1 sender p50 latency ms".into(),
            p50,
            2,
            below(p50, GOAL_P50_MS),
        ),
        row(
            "1 sender p99 latency ms".into(),
            p99,
            2,
            below(p99, GOAL_P99_MS),
        ),
        row(
            "1 sender errors".into(),
            Some(one.error_count() as f64),
            0,
            None,
        ),
        row(
            format!("{n} senders commands/s"),
            Some(rate),
            0,
            Some((
                format!(">= {GOAL_COMMANDS_PER_SEC}"),
                rate >= GOAL_COMMANDS_PER_SEC,
            )),
        ),
        row(
            format!("{n} senders p50 latency ms"),
            many.percentile_ms(0.5),
            2,
            None,
        ),
        row(
            format!("{n} senders p99 latency ms"),
            many.percentile_ms(0.99),
            2,
            None,
        ),
        row(
            format!("{n} senders errors"),
            Some(many.error_count() as f64),
            0,
            None,
        ),
    ];
    out.push_str(&render_table(&lines));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    out.push_str(&format!(
        "{} B payloads, {} s measured after {} s warm-up per phase; handlers answer at once \
         (in-process, MemoryDedupe); 3 nodes + handlers + senders on {cores} cores.\n",
        args.command_payload_bytes, common.duration_secs, common.warmup_secs
    ));
    for (name, stats) in [("1 sender", one), (&format!("{n} senders"), many)] {
        if stats.error_count() > 0 {
            out.push_str(&format!("{name} errors: {}\n", stats.error_summary()));
        }
    }
    out
}
