//! Three-node etcd and raft-bus clusters on 127.0.0.1, run as child processes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rand::distributions::{Alphanumeric, DistString};
use serde_json::Value;
use taskpool_api::{BusClient, ClientConfig};
use testkit::Service;

use crate::CommonArgs;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Etcd,
    Bus,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Etcd => "etcd",
            Kind::Bus => "raft-bus",
        }
    }
}

/// One server process, a testkit [`Service`] logging into the cluster's dir; dropping it kills
/// the process, so an error, a panic or Ctrl-C in the benchmark never leaves a server running.
pub struct Node {
    service: Service,
}

impl Node {
    fn start(name: String, bin: &Path, args: Vec<String>, log: PathBuf) -> Node {
        Node {
            service: Service::start_logging_to(&name, bin, args, Vec::new(), log),
        }
    }

    fn is_running(&self) -> bool {
        self.service.pid().is_some()
    }

    /// SIGKILL, then reap, so the caller knows the process is gone when this returns.
    fn kill(&mut self) {
        self.service.kill();
    }

    /// SIGTERM for a clean shutdown; SIGKILL if it does not exit in time.
    async fn stop(&mut self) {
        self.service.terminate(Duration::from_secs(10)).await;
    }

    /// Fails with the end of the log if the process has exited.
    fn check_running(&mut self) -> Result<()> {
        self.service.check_running().map_err(|e| anyhow!(e))
    }
}

/// Distinct free ports: all listeners are held until every port is chosen.
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    Ok(testkit::free_ports(n))
}

pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts a three-node cluster of `kind` from `bin` in a fresh dir under `dir`, and waits
/// until every node is healthy and knows the leader. A raft-bus node serves HTTP on
/// `bus_threads` threads.
pub async fn start(kind: Kind, bin: &Path, dir: &Path, bus_threads: u16) -> Result<Cluster> {
    let name = kind.name();
    if !bin.exists() {
        match kind {
            Kind::Etcd => bail!("{} not found: run scripts/install-etcd", bin.display()),
            Kind::Bus => bail!(
                "{} not found: run cargo build --release -p raft-bus",
                bin.display()
            ),
        }
    }
    // A fresh dir per cluster, so a reused --work-dir never starts from old data and two
    // benchmarks of one run never share one.
    let dir = tempfile::Builder::new()
        .prefix(&format!("{name}-"))
        .tempdir_in(dir)?
        .keep();
    let mut cluster = match kind {
        Kind::Etcd => Cluster::start_etcd(bin, &dir)?,
        Kind::Bus => {
            let token = Alphanumeric.sample_string(&mut rand::thread_rng(), 32);
            Cluster::start_bus(bin, &dir, &token, bus_threads)?
        }
    };
    cluster.dir = Some(dir.clone());
    let started = Instant::now();
    cluster.wait_ready(READY_TIMEOUT).await?;
    eprintln!(
        "[{name}] cluster ready in {:?} ({})",
        started.elapsed(),
        dir.display()
    );
    Ok(cluster)
}

/// A three-node raft-bus cluster for the benchmarks of what runs on the bus.
pub async fn start_bus(common: &CommonArgs, dir: &Path) -> Result<Cluster> {
    start(Kind::Bus, &common.raft_bus_bin, dir, common.bus_threads).await
}

pub struct Cluster {
    pub kind: Kind,
    pub nodes: Vec<Node>,
    /// Client base URL of each node, same order as `nodes`.
    pub urls: Vec<String>,
    pub token: Option<String>,
    http: reqwest::Client,
    /// The cluster's own dir (data and logs), when `start` made one.
    dir: Option<PathBuf>,
}

impl Cluster {
    fn new(kind: Kind, nodes: Vec<Node>, urls: Vec<String>, token: Option<String>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        Ok(Cluster {
            kind,
            nodes,
            urls,
            token,
            http,
            dir: None,
        })
    }

    /// Three etcd members forming one cluster; fsync stays on (etcd's default).
    pub fn start_etcd(bin: &Path, dir: &Path) -> Result<Self> {
        let ports = free_ports(6)?;
        let (client, peer) = ports.split_at(3);
        let initial = (0..3)
            .map(|i| format!("e{}=http://127.0.0.1:{}", i + 1, peer[i]))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = (0..3)
            .map(|i| {
                let name = format!("e{}", i + 1);
                let client_url = format!("http://127.0.0.1:{}", client[i]);
                let peer_url = format!("http://127.0.0.1:{}", peer[i]);
                let data = dir.join(format!("etcd-{}", i + 1));
                let args = vec![
                    format!("--name={name}"),
                    format!("--data-dir={}", data.display()),
                    format!("--listen-client-urls={client_url}"),
                    format!("--advertise-client-urls={client_url}"),
                    format!("--listen-peer-urls={peer_url}"),
                    format!("--initial-advertise-peer-urls={peer_url}"),
                    format!("--initial-cluster={initial}"),
                    "--initial-cluster-token=taskpool-bench".into(),
                    "--initial-cluster-state=new".into(),
                    // Room for every phase's keys; 8 GiB is etcd's suggested maximum.
                    "--quota-backend-bytes=8589934592".into(),
                    "--logger=zap".into(),
                    "--log-outputs=stderr".into(),
                ];
                let log = dir.join(format!("etcd-{}.log", i + 1));
                Node::start(format!("etcd {name}"), bin, args, log)
            })
            .collect();
        let urls = client
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        Self::new(Kind::Etcd, nodes, urls, None)
    }

