//! `taskpool-bench`: benchmarks of Taskpool's parts on this machine.
//! - `bus`: the raft-bus event store against a three-node etcd (bus.rs);
//! - `commands`: command routing through raft-bus to in-process handlers (commands.rs);
//! - `collector`: the collector against the real engine: change → event latency by hook and by
//!   poll, idle poll cost as open tasks grow (collector.rs);
//! - `core`: taskpool-core's "my tasks" against the engine's own REST, over one application
//!   and over the same tasks in two, and its rebuild rate (core.rs);
//! - `rebuild`: the rate of `taskpool-core rebuild` on two histories of the same open tasks
//!   (rebuild.rs);
//! - `e2e`: the whole system: created → visible and the claim round trip in hook and poll
//!   mode, a burst until all are visible, each beside the engine's own figure (e2e.rs);
//! - `all`: bus, commands and collector, one after the other.
//!
//! Results go to stdout as tables, progress to stderr.

mod bus;
mod cluster;
mod collector;
mod commands;
mod core;
mod e2e;
mod load;
mod raw_http;
mod rebuild;
mod variable_latency;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use load::Stats;

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
    Bus {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        bus: BusArgs,
    },
    /// Benchmark command routing: senders -> raft-bus -> in-process handlers -> senders
    Commands {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        commands: CommandArgs,
    },
    /// Benchmark the collector against the real engine (needs PostgreSQL and the engine:
    /// deploy/scripts/postgres.sh start && deploy/scripts/camunda.sh start)
    Collector {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        collector: CollectorArgs,
    },
    /// Benchmark taskpool-core's task queries against the engine's own REST API (needs
    /// PostgreSQL, the engine and FerretDB: scripts/bench core starts them)
    Core {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        core: CoreArgs,
    },
    /// Benchmark `taskpool-core rebuild` on a history of created tasks only and on a working
    /// history (needs FerretDB or MongoDB: scripts/bench rebuild starts FerretDB)
    Rebuild {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        rebuild: RebuildArgs,
    },
    /// Benchmark the whole system end to end on the real engine (needs PostgreSQL, the engine
    /// and FerretDB: scripts/bench e2e starts them)
    E2e {
        #[command(flatten)]
        e2e: E2eArgs,
    },
    /// Run `bus`, `commands`, then `collector`
    All {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        bus: BusArgs,
        #[command(flatten)]
        commands: CommandArgs,
        #[command(flatten)]
        collector: CollectorArgs,
    },
}

/// Flags every benchmark takes.
#[derive(Args)]
struct CommonArgs {
    /// Measured seconds of each load phase (after the warm-up)
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Unmeasured seconds of load before each phase
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// The raft-bus binary [default: raft-bus beside this executable, from the same
    /// `cargo build --release`]
    #[arg(long)]
    raft_bus_bin: Option<PathBuf>,
    /// HTTP threads of each raft-bus node (its --worker-threads): three nodes and the load
    /// generator share this machine's cores
    #[arg(long, default_value_t = 1)]
    bus_threads: u16,
    /// Where data dirs and server logs go (default: a temp dir, removed on success)
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

impl CommonArgs {
    /// `--raft-bus-bin`, or raft-bus beside this executable.
    fn bus_bin(&self) -> PathBuf {
        self.raft_bus_bin
            .clone()
            .unwrap_or_else(|| testkit::sibling_binary("raft-bus"))
    }
}

#[derive(Args)]
#[command(next_help_heading = "Bus benchmark")]
struct BusArgs {
    /// Concurrent keep-alive connections, spread round-robin over the three nodes
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Payload size of each event / etcd value
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,
    /// Events per request in the batched phase and the RSS fill (etcd: puts per txn)
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// The etcd binary
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd_bin: PathBuf,
    /// Do not run etcd
    #[arg(long)]
    skip_etcd: bool,
    /// Do not run raft-bus (in the bus benchmark)
    #[arg(long)]
    skip_bus: bool,
    /// Events appended before reading the nodes' RSS (0 skips this step)
    #[arg(long, default_value_t = 1_000_000)]
    rss_events: u64,
    /// Rounds of the single and batched phases, alternating between the systems; the table
    /// shows the median round of each metric
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
}

#[derive(Args)]
#[command(next_help_heading = "Commands benchmark")]
struct CommandArgs {
    /// Concurrent senders of the loaded phase (the first phase has one)
    #[arg(long, default_value_t = 64)]
    senders: usize,
    /// Size of each command's payload
    #[arg(long, default_value_t = 64)]
    command_payload_bytes: usize,
}

#[derive(Args)]
#[command(next_help_heading = "Collector benchmark")]
struct CollectorArgs {
    /// The camunda-collector binary
    #[arg(long, default_value = "target/release/camunda-collector")]
    collector_bin: PathBuf,
    /// The engine's REST API (basic auth demo/demo)
    #[arg(
        long,
        env = "CAMUNDA_URL",
        default_value = "http://127.0.0.1:8080/engine-rest"
    )]
    engine_url: String,
    /// PostgreSQL for the collector's state
    #[arg(
        long,
        env = "COLLECTOR_DATABASE_URL",
        default_value = "postgres://taskpool:taskpool@127.0.0.1:5432/collector"
    )]
    database_url: String,
    /// Where the engine plugin sends hooks (as deploy/scripts/camunda.sh started it)
    #[arg(
        long,
        env = "TASKPOOL_HOOK_URL",
        default_value = "http://127.0.0.1:7201/v1/hooks"
    )]
    hook_url: String,
    /// The file holding the hook secret (deploy/scripts/camunda.sh writes it)
    #[arg(long, default_value = ".stack/hook-secret")]
    hook_secret_file: PathBuf,
    /// Tasks created per latency phase (hook, then poll)
    #[arg(long, default_value_t = 300)]
    changes: usize,
    /// Open tasks added before the second idle measurement
    #[arg(long, default_value_t = 50_000)]
    open_tasks: usize,
    /// Seconds each idle measurement lasts
    #[arg(long, default_value_t = 20)]
    idle_secs: u64,
}

