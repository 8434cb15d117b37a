//! A real three-node `raft-bus` cluster on loopback: for the integration tests (debug
//! binary, fixed token, temp dirs, panics on errors) and, through [`Options`] and
//! [`Cluster::launch`], for the benchmarks (release binary, their flags, token and work dir,
//! errors as `Err`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use taskpool_api::bus::{ClusterInfo, RecordedEvent};
use taskpool_api::{BusClient, ClientConfig};
use tokio::time::Instant;

use crate::credentials::{self, BusCredential};
use crate::{free_ports, raft_bus_binary, try_wait_for, wait_for, Service, TOKEN};

/// How [`Cluster::launch`] starts the nodes. The default is what [`Cluster::start`] does.
pub struct Options {
    /// The `raft-bus` binary (default: [`raft_bus_binary`]).
    pub bin: Option<PathBuf>,
    /// Flags after the cluster's own (`--worker-threads 1`, …).
    pub args: Vec<String>,
    /// The nodes' data dirs and logs go into a fresh dir under this one, which stays after
    /// the cluster is dropped (removed by [`Cluster::discard`]); default: a temp dir.
    pub dir: Option<PathBuf>,
    /// The `--token` (default: [`TOKEN`]).
    pub token: Option<String>,
    /// How long the nodes have to become ready.
    pub ready_timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            bin: None,
            args: Vec::new(),
            dir: None,
            token: None,
            ready_timeout: Duration::from_secs(60),
        }
    }
}

pub struct Node {
    pub id: u64,
    pub addr: String,
    pub dir: PathBuf,
    /// Made at the first spawn; restarts reuse its flags.
    service: Option<Service>,
}

impl Node {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.with_extension("log")
    }

    pub fn is_running(&self) -> bool {
        self.service.as_ref().is_some_and(|s| s.pid().is_some())
    }

    pub fn pid(&self) -> Pid {
        self.service
            .as_ref()
            .and_then(Service::pid)
            .expect("node is running")
    }

    /// Resident set size (VmRSS) of the running node, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.service.as_ref()?.rss_kib()
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    peers: String,
    bin: PathBuf,
    extra_args: Vec<String>,
    auth: Auth,
    /// Where the nodes' dirs are; `temp` owns it unless it is to stay.
    root: PathBuf,
    temp: Option<tempfile::TempDir>,
    http: reqwest::Client,
}

/// How the nodes authenticate callers.
enum Auth {
    /// `--token TOKEN`: one secret with every right.
    Token(String),
    /// `--credentials FILE`; `clients` include [`credentials::PEER_CLIENT`] (the nodes'
    /// `RAFT_BUS_PEER_TOKEN`) and [`credentials::ADMIN_CLIENT`] (the cluster's own helpers).
    Credentials {
        file: PathBuf,
        clients: Vec<BusCredential>,
    },
}

