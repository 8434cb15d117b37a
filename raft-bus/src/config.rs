//! The one configuration of a bus node: flags, each with an environment fallback.
//! The flag names of DESIGN.md are a contract: scripts outside the project use them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "raft-bus",
    version,
    about = "A node of Taskpool's Raft cluster: durable, replicated event store and command bus.",
    long_about = "A node of Taskpool's Raft cluster: durable, replicated event store and command bus.\n\n\
Start three nodes with the same --peers and they form one cluster by themselves; a node restarted \
with its data dir rejoins. Every node serves the client API, the Raft RPC, /metrics and /health/* \
on its one --listen address."
)]
pub struct Config {
    /// This node's id; must be one of the ids in --peers for a node of the initial cluster.
    #[arg(long, env = "RAFT_BUS_NODE_ID")]
    pub node_id: u64,

    /// Address to listen on, HOST:PORT.
    #[arg(long, env = "RAFT_BUS_LISTEN", default_value = "127.0.0.1:7101")]
    pub listen: SocketAddr,

    /// Where the Raft log, the event store and snapshots live.
    #[arg(long, env = "RAFT_BUS_DATA_DIR")]
    pub data_dir: PathBuf,

    /// The initial cluster, `1=HOST:PORT,2=HOST:PORT,3=HOST:PORT`; the same on every node.
    #[arg(long, env = "RAFT_BUS_PEERS", value_parser = parse_peers)]
    pub peers: Peers,

    /// One secret for everything: every client call and every Raft RPC must carry it as
    /// `Authorization: Bearer SECRET`, and it has every right (any stream, the first layout
    /// included). The shortcut for a single-application setup; for several applications use
    /// --credentials (not both). With neither, the bus is open.
    #[arg(long, env = "RAFT_BUS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// A TOML file of bus clients, each with its own secret and role (collector of one
    /// application, core, peer, admin), the secret stored as `sha256:<hex>`. Secrets should
    /// be random, e.g. `openssl rand -hex 32`. Re-read on SIGHUP and when it changes (checked
    /// every 2 s); a file that is not valid keeps the previous credentials. Replaces --token
    /// (not both); needs --peer-token.
    #[arg(long, env = "RAFT_BUS_CREDENTIALS")]
    pub credentials: Option<PathBuf>,

    /// With --credentials: the secret this node sends with its Raft RPC and forwards; its
    /// hash must be a `peer` entry of the file. Better given by the environment than as a flag.
    #[arg(long, env = "RAFT_BUS_PEER_TOKEN", hide_env_values = true)]
    pub peer_token: Option<String>,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "RAFT_BUS_MAX_BODY_BYTES", default_value_t = 4 << 20)]
    pub max_body_bytes: usize,

    /// Largest number of events in one append.
    #[arg(long, env = "RAFT_BUS_MAX_BATCH", default_value_t = 10_000)]
    pub max_batch: usize,

    /// Most concurrent event subscribers per node.
    #[arg(long, env = "RAFT_BUS_MAX_SUBSCRIBERS", default_value_t = 1024)]
    pub max_subscribers: usize,

    /// Most client requests in flight per node; past it a request is answered 503 `busy` at
    /// once (clients move to another node). Streams are not counted: they have their own limits.
    #[arg(long, env = "RAFT_BUS_MAX_CONCURRENT_REQUESTS", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_requests: u32,

    /// Threads serving HTTP (default: one per CPU). Nodes that share a machine's cores, as in
    /// a benchmark or a local stack, do better with fewer: 1 each for three nodes on two cores
    /// (one thread runs a current-thread runtime, without work stealing).
    #[arg(long, env = "RAFT_BUS_WORKER_THREADS",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,

    /// Leader heartbeat interval, in milliseconds.
    #[arg(long, env = "RAFT_BUS_HEARTBEAT_MS", default_value_t = 50)]
    pub heartbeat_ms: u64,

    /// Election timeout lower bound in milliseconds; the upper bound is 1.5 times this. A
    /// follower that heard from a leader waits the upper bound (the leader's lease) plus a
    /// random timeout between the bounds before it stands: 375-450 ms by default.
    #[arg(long, env = "RAFT_BUS_ELECTION_TIMEOUT_MS", default_value_t = 150)]
    pub election_timeout_ms: u64,

    /// Build a snapshot (and compact the log) after this many log entries.
    #[arg(long, env = "RAFT_BUS_SNAPSHOT_LOGS", default_value_t = 100_000)]
    pub snapshot_logs: u64,

    /// Seconds between SSE heartbeat comments on idle subscriptions.
    #[arg(long, env = "RAFT_BUS_SSE_HEARTBEAT_SECS", default_value_t = 5)]
    pub sse_heartbeat_secs: u64,

    /// Log as JSON lines instead of text.
    #[arg(long, env = "RAFT_BUS_LOG_JSON")]
    pub log_json: bool,
}

/// Node id → address.
pub type Peers = BTreeMap<u64, String>;

fn parse_peers(s: &str) -> Result<Peers, String> {
    let mut peers = Peers::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("peer `{part}` is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("peer id `{id}` is not a number"))?;
        let addr = addr.trim();
        if addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            return Err(format!("peer address `{addr}` is not HOST:PORT"));
        }
        if peers.insert(id, addr.to_owned()).is_some() {
            return Err(format!("peer id {id} appears twice"));
        }
    }
    if peers.is_empty() {
        return Err("no peers given".into());
    }
    Ok(peers)
}

/// A config of one node with the required flags and `extra`, as the unit tests build it.
#[cfg(test)]
pub(crate) fn parse_for_tests(extra: &[&str]) -> Result<Config, clap::Error> {
    let required = [
        "raft-bus",
        "--node-id",
        "1",
        "--data-dir",
        "d",
        "--peers",
        "1=h:1",
    ];
    Config::try_parse_from(required.iter().chain(extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_peers_and_rejects_bad_ones() {
        let p = parse_peers("1=127.0.0.1:7101, 2=127.0.0.1:7102,3=h:7103").expect("valid");
        assert_eq!(p.len(), 3);
        assert_eq!(p[&3], "h:7103");
        assert!(parse_peers("1=a:1,1=b:2").is_err());
        assert!(parse_peers("x=a:1").is_err());
        assert!(parse_peers("1=nohost").is_err());
        assert!(parse_peers("").is_err());
    }

    #[test]
    fn worker_threads_are_optional_and_at_least_one() {
        let parse = parse_for_tests;
        assert_eq!(parse(&[]).expect("valid").worker_threads, None);
        let two = parse(&["--worker-threads", "2"]).expect("valid");
        assert_eq!(two.worker_threads, Some(2));
        assert!(parse(&["--worker-threads", "0"]).is_err());
    }
}
