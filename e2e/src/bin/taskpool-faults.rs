//! `taskpool-faults`: the fault-injection suite against a real three-node raft-bus.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use e2e::faults::{run, Config};

/// Runs a three-node raft-bus under concurrent appends and commands while a nemesis SIGKILLs
/// and restarts nodes, SIGSTOPs and resumes them and cuts them off the network (network
/// namespaces; needs root), then checks every node's log against what the clients were told:
/// every acknowledged append present exactly once at its position, all nodes the same, positions
/// dense, stream versions consistent, every command answered ok executed exactly once.
#[derive(Parser)]
#[command(name = "taskpool-faults", version)]
struct Args {
    /// The raft-bus binary
    #[arg(long, env = "RAFT_BUS_BIN", default_value = "target/release/raft-bus")]
    raft_bus_bin: PathBuf,
    /// How long the nemesis injects faults
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent appending clients
    #[arg(long, default_value_t = 8)]
    appenders: usize,
    /// Concurrent command senders
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// Only kills and pauses, no network partitions (they need root)
    #[arg(long)]
    no_partitions: bool,
    /// Where node logs, the fault log and the history go (default: a temp dir, kept on failure)
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let temp = match &args.work_dir {
        Some(_) => None,
        None => match tempfile::Builder::new()
            .prefix("taskpool-faults-")
            .tempdir()
        {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("error: temp dir: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let dir = args
        .work_dir
        .clone()
        .or_else(|| temp.as_ref().map(|t| t.path().to_owned()))
        .unwrap_or_default();
    let config = Config {
        raft_bus_bin: args.raft_bus_bin,
        duration: args.duration,
        appenders: args.appenders,
        senders: args.senders,
        partitions: !args.no_partitions,
        dir: dir.clone(),
    };
    eprintln!(
        "faults for {:?} ({} appenders, {} command senders, partitions {}); work dir {}",
        config.duration,
        config.appenders,
        config.senders,
        if config.partitions { "on" } else { "off" },
        dir.display()
    );
    match run(&config).await {
        Ok(summary) => {
            print!("{summary}");
            if summary.anomalies.is_empty() {
                ExitCode::SUCCESS
            } else {
                if let Some(t) = temp {
                    eprintln!("history and logs kept in {}", t.keep().display());
                }
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(t) = temp {
                eprintln!("logs kept in {}", t.keep().display());
            }
            ExitCode::FAILURE
        }
    }
}
