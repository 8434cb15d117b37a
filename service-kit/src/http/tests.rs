#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use axum::Router;
use tokio::sync::Notify;
use tower::ServiceExt;

use super::*;
use crate::Registrar;

async fn send(router: &Router, req: Request<Body>) -> (StatusCode, Response) {
    let resp = router.clone().oneshot(req).await.unwrap();
    (resp.status(), resp)
}

fn get_req(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

async fn body_text(resp: Response) -> String {
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn track_counts_by_matched_route_method_and_status() {
    let r = Registrar::new(&[0.1]);
    let metrics = RequestMetrics::by_route_and_method(
        r.counter_vec(
            "t_http_requests_total",
            "requests",
            &["route", "method", "status"],
        ),
        r.histogram_vec("t_http_request_seconds", "latency", &["route", "method"]),
    );
    let router = Router::new()
        .route("/items/{id}", get(|| async { "ok" }))
        .layer(from_fn_with_state(metrics, track));
    send(&router, get_req("/items/1")).await;
    send(&router, get_req("/items/2")).await;
    send(&router, get_req("/nowhere")).await;
    let text = r.render();
    let ok = "t_http_requests_total{method=\"GET\",route=\"/items/{id}\",status=\"200\"} 2";
    assert!(text.contains(ok), "{text}");
    let missing = "t_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1";
    assert!(text.contains(missing), "{text}");
    let timed = "t_http_request_seconds_count{method=\"GET\",route=\"/items/{id}\"} 2";
    assert!(text.contains(timed), "{text}");
}

#[tokio::test]
async fn track_by_route_has_no_method_label() {
    let r = Registrar::new(&[0.1]);
    let metrics = RequestMetrics::by_route(
        r.counter_vec("t_requests_total", "requests", &["route", "status"]),
        r.histogram_vec("t_seconds", "latency", &["route"]),
    );
    let router = Router::new()
        .route("/a", get(|| async { "ok" }))
        .layer(from_fn_with_state(metrics, track));
    send(&router, get_req("/a")).await;
    let text = r.render();
    assert!(
        text.contains("t_requests_total{route=\"/a\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(text.contains("t_seconds_count{route=\"/a\"} 1"), "{text}");
}

fn refusal() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        r#"{"error":{"code":"busy"}}"#,
    )
        .into_response()
}

/// A router whose `/hold` stays in flight until `release` is notified.
fn held(admission: Admission, release: Arc<Notify>, entered: Arc<Notify>) -> Router {
    Router::new()
        .route(
            "/hold",
            get(move || async move {
                entered.notify_one();
                release.notified().await;
                "done"
            }),
        )
        .route_layer(from_fn_with_state(admission, admit))
        .route("/free", get(|| async { "free" }))
}

#[tokio::test]
async fn admission_sheds_past_the_limit_with_retry_after() {
    let (release, entered) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let router = held(Admission::new(1, refusal), release.clone(), entered.clone());
    let first = tokio::spawn(send_owned(router.clone(), get_req("/hold")));
    entered.notified().await;
    let (status, shed) = send(&router, get_req("/hold")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.headers()[header::RETRY_AFTER], "1");
    assert_eq!(body_text(shed).await, r#"{"error":{"code":"busy"}}"#);
    // Routes outside the limit are not counted.
    assert_eq!(send(&router, get_req("/free")).await.0, StatusCode::OK);
    release.notify_one();
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    // The permit is back.
    let second = tokio::spawn(send_owned(router.clone(), get_req("/hold")));
    entered.notified().await;
    release.notify_one();
    assert_eq!(second.await.unwrap(), StatusCode::OK);
}

#[tokio::test]
async fn an_exempt_header_passes_a_full_admission() {
    let (release, entered) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let exempt = HeaderName::from_static("x-forwarded-once");
    let router = held(
        Admission::new(1, refusal).exempt_with(exempt.clone()),
        release.clone(),
        entered.clone(),
    );
    let first = tokio::spawn(send_owned(router.clone(), get_req("/hold")));
    entered.notified().await;
    let forwarded = Request::get("/hold")
        .header(exempt, "1")
        .body(Body::empty())
        .unwrap();
    let second = tokio::spawn(send_owned(router.clone(), forwarded));
    entered.notified().await;
    release.notify_one();
    release.notify_one();
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    assert_eq!(second.await.unwrap(), StatusCode::OK);
}

async fn send_owned(router: Router, req: Request<Body>) -> StatusCode {
    router.oneshot(req).await.unwrap().status()
}

#[tokio::test]
async fn health_routes_answer_live_and_ask_ready() {
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let router: Router = health_routes({
        let ready = ready.clone();
        move || async move {
            if ready.load(std::sync::atomic::Ordering::SeqCst) {
                (StatusCode::OK, "ready")
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "not yet")
            }
        }
    });
    let (status, live) = send(&router, get_req("/health/live")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body_text(live).await, r#"{"status":"ok"}"#);
    let (status, _) = send(&router, get_req("/health/ready")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    ready.store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, body) = send(&router, get_req("/health/ready")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body_text(body).await, "ready");
}
