//! Wiring: the state store, the HTTP endpoints (hooks, metrics, health), and the work an
//! active collector does (poller and command handler) while it holds its application's lock.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use taskpool_api::handler::{self, HandlerConfig};
use taskpool_api::task_commands::TaskCommand;
use taskpool_api::{BusClient, ClientConfig};
use tokio::sync::watch;

use crate::commands::Executor;
use crate::config::{Config, Mode};
use crate::emitter::Emitter;
use crate::engine::{Engine, EngineConfig};
use crate::error::CollectorError;
use crate::hooks::{self, HookBatch};
use crate::metrics::Metrics;
use crate::poller::{PollConfig, Poller};
use crate::registry::Registry;
use crate::snapshot::{Snapshots, VariableFilter};
use crate::store::{CommandRuns, Leadership, Store};

struct Ctx {
    config: Config,
    metrics: Metrics,
    snapshots: Arc<Snapshots>,
    emitter: Arc<Emitter>,
    registry: Arc<Registry>,
    bus: BusClient,
    store: Store,
    active: watch::Sender<bool>,
}

/// Runs the collector until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
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
    let filter = VariableFilter {
        include: config.variables_include.clone(),
        exclude: config.variables_exclude.clone(),
    };
    let snapshots = Arc::new(Snapshots::new(
        engine.clone(),
        &config.application,
        &config.engine_name,
        filter,
    ));
    let emitter = Arc::new(Emitter::new(
        bus.clone(),
        store.clone(),
        metrics.clone(),
        &config.application,
    ));
    let registry = Arc::new(Registry::new(
        engine,
        bus.clone(),
        store.clone(),
        metrics.clone(),
        &config.application,
    ));
    let (active, _) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        config,
        metrics,
        snapshots,
        emitter,
        registry,
        bus,
        store,
        active,
    });

    let listener = tokio::net::TcpListener::bind(ctx.config.listen).await?;
    tracing::info!(
        listen = %ctx.config.listen,
        application = %ctx.config.application,
        mode = ?ctx.config.mode,
        engine = %ctx.config.engine_url,
        "collector listening"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let leading = tokio::spawn(lead(ctx.clone(), stop_rx.clone()));
    let mut server_stop = stop_rx.clone();
    let server = axum::serve(listener, router(ctx.clone())).with_graceful_shutdown(async move {
        let _ = server_stop.wait_for(|s| *s).await;
    });
    let server = tokio::spawn(async move { server.await });
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = leading.await;
    let _ = server.await;
    Ok(())
}

/// Waits for PostgreSQL (it may start after the collector) and migrates the schema.
async fn connect_store(config: &Config) -> anyhow::Result<Store> {
    let mut pause = Duration::from_millis(200);
    for attempt in 1.. {
        match Store::connect(&config.database_url, &config.application).await {
            Ok(s) => return Ok(s),
            Err(e) if attempt < 30 => {
                tracing::warn!(error = %e, "state store not reachable yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.context("cannot reach the state store (--database-url)")),
        }
    }
    unreachable!("the loop returns")
}

fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/v1/hooks", post(receive_hooks))
        .route("/v1/status", get(status))
        .route("/metrics", get(render_metrics))
        .route("/health/live", get(|| async { StatusCode::OK }))
        .route("/health/ready", get(ready))
        .fallback(|| async { CollectorError::NoSuchEndpoint })
        .with_state(ctx)
}

async fn render_metrics(State(ctx): State<Arc<Ctx>>) -> String {
    ctx.metrics.render()
}

async fn status(State(ctx): State<Arc<Ctx>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "application": ctx.config.application,
        "mode": format!("{:?}", ctx.config.mode).to_lowercase(),
        "active": *ctx.active.borrow(),
    }))
}

/// Ready when the state store answers; the body says whether this one is the active one.
async fn ready(State(ctx): State<Arc<Ctx>>) -> Response {
    match sqlx::query("SELECT 1").execute(ctx.store.pool()).await {
        Ok(_) => Json(serde_json::json!({"active": *ctx.active.borrow()})).into_response(),
        Err(e) => CollectorError::StoreUnavailable(e.to_string()).into_response(),
    }
}

