//! Three-node etcd and raft-bus clusters on 127.0.0.1, run as child processes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rand::distributions::{Alphanumeric, DistString};
use serde_json::Value;
use taskpool_api::BusClient;
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

pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts a three-node cluster of `kind` from `bin` in a fresh dir under `dir`, and waits
/// until every node is healthy and knows the leader. A raft-bus node serves HTTP on
/// `bus_threads` threads.
pub async fn start(kind: Kind, bin: &Path, dir: &Path, bus_threads: u16) -> Result<Cluster> {
    let started = Instant::now();
    let cluster = match kind {
        Kind::Etcd => Cluster::Etcd(Etcd::start(bin, dir).await?),
        Kind::Bus => Cluster::Bus(start_raft_bus(bin, dir, bus_threads).await?),
    };
    eprintln!(
        "[{}] cluster ready in {:?} ({})",
        kind.name(),
        started.elapsed(),
        cluster.dir().display()
    );
    Ok(cluster)
}

/// Three raft-bus nodes from `bin` with a random token, through testkit.
async fn start_raft_bus(bin: &Path, dir: &Path, threads: u16) -> Result<testkit::Cluster> {
    let options = testkit::Options {
        bin: Some(bin.to_path_buf()),
        args: vec!["--worker-threads".into(), threads.to_string()],
        dir: Some(dir.to_path_buf()),
        token: Some(Alphanumeric.sample_string(&mut rand::thread_rng(), 32)),
        ready_timeout: READY_TIMEOUT,
    };
    testkit::Cluster::launch(options)
        .await
        .map_err(|e| anyhow!(e))
}

/// A three-node raft-bus cluster for the benchmarks of what runs on the bus.
pub async fn start_bus(common: &CommonArgs, dir: &Path) -> Result<testkit::Cluster> {
    let bin = common.bus_bin();
    match start(Kind::Bus, &bin, dir, common.bus_threads).await? {
        Cluster::Bus(bus) => Ok(bus),
        Cluster::Etcd(_) => unreachable!("asked for raft-bus"),
    }
}

/// A client of every node of `bus` with the library's defaults whose node list starts at
/// `first` (an index into its nodes): it talks to that node while the node answers, and to
/// the others only when it does not.
pub fn client_from(bus: &testkit::Cluster, first: usize) -> Result<BusClient> {
    let n = bus.nodes.len();
    let ids: Vec<u64> = (0..n).map(|k| ((first + k) % n) as u64 + 1).collect();
    Ok(BusClient::new(bus.config(&ids))?)
}

/// The cluster under `taskpool-bench bus`: etcd or raft-bus.
pub enum Cluster {
    Etcd(Etcd),
    Bus(testkit::Cluster),
}

impl Cluster {
    pub fn kind(&self) -> Kind {
        match self {
            Cluster::Etcd(_) => Kind::Etcd,
            Cluster::Bus(_) => Kind::Bus,
        }
    }

    /// Client base URL of each node, in node order.
    pub fn urls(&self) -> Vec<String> {
        match self {
            Cluster::Etcd(etcd) => etcd.urls.clone(),
            Cluster::Bus(bus) => bus.urls(),
        }
    }

    pub fn token(&self) -> Option<String> {
        match self {
            Cluster::Etcd(_) => None,
            Cluster::Bus(bus) => bus.token().map(str::to_owned),
        }
    }

    fn dir(&self) -> &Path {
        match self {
            Cluster::Etcd(etcd) => &etcd.dir,
            Cluster::Bus(bus) => bus.dir(),
        }
    }

    /// Index (into the nodes) of the current leader, asked of the running nodes.
    pub async fn leader(&self) -> Result<usize> {
        match self {
            Cluster::Etcd(etcd) => etcd.leader().await,
            Cluster::Bus(bus) => {
                let id = bus
                    .try_leader(READY_TIMEOUT)
                    .await
                    .map_err(|e| anyhow!(e))?;
                Ok(id as usize - 1)
            }
        }
    }

    /// SIGKILL; returns once the process is reaped.
    pub fn kill(&mut self, i: usize) {
        match self {
            Cluster::Etcd(etcd) => etcd.nodes[i].kill(),
            Cluster::Bus(bus) => bus.kill(i as u64 + 1),
        }
    }

