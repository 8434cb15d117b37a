//! The collector's HTTP endpoints: `POST /v1/hooks`, `/v1/status`, `/metrics`, `/health/*`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;

use crate::app::Ctx;
use crate::config::Mode;
use crate::error::CollectorError;
use crate::hooks::{self, HookBatch, HookTask};

pub(crate) fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/v1/hooks", post(receive_hooks))
        .route("/v1/status", get(status))
        .route("/metrics", get(render_metrics))
        .merge(service_kit::health_routes(ready))
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
        "engine": ctx.health.snapshot(),
    }))
}

/// Ready when the state store answers; the body says whether this one is the active one.
async fn ready(State(ctx): State<Arc<Ctx>>) -> Response {
    match sqlx::query("SELECT 1").execute(ctx.store.pool()).await {
        Ok(_) => Json(serde_json::json!({"active": *ctx.active.borrow()})).into_response(),
        Err(e) => CollectorError::StoreUnavailable(e.to_string()).into_response(),
    }
}

#[tracing::instrument(skip_all)]
async fn receive_hooks(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let secret = ctx
            .config
            .hook_secret
            .as_deref()
            .filter(|_| ctx.config.mode == Mode::Hook)
            .ok_or(CollectorError::HooksDisabled)?;
        let body = axum::body::to_bytes(body, ctx.config.max_body_bytes)
            .await
            .map_err(|_| CollectorError::BodyTooLarge(ctx.config.max_body_bytes))?;
        let batch = read_hooks(secret, &headers, &body)?;
        if !*ctx.active.borrow() {
            return Err(CollectorError::Standby);
        }
        record_hooks(&ctx, batch).await
    }
    .await;
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

/// What a hook request carries, once its signature shows it comes from the engine plugin.
fn read_hooks(
    secret: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<HookBatch, CollectorError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now_ms = chrono::Utc::now().timestamp_millis();
    hooks::verify(
        secret.as_bytes(),
        header(hooks::TIMESTAMP_HEADER),
        header(hooks::SIGNATURE_HEADER),
        body,
        now_ms,
    )
    .inspect_err(|e| tracing::warn!(reason = %e, "hook refused"))?;
    serde_json::from_slice(body).map_err(|e| {
        tracing::warn!(error = %e, "hook body refused");
        CollectorError::BadBody(e.to_string())
    })
}

/// Emits what a batch tells: the records of one task in order, different tasks at once.
#[tracing::instrument(skip_all, fields(records = batch.tasks.len()))]
async fn record_hooks(ctx: &Arc<Ctx>, batch: HookBatch) -> Result<(), CollectorError> {
    let mut groups: Vec<(String, Vec<HookTask>)> = Vec::new();
    for task in batch.tasks {
        match groups.iter_mut().find(|(id, _)| *id == task.task.id) {
            Some((_, records)) => records.push(task),
            None => groups.push((task.task.id.clone(), vec![task])),
        }
    }
    let results: Vec<Result<(), (String, anyhow::Error)>> = futures::stream::iter(groups)
        .map(|(task_id, records)| async move {
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
