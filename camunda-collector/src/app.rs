//! Building a collector from its config and running it until it is told to stop: the state
//! store, the HTTP endpoints (`http`), and the work an active collector does (poller and
//! command handler) while it holds its application's lease (`lease`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use service_kit::connect::CONNECT_DEADLINE;
use service_kit::{connect_with_retry, serve_until_stopped};
use taskpool_api::handler::{self, HandlerConfig};
use taskpool_api::task_commands::TaskCommand;
use taskpool_api::{BusClient, ClientConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::commands::Executor;
use crate::config::Config;
use crate::emitter::Emitter;
use crate::engine::{Engine, EngineConfig};
use crate::engine_health::{self, EngineHealth};
use crate::http;
use crate::lease::{Fence, Lease};
use crate::metrics::Metrics;
use crate::poller::{PollConfig, Poller};
use crate::registry::Registry;
use crate::snapshot::Snapshots;
use crate::store::{CommandRuns, Store};

pub(crate) struct Ctx {
    pub(crate) config: Config,
    pub(crate) metrics: Metrics,
    pub(crate) snapshots: Arc<Snapshots>,
    pub(crate) emitter: Arc<Emitter>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) bus: BusClient,
    pub(crate) store: Store,
    pub(crate) active: watch::Sender<bool>,
    pub(crate) health: Arc<EngineHealth>,
    pub(crate) engine: Engine,
    pub(crate) fence: Fence,
    /// This process, as the lease names its holder.
    pub(crate) holder: String,
}

/// A collector ready to run: its state store reached, its listener bound.
pub struct App {
    listener: TcpListener,
    ctx: Arc<Ctx>,
}

impl App {
    /// Checks the config, reaches the state store (waiting for it) and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        config.validate().map_err(anyhow::Error::msg)?;
        let metrics = Metrics::new();
        let engine = Engine::new(
            EngineConfig {
                url: config.engine_url.clone(),
                user: config.engine_user.clone(),
                password: config.engine_password.clone(),
                timeout: config.engine_timeout,
            },
            metrics.clone(),
        )?;
        let bus = BusClient::new(ClientConfig::new(
            config.bus.clone(),
            config.bus_token.clone(),
        ))?;
        let store = connect_store(&config).await?;
        let filter = config.variable_filter().map_err(anyhow::Error::msg)?;
        let snapshots = Arc::new(Snapshots::new(
            engine.clone(),
            &config.application,
            &config.engine_name,
            filter,
        ));
        let fence = Fence::default();
        let emitter = Arc::new(Emitter::new(
            bus.clone(),
            store.clone(),
            metrics.clone(),
            &config.application,
            config.max_event_bytes,
            fence.clone(),
        ));
        let registry = Arc::new(Registry::new(
            engine.clone(),
            bus.clone(),
            store.clone(),
            metrics.clone(),
            &config.application,
            config.max_event_bytes,
            fence.clone(),
        ));
        let listener = TcpListener::bind(config.listen).await?;
        let (active, _) = watch::channel(false);
        let health = Arc::new(EngineHealth::new(metrics.clone()));
        let ctx = Arc::new(Ctx {
            config,
            metrics,
            health,
            engine,
            snapshots,
            emitter,
            registry,
            bus,
            store,
            active,
            fence,
            holder: uuid::Uuid::new_v4().to_string(),
        });
        Ok(App { listener, ctx })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves and, while it holds its application's lease, works, until `stop` resolves; then
    /// steps down and stops serving.
    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App { listener, ctx } = self;
        tracing::info!(
            listen = %listener.local_addr()?,
            application = %ctx.config.application,
            mode = ?ctx.config.mode,
            engine = %ctx.config.engine_url,
            "collector listening"
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let probing = tokio::spawn(engine_health::probe(
            ctx.engine.clone(),
            ctx.config.mode,
            ctx.health.clone(),
            stop_rx.clone(),
        ));
        let leading = tokio::spawn(lead(ctx.clone(), stop_rx));
        // Stops on the signal, or when the engine cannot serve this collector's mode.
        let (refused_tx, refused_rx) = tokio::sync::oneshot::channel();
        let stopping = async move {
            let mut stop = std::pin::pin!(stop);
            tokio::select! {
                () = &mut stop => return,
                refused = probing => {
                    if let Ok(Some(why)) = refused {
                        let _ = refused_tx.send(why);
                        return;
                    }
                }
            }
            stop.await;
        };
        let served = serve_until_stopped(listener, http::router(ctx), stopping, &stop_tx).await;
        let _ = leading.await;
        if let Ok(why) = refused_rx.await {
            tracing::error!(%why, "this engine cannot serve poll mode; stopping");
            anyhow::bail!("this engine cannot serve poll mode: {why}");
        }
        served
    }
}