    /// Starts a killed node again with the same arguments and data dir.
    pub fn restart(&mut self, i: usize) {
        match self {
            Cluster::Etcd(etcd) => etcd.nodes[i].spawn(),
            Cluster::Bus(bus) => bus.spawn(i as u64 + 1),
        }
    }

    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        match self {
            Cluster::Etcd(etcd) => etcd.wait_ready(timeout).await,
            Cluster::Bus(bus) => bus.wait_all_ready(timeout).await.map_err(|e| anyhow!(e)),
        }
    }

    /// Largest resident set size (VmRSS) over the nodes, in MiB.
    pub fn max_rss_mib(&self) -> Result<f64> {
        let rss: Vec<(String, Option<u64>)> = match self {
            Cluster::Etcd(etcd) => etcd
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.rss_kib()))
                .collect(),
            Cluster::Bus(bus) => bus
                .nodes
                .iter()
                .map(|n| (format!("raft-bus node {}", n.id), n.rss_kib()))
                .collect(),
        };
        let mut max_kib = 0u64;
        for (name, kib) in rss {
            let kib = kib.ok_or_else(|| anyhow!("no VmRSS of {name}: is it running?"))?;
            max_kib = max_kib.max(kib);
        }
        Ok(max_kib as f64 / 1024.0)
    }

    pub async fn stop(&mut self) {
        match self {
            Cluster::Etcd(etcd) => etcd.stop().await,
            Cluster::Bus(bus) => bus.stop().await,
        }
    }

    /// Stops the nodes and deletes the cluster's dir: its data is not needed again.
    pub async fn discard(&mut self) -> Result<()> {
        match self {
            Cluster::Etcd(etcd) => {
                etcd.stop().await;
                let dir = &etcd.dir;
                std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
            }
            Cluster::Bus(bus) => bus.discard().await.map_err(|e| anyhow!(e)),
        }
    }
}

/// Three etcd members forming one cluster, each a testkit [`Service`] logging into the
/// cluster's dir; dropping one kills its process, so an error, a panic or Ctrl-C in the
/// benchmark never leaves a server running.
pub struct Etcd {
    nodes: Vec<Service>,
    /// Client base URL of each member, same order as `nodes`.
    urls: Vec<String>,
    /// The cluster's own dir (data and logs).
    dir: PathBuf,
    http: reqwest::Client,
}

impl Etcd {
    /// Starts the members in a fresh dir under `dir` (fsync stays on, etcd's default) and
    /// waits until every one is healthy.
    async fn start(bin: &Path, dir: &Path) -> Result<Etcd> {
        if !bin.exists() {
            bail!("{} not found: run scripts/install-etcd", bin.display());
        }
        // A fresh dir per cluster, so a reused --work-dir never starts from old data and two
        // benchmarks of one run never share one.
        let dir = tempfile::Builder::new()
            .prefix("etcd-")
            .tempdir_in(dir)?
            .keep();
        let ports = testkit::free_ports(6);
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
                Service::start_logging_to(&format!("etcd {name}"), bin, args, Vec::new(), log)
            })
            .collect();
        let urls = client
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let mut etcd = Etcd {
            nodes,
            urls,
            dir,
            http,
        };
        etcd.wait_ready(READY_TIMEOUT).await?;
        Ok(etcd)
    }

    /// Polls until every member reports healthy (etcd's /health is true only when the
    /// member sees a leader), or the deadline passes.
    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            for node in &mut self.nodes {
                node.check_running().map_err(|e| anyhow!(e))?;
            }
            if self.healthy().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| n.log_path().display().to_string())
                    .collect();
                bail!(
                    "etcd cluster not ready after {timeout:?}; logs: {}",
                    logs.join(" ")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn healthy(&self) -> bool {
        for url in &self.urls {
            let health = async {
                let resp = self.http.get(format!("{url}/health")).send().await?;
                resp.error_for_status()?.json::<Value>().await
            };
            if !health.await.is_ok_and(|v| v["health"] == "true") {
                return false;
            }
        }
        true
    }

    /// Index of the leader: each member's status names itself and the leader it follows.
    async fn leader(&self) -> Result<usize> {
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

    /// SIGTERM for a clean shutdown; SIGKILL if a member does not exit in time.
    async fn stop(&mut self) {
        for node in &mut self.nodes {
            node.terminate(Duration::from_secs(10)).await;
        }
    }
}