    /// Three raft-bus nodes with the same `--peers`; the cluster forms by itself.
    pub fn start_bus(bin: &Path, dir: &Path, token: &str, threads: u16) -> Result<Self> {
        let ports = free_ports(3)?;
        let peers = (0..3)
            .map(|i| format!("{}=127.0.0.1:{}", i + 1, ports[i]))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = (0..3)
            .map(|i| {
                let args = vec![
                    "--node-id".into(),
                    (i + 1).to_string(),
                    "--listen".into(),
                    format!("127.0.0.1:{}", ports[i]),
                    "--data-dir".into(),
                    dir.join(format!("bus-{}", i + 1)).display().to_string(),
                    "--peers".into(),
                    peers.clone(),
                    "--token".into(),
                    token.into(),
                    "--worker-threads".into(),
                    threads.to_string(),
                ];
                let log = dir.join(format!("bus-{}.log", i + 1));
                Node::start(format!("raft-bus node {}", i + 1), bin, args, log)
            })
            .collect();
        let urls = ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        Self::new(Kind::Bus, nodes, urls, Some(token.into()))
    }

    /// A client of every node, node `first` tried first.
    pub fn client_from(&self, first: usize) -> Result<BusClient> {
        let urls = &self.urls;
        let nodes = (0..urls.len())
            .map(|k| urls[(first + k) % urls.len()].clone())
            .collect();
        Ok(BusClient::new(ClientConfig::new(
            nodes,
            self.token.clone(),
        ))?)
    }

    /// Polls until every node reports healthy and a leader is known, or the deadline passes.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            for node in &mut self.nodes {
                node.check_running()?;
            }
            if self.ready_once().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| n.service.log_path().display().to_string())
                    .collect();
                bail!(
                    "{} cluster not ready after {timeout:?}; logs: {}",
                    self.kind.name(),
                    logs.join(" ")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn ready_once(&self) -> bool {
        for url in &self.urls {
            let ok = match self.kind {
                // etcd's /health is true only when the member sees a leader.
                Kind::Etcd => self
                    .get_json(&format!("{url}/health"))
                    .await
                    .is_ok_and(|v| v["health"] == "true"),
                Kind::Bus => {
                    let ready = self
                        .http
                        .get(format!("{url}/health/ready"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    ready
                        && self
                            .get_json(&format!("{url}/v1/cluster"))
                            .await
                            .is_ok_and(|v| !v["leaderId"].is_null())
                }
            };
            if !ok {
                return false;
            }
        }
        true
    }

    async fn get_json(&self, url: &str) -> Result<Value> {
        let mut req = self.http.get(url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await?.error_for_status()?;
        Ok(resp.json().await?)
    }

    /// The value of one series (name and labels, as `/metrics` prints it) on node `i`.
    pub async fn metric(&self, i: usize, series: &str) -> Result<Option<f64>> {
        let text = self
            .http
            .get(format!("{}/metrics", self.urls[i]))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(text.lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|v| v.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        }))
    }

    /// Index (into `nodes`) of the current leader, asked of the running nodes.
    pub async fn leader(&self) -> Result<usize> {
        match self.kind {
            Kind::Bus => {
                for (url, node) in self.urls.iter().zip(&self.nodes) {
                    if !node.is_running() {
                        continue;
                    }
                    if let Ok(v) = self.get_json(&format!("{url}/v1/cluster")).await {
                        if let Some(id) = v["leaderId"].as_u64() {
                            // Node ids are 1..=3 in `nodes` order.
                            return usize::try_from(id)
                                .ok()
                                .and_then(|id| id.checked_sub(1))
                                .filter(|i| *i < self.nodes.len())
                                .ok_or_else(|| anyhow!("unknown leaderId {id}"));
                        }
                    }
                }
                bail!("no raft-bus node reports a leader")
            }
            Kind::Etcd => {
                // Each member's status names itself and the leader it follows.
                let mut members = Vec::new();
                let mut leader = None;
                for url in &self.urls {
                    let resp = self
                        .http
                        .post(format!("{url}/v3/maintenance/status"))
                        .body("{}")
                        .send()
                        .await?
                        .error_for_status()?;
                    let v: Value = resp.json().await?;
                    members.push(v["header"]["member_id"].as_str().map(str::to_owned));
                    leader = leader.or(v["leader"].as_str().map(str::to_owned));
                }
                let leader = leader.ok_or_else(|| anyhow!("no etcd member reports a leader"))?;
                members
                    .iter()
                    .position(|m| m.as_deref() == Some(leader.as_str()))
                    .ok_or_else(|| anyhow!("etcd leader {leader} is not one of our members"))
            }
        }
    }

    pub async fn kill(&mut self, i: usize) -> Result<()> {
        self.nodes[i].kill();
        Ok(())
    }

    /// Starts a stopped node again with the same arguments and data dir.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.nodes[i].service.spawn();
        Ok(())
    }

    /// Largest resident set size (VmRSS) over the running nodes, in MiB.
    pub fn max_rss_mib(&self) -> Result<f64> {
        let mut max_kib = 0u64;
        for node in &self.nodes {
            let kib = node
                .service
                .rss_kib()
                .ok_or_else(|| anyhow!("no VmRSS of {}: is it running?", node.service.name))?;
            max_kib = max_kib.max(kib);
        }
        Ok(max_kib as f64 / 1024.0)
    }

    pub async fn stop(&mut self) {
        for node in &mut self.nodes {
            node.stop().await;
        }
    }

    /// Stops the nodes and deletes the cluster's dir: its data is not needed again.
    pub async fn discard(&mut self) -> Result<()> {
        self.stop().await;
        if let Some(dir) = self.dir.take() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        Ok(())
    }
}
