//! The token: on every route but health and metrics, and on the RPC streams between nodes.

use std::time::Duration;

use serde_json::json;
use taskpool_api::bus::{AppendRequest, NewEvent};

use crate::harness::{self, wait_for, Cluster, TOKEN};
use crate::raw;

/// The RPC stream between nodes: refused without the token, answered in frames with it; a frame
/// that is not one closes only its own connection, and the node goes on serving. The nodes
/// serve HTTP on one thread (a current-thread runtime), as in the benchmarks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rpc_streams_need_the_token_and_survive_garbage() {
    use raft_bus::rpc_stream::{CallError, Connections, Kind};
    let cluster = Cluster::start(&["--worker-threads", "1"]).await;
    let leader = cluster.leader().await;
    let addr = cluster.node(leader).addr.clone();
    let http = reqwest::Client::new();
    let ttl = Duration::from_secs(5);
    let stranger = Connections::new(http.clone(), Some("nope".into()), addr.clone());
    match stranger.call(Kind::Propose, b"", ttl).await {
        Err(CallError::Unreachable(why)) => assert!(why.contains("401"), "{why}"),
        other => panic!("a wrong token must be refused, got {other:?}"),
    }
    let peer = Connections::new(http, Some(TOKEN.into()), addr);
    for garbage in [&b"garbage"[..], &[9, 9, 9][..]] {
        match peer.call(Kind::Propose, garbage, ttl).await {
            Err(CallError::Failed(_)) => {}
            other => panic!("garbage must close the stream, got {other:?}"),
        }
    }
    // An empty group of appends, well formed: an empty list of outcomes.
    let none: Vec<raft_bus::types::AppendBatch> = Vec::new();
    let answer = peer
        .call(Kind::Propose, &raft_bus::types::encode(&none), ttl)
        .await
        .expect("a well-formed call is answered");
    assert_eq!(answer, raft_bus::types::encode(&Vec::<()>::new()));
    cluster
        .client(&[leader])
        .append(&AppendRequest {
            events: vec![NewEvent::new("s", "T", &json!({})).expect("event")],
            ..Default::default()
        })
        .await
        .expect("the node still appends");
    // Replication itself runs on streams: the followers count the AppendEntries they served.
    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    let calls = wait_for(
        "AppendEntries over a stream",
        Duration::from_secs(5),
        || async {
            let text =
                harness::get_text(&format!("{}/metrics", cluster.node(follower).url())).await;
            text.lines()
                .find(|l| l.starts_with("raftbus_rpc_stream_calls_total{kind=\"append\"}"))
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .filter(|n| *n > 0)
        },
    )
    .await;
    assert!(calls > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_but_health_and_metrics_needs_the_token() {
    let cluster = Cluster::start(&[]).await;
    let http = reqwest::Client::new();
    let base = cluster.node(1).url();
    let protected = [
        ("POST", "/v1/append"),
        ("GET", "/v1/events?from=1"),
        ("GET", "/v1/subscribe?from=1"),
        ("GET", "/v1/streams/s"),
        ("POST", "/v1/commands"),
        (
            "POST",
            "/v1/commands/00000000-0000-0000-0000-000000000000/result",
        ),
        (
            "GET",
            "/v1/handlers/subscribe?handlerId=h&types=T&routingKeys=k",
        ),
        ("GET", "/v1/cluster"),
        ("POST", "/v1/cluster/learners"),
        ("POST", "/v1/cluster/membership"),
        ("POST", "/raft/append"),
        ("POST", "/raft/vote"),
        ("POST", "/raft/snapshot"),
        ("POST", "/raft/propose"),
        ("POST", "/raft/stream"),
    ];
    let wrong = [
        None,
        Some("Bearer nope".to_owned()),
        Some(format!("bearer {TOKEN}")),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_owned()),
    ];
    for (method, path) in protected {
        for auth in &wrong {
            let mut req = http.request(method.parse().expect("method"), format!("{base}{path}"));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let (status, body) = raw(&http, req.body("{}")).await;
            assert_eq!(status, 401, "{method} {path} with {auth:?}: {body}");
            assert_eq!(body["error"]["code"], "unauthorized", "{method} {path}");
        }
        // The token in the query string is no token.
        let sep = if path.contains('?') { '&' } else { '?' };
        let req = http.request(
            method.parse().expect("method"),
            format!("{base}{path}{sep}token={TOKEN}"),
        );
        assert_eq!(raw(&http, req).await.0, 401, "{method} {path} with ?token=");
    }
    for open in ["/health/live", "/health/ready", "/metrics"] {
        let r = http.get(format!("{base}{open}")).send().await.expect("get");
        assert_eq!(
            r.status().as_u16(),
            200,
            "{open} is open to load balancers and Prometheus"
        );
    }
}