impl Cluster {
    /// Starts three nodes with the same `--peers` and waits until every one is ready.
    pub async fn start(extra_args: &[&str]) -> Cluster {
        let options = Options {
            args: extra_args.iter().map(|s| s.to_string()).collect(),
            ..Options::default()
        };
        Self::launch(options)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts three nodes as `options` say and waits until every one is ready; `Err` with
    /// the end of a node's log when one exits, or when they are not ready in time.
    pub async fn launch(options: Options) -> Result<Cluster, String> {
        let token = options.token.unwrap_or_else(|| TOKEN.into());
        let mut cluster = Self::prepare(options.bin, options.args, options.dir.as_deref(), |_| {
            Auth::Token(token)
        })?;
        for id in 1..=3 {
            cluster.spawn(id);
        }
        cluster.wait_all_ready(options.ready_timeout).await?;
        Ok(cluster)
    }

    /// Starts three nodes with `--credentials` (a file of `clients`, each secret stored as its
    /// SHA-256, plus a peer and an admin entry of its own) and `RAFT_BUS_PEER_TOKEN` instead of
    /// `--token`, and waits until every one is ready. Each client's secret is in its
    /// [`BusCredential`] and [`Cluster::secret`]; [`Cluster::client_as`] makes its client. The
    /// cluster's own helpers (`client`, `leader`, `wait_head`, …) call as the admin entry.
    pub async fn start_with_credentials(clients: &[BusCredential], extra_args: &[&str]) -> Cluster {
        let mut all = vec![
            BusCredential::peer(credentials::PEER_CLIENT),
            BusCredential::admin(credentials::ADMIN_CLIENT),
        ];
        all.extend_from_slice(clients);
        let extra = extra_args.iter().map(|s| s.to_string()).collect();
        let mut cluster = Self::prepare(None, extra, None, |dir| {
            let file = dir.join("credentials.toml");
            credentials::write_file(&file, credentials::file_of(&all).as_bytes());
            Auth::Credentials { file, clients: all }
        })
        .unwrap_or_else(|e| panic!("{e}"));
        for id in 1..=3 {
            cluster.spawn(id);
        }
        for id in 1..=3 {
            cluster.wait_ready(id).await;
        }
        cluster
    }

    /// The cluster with its dirs and three nodes, none started yet.
    fn prepare(
        bin: Option<PathBuf>,
        extra_args: Vec<String>,
        under: Option<&Path>,
        auth: impl FnOnce(&Path) -> Auth,
    ) -> Result<Cluster, String> {
        let bin = bin.unwrap_or_else(raft_bus_binary);
        if !bin.exists() {
            return Err(format!(
                "{} not found: build it with `cargo build --release -p raft-bus`",
                bin.display()
            ));
        }
        let (root, temp) = match under {
            // A fresh dir per cluster, so a reused work dir never starts from old data.
            Some(under) => {
                let dir = tempfile::Builder::new()
                    .prefix("raft-bus-")
                    .tempdir_in(under)
                    .map_err(|e| format!("a cluster dir in {}: {e}", under.display()))?;
                (dir.keep(), None)
            }
            None => {
                let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
                (dir.path().to_path_buf(), Some(dir))
            }
        };
        let auth = auth(&root);
        let nodes: Vec<Node> = free_ports(3)
            .into_iter()
            .zip(1..)
            .map(|(port, id)| Node {
                id,
                addr: format!("127.0.0.1:{port}"),
                dir: root.join(format!("node-{id}")),
                service: None,
            })
            .collect();
        let peers = nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.addr))
            .collect::<Vec<_>>()
            .join(",");
        Ok(Cluster {
            nodes,
            peers,
            bin,
            extra_args,
            auth,
            root,
            temp,
            http: reqwest::Client::new(),
        })
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    /// Where the nodes' data dirs and logs are.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Starts (or restarts, with its data dir) node `id`.
    pub fn spawn(&mut self, id: u64) {
        let mut args = vec![
            "--node-id".to_string(),
            id.to_string(),
            "--listen".into(),
            self.node(id).addr.clone(),
            "--data-dir".into(),
            self.node(id).dir.display().to_string(),
            "--peers".into(),
            self.peers.clone(),
        ];
        let mut env = vec![("RUST_LOG".to_string(), "info,openraft=warn".to_string())];
        match &self.auth {
            Auth::Token(token) => args.extend(["--token".into(), token.clone()]),
            Auth::Credentials { file, clients } => {
                let peer = clients.iter().find(|c| c.name == credentials::PEER_CLIENT);
                args.extend(["--credentials".into(), file.display().to_string()]);
                let secret = peer.expect("peer entry").secret.clone();
                env.push(("RAFT_BUS_PEER_TOKEN".into(), secret));
            }
        }
        args.extend(self.extra_args.iter().cloned());
        let bin = self.bin.clone();
        let node = &mut self.nodes[(id - 1) as usize];
        assert!(!node.is_running(), "node {id} is already running");
        match &mut node.service {
            Some(service) => service.spawn(),
            None => {
                let name = format!("raft-bus node {id}");
                let log = node.log_path();
                node.service = Some(Service::start_logging_to(&name, bin, args, env, log));
            }
        }
    }

