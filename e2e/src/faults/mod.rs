//! The fault-injection suite: a three-node bus under concurrent appends and commands while a
//! nemesis kills, pauses and cuts off nodes; then a checker holds every node's log to what the
//! clients were told. `taskpool-faults` runs it; the end-to-end tests run a short version.

pub mod check;
pub mod net;
pub mod nodes;
pub mod workload;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::Rng;
use tokio::sync::watch;

use nodes::{Nodes, NODES};
use workload::{History, Outcome};

#[derive(Debug, Clone)]
pub struct Config {
    pub raft_bus_bin: PathBuf,
    pub duration: Duration,
    pub appenders: usize,
    pub senders: usize,
    /// Cut nodes off the network too (network namespaces; needs root).
    pub partitions: bool,
    /// Where logs and the history go; kept when anomalies are found.
    pub dir: PathBuf,
}

#[derive(Debug, Default)]
pub struct Summary {
    pub appends: BTreeMap<&'static str, usize>,
    pub commands: BTreeMap<&'static str, usize>,
    pub faults: BTreeMap<&'static str, usize>,
    pub events: u64,
    pub anomalies: Vec<String>,
    pub seconds: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |m: &BTreeMap<&str, usize>| {
            m.iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(f, "duration      {:.0} s", self.seconds)?;
        writeln!(f, "appends       {}", list(&self.appends))?;
        writeln!(f, "commands      {}", list(&self.commands))?;
        writeln!(f, "faults        {}", list(&self.faults))?;
        writeln!(
            f,
            "log           {} events, the same on all {NODES} nodes",
            self.events
        )?;
        writeln!(f, "anomalies     {}", self.anomalies.len())?;
        for a in self.anomalies.iter().take(20) {
            writeln!(f, "  - {a}")?;
        }
        Ok(())
    }
}

/// One fault, held for a while, then undone.
async fn inject(
    nodes: &mut Nodes,
    leader: Option<usize>,
    log: &mut impl Write,
) -> Result<&'static str> {
    let mut rng = rand::thread_rng();
    // Half the time the leader, whose loss hurts most.
    let node = match leader {
        Some(l) if rng.gen_bool(0.5) => l,
        _ => rng.gen_range(1..=NODES),
    };
    let kinds: &[&str] = if nodes.net.is_some() {
        &["kill", "pause", "partition"]
    } else {
        &["kill", "pause"]
    };
    let kind = kinds[rng.gen_range(0..kinds.len())];
    let hold = Duration::from_millis(rng.gen_range(500..3_000));
    writeln!(
        log,
        "{:?} {kind} node {node} for {hold:?}",
        std::time::SystemTime::now()
    )?;
    match kind {
        "kill" => nodes.kill(node),
        "pause" => nodes.pause(node),
        _ => nodes.net.as_ref().context("network")?.cut(node)?,
    }
    // The fault lasts this long: scheduling, not synchronisation.
    tokio::time::sleep(hold).await;
    match kind {
        "kill" => nodes.spawn(node)?,
        "pause" => nodes.resume(node),
        _ => nodes.net.as_ref().context("network")?.heal(node)?,
    }
    Ok(kind)
}

/// The leader some node names, if one answers soon.
async fn leader(bus: &taskpool_api::BusClient) -> Option<usize> {
    let info = tokio::time::timeout(Duration::from_secs(2), bus.cluster())
        .await
        .ok()?
        .ok()?;
    info.leader_id.map(|l| l as usize)
}

pub async fn run(config: &Config) -> Result<Summary> {
    std::fs::create_dir_all(&config.dir)?;
    let token = format!("faults-{}", uuid::Uuid::new_v4().simple());
    let net = if config.partitions {
        Some(net::Net::setup(NODES)?)
    } else {
        None
    };
    let mut nodes = Nodes::start(&config.raft_bus_bin, &config.dir, &token, net)?;
    let bus = workload::client(nodes.urls(), &token);
    let started = Instant::now();
    let per_node: Vec<_> = (1..=NODES)
        .map(|n| workload::client(vec![nodes.url(n)], &token))
        .collect();
    check::converge(&per_node, 0, Duration::from_secs(30))
        .await
        .context("the cluster did not form")?;

    let history = Arc::new(History::default());
    let (stop_tx, stop) = watch::channel(false);
    let mut tasks = workload::handlers(&bus, &history, &stop);
    for _ in 0..config.appenders {
        tasks.push(tokio::spawn(workload::appender(
            bus.clone(),
            history.clone(),
            stop.clone(),
        )));
    }
    for _ in 0..config.senders {
        tasks.push(tokio::spawn(workload::sender(
            bus.clone(),
            history.clone(),
            stop.clone(),
        )));
    }

    let mut faults: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut log = std::fs::File::create(config.dir.join("faults.log"))?;
    let rng_pause = || Duration::from_millis(rand::thread_rng().gen_range(300..1_500));
    while started.elapsed() < config.duration {
        let l = leader(&bus).await;
        let kind = inject(&mut nodes, l, &mut log).await?;
        *faults.entry(kind).or_default() += 1;
        tokio::time::sleep(rng_pause()).await;
    }
    nodes.heal_all()?;
    // Let the clients see the healed cluster before they stop.
    let _ = check::converge(&per_node, 0, Duration::from_secs(60)).await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }

    // Heads that agree may still be short of entries an old leader wrote and a new one will
    // commit: a barrier append, acknowledged after the faults, leaves none pending.
    let barrier = workload::barrier(&bus, &history).await?;
    let converged = check::converge(&per_node, barrier, Duration::from_secs(60)).await;
    nodes.heal_all()?;
    if !nodes.crashes.is_empty() {
        anyhow::bail!("nodes crashed: {}", nodes.crashes.join("; "));
    }
    let head = converged?;
    let mut logs = Vec::new();
    for n in &per_node {
        logs.push(check::read_all(n, head).await?);
    }
    let anomalies = check::check(&logs, &history);

    let mut summary = Summary {
        faults,
        events: head,
        anomalies,
        seconds: started.elapsed().as_secs_f64(),
        ..Default::default()
    };
    let mut out = std::fs::File::create(config.dir.join("history.jsonl"))?;
    for op in history.ops.lock().expect("history").iter() {
        let (outcome, detail) = match &op.outcome {
            Outcome::Ok(p) => ("ok", p.to_string()),
            Outcome::Failed(w) => ("failed", w.clone()),
            Outcome::Unknown(w) => ("unknown", w.clone()),
        };
        let target = if op.kind == "append" {
            &mut summary.appends
        } else {
            &mut summary.commands
        };
        *target.entry(outcome).or_default() += 1;
        writeln!(
            out,
            "{}",
            serde_json::json!({"kind": op.kind, "id": op.id, "outcome": outcome, "detail": detail})
        )?;
    }
    Ok(summary)
}
