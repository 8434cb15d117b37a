//! The HTTP task API under `/api/v1`, plus `/metrics` and `/health/*`.

mod actions;
mod command;
mod error;
pub mod openapi;
mod processes;
mod stream;
mod tasks;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use service_kit::http::{admit, route_of, track};
use service_kit::{health_routes, Admission};
use taskpool_api::trace::{self, Traceparent};
use taskpool_api::BusClient;
use tokio::sync::Semaphore;
use tracing::Instrument;

pub use error::AppError;

use crate::config::ServeConfig;
use crate::identity::{Authenticator, Identity};
use crate::metrics::Metrics;
use crate::projection::Projection;
use crate::store::Store;

pub struct ApiState {
    pub projection: Projection,
    pub auth: Authenticator,
    pub bus: BusClient,
    pub store: Store,
    pub metrics: Metrics,
    pub config: ServeConfig,
    pub streams: Arc<Semaphore>,
    /// Turns true on shutdown: open streams end so the server can stop.
    pub stop: tokio::sync::watch::Receiver<bool>,
}

pub type Shared = Arc<ApiState>;

pub fn router(state: Shared) -> Router {
    let api = Router::new()
        .route("/tasks", get(tasks::list))
        .route("/tasks/counts", get(tasks::counts))
        .route("/tasks/attributes", get(tasks::attribute_names))
        .route(
            "/tasks/attributes/{name}/values",
            get(tasks::attribute_values),
        )
        .route("/tasks/{application}/{taskId}", get(tasks::one));
    let api = actions::routes(api)
        .route("/processes", get(processes::list))
        .route("/processes/{key}/start", post(processes::start))
        .route(
            "/processes/{application}/{key}/start",
            post(processes::start_in),
        )
        .route("/me", get(me))
        .route("/openapi.json", get(openapi::document))
        .route_layer(middleware::from_fn_with_state(
            admission(&state.config),
            admit,
        ))
        // Long-lived: limited by --max-streams, not by admission.
        .route("/tasks/stream", get(stream::tasks));
    Router::new()
        .nest("/api/v1", api)
        .route("/metrics", get(render_metrics))
        .merge(health_routes(ready))
        .fallback(|| async { AppError::NoSuchEndpoint })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn(in_trace))
        .layer(middleware::from_fn_with_state(
            state.metrics.requests(),
            track,
        ))
        .with_state(state)
}

/// Load shedding: a request past `--max-concurrent-requests` is answered `busy` at once rather
/// than queued, so memory and latency stay bounded under a flood. Task streams are not
/// counted: `--max-streams` limits them.
fn admission(config: &ServeConfig) -> Admission {
    Admission::new(config.max_concurrent_requests as usize, busy)
}

fn busy() -> Response {
    AppError::Busy.into_response()
}

/// Each request in its span, with the `trace_id` of its `traceparent` (a new trace when it
/// comes without one) and its route; the response names the trace in its own `traceparent`,
/// so a user can find the request's log lines.
async fn in_trace(mut request: Request, next: Next) -> Response {
    let route = route_of(&request);
    let method = request.method().as_str().to_owned();
    let trace = Traceparent::from_header_or_new(
        request
            .headers()
            .get(trace::HEADER)
            .and_then(|v| v.to_str().ok()),
    );
    let span = tracing::info_span!("request", trace_id = %trace.trace_id(), %method, %route);
    request.extensions_mut().insert(trace.clone());
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&trace.to_string()) {
        response.headers_mut().insert(trace::HEADER, value);
    }
    response
}

/// The authenticated user of a request.
pub struct User(pub Identity);

impl FromRequestParts<Shared> for User {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<User, AppError> {
        Ok(User(state.auth.identify(&parts.headers)?))
    }
}

/// The trace context of a request (see `in_trace`): commands carry a child of it.
pub struct Trace(pub Traceparent);

impl FromRequestParts<Shared> for Trace {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &Shared) -> Result<Trace, AppError> {
        let trace = parts.extensions.get::<Traceparent>().cloned();
        Ok(Trace(trace.unwrap_or_else(Traceparent::new_root)))
    }
}

/// A JSON body whose rejections answer in the API's error shape.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Body<T>, AppError> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(Body(value))
    }
}

/// The current time as the view's dates are written (RFC 3339, UTC, milliseconds).
pub fn now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    pub user: String,
    /// Groups from the credentials: they count in every application.
    pub groups: Vec<String>,
    /// Per application, every group that counts there: the credentials' and those the
    /// engines of its identity realm give you.
    pub applications: std::collections::BTreeMap<String, Vec<String>>,
}

/// Who the API thinks you are.
#[utoipa::path(get, path = "/api/v1/me", tag = "identity",
    responses((status = 200, body = Me), (status = 401, body = openapi::ErrorSchema)))]
pub async fn me(State(state): State<Shared>, User(id): User) -> Json<Me> {
    let view = state.projection.read();
    let applications = view
        .applications()
        .map(|app| (app.to_owned(), id.groups_in(&view, app)))
        .collect();
    let mut groups = id.groups.clone();
    groups.sort();
    groups.dedup();
    Json(Me {
        user: id.user,
        groups,
        applications,
    })
}

async fn render_metrics(State(state): State<Shared>) -> String {
    state.metrics.render()
}

/// Ready when MongoDB answers; the body tells how far the view is.
async fn ready(State(state): State<Shared>) -> Response {
    let (position, open) = {
        let view = state.projection.read();
        (view.position(), view.open_tasks())
    };
    match state.store.ping().await {
        Ok(()) => {
            Json(serde_json::json!({"viewPosition": position, "openTasks": open})).into_response()
        }
        Err(e) => AppError::StoreUnavailable(e).into_response(),
    }
}