    /// Starts one more node that is not in `--peers`: it waits to be added as a learner.
    pub fn add_node(&mut self) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        self.nodes.push(Node {
            id,
            addr: format!("127.0.0.1:{}", crate::free_port()),
            dir: self.root.join(format!("node-{id}")),
            service: None,
        });
        self.spawn(id);
        id
    }

    /// SIGKILL: no chance to flush or say goodbye. Returns once the process is reaped.
    pub fn kill(&mut self, id: u64) {
        if let Some(service) = &mut self.nodes[(id - 1) as usize].service {
            service.kill();
        }
    }

    pub fn signal(&self, id: u64, signal: Signal) {
        kill(self.node(id).pid(), signal).expect("signal node");
    }

    pub async fn wait_ready(&self, id: u64) {
        let url = format!("{}/health/ready", self.node(id).url());
        let http = self.http.clone();
        wait_for(&format!("node {id} ready"), Duration::from_secs(30), || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let r = http.get(&url).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
    }

    /// Waits until every running node is ready (a member that knows the leader); `Err`
    /// with the end of its log when a node exits meanwhile, or after `timeout`.
    pub async fn wait_all_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut ready = true;
            for node in self.nodes.iter_mut().filter(|n| n.is_running()) {
                if let Some(service) = &mut node.service {
                    service.check_running()?;
                }
                let url = format!("{}/health/ready", node.url());
                let answer = self.http.get(&url).timeout(Duration::from_secs(2)).send();
                ready &= answer.await.is_ok_and(|r| r.status().is_success());
            }
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| n.log_path().display().to_string())
                    .collect();
                return Err(format!(
                    "raft-bus cluster not ready after {timeout:?}; logs: {}",
                    logs.join(" ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM to every running node, SIGKILL to any that has not exited within 10 s.
    pub async fn stop(&mut self) {
        for service in self.nodes.iter_mut().filter_map(|n| n.service.as_mut()) {
            service.terminate(Duration::from_secs(10)).await;
        }
    }

    /// Stops the nodes and deletes their dirs, also a dir [`Options::dir`] kept.
    pub async fn discard(&mut self) -> Result<(), String> {
        self.stop().await;
        match self.temp.take() {
            Some(temp) => temp.close().map_err(|e| e.to_string()),
            None => std::fs::remove_dir_all(&self.root)
                .map_err(|e| format!("removing {}: {e}", self.root.display())),
        }
    }

    /// The client URL of every node, in id order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// The `--token` (`None` with credentials).
    pub fn token(&self) -> Option<&str> {
        match &self.auth {
            Auth::Token(token) => Some(token),
            Auth::Credentials { .. } => None,
        }
    }

    /// A client that knows only the given nodes (with credentials: as the admin entry).
    pub fn client(&self, ids: &[u64]) -> BusClient {
        self.client_with(ids, &self.secret(credentials::ADMIN_CLIENT))
    }

    /// A client of the given nodes that sends `secret`.
    pub fn client_with(&self, ids: &[u64], secret: &str) -> BusClient {
        let urls = ids.iter().map(|id| self.node(*id).url()).collect();
        let mut config = ClientConfig::new(urls, Some(secret.into()));
        config.idle_timeout = Duration::from_secs(5);
        BusClient::new(config).expect("client")
    }

    /// The client configuration of the given nodes, in that order, with the library's
    /// defaults and the token (with credentials: the admin entry's secret).
    pub fn config(&self, ids: &[u64]) -> ClientConfig {
        let urls = ids.iter().map(|id| self.node(*id).url()).collect();
        ClientConfig::new(urls, Some(self.secret(credentials::ADMIN_CLIENT)))
    }

    /// A client of the given nodes calling as the credentials entry `name` (with `--token`:
    /// as the token).
    pub fn client_as(&self, name: &str, ids: &[u64]) -> BusClient {
        self.client_with(ids, &self.secret(name))
    }

    /// The secret of the credentials entry `name`, as it is now (with `--token`: the token).
    pub fn secret(&self, name: &str) -> String {
        match &self.auth {
            Auth::Token(token) => token.clone(),
            Auth::Credentials { clients, .. } => clients
                .iter()
                .find(|c| c.name == name)
                .unwrap_or_else(|| panic!("no credentials entry {name}"))
                .secret
                .clone(),
        }
    }

    /// The nodes' credentials file (`None` with `--token`).
    pub fn credentials_file(&self) -> Option<&Path> {
        match &self.auth {
            Auth::Token(_) => None,
            Auth::Credentials { file, .. } => Some(file),
        }
    }

    /// Rewrites the credentials file (in one rename) with `clients` in place of the ones it
    /// was started with; the peer and admin entries stay. The nodes take it at the next check
    /// of the file (every 2 s) or at [`Cluster::reload_credentials`].
    pub fn set_credentials(&mut self, clients: &[BusCredential]) {
        let Auth::Credentials { file, clients: all } = &mut self.auth else {
            panic!("the cluster runs with --token, not --credentials");
        };
        all.retain(|c| c.name == credentials::PEER_CLIENT || c.name == credentials::ADMIN_CLIENT);
        all.extend_from_slice(clients);
        credentials::write_file(file, credentials::file_of(all).as_bytes());
    }

    /// The clients of the credentials file other than the peer and admin entries.
    pub fn credentials(&self) -> Vec<BusCredential> {
        match &self.auth {
            Auth::Token(_) => Vec::new(),
            Auth::Credentials { clients, .. } => clients
                .iter()
                .filter(|c| {
                    c.name != credentials::PEER_CLIENT && c.name != credentials::ADMIN_CLIENT
                })
                .cloned()
                .collect(),
        }
    }

    /// SIGHUP to every running node: they re-read the credentials file.
    pub fn reload_credentials(&self) {
        for id in self.running() {
            self.signal(id, Signal::SIGHUP);
        }
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.id)
            .collect()
    }

    pub async fn cluster_info(&self, id: u64) -> Option<ClusterInfo> {
        self.client(&[id]).cluster().await.ok()
    }

    /// The leader that every running node agrees on.
    pub async fn leader(&self) -> u64 {
        self.try_leader(Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Cluster::leader`], `Err` when the running nodes do not agree on one in `timeout`.
    pub async fn try_leader(&self, timeout: Duration) -> Result<u64, String> {
        let running = self.running();
        try_wait_for("an agreed leader", timeout, || {
            let running = running.clone();
            async move {
                let mut leader = None;
                for id in running {
                    let l = self.cluster_info(id).await?.leader_id?;
                    if leader.is_some_and(|x| x != l) {
                        return None;
                    }
                    leader = Some(l);
                }
                leader
            }
        })
        .await
    }

    /// The agreed leader and one running follower.
    pub async fn leader_and_follower(&self) -> (u64, u64) {
        let leader = self.leader().await;
        let follower = self
            .running()
            .into_iter()
            .find(|id| *id != leader)
            .expect("a running follower");
        (leader, follower)
    }

    /// Every event on node `id`, read page by page.
    pub async fn all_events(&self, id: u64) -> Vec<RecordedEvent> {
        let client = self.client(&[id]);
        let mut out = Vec::new();
        loop {
            let page = client
                .events(out.len() as u64 + 1, 1000)
                .await
                .expect("read events");
            if page.events.is_empty() {
                return out;
            }
            out.extend(page.events);
        }
    }

    /// Waits until node `id` has applied at least `head` positions.
    pub async fn wait_head(&self, id: u64, head: u64) {
        wait_for(
            &format!("node {id} to reach position {head}"),
            Duration::from_secs(60),
            || async move {
                let info = self.cluster_info(id).await?;
                (info.head_position >= head).then_some(())
            },
        )
        .await;
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A stopped (SIGSTOP) node is woken first; each node's Service then kills it and,
        // when a test fails, prints the end of its log: the best clue to what went wrong.
        for id in self.running() {
            let _ = kill(self.node(id).pid(), Signal::SIGCONT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A benchmark's cluster: its token and flags, a dir that stays until `discard`, and a
    /// node killed and started again.
    #[tokio::test]
    async fn launch_with_options_kills_restarts_and_discards() {
        let under = tempfile::tempdir().unwrap();
        let options = Options {
            args: vec!["--worker-threads".into(), "1".into()],
            dir: Some(under.path().to_path_buf()),
            token: Some("bench-token".into()),
            ..Options::default()
        };
        let mut cluster = Cluster::launch(options).await.unwrap();
        assert!(cluster.dir().starts_with(under.path()));
        assert_eq!(cluster.token(), Some("bench-token"));
        assert_eq!(cluster.urls().len(), 3);
        let leader = cluster.try_leader(Duration::from_secs(30)).await.unwrap();
        assert!(cluster.node(leader).rss_kib().is_some_and(|kib| kib > 0));
        cluster.kill(leader);
        assert!(cluster.node(leader).rss_kib().is_none());
        cluster.spawn(leader);
        cluster
            .wait_all_ready(Duration::from_secs(30))
            .await
            .unwrap();
        let dir = cluster.dir().to_path_buf();
        cluster.discard().await.unwrap();
        assert!(!dir.exists());
    }

    #[tokio::test]
    async fn launch_without_the_binary_is_an_error() {
        let options = Options {
            bin: Some("/nonexistent/raft-bus".into()),
            ..Options::default()
        };
        let err = Cluster::launch(options).await.err().unwrap();
        assert!(err.contains("not found"), "{err}");
    }
}