/// taskpool-core and its view store, for the `core` and `rebuild` benchmarks.
#[derive(Args)]
struct ViewArgs {
    /// The taskpool-core binary
    #[arg(long, default_value = "target/release/taskpool-core")]
    core_bin: PathBuf,
    /// The MongoDB-compatible server for the view
    #[arg(
        long,
        env = "TASKPOOL_MONGO_URL",
        default_value = "mongodb://127.0.0.1:27017"
    )]
    mongo_url: String,
}

#[derive(Args)]
#[command(next_help_heading = "Core benchmark")]
struct CoreArgs {
    #[command(flatten)]
    view: ViewArgs,
    /// The engine's REST API (basic auth demo/demo)
    #[arg(
        long,
        env = "CAMUNDA_URL",
        default_value = "http://127.0.0.1:8080/engine-rest"
    )]
    engine_url: String,
    /// Open tasks in the engine (and the view); multiples of 1,000
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Users in the engine's identity (each in 5 groups)
    #[arg(long, default_value_t = 1_000)]
    users: usize,
    /// Groups in the engine's identity
    #[arg(long, default_value_t = 50)]
    groups: usize,
    /// Measured taskpool-core answers
    #[arg(long, default_value_t = 1_000)]
    queries: usize,
    /// Measured answers of each engine query
    #[arg(long, default_value_t = 100)]
    engine_queries: usize,
}

#[derive(Args)]
#[command(next_help_heading = "Rebuild benchmark")]
struct RebuildArgs {
    #[command(flatten)]
    view: ViewArgs,
    /// Open tasks in both histories
    #[arg(long, default_value_t = 100_000)]
    open_tasks: usize,
    /// Finished tasks (4 events each) in the working history
    #[arg(long, default_value_t = 100_000)]
    finished_tasks: usize,
    /// Users the tasks are spread over
    #[arg(long, default_value_t = 1_000)]
    users: usize,
    /// Groups the tasks are spread over
    #[arg(long, default_value_t = 50)]
    groups: usize,
}

#[derive(Args)]
#[command(next_help_heading = "End-to-end benchmark")]
struct E2eArgs {
    /// Tasks created one at a time in hook mode (latency samples)
    #[arg(long, default_value_t = 300)]
    instances: usize,
    /// Tasks created one at a time in poll mode
    #[arg(long, default_value_t = 100)]
    poll_instances: usize,
    /// The collector's poll interval in poll mode
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// Claims through the task API, and as many on the engine's own REST, in each mode (hook
    /// mode claims tasks of its latency phase, at most half of --instances each way)
    #[arg(long, default_value_t = 100)]
    claims: usize,
    /// Instances of the burst
    #[arg(long, default_value_t = 1_000)]
    burst: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cmd = Cli::parse().cmd;
    // Dropping `run` on a signal drops every Cluster, whose children are killed on drop.
    tokio::select! {
        code = run(cmd) => code,
        _ = service_kit::shutdown_signal() => {
            eprintln!("interrupted: servers killed");
            ExitCode::from(130)
        }
    }
}

