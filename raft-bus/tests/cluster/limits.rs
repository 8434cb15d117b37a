//! Limits per node: requests in flight and subscribers.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{get_text, send_admitted, wait_busy, wait_for, Cluster, TOKEN};

/// With room for one request, a node that holds a waiting command answers the next request
/// `busy` at once, while its stream, health and metrics still answer, its peers still serve,
/// and it serves again once the command is done. A second subscriber past the limit is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_past_its_limits_sheds_requests_but_keeps_streams_health_and_peers() {
    let cluster =
        Cluster::start(&["--max-concurrent-requests", "1", "--max-subscribers", "1"]).await;
    let (node, peer) = cluster.leader_and_follower().await;
    let http = cluster.http().clone();
    let base = cluster.node(node).url();
    let get = |path: &str| http.get(format!("{base}{path}")).bearer_auth(TOKEN);

    // A command nobody handles waits for its 8 s timeout, holding the only request slot.
    // Sent again while one of the probes below holds the slot.
    let waiting = tokio::spawn({
        let (http, url) = (http.clone(), format!("{base}/v1/commands"));
        let command = json!({"id": Uuid::new_v4(), "type": "ClaimTask", "routingKey": "nobody",
                             "payload": {}, "timeoutMs": 8000});
        async move {
            let post = || http.post(&url).bearer_auth(TOKEN).json(&command);
            // A new leader routes commands once it has heard from its quorum (looked at every
            // 50 ms); until then it answers `no_leader` at once, and the command is sent again.
            wait_for(
                "the leader to route commands",
                Duration::from_secs(5),
                || async {
                    let resp = send_admitted(post).await;
                    let status = resp.status().as_u16();
                    let body: Value = resp.json().await.ok()?;
                    (body["error"]["code"] != "no_leader").then_some(status)
                },
            )
            .await
        }
    });
    let message = wait_busy(|| get("/v1/cluster")).await;
    assert!(message.contains("--max-concurrent-requests"), "{message}");

    // Still shedding (the command is pending): streams, health and metrics are not counted.
    // One subscriber takes the only subscription slot (admission does not count it); a
    // second is refused by the subscriber limit.
    let first = get("/v1/subscribe?from=1").send().await.expect("subscribe");
    assert_eq!(first.status(), 200);
    let mut first = first.bytes_stream();
    let second = get("/v1/subscribe?from=1").send().await.expect("subscribe");
    assert_eq!(second.status(), 503);
    let body: Value = second.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");

    for path in ["/health/live", "/health/ready", "/metrics"] {
        let status = http.get(format!("{base}{path}")).send().await.expect(path);
        assert_eq!(status.status(), 200, "{path} while busy");
    }
    let appended = cluster
        .client(&[peer])
        .append(&taskpool_api::bus::AppendRequest {
            events: vec![taskpool_api::bus::NewEvent::new("s", "T", &json!({})).expect("event")],
            ..Default::default()
        })
        .await
        .expect("the peer still serves: a forwarded request is counted where it was sent");
    let position = appended.events[0].position;
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !seen.contains(&format!("id: {position}\n")) {
            let chunk = first.next().await.expect("stream open").expect("bytes");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the open subscription delivers the new event");
    let metrics = get_text(&format!("{base}/metrics")).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("raftbus_http_requests_total")
                && l.contains("route=\"/v1/cluster\"")
                && l.contains("status=\"503\"")),
        "shed requests are counted by route and status"
    );
    // A client that knows two nodes gets its answer from the other one.
    cluster
        .client(&[node, peer])
        .cluster()
        .await
        .expect("the client moves on to a node that is not busy");

    assert_eq!(waiting.await.expect("command task"), 503, "no handler");
    wait_for("the node to serve again", Duration::from_secs(5), || {
        let req = get("/v1/cluster");
        async move { (req.send().await.ok()?.status() == 200).then_some(()) }
    })
    .await;
}
