//! Trace context through the bus: a command's `traceparent`, given only as the HTTP header,
//! reaches the handler's message, whichever node the command was sent to; an invalid one is
//! ignored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::json;
use taskpool_api::commands::{CommandMessage, CommandResult};
use taskpool_api::handler::{self, HandlerConfig, MemoryDedupe};
use taskpool_api::trace::{self, Traceparent};
use tokio::sync::watch;
use uuid::Uuid;

use crate::commands::wait_handlers;
use crate::harness::{Cluster, TOKEN};

/// Sends a command to `node` over plain HTTP with `traceparent` as its header only; returns
/// the command's id once it was answered.
async fn send_with_header(cluster: &Cluster, node: u64, traceparent: &str) -> Uuid {
    let id = Uuid::new_v4();
    let resp = cluster
        .http()
        .post(format!("{}/v1/commands", cluster.node(node).url()))
        .bearer_auth(TOKEN)
        .header(trace::HEADER, traceparent)
        .json(&json!({
            "id": id, "type": "ClaimTask", "routingKey": "traced", "payload": {}, "timeoutMs": 10_000
        }))
        .send()
        .await
        .expect("send the command");
    assert_eq!(resp.status().as_u16(), 200, "through node {node}");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_traceparent_header_reaches_the_handler_through_any_node() {
    let cluster = Cluster::start(&[]).await;
    let (leader, follower) = cluster.leader_and_follower().await;
    // What the handler found in each message it got.
    let seen: Arc<Mutex<HashMap<Uuid, Option<String>>>> = Arc::default();
    let recorder = seen.clone();
    let (_stop, stop_rx) = watch::channel(false);
    let handler = tokio::spawn(handler::run(
        // Connected to a follower: its stream is relayed from the leader.
        cluster.client(&[follower]),
        HandlerConfig {
            handler_id: "h".into(),
            types: vec!["ClaimTask".into()],
            routing_keys: vec!["traced".into()],
            concurrency: 4,
        },
        Arc::new(MemoryDedupe::new(10)),
        move |cmd: CommandMessage| {
            (recorder.lock().expect("seen")).insert(cmd.id, cmd.traceparent.clone());
            async move { CommandResult::success("h", json!({})) }
        },
        stop_rx,
    ));
    wait_handlers(&cluster, "traced", 1).await;
    let received = |id: Uuid| seen.lock().expect("seen").get(&id).cloned();

    for node in [leader, follower] {
        let context = Traceparent::new_root();
        let id = send_with_header(&cluster, node, &context.to_string()).await;
        let got = received(id)
            .expect("the handler got the command")
            .unwrap_or_else(|| panic!("no traceparent in the message, sent to node {node}"));
        let got = Traceparent::parse(&got).expect("a valid traceparent");
        assert_eq!(got.trace_id(), context.trace_id(), "sent to node {node}");
    }
    let id = send_with_header(&cluster, follower, "00-not-a-trace-context-01").await;
    assert_eq!(
        received(id),
        Some(None),
        "an invalid traceparent is ignored"
    );
    handler.abort();
}