async fn receive_hooks(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, body: Body) -> Response {
    let result = accept_hooks(&ctx, &headers, body).await;
    let outcome = match &result {
        Ok(()) => "accepted",
        Err(CollectorError::HooksDisabled) => "disabled",
        Err(CollectorError::BadSignature(_)) => "bad_signature",
        Err(CollectorError::Standby) => "standby",
        Err(CollectorError::NotRecorded(_)) => "failed",
        Err(_) => "bad_body",
    };
    ctx.metrics.hooks.with_label_values(&[outcome]).inc();
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn accept_hooks(
    ctx: &Arc<Ctx>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), CollectorError> {
    let secret = ctx
        .config
        .hook_secret
        .as_deref()
        .filter(|_| ctx.config.mode == Mode::Hook)
        .ok_or(CollectorError::HooksDisabled)?;
    let body: Bytes = axum::body::to_bytes(body, ctx.config.max_body_bytes)
        .await
        .map_err(|_| CollectorError::BodyTooLarge(ctx.config.max_body_bytes))?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now_ms = chrono::Utc::now().timestamp_millis();
    hooks::verify(
        secret.as_bytes(),
        header(hooks::TIMESTAMP_HEADER),
        header(hooks::SIGNATURE_HEADER),
        &body,
        now_ms,
    )
    .inspect_err(|e| tracing::warn!(reason = %e, "hook refused"))?;
    let batch: HookBatch = serde_json::from_slice(&body).map_err(|e| {
        tracing::warn!(error = %e, "hook body refused");
        CollectorError::BadBody(e.to_string())
    })?;
    if !*ctx.active.borrow() {
        return Err(CollectorError::Standby);
    }
    // Records of one task in order; different tasks at once.
    let mut groups: Vec<(String, Vec<hooks::HookTask>)> = Vec::new();
    for task in batch.tasks {
        match groups.iter_mut().find(|(id, _)| *id == task.task.id) {
            Some((_, records)) => records.push(task),
            None => groups.push((task.task.id.clone(), vec![task])),
        }
    }
    let results: Vec<Result<(), (String, anyhow::Error)>> = futures::stream::iter(groups)
        .map(|(task_id, records)| {
            let ctx = ctx.clone();
            async move {
                for record in records {
                    let obs = record
                        .observation(&ctx.snapshots)
                        .await
                        .map_err(|e| (task_id.clone(), e.into()))?;
                    ctx.emitter
                        .observe(&obs, "hook")
                        .await
                        .map_err(|e| (task_id.clone(), e.into()))?;
                }
                Ok(())
            }
        })
        .buffer_unordered(ctx.config.concurrency)
        .collect()
        .await;
    if let Some(Err((task_id, e))) = results.into_iter().find(Result::is_err) {
        tracing::warn!(task_id, error = %e, "could not report a hooked change; the plugin retries and polling finds it");
        return Err(CollectorError::NotRecorded(format!("task {task_id}: {e}")));
    }
    Ok(())
}

/// Becomes the active collector whenever the lock is free, works while holding it, and
/// steps down when the lock's session is lost or on shutdown.
async fn lead(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let lease = match Leadership::try_acquire(&ctx.config.database_url, &ctx.config.application)
            .await
        {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the state store for the lock; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        tracing::info!(application = %ctx.config.application, "active: holding the application's lock");
        ctx.metrics.active.set(1);
        ctx.active.send_replace(true);
        let lease = work_while_held(&ctx, lease, &mut stop).await;
        ctx.active.send_replace(false);
        ctx.metrics.active.set(0);
        if let Some(lease) = lease {
            lease.release().await;
        }
        tracing::info!("stepped down");
    }
}

async fn work_while_held(
    ctx: &Arc<Ctx>,
    mut lease: Leadership,
    stop: &mut watch::Receiver<bool>,
) -> Option<Leadership> {
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
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => break Some(lease),
        }
        if *stop.borrow() {
            break Some(lease);
        }
        if let Err(e) = lease.check().await {
            tracing::error!(error = %e, "lost the application's lock; stepping down");
            break None;
        }
    };
    let _ = work_stop_tx.send(true);
    let _ = polling.await;
    let _ = handling.await;
    kept
}