/// One benchmark of a plan; a command runs its plan in order.
enum Bench {
    Bus(BusArgs),
    Commands(CommandArgs),
    Collector(CollectorArgs),
    Core(CoreArgs),
    Rebuild(RebuildArgs),
}

impl Bench {
    /// Settings it cannot run with, and what to change.
    fn invalid(&self, common: &CommonArgs) -> Option<&'static str> {
        const COUNTS: &str =
            "--duration-secs, --connections, --batch and --senders must be at least 1";
        match self {
            Bench::Rebuild(r) if r.open_tasks == 0 || r.users == 0 || r.groups < 5 => {
                Some("--open-tasks ≥ 1, --users ≥ 1 and --groups ≥ 5")
            }
            Bench::Core(c)
                if c.users < 1 || c.groups < 5 || c.queries == 0 || c.engine_queries < 5 =>
            {
                Some("--users ≥ 1, --groups ≥ 5, --queries ≥ 1 and --engine-queries ≥ 5")
            }
            Bench::Bus(b) if b.connections == 0 || b.batch == 0 => Some(COUNTS),
            Bench::Commands(c) if c.senders == 0 => Some(COUNTS),
            _ if common.duration_secs == 0 => Some(COUNTS),
            _ => None,
        }
    }

    async fn run(&self, common: &CommonArgs, dir: &std::path::Path) -> bool {
        match self {
            Bench::Bus(args) => bus::run(common, args, dir).await,
            Bench::Commands(args) => commands::run(common, args, dir).await,
            Bench::Collector(args) => collector::run(common, args, dir).await,
            Bench::Core(args) => core::run(common, args, dir).await,
            Bench::Rebuild(args) => rebuild::run(common, args, dir).await,
        }
    }
}

async fn run(cmd: Cmd) -> ExitCode {
    let (common, plan) = match cmd {
        Cmd::E2e { e2e } => {
            if e2e.instances < 2 || e2e.poll_instances == 0 || e2e.burst == 0 || e2e.claims == 0 {
                eprintln!("--instances ≥ 2, --poll-instances ≥ 1, --burst ≥ 1 and --claims ≥ 1");
                return ExitCode::from(2);
            }
            return if e2e::run(&e2e).await {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        Cmd::Bus { common, bus } => (common, vec![Bench::Bus(bus)]),
        Cmd::Commands { common, commands } => (common, vec![Bench::Commands(commands)]),
        Cmd::Collector { common, collector } => (common, vec![Bench::Collector(collector)]),
        Cmd::Core { common, core } => (common, vec![Bench::Core(core)]),
        Cmd::Rebuild { common, rebuild } => (common, vec![Bench::Rebuild(rebuild)]),
        Cmd::All {
            common,
            bus,
            commands,
            collector,
        } => {
            let plan = vec![
                Bench::Bus(bus),
                Bench::Commands(commands),
                Bench::Collector(collector),
            ];
            (common, plan)
        }
    };
    // The first complaint, in the order the checks were always made.
    let order = |b: &&Bench| match b {
        Bench::Rebuild(_) => 0,
        Bench::Core(_) => 1,
        _ => 2,
    };
    let mut checked: Vec<&Bench> = plan.iter().collect();
    checked.sort_by_key(order);
    if let Some(why) = checked.iter().find_map(|b| b.invalid(&common)) {
        eprintln!("{why}");
        return ExitCode::from(2);
    }
    let (dir, temp) = match work_dir(&common) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("work dir: {}", dir.display());

    let mut ok = true;
    for (i, bench) in plan.iter().enumerate() {
        // A blank line between the tables of one plan.
        if i > 0 {
            println!();
        }
        ok &= bench.run(&common, &dir).await;
    }

    if !ok {
        if let Some(t) = temp {
            eprintln!("logs kept in {}", t.keep().display());
        }
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// A short id that keeps one run's names (databases, applications) apart from another's.
fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

fn work_dir(args: &CommonArgs) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
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

/// One progress line on stderr for a finished phase.
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

/// The p50 and p99 of latencies by nearest rank (the smallest value with at least that share of
/// the samples at or below it).
fn p50_p99(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    (at(0.5), at(0.99))
}

/// Four columns, the first line a header: metric left-aligned, values right-aligned.
fn render_table(lines: &[[String; 4]]) -> String {
    let widths: Vec<usize> = (0..4)
        .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        let line = format!(
            "{:<w0$} | {:>w1$} | {:>w2$} | {}",
            l[0],
            l[1],
            l[2],
            l[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        out.push_str(line.trim_end());
        out.push('\n');
        if i == 0 {
            let dashes: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&dashes.join("-+-"));
            out.push('\n');
        }
    }
    out
}
