//! axum pieces every service's router uses alike: request metrics by matched route, the
//! admission limit that sheds load, and the health routes.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{HistogramVec, IntCounterVec};
use tokio::sync::Semaphore;

/// The request counter and latency histogram of a service. Labelled by matched route (never by
/// raw path: ids would explode it), status on the counter, and the method where the service's
/// metrics have it.
#[derive(Clone)]
pub struct RequestMetrics {
    requests: IntCounterVec,
    seconds: HistogramVec,
    by_method: bool,
}

impl RequestMetrics {
    /// `requests{route,status}`, `seconds{route}`.
    pub fn by_route(requests: IntCounterVec, seconds: HistogramVec) -> RequestMetrics {
        RequestMetrics {
            requests,
            seconds,
            by_method: false,
        }
    }

    /// `requests{route,method,status}`, `seconds{route,method}`.
    pub fn by_route_and_method(requests: IntCounterVec, seconds: HistogramVec) -> RequestMetrics {
        RequestMetrics {
            requests,
            seconds,
            by_method: true,
        }
    }

    fn record(&self, route: &str, method: &str, status: StatusCode, started: Instant) {
        let took = started.elapsed().as_secs_f64();
        if self.by_method {
            self.requests
                .with_label_values(&[route, method, status.as_str()])
                .inc();
            self.seconds
                .with_label_values(&[route, method])
                .observe(took);
        } else {
            self.requests
                .with_label_values(&[route, status.as_str()])
                .inc();
            self.seconds.with_label_values(&[route]).observe(took);
        }
    }
}

/// Middleware counting and timing every request:
/// `.layer(axum::middleware::from_fn_with_state(request_metrics, service_kit::http::track))`.
pub async fn track(State(metrics): State<RequestMetrics>, req: Request, next: Next) -> Response {
    let route = route_of(&req);
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let resp = next.run(req).await;
    metrics.record(&route, &method, resp.status(), started);
    resp
}

/// The route a request matched, as its metrics and log lines name it (`unmatched` when none).
pub fn route_of(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned()
}

/// Load shedding: past `limit` requests in flight a request is answered at once with the
/// service's refusal (its `busy` error body), status 503 and `Retry-After: 1`, rather than
/// queued, so memory and latency stay bounded under a flood. Not logged: a flood would flood
/// the log; the request counter shows it by status.
#[derive(Clone)]
pub struct Admission {
    permits: Arc<Semaphore>,
    refusal: fn() -> Response,
    exempt: Option<HeaderName>,
}

impl Admission {
    pub fn new(limit: usize, refusal: fn() -> Response) -> Admission {
        Admission {
            permits: Arc::new(Semaphore::new(limit)),
            refusal,
            exempt: None,
        }
    }

    /// Requests carrying `header` pass without a permit (e.g. forwarded ones, admitted where
    /// the client sent them).
    pub fn exempt_with(mut self, header: HeaderName) -> Admission {
        self.exempt = Some(header);
        self
    }
}

/// Middleware of [`Admission`] (on the routes it limits, so streams, health and metrics are not
/// counted): `.route_layer(axum::middleware::from_fn_with_state(admission, service_kit::http::admit))`.
pub async fn admit(State(admission): State<Admission>, req: Request, next: Next) -> Response {
    if admission
        .exempt
        .as_ref()
        .is_some_and(|h| req.headers().contains_key(h))
    {
        return next.run(req).await;
    }
    match admission.permits.clone().try_acquire_owned() {
        Ok(_permit) => next.run(req).await,
        Err(_) => {
            let mut resp = (admission.refusal)();
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
    }
}

/// `/health/live` (200 while the process serves) and `/health/ready` answered by `ready`, a
/// handler or closure that says whether the service can do its work now.
pub fn health_routes<H, T, S>(ready: H) -> Router<S>
where
    H: Handler<T, S>,
    T: 'static,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
}

/// `{"status":"ok"}` (the bus's answer before the kit; core and the collector answered an empty 200).
async fn live() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
}

#[cfg(test)]
mod tests;
