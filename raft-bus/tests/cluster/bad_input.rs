//! Bad input to every route: a clear 4xx with the error body, and nothing written.

use serde_json::json;
use uuid::Uuid;

use crate::harness::{self, Cluster, TOKEN};
use crate::raw;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let cluster = Cluster::start(&["--max-body-bytes", "65536"]).await;
    let http = cluster.http();
    let base = cluster.node(1).url();
    let append = || http.post(format!("{base}/v1/append")).bearer_auth(TOKEN);
    let json_post = |body: String| {
        append()
            .header("content-type", "application/json")
            .body(body)
    };
    let good = json!({"events":[{"stream":"s","type":"T","data":{},"id":Uuid::new_v4()}]});
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        ("malformed JSON", json_post("{\"events\":[".into()), 400, "invalid_json"),
        ("not JSON content type", append().body(good.to_string()), 415, "unsupported_media_type"),
        ("empty batch", json_post(json!({"events":[]}).to_string()), 400, "bad_request"),
        ("unknown field", json_post(json!({"events":[{"stream":"s","type":"T","data":{},"id":Uuid::new_v4(),"dta":1}]}).to_string()), 400, "invalid_json"),
        ("missing id", json_post(json!({"events":[{"stream":"s","type":"T","data":{}}]}).to_string()), 400, "invalid_json"),
        ("empty stream", json_post(json!({"events":[{"stream":"","type":"T","data":{},"id":Uuid::new_v4()}]}).to_string()), 400, "bad_request"),
        ("duplicate id in batch", {
            let id = Uuid::new_v4();
            json_post(json!({"events":[{"stream":"s","type":"T","data":{},"id":id},{"stream":"s","type":"T","data":{},"id":id}]}).to_string())
        }, 400, "bad_request"),
        ("absurd expected version", json_post(json!({"events":[{"stream":"s","type":"T","data":{},"id":Uuid::new_v4()}],"expectedVersions":{"s":-7}}).to_string()), 400, "bad_request"),
        ("oversized body", json_post(json!({"events":[{"stream":"s","type":"T","data":{"x":"a".repeat(100_000)},"id":Uuid::new_v4()}]}).to_string()), 413, "payload_too_large"),
        ("no token", http.post(format!("{base}/v1/append")).json(&good), 401, "unauthorized"),
        ("wrong token", http.post(format!("{base}/v1/append")).bearer_auth("nope").json(&good), 401, "unauthorized"),
        ("position 0", http.get(format!("{base}/v1/events?from=0")).bearer_auth(TOKEN), 400, "bad_request"),
        ("negative position", http.get(format!("{base}/v1/events?from=-4")).bearer_auth(TOKEN), 400, "bad_request"),
        ("absurd position", http.get(format!("{base}/v1/events?from=99999999999999999999999")).bearer_auth(TOKEN), 400, "bad_request"),
        ("limit 0", http.get(format!("{base}/v1/events?limit=0")).bearer_auth(TOKEN), 400, "bad_request"),
        ("huge limit", http.get(format!("{base}/v1/events?limit=1000000")).bearer_auth(TOKEN), 400, "bad_request"),
        ("unknown query field", http.get(format!("{base}/v1/events?form=1")).bearer_auth(TOKEN), 400, "bad_request"),
        ("bad Last-Event-ID", http.get(format!("{base}/v1/subscribe")).bearer_auth(TOKEN).header("Last-Event-ID", "x"), 400, "bad_request"),
        ("unknown route", http.get(format!("{base}/v1/nope")).bearer_auth(TOKEN), 404, "not_found"),
        ("raft rpc without token", http.post(format!("{base}/raft/vote")).body("x"), 401, "unauthorized"),
        ("propose without token", http.post(format!("{base}/raft/propose")).body("x"), 401, "unauthorized"),
        ("propose garbage", http.post(format!("{base}/raft/propose")).bearer_auth(TOKEN).body("garbage"), 400, "bad_request"),
        ("raft rpc garbage", http.post(format!("{base}/raft/vote")).bearer_auth(TOKEN).body("garbage"), 400, "bad_request"),
        ("rpc stream without upgrade", http.post(format!("{base}/raft/stream")).bearer_auth(TOKEN).body("x"), 400, "bad_request"),
        ("bad learner address", http.post(format!("{base}/v1/cluster/learners")).bearer_auth(TOKEN).json(&json!({"nodeId":9,"addr":"nope"})), 400, "bad_request"),
    ];
    for (what, req, status, code) in cases {
        let (got, body) = raw(http, req).await;
        assert_eq!(got, status, "{what}: {body}");
        assert_eq!(body["error"]["code"], json!(code), "{what}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
    }
    // Nothing was half-written by any of them.
    let page = cluster.client(&[1]).events(1, 10).await.expect("read");
    assert_eq!(page.head, 0);
    // An unknown stream is empty at version -1; health is open.
    let stream = cluster
        .client(&[1])
        .stream("never/written", 0, 10)
        .await
        .expect("stream");
    assert_eq!(stream.version, -1);
    let (status, _) = raw(http, http.get(format!("{base}/health/live"))).await;
    assert_eq!(status, 200);
    let metrics = harness::get_text(&format!("{base}/metrics")).await;
    for name in [
        "raftbus_term",
        "raftbus_commit_index",
        "raftbus_append_seconds",
        "raftbus_events_appended_total",
        "raftbus_subscribers",
    ] {
        assert!(metrics.contains(name), "metric {name} is exported");
    }
}
