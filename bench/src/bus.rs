//! `taskpool-bench bus`: raft-bus against a three-node etcd on the same machine.
//! Both get the same closed-loop HTTP load; results go to stdout as one table,
//! progress to stderr.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::cluster::{self, Cluster, Kind, READY_TIMEOUT};
use crate::load::{self, Stats, Target};
use crate::{ms, render_table, report, BusArgs, CommonArgs};

const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
const FILL_TIMEOUT: Duration = Duration::from_secs(900);

/// Runs the benchmark and prints its table; false if either half failed.
///
/// The timed phases run in rounds that alternate between the systems (etcd first in odd
/// rounds, raft-bus first in even ones), each round on a fresh cluster that is stopped and
/// deleted after it: this machine's speed drifts by ±10 % within minutes, so phases of both
/// systems close in time meet the same drift, and neither system's background work (etcd
/// snapshots its store every 100,000 entries) lands in the other's phase. The table shows
/// each metric's median over the rounds. Failover and the RSS fill run once per system.
pub async fn run(common: &CommonArgs, args: &BusArgs, dir: &Path) -> bool {
    // etcd first: it is the baseline, and it still runs when raft-bus does not start.
    let mut systems: Vec<(Kind, Result<Results>)> =
        [(Kind::Etcd, args.skip_etcd), (Kind::Bus, args.skip_bus)]
            .into_iter()
            .filter(|(_, skip)| !skip)
            .map(|(kind, _)| (kind, Ok(Results::default())))
            .collect();
    let bench = Bench { common, args, dir };
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..systems.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (kind, state) = &mut systems[i];
            let Ok(results) = state else { continue };
            eprintln!("[{}] round {} of {}", kind.name(), round + 1, args.rounds);
            if let Err(e) = bench.timed_round(*kind, results).await {
                *state = Err(e);
            }
        }
    }
    for (kind, state) in &mut systems {
        let Ok(results) = state else { continue };
        if let Err(e) = bench.failover_and_rss(*kind, results).await {
            *state = Err(e);
        }
    }
    let mut failed = false;
    let (mut bus, mut etcd) = (None, None);
    for (kind, state) in systems {
        match state {
            Ok(results) => match kind {
                Kind::Etcd => etcd = Some(results),
                Kind::Bus => bus = Some(results),
            },
            Err(e) => {
                eprintln!("{} benchmark failed: {e:#}", kind.name());
                failed = true;
            }
        }
    }
    print!("{}", table(common, args, bus.as_ref(), etcd.as_ref()));
    !failed
}

fn target(cluster: &Cluster, args: &BusArgs, batch: usize) -> Target {
    Target {
        kind: cluster.kind(),
        urls: cluster.urls(),
        token: cluster.token(),
        batch,
        payload_bytes: args.payload_bytes,
        connections: args.connections,
    }
}

/// What every phase of one run needs.
struct Bench<'a> {
    common: &'a CommonArgs,
    args: &'a BusArgs,
    dir: &'a Path,
}