/// Waits for PostgreSQL (it may start after the collector) and migrates the schema.
async fn connect_store(config: &Config) -> anyhow::Result<Store> {
    connect_with_retry("the state store (--database-url)", CONNECT_DEADLINE, || {
        Store::connect(&config.database_url, &config.application)
    })
    .await
}

/// Becomes the active collector whenever the lease is free, works while holding it, and
/// steps down when it is lost (taken over, not renewed in time, or fenced off the bus) or on
/// shutdown.
async fn lead(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let config = &ctx.config;
    while !*stop.borrow() {
        let wait = match Lease::try_acquire(
            &config.database_url,
            &config.application,
            &ctx.holder,
            config.lease_ttl,
        )
        .await
        {
            Ok(Some(lease)) => match ctx.fence.raise(&ctx.bus, &config.application, &lease).await {
                Ok(()) => {
                    lead_while_held(&ctx, lease, &mut stop).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "took the lease but could not record it on the bus; retrying");
                    lease.release().await;
                    Duration::from_secs(1)
                }
            },
            Ok(None) => Duration::from_secs(1),
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the state store for the lease; retrying");
                Duration::from_secs(2)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
}

async fn lead_while_held(ctx: &Arc<Ctx>, lease: Lease, stop: &mut watch::Receiver<bool>) {
    tracing::info!(application = %ctx.config.application, token = lease.token, "active: holding the application's lease");
    ctx.metrics.active.set(1);
    ctx.active.send_replace(true);
    let lease = work_while_held(ctx, lease, stop).await;
    ctx.fence.lower();
    ctx.active.send_replace(false);
    ctx.metrics.active.set(0);
    if let Some(lease) = lease {
        lease.release().await;
    }
    tracing::info!("stepped down");
}

/// Works (polls, hooks, commands) while the lease holds: renewed every fifth of its TTL.
/// Returns the lease when it is still this collector's to release.
async fn work_while_held(
    ctx: &Arc<Ctx>,
    mut lease: Lease,
    stop: &mut watch::Receiver<bool>,
) -> Option<Lease> {
    let (work_stop_tx, work_stop) = watch::channel(false);
    let poller = Arc::new(Poller {
        snapshots: ctx.snapshots.clone(),
        emitter: ctx.emitter.clone(),
        registry: ctx.registry.clone(),
        metrics: ctx.metrics.clone(),
        config: PollConfig {
            interval: ctx.config.poll_interval(),
            overlap: ctx.config.overlap,
            reconcile_interval: ctx.config.reconcile_interval,
            page_size: ctx.config.page_size,
            concurrency: ctx.config.concurrency,
        },
        seen_updates: Default::default(),
        seen_suspended: Default::default(),
        health: ctx.health.clone(),
    });
    let polling = tokio::spawn(poller.run(work_stop.clone()));
    let executor = Arc::new(Executor {
        snapshots: ctx.snapshots.clone(),
        emitter: ctx.emitter.clone(),
        metrics: ctx.metrics.clone(),
        application: ctx.config.application.clone(),
    });
    let handler_config = HandlerConfig {
        handler_id: format!("{}-{}", ctx.config.application, uuid::Uuid::new_v4()),
        types: TaskCommand::TYPES.iter().map(|s| s.to_string()).collect(),
        routing_keys: vec![ctx.config.application.clone()],
        concurrency: ctx.config.concurrency,
    };
    let handling = tokio::spawn(handler::run(
        ctx.bus.clone(),
        handler_config,
        Arc::new(CommandRuns(ctx.store.clone())),
        move |command| {
            let executor = executor.clone();
            async move { executor.execute(command).await }
        },
        work_stop,
    ));
    let kept = loop {
        tokio::select! {
            _ = tokio::time::sleep(lease.renew_every()) => {}
            _ = stop.changed() => break Some(lease),
        }
        if *stop.borrow() {
            break Some(lease);
        }
        if ctx.fence.fenced_out() {
            tracing::error!(
                "the bus refused a write: another collector took the lease; stepping down"
            );
            break None;
        }
        match lease.renew().await {
            Ok(true) => {}
            Ok(false) => {
                tracing::error!("another collector took the lease; stepping down");
                break None;
            }
            Err(e) if lease.valid() => {
                tracing::warn!(error = %e, "could not renew the lease; trying again");
            }
            Err(e) => {
                tracing::error!(error = %e, "could not renew the lease in time; stepping down");
                break None;
            }
        }
        if !lease.valid() {
            tracing::error!("the lease was renewed too late to act on; stepping down");
            break None;
        }
    };
    let _ = work_stop_tx.send(true);
    let _ = polling.await;
    let _ = handling.await;
    kept
}
