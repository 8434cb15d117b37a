//! `taskpool-bench bus`: raft-bus against a three-node etcd on the same machine.
//! Both get the same closed-loop HTTP load; results go to stdout as one table,
//! progress to stderr.

mod cluster;
mod load;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use rand::distributions::{Alphanumeric, DistString};

use cluster::{Cluster, Kind};
use load::{Stats, Target};

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
const FILL_TIMEOUT: Duration = Duration::from_secs(900);

#[derive(Parser)]
// A repeated flag takes its last value, so scripts/bench can pass defaults before "$@".
#[command(
    name = "taskpool-bench",
    version,
    about = "Taskpool benchmarks",
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Benchmark the raft-bus event store against etcd (three local nodes each)
    Bus(BusArgs),
}

#[derive(Args)]
struct BusArgs {
    /// Measured seconds of each load phase (after the warm-up)
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Unmeasured seconds of load before each phase
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Concurrent keep-alive connections, spread round-robin over the three nodes
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Payload size of each event / etcd value
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,
    /// Events per request in the batched phase and the RSS fill (etcd: puts per txn)
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// The raft-bus binary
    #[arg(long, default_value = "target/release/raft-bus")]
    raft_bus_bin: PathBuf,
    /// The etcd binary
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd_bin: PathBuf,
    /// Where data dirs and server logs go (default: a temp dir, removed on success)
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Do not run etcd
    #[arg(long)]
    skip_etcd: bool,
    /// Do not run raft-bus
    #[arg(long)]
    skip_bus: bool,
    /// Events appended before reading the nodes' RSS (0 skips this step)
    #[arg(long, default_value_t = 1_000_000)]
    rss_events: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let Cmd::Bus(args) = Cli::parse().cmd;
    // Dropping `run` on a signal drops every Cluster, whose children are killed on drop.
    tokio::select! {
        code = run(args) => code,
        _ = shutdown_signal() => {
            eprintln!("interrupted: servers killed");
            ExitCode::from(130)
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn run(args: BusArgs) -> ExitCode {
    if args.connections == 0 || args.batch == 0 || args.duration_secs == 0 {
        eprintln!("--connections, --batch and --duration-secs must be at least 1");
        return ExitCode::from(2);
    }
    let (dir, temp) = match work_dir(&args) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("work dir: {}", dir.display());

    // etcd first: it is the baseline, and it still runs when raft-bus does not start.
    let etcd = if args.skip_etcd {
        Ok(None)
    } else {
        bench(Kind::Etcd, &args, &dir).await.map(Some)
    };
    let bus = if args.skip_bus {
        Ok(None)
    } else {
        bench(Kind::Bus, &args, &dir).await.map(Some)
    };
    let mut failed = false;
    let [etcd, bus] = [(Kind::Etcd, etcd), (Kind::Bus, bus)].map(|(kind, r)| {
        r.unwrap_or_else(|e| {
            eprintln!("{} benchmark failed: {e:#}", kind.name());
            failed = true;
            None
        })
    });
    print!("{}", table(&args, bus.as_ref(), etcd.as_ref()));

    if failed {
        if let Some(t) = temp {
            eprintln!("logs kept in {}", t.keep().display());
        }
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn work_dir(args: &BusArgs) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
            Ok((d.canonicalize()?, None))
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("taskpool-bench-")
                .tempdir()?;
            Ok((t.path().to_path_buf(), Some(t)))
        }
    }
}

struct Results {
    single: Stats,
    batched: Stats,
    /// None: no acknowledged append within FAILOVER_TIMEOUT.
    failover_gap: Option<Duration>,
    rss_mib: Option<f64>,
}

async fn bench(kind: Kind, args: &BusArgs, dir: &Path) -> Result<Results> {
    let name = kind.name();
    // A fresh dir per run, so a reused --work-dir never starts from old data.
    let dir = dir.join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut cluster = match kind {
        Kind::Etcd => {
            if !args.etcd_bin.exists() {
                bail!(
                    "{} not found: run scripts/install-etcd",
                    args.etcd_bin.display()
                );
            }
            Cluster::start_etcd(&args.etcd_bin, &dir)?
        }
        Kind::Bus => {
            if !args.raft_bus_bin.exists() {
                bail!(
                    "{} not found: run cargo build --release -p raft-bus",
                    args.raft_bus_bin.display()
                );
            }
            let token = Alphanumeric.sample_string(&mut rand::thread_rng(), 32);
            Cluster::start_bus(&args.raft_bus_bin, &dir, &token)?
        }
    };
    let started = Instant::now();
    cluster.wait_ready(READY_TIMEOUT).await?;
    eprintln!("[{name}] cluster ready in {:?}", started.elapsed());

    let (urls, token) = (cluster.urls.clone(), cluster.token.clone());
    let target = |batch| Target {
        kind,
        urls: urls.clone(),
        token: token.clone(),
        batch,
        payload_bytes: args.payload_bytes,
        connections: args.connections,
    };
    let warmup = Duration::from_secs(args.warmup_secs);
    let duration = Duration::from_secs(args.duration_secs);

    eprintln!("[{name}] single appends");
    let single = timed(&target(1), warmup, duration).await?;
    report(name, "single", &single);

    eprintln!("[{name}] batches of {}", args.batch);
    let batched = timed(&target(args.batch), warmup, duration).await?;
    report(name, "batched", &batched);

    eprintln!("[{name}] failover: SIGKILL the leader under single-append load");
    let failover_gap = failover(&mut cluster, &target(1), warmup).await?;
    match failover_gap {
        Some(gap) => eprintln!("[{name}] failover gap {:.1} ms", ms(gap)),
        None => eprintln!("[{name}] no acknowledged append within {FAILOVER_TIMEOUT:?}"),
    }

    let rss_mib = if args.rss_events > 0 {
        eprintln!("[{name}] appending {} events for RSS", args.rss_events);
        fill(&target(args.batch), args.rss_events).await?;
        let rss = cluster.max_rss_mib()?;
        eprintln!("[{name}] max node RSS {rss:.0} MiB");
        Some(rss)
    } else {
        None
    };

    cluster.stop().await;
    Ok(Results {
        single,
        batched,
        failover_gap,
        rss_mib,
    })
}

fn report(name: &str, phase: &str, s: &Stats) {
    eprintln!(
        "[{name}] {phase}: {:.0} req/s, {:.0} events/s, p50 {:.2} ms, p99 {:.2} ms, {} errors {}",
        s.requests_per_sec(),
        s.events_per_sec(),
        s.percentile_ms(0.5).unwrap_or(f64::NAN),
        s.percentile_ms(0.99).unwrap_or(f64::NAN),
        s.error_count(),
        s.error_summary()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Warm-up, then a measured window. The sleeps set the window; they synchronise nothing.
async fn timed(target: &Target, warmup: Duration, duration: Duration) -> Result<Stats> {
    let run = load::start(target)?;
    tokio::time::sleep(warmup).await;
    run.record_from_now();
    tokio::time::sleep(duration).await;
    Ok(run.finish().await)
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
    cluster.kill(leader).await?; // returns once the process is reaped
    run.mark_dead(leader);
    let deadline = killed_at + FAILOVER_TIMEOUT;
    while run.first_ack_after_kill().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let gap = run.first_ack_after_kill().map(|t| t - killed_at);
    run.finish().await;
    cluster.restart(leader)?;
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
fn table(args: &BusArgs, bus: Option<&Results>, etcd: Option<&Results>) -> String {
    type Pick = fn(&Results) -> Option<f64>;
    let single_rate: Pick = |r| Some(r.single.requests_per_sec());
    let p50: Pick = |r| r.single.percentile_ms(0.5);
    let p99: Pick = |r| r.single.percentile_ms(0.99);
    let single_errors: Pick = |r| Some(r.single.error_count() as f64);
    let batched_rate: Pick = |r| Some(r.batched.events_per_sec());
    let batched_errors: Pick = |r| Some(r.batched.error_count() as f64);
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
    let widths: Vec<usize> = (0..4)
        .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        out.push_str(&format!(
            "{:<w0$} | {:>w1$} | {:>w2$} | {}\n",
            l[0],
            l[1],
            l[2],
            l[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        ));
        if i == 0 {
            let dashes: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&dashes.join("-+-"));
            out.push('\n');
        }
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    out.push_str(&format!(
        "{} connections, {} B payloads, {} s measured after {} s warm-up, \
         3 nodes + load generator on {cores} cores.\n\
         failover gap: SIGKILL of the leader to the first 2xx for a request sent after it \
         died to a surviving node.\n",
        args.connections, args.payload_bytes, args.duration_secs, args.warmup_secs
    ));
    out
}