impl Bench<'_> {
    async fn start(&self, kind: Kind) -> Result<Cluster> {
        let bin = match kind {
            Kind::Etcd => self.args.etcd_bin.clone(),
            Kind::Bus => self.common.bus_bin(),
        };
        cluster::start(kind, &bin, self.dir, self.common.bus_threads).await
    }

    /// Runs `work` on a fresh cluster of `kind`, then deletes the cluster (kept, with its
    /// logs, if `work` fails).
    async fn on_fresh_cluster(
        &self,
        kind: Kind,
        work: impl AsyncFnOnce(&mut Cluster) -> Result<()>,
    ) -> Result<()> {
        let mut cluster = self.start(kind).await?;
        match work(&mut cluster).await {
            Ok(()) => cluster.discard().await,
            Err(e) => {
                cluster.stop().await;
                Err(e)
            }
        }
    }

    /// Single appends, then batches, on a fresh cluster.
    async fn timed_round(&self, kind: Kind, results: &mut Results) -> Result<()> {
        let (common, args) = (self.common, self.args);
        let warmup = Duration::from_secs(common.warmup_secs);
        let duration = Duration::from_secs(common.duration_secs);
        self.on_fresh_cluster(kind, async |cluster: &mut Cluster| {
            let single = timed(&target(cluster, args, 1), warmup, duration).await?;
            report(kind.name(), "single", &single);
            results.single.push(single);
            let batched = timed(&target(cluster, args, args.batch), warmup, duration).await?;
            report(kind.name(), "batched", &batched);
            results.batched.push(batched);
            Ok(())
        })
        .await
    }

    /// The failover gap, then the RSS after `--rss-events`, on a fresh cluster.
    async fn failover_and_rss(&self, kind: Kind, results: &mut Results) -> Result<()> {
        let (common, args) = (self.common, self.args);
        let name = kind.name();
        self.on_fresh_cluster(kind, async |cluster: &mut Cluster| {
            eprintln!("[{name}] failover: SIGKILL the leader under single-append load");
            let single = target(cluster, args, 1);
            let gap = failover(cluster, &single, Duration::from_secs(common.warmup_secs)).await?;
            match gap {
                Some(gap) => eprintln!("[{name}] failover gap {:.1} ms", ms(gap)),
                None => eprintln!("[{name}] no acknowledged append within {FAILOVER_TIMEOUT:?}"),
            }
            results.failover_gap = gap;
            if args.rss_events > 0 {
                eprintln!("[{name}] appending {} events for RSS", args.rss_events);
                fill(&target(cluster, args, args.batch), args.rss_events).await?;
                let rss = cluster.max_rss_mib()?;
                eprintln!("[{name}] max node RSS {rss:.0} MiB");
                results.rss_mib = Some(rss);
            }
            Ok(())
        })
        .await
    }
}

#[derive(Default)]
struct Results {
    /// One per round.
    single: Vec<Stats>,
    batched: Vec<Stats>,
    /// None: no acknowledged append within FAILOVER_TIMEOUT.
    failover_gap: Option<Duration>,
    rss_mib: Option<f64>,
}

/// The median of the rounds' values (the lower middle one of an even count).
fn median(rounds: &[Stats], value: impl Fn(&Stats) -> Option<f64>) -> Option<f64> {
    let mut values: Vec<f64> = rounds.iter().filter_map(value).collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len().saturating_sub(1) / 2).copied()
}

async fn timed(target: &Target, warmup: Duration, duration: Duration) -> Result<Stats> {
    Ok(load::measure(load::start(target)?, warmup, duration).await)
}

/// Kills the leader under load and measures the time from the kill to the first 2xx of
/// a request that was sent, after the leader was gone, to a surviving node. Counting
/// only requests sent after the kill keeps answers the old leader committed out of it.
/// The killed node is then restarted with its data dir.
async fn failover(
    cluster: &mut Cluster,
    target: &Target,
    warmup: Duration,
) -> Result<Option<Duration>> {
    let run = load::start(target)?;
    tokio::time::sleep(warmup).await;
    let leader = cluster.leader().await?;
    let killed_at = Instant::now();
    cluster.kill(leader); // returns once the process is reaped
    run.mark_dead(leader);
    let deadline = killed_at + FAILOVER_TIMEOUT;
    while run.first_ack_after_kill().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let gap = run.first_ack_after_kill().map(|t| t - killed_at);
    run.finish().await;
    cluster.restart(leader);
    cluster.wait_ready(READY_TIMEOUT).await?;
    Ok(gap)
}

