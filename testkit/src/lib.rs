//! Test support shared by the workspace's integration tests: real three-node clusters of
//! `raft-bus` processes on loopback, our services as child processes, the local Camunda
//! engine's REST API, and waiting for a condition with a deadline.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use taskpool_api::bus::{ClusterInfo, RecordedEvent};
use taskpool_api::{BusClient, ClientConfig};
use tokio::time::Instant;

pub mod collector;
pub mod core;
pub mod credentials;
pub mod engine;
pub mod service;

pub use collector::Collector;
pub use core::Core;
pub use credentials::BusCredential;
pub use engine::Engine;
pub use service::Service;

pub const TOKEN: &str = "test-token";

/// Waits for `check` to give `Some`, polling, until the deadline; panics with `what` after it.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The text of `GET url` (a `/metrics` page), failing the test when it does not answer.
pub async fn get_text(url: &str) -> String {
    let resp = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    resp.text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// Sends `request` until a service with room for few requests admits it, and returns that
/// answer: while another request holds the room, it is shed (503 with `Retry-After`, which only
/// shedding sets).
pub async fn send_admitted(request: impl Fn() -> reqwest::RequestBuilder) -> reqwest::Response {
    wait_for("a request to be admitted", Duration::from_secs(30), || {
        let req = request();
        async move {
            let resp = req.send().await.ok()?;
            let shed = resp.status() == 503 && resp.headers().contains_key("retry-after");
            (!shed).then_some(resp)
        }
    })
    .await
}

/// Waits until `request` is shed by a full service: 503 with `Retry-After: 1` and the error
/// code `busy`. Returns the error message.
pub async fn wait_busy(request: impl Fn() -> reqwest::RequestBuilder) -> String {
    let shed = wait_for("a request to be shed", Duration::from_secs(5), || {
        let req = request();
        async move {
            let resp = req.send().await.ok()?;
            (resp.status() == 503).then_some(resp)
        }
    })
    .await;
    assert_eq!(
        shed.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let body: serde_json::Value = shed.json().await.expect("an error body");
    assert_eq!(body["error"]["code"], "busy", "{body}");
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The `raft-bus` binary next to the running test's directory (`target/<profile>/`), or
/// `RAFT_BUS_BIN`. `cargo test --workspace` builds it before any test runs.
pub fn raft_bus_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("RAFT_BUS_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/raft-bus
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("raft-bus"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} not found: build it with `cargo build -p raft-bus` (or set RAFT_BUS_BIN)",
        bin.display()
    );
    bin
}

pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free loopback ports: every listener is held until all are chosen.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

pub struct Node {
    pub id: u64,
    pub addr: String,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.with_extension("log")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("node is running").id() as i32)
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    peers: String,
    extra_args: Vec<String>,
    auth: Auth,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

/// How the nodes authenticate callers.
enum Auth {
    /// `--token TOKEN`: one secret with every right.
    Token,
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
        Self::start_with(extra_args, |_| Auth::Token).await
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
        Self::start_with(extra_args, |dir| {
            let file = dir.join("credentials.toml");
            credentials::write_file(&file, credentials::file_of(&all).as_bytes());
            Auth::Credentials { file, clients: all }
        })
        .await
    }

    async fn start_with(extra_args: &[&str], auth: impl FnOnce(&Path) -> Auth) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let auth = auth(dir.path());
        let nodes: Vec<Node> = (1..=3)
            .map(|id| Node {
                id,
                addr: format!("127.0.0.1:{}", free_port()),
                dir: dir.path().join(format!("node-{id}")),
                child: None,
            })
            .collect();
        let peers = nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.addr))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            nodes,
            peers,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            auth,
            _dir: dir,
            http: reqwest::Client::new(),
        };
        for id in 1..=3 {
            cluster.spawn(id);
        }
        for id in 1..=3 {
            cluster.wait_ready(id).await;
        }
        cluster
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    /// Starts (or restarts, with its data dir) node `id`.
    pub fn spawn(&mut self, id: u64) {
        let peers = self.peers.clone();
        let extra = self.extra_args.clone();
        let node = &mut self.nodes[(id - 1) as usize];
        assert!(node.child.is_none(), "node {id} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_path())
            .expect("node log file");
        let mut command = Command::new(raft_bus_binary());
        command
            .args(["--node-id", &id.to_string(), "--listen", &node.addr])
            .arg("--data-dir")
            .arg(&node.dir)
            .args(["--peers", &peers]);
        match &self.auth {
            Auth::Token => {
                command.args(["--token", TOKEN]);
            }
            Auth::Credentials { file, clients } => {
                let peer = clients.iter().find(|c| c.name == credentials::PEER_CLIENT);
                command
                    .arg("--credentials")
                    .arg(file)
                    .env("RAFT_BUS_PEER_TOKEN", &peer.expect("peer entry").secret);
            }
        }
        let child = command
            .args(&extra)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start raft-bus");
        node.child = Some(child);
    }

    /// Starts one more node that is not in `--peers`: it waits to be added as a learner.
    pub fn add_node(&mut self) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        let dir = self._dir.path().join(format!("node-{id}"));
        self.nodes.push(Node {
            id,
            addr: format!("127.0.0.1:{}", free_port()),
            dir,
            child: None,
        });
        self.spawn(id);
        id
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self, id: u64) {
        let node = &mut self.nodes[(id - 1) as usize];
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
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

    /// A client that knows only the given nodes (with credentials: as the admin entry).
    pub fn client(&self, ids: &[u64]) -> BusClient {
        match &self.auth {
            Auth::Token => self.client_with(ids, TOKEN),
            Auth::Credentials { .. } => {
                self.client_with(ids, &self.secret(credentials::ADMIN_CLIENT))
            }
        }
    }

    /// A client of the given nodes that sends `secret`.
    pub fn client_with(&self, ids: &[u64], secret: &str) -> BusClient {
        let urls = ids.iter().map(|id| self.node(*id).url()).collect();
        let mut config = ClientConfig::new(urls, Some(secret.into()));
        config.idle_timeout = Duration::from_secs(5);
        BusClient::new(config).expect("client")
    }

    /// A client of the given nodes calling as the credentials entry `name` (with `--token`:
    /// as the token).
    pub fn client_as(&self, name: &str, ids: &[u64]) -> BusClient {
        self.client_with(ids, &self.secret(name))
    }

    /// The secret of the credentials entry `name`, as it is now (with `--token`: the token).
    pub fn secret(&self, name: &str) -> String {
        match &self.auth {
            Auth::Token => TOKEN.into(),
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
            Auth::Token => None,
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
            Auth::Token => Vec::new(),
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
        let running = self.running();
        wait_for("an agreed leader", Duration::from_secs(30), || {
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
        if std::thread::panicking() {
            // The nodes' own words are the best clue to a failed test.
            for node in &self.nodes {
                let log = std::fs::read_to_string(node.log_path()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- last lines of node {} ---", node.id);
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A binary of this workspace next to the running test (`target/<profile>/<name>`), or the
/// path in `<NAME>_BIN` (e.g. `CAMUNDA_COLLECTOR_BIN`). `cargo test --workspace` builds every
/// binary before any test runs.
pub fn workspace_binary(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_uppercase().replace('-', "_"));
    if let Some(bin) = std::env::var_os(&var) {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} not found: build it with `cargo build -p {name}` (or set {var})",
        bin.display()
    );
    bin
}

/// Runs schemathesis (`st`, or `SCHEMATHESIS_BIN`) against the OpenAPI document at `schema`
/// with the check that no answer is a 5xx, a fixed seed and `args`; fails with its report when
/// it finds anything, else returns the report.
pub async fn schemathesis(schema: &str, args: &[&str]) -> String {
    let st = std::env::var("SCHEMATHESIS_BIN").unwrap_or_else(|_| "st".into());
    let mut cmd = Command::new(&st);
    cmd.args(["run", schema, "--checks", "not_a_server_error"])
        .args([
            "--max-examples",
            "40",
            "--seed",
            "7",
            "--request-timeout",
            "15",
        ])
        .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("schemathesis")
        .unwrap_or_else(|e| {
            panic!("{st}: {e}; install it with `pip install schemathesis` (deploy/scripts/test-tools.sh does)")
        });
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}"
    );
    assert!(report.contains("passed"), "{report}");
    report
}
