//! Building a node from its config and running it until it is told to stop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use openraft::{BasicNode, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::access::Access;
use crate::api::{self, AppContext, AppState};
use crate::command_router::CommandRouter;
use crate::config::Config;
use crate::event_store::EventStore;
use crate::log_store::LogStore;
use crate::network::Network;
use crate::proposer::{Forwarding, Proposer};
use crate::state_machine::StateMachine;
use crate::types::Raft;

pub struct App {
    listener: TcpListener,
    raft_runtime: tokio::runtime::Runtime,
    state: AppState,
}

impl App {
    /// Opens the stores, starts the Raft core and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        crate::metrics::init();
        // First: flags or a credentials file that cannot be used stop the node before it opens
        // anything.
        let access = Arc::new(Access::from_config(&config)?);
        std::fs::create_dir_all(&config.data_dir)?;
        let store = EventStore::open(&config.data_dir.join("events.redb"))?;
        let log = LogStore::open(&config.data_dir.join("raft-log"))?
            .purging_up_to(store.durable_applied());
        let sm = StateMachine::new(store.clone(), config.data_dir.join("snapshots"))?;
        let raft_config = openraft::Config {
            cluster_name: "raft-bus".into(),
            heartbeat_interval: config.heartbeat_ms,
            election_timeout_min: config.election_timeout_ms,
            election_timeout_max: config.election_timeout_ms * 3 / 2,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_logs),
            // Keep some log behind a snapshot so a briefly lagging follower needs no snapshot.
            max_in_snapshot_log_to_keep: (config.snapshot_logs / 10).min(1000),
            // Entries carry gathered appends (up to 5,000 events): keep RPCs to a few MB.
            max_payload_entries: 16,
            ..Default::default()
        }
        .validate()?;
        // The Raft core, replication and the state machine get a runtime of their own: on the
        // HTTP runtime, hundreds of request tasks queue ahead of the core and every
        // replication round waits behind them.
        let raft_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("raft-core")
            .enable_all()
            .build()?;
        let (node_id, raft_log, token) = (config.node_id, log.clone(), access.node_secret());
        let raft = raft_runtime
            .spawn(async move {
                let network = Network::new(token)?;
                anyhow::Ok(Raft::new(node_id, Arc::new(raft_config), network, raft_log, sm).await?)
            })
            .await??;
        let listener = TcpListener::bind(config.listen).await?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .build()?;
        let http_stream = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .build()?;
        let forwarding = Forwarding::new(http.clone(), access.node_secret());
        let proposer =
            Proposer::start(raft.clone(), forwarding, crate::api::events::COMMIT_TIMEOUT);
        let state = Arc::new(AppContext {
            subscribers: Arc::new(Semaphore::new(config.max_subscribers)),
            config: Arc::new(config),
            access: access.clone(),
            raft,
            store,
            log,
            http,
            http_stream,
            router: CommandRouter::default(),
            proposer,
            shutdown: CancellationToken::new(),
        });
        access.keep_current(state.shutdown.clone())?;
        Ok(App {
            listener,
            raft_runtime,
            state,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` resolves, then stops serving, ends subscriptions, stops the Raft
    /// core and makes the event store durable.
    pub async fn run_until_stopped(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            listener,
            raft_runtime,
            state,
        } = self;
        let router = api::router(state.clone());
        let shutdown = state.shutdown.clone();
        tokio::spawn(async move {
            stop.await;
            shutdown.cancel();
        });
        tokio::spawn(initialize_if_new(state.clone()));
        let fatal = tokio::spawn(stop_on_fatal(state.clone()));
        tokio::spawn(follow_leadership(state.clone()));
        tracing::info!(
            node_id = state.config.node_id,
            listen = %listener.local_addr()?,
            "raft-bus node serving"
        );
        let cancelled = state.shutdown.clone();
        // Without TCP_NODELAY, small responses written in two segments wait for the peer's
        // delayed ACK (up to 40 ms) under Nagle's algorithm: fatal for Raft RPC latency.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "could not set TCP_NODELAY");
            }
        });
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { cancelled.cancelled().await })
            .await?;
        tracing::info!("stopping the raft core");
        if let Err(e) = state.raft.shutdown().await {
            tracing::warn!(error = %e, "raft core did not stop cleanly");
        }
        state.store.flush()?;
        // Its tasks are done; a runtime must not be dropped (blocking) inside async code.
        raft_runtime.shutdown_background();
        if fatal.is_finished() {
            if let Ok(Some(reason)) = fatal.await {
                anyhow::bail!("the raft core failed: {reason}");
            }
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// A node with an empty log that is one of `--peers` proposes the initial membership.
/// Every such node may do so: they all write the same first entry, which openraft allows,
/// so the cluster forms exactly once whatever order the nodes start in.
async fn initialize_if_new(state: AppState) {
    let peers = &state.config.peers;
    if !peers.contains_key(&state.config.node_id) {
        tracing::info!("not in --peers: waiting to be added as a learner");
        return;
    }
    match state.raft.is_initialized().await {
        Ok(true) => {
            tracing::info!("rejoining the cluster from the data dir");
            return;
        }
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %e, "raft core stopped");
            return;
        }
    }
    let members: BTreeMap<u64, BasicNode> = peers
        .iter()
        .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
        .collect();
    match state.raft.initialize(members).await {
        Ok(()) => tracing::info!(peers = ?peers, "initialised the cluster membership"),
        Err(e) => tracing::info!(reason = %e, "not initialising: already part of a cluster"),
    }
}

/// A storage failure stops the Raft core for good; then the node stops too (exit code 1),
/// so that its supervisor restarts it from its data dir instead of keeping a zombie.
async fn stop_on_fatal(state: AppState) -> Option<String> {
    let mut metrics = state.raft.metrics();
    loop {
        if let Err(e) = &metrics.borrow_and_update().running_state {
            let reason = e.to_string();
            tracing::error!(error = %reason, "raft core stopped; shutting the node down");
            state.shutdown.cancel();
            return Some(reason);
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return None },
            _ = state.shutdown.cancelled() => return None,
        }
    }
}

/// Commands are routed by the leader only while it has a quorum behind it: a leader cut off
/// from the majority lets go of its handlers so they reconnect to the side that can elect one.
async fn follow_leadership(state: AppState) {
    let quorum_window = state.config.election_timeout_ms;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state.shutdown.cancelled() => {
                state.router.set_leading(false);
                return;
            }
        }
        let m = state.raft.metrics().borrow().clone();
        let leading = m.current_leader == Some(m.id)
            && m.millis_since_quorum_ack
                .is_some_and(|ms| ms <= quorum_window);
        if leading != state.router.is_leading() {
            if leading {
                tracing::info!(term = m.current_term, "leading the cluster");
            } else {
                tracing::info!(term = m.current_term, leader = ?m.current_leader, "not leading");
            }
        }
        state.router.set_leading(leading);
    }
}
