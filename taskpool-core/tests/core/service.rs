//! The service around the view: who may ask (JWT and identity headers), what it tells about
//! itself (metrics, OpenAPI), and how it sheds load.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use taskpool_api::tasks::TaskEvent;

use crate::harness::{self, append, database, task, wait_for, Cluster, Core};

#[tokio::test]
async fn identity_is_required_and_checked() {
    let bus = Cluster::start(&[]).await;
    let core = Core::start(&bus, &database("identity"), &[]).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/tasks", core.url());
    let r = http.get(&url).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unauthenticated");

    let claims = |exp: i64| json!({"sub": "kermit", "groups": ["muppets"], "exp": exp});
    let now = chrono::Utc::now().timestamp();
    let token = |claims: Value, secret: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("token")
    };
    let me = |t: String| {
        let http = http.clone();
        let url = format!("{}/api/v1/me", core.url());
        async move {
            let r = http.get(url).bearer_auth(t).send().await.expect("request");
            (r.status(), r.json::<Value>().await.expect("json"))
        }
    };
    let (status, body) = me(token(claims(now + 600), harness::JWT_SECRET)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"user": "kermit", "groups": ["muppets"], "applications": {}})
    );
    for bad in [
        token(claims(now + 600), "not-the-secret-0123456789abcdef"),
        token(claims(now - 600), harness::JWT_SECRET),
        "not.a.jwt".to_owned(),
    ] {
        let (status, body) = me(bad).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"]["code"], "invalid_token");
    }
    // A forged token is not rescued by identity headers.
    let r = http
        .get(format!("{}/api/v1/me", core.url()))
        .bearer_auth("forged")
        .header("x-user", "kermit")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn metrics_and_openapi_describe_the_service() {
    let bus = Cluster::start(&[]).await;
    let client = bus.client(&[1, 2, 3]);
    let core = Core::start(&bus, &database("meta"), &[]).await;
    core.wait_position(append(&client, &[TaskEvent::Created(task("m1"))]).await)
        .await;
    let (status, _) = core.get("/api/v1/tasks/camunda/m1", "nobody", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, doc) = core
        .call(Method::GET, "/api/v1/openapi.json", "u", &[], None)
        .await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/api/v1/tasks",
        "/api/v1/tasks/{application}/{taskId}/claim",
        "/api/v1/processes/{key}/start",
        "/api/v1/processes/{application}/{key}/start",
        "/api/v1/tasks/stream",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }
    assert!(doc["components"]["schemas"].get("TaskView").is_some());
    let metrics = testkit::get_text(&format!("{}/metrics", core.url())).await;
    assert!(
        metrics.contains("taskpool_events_applied_total{type=\"TaskCreated\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("taskpool_open_tasks 1"));
    assert!(metrics.contains(
        "taskpool_http_requests_total{method=\"GET\",route=\"/api/v1/tasks/{application}/{taskId}\",status=\"404\"} 1"
    ));
    assert!(metrics.contains("taskpool_view_lag_positions"));
}

/// With room for one request, a core that waits on an action answers the next request `busy`
/// at once, while task streams (up to their own limit), health and metrics still answer; it
/// serves again once the action is done.
#[tokio::test]
async fn a_full_core_sheds_requests_but_keeps_streams_and_health() {
    let bus = Cluster::start(&[]).await;
    let client = bus.client(&[1, 2, 3]);
    let core = Core::start(
        &bus,
        &database("limits"),
        &[
            "--max-concurrent-requests",
            "1",
            "--max-streams",
            "1",
            "--command-timeout",
            "4s",
        ],
    )
    .await;
    let mut mine = task("l1");
    mine.candidate_users = vec!["kermit".into()];
    core.wait_position(append(&client, &[TaskEvent::Created(mine)]).await)
        .await;

    // No collector handles the claim: it waits for the 4 s command timeout, holding the one slot.
    // Sent again while one of the probes below holds the slot.
    let claim = tokio::spawn({
        let url = format!("{}/api/v1/tasks/camunda/l1/claim", core.url());
        async move {
            let http = reqwest::Client::new();
            testkit::send_admitted(|| http.post(&url).header("x-user", "kermit"))
                .await
                .status()
        }
    });
    let http = reqwest::Client::new();
    let list = || {
        http.get(format!("{}/api/v1/tasks", core.url()))
            .header("x-user", "kermit")
    };
    testkit::wait_busy(list).await;

    // Still busy: one stream opens, a second meets the stream limit; health and metrics answer.
    let stream = |user: &str| {
        http.get(format!("{}/api/v1/tasks/stream", core.url()))
            .header("x-user", user)
            .send()
    };
    let first = stream("kermit").await.expect("stream");
    assert_eq!(first.status(), StatusCode::OK);
    let second = stream("piggy").await.expect("stream");
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = second.json().await.expect("json");
    assert_eq!(body["error"]["code"], "too_many_streams", "{body}");
    for path in ["/health/live", "/health/ready"] {
        let r = http.get(format!("{}{path}", core.url())).send().await;
        assert_eq!(r.expect(path).status(), StatusCode::OK, "{path} while busy");
    }
    let metrics = testkit::get_text(&format!("{}/metrics", core.url())).await;
    assert!(metrics.contains(
        "taskpool_http_requests_total{method=\"GET\",route=\"/api/v1/tasks\",status=\"503\"}"
    ));
    drop(first);

    let claimed = claim.await.expect("claim task");
    assert!(
        claimed.is_server_error(),
        "an unhandled claim fails: {claimed}"
    );
    wait_for(
        "taskpool-core to serve again",
        Duration::from_secs(5),
        || {
            let req = list();
            async move { (req.send().await.ok()?.status() == StatusCode::OK).then_some(()) }
        },
    )
    .await;
}