/// Appends `events` (in batches, over all connections) and waits until all are acknowledged.
async fn fill(target: &Target, events: u64) -> Result<()> {
    let run = load::start(target)?;
    let started = Instant::now();
    let mut last_report = started;
    while run.acked_events() < events {
        if started.elapsed() > FILL_TIMEOUT {
            let acked = run.acked_events();
            run.finish().await;
            bail!("only {acked} of {events} events acknowledged in {FILL_TIMEOUT:?}");
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("  {} events acknowledged", run.acked_events());
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = run.finish().await;
    if stats.error_count() > 0 {
        eprintln!("  errors while filling: {}", stats.error_summary());
    }
    eprintln!(
        "  {events} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// How a row's two values compare.
#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
    /// No ratio (error counts).
    NoRatio,
}

/// The result table. Every ratio is oriented so that > 1 means raft-bus is better.
fn table(
    common: &CommonArgs,
    args: &BusArgs,
    bus: Option<&Results>,
    etcd: Option<&Results>,
) -> String {
    type Pick = fn(&Results) -> Option<f64>;
    let single_rate: Pick = |r| median(&r.single, |s| Some(s.requests_per_sec()));
    let p50: Pick = |r| median(&r.single, |s| s.percentile_ms(0.5));
    let p99: Pick = |r| median(&r.single, |s| s.percentile_ms(0.99));
    let single_errors: Pick = |r| Some(r.single.iter().map(|s| s.error_count() as f64).sum());
    let batched_rate: Pick = |r| median(&r.batched, |s| Some(s.events_per_sec()));
    let batched_errors: Pick = |r| Some(r.batched.iter().map(|s| s.error_count() as f64).sum());
    let gap: Pick = |r| r.failover_gap.map(ms);
    let rss: Pick = |r| r.rss_mib;
    // (metric, value, comparison, decimals); a failover without a value never got an ack.
    let rows: Vec<(String, Pick, Better, usize)> = vec![
        ("single appends/s".into(), single_rate, Better::Higher, 0),
        ("single p50 latency ms".into(), p50, Better::Lower, 2),
        ("single p99 latency ms".into(), p99, Better::Lower, 2),
        ("single errors".into(), single_errors, Better::NoRatio, 0),
        (
            format!("batched events/s ({}/request)", args.batch),
            batched_rate,
            Better::Higher,
            0,
        ),
        ("batched errors".into(), batched_errors, Better::NoRatio, 0),
        ("failover gap ms".into(), gap, Better::Lower, 0),
        (
            format!("max node RSS MiB (after +{} events)", args.rss_events),
            rss,
            Better::Lower,
            0,
        ),
    ];
    let mut lines = vec![[
        "metric".to_string(),
        "raft-bus".to_string(),
        "etcd".to_string(),
        "ratio (>1 = raft-bus better)".to_string(),
    ]];
    for (metric, pick, better, decimals) in rows {
        let (b, e) = (bus.and_then(pick), etcd.and_then(pick));
        let no_ack = metric.starts_with("failover");
        let cell = |v: Option<f64>, ran: bool| match v {
            Some(v) => format!("{v:.decimals$}"),
            None if ran && no_ack => "no ack".into(),
            None => "-".into(),
        };
        let ratio = match (b, e, better) {
            (Some(b), Some(e), Better::Higher) if e > 0.0 => format!("{:.2}x (bus/etcd)", b / e),
            (Some(b), Some(e), Better::Lower) if b > 0.0 => format!("{:.2}x (etcd/bus)", e / b),
            _ => String::new(),
        };
        lines.push([
            metric,
            cell(b, bus.is_some()),
            cell(e, etcd.is_some()),
            ratio,
        ]);
    }
    let mut out =
        "appends: raft-bus vs etcd, 3 nodes each, connections round-robin over the nodes\n"
            .to_string();
    out.push_str(&render_table(&lines));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    out.push_str(&format!(
        "{} connections, {} B payloads, {} s measured after {} s warm-up, \
         3 nodes + load generator on {cores} cores.\n\
         single and batched: the median of {} rounds alternating between the systems.\n\
         failover gap: SIGKILL of the leader to the first 2xx for a request sent after it \
         died to a surviving node.\n",
        args.connections, args.payload_bytes, common.duration_secs, common.warmup_secs, args.rounds
    ));
    for (name, r) in [("raft-bus", bus), ("etcd", etcd)] {
        let Some(r) = r else { continue };
        let rates = |rounds: &[Stats], f: fn(&Stats) -> f64| {
            rounds
                .iter()
                .map(|s| format!("{:.0}", f(s)))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        out.push_str(&format!(
            "rounds {name}: single {} appends/s, batched {} events/s\n",
            rates(&r.single, Stats::requests_per_sec),
            rates(&r.batched, Stats::events_per_sec)
        ));
    }
    out
}
