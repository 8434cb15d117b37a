//! Appending, reading and subscribing across the nodes: one history whatever node serves.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use taskpool_api::bus::AppendRequest;
use uuid::Uuid;

use crate::harness::{Cluster, TOKEN};
use crate::{assert_dense, event, one, spawn_writers};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn append_through_a_follower_is_readable_on_every_node() {
    let cluster = Cluster::start(&[]).await;
    let (_, follower) = cluster.leader_and_follower().await;
    let client = cluster.client(&[follower]);
    let req = AppendRequest {
        events: vec![event("task-1", 0), event("task-2", 0), event("task-1", 1)],
        expected_versions: BTreeMap::from([("task-1".to_string(), -1)]),
    };
    let resp = client
        .append(&req)
        .await
        .expect("append through a follower");
    let positions: Vec<u64> = resp.events.iter().map(|e| e.position).collect();
    assert_eq!(positions, vec![1, 2, 3]);
    let versions: Vec<u64> = resp.events.iter().map(|e| e.version).collect();
    assert_eq!(versions, vec![0, 0, 1]);

    for id in 1..=3 {
        cluster.wait_head(id, 3).await;
        let events = cluster.all_events(id).await;
        assert_eq!(events.len(), 3, "node {id}");
        assert_eq!(events[0].id, req.events[0].id);
        assert_eq!(events[2].data_as::<Value>().expect("json"), json!({"n": 1}));
        let stream = cluster
            .client(&[id])
            .stream("task-1", 0, 100)
            .await
            .expect("stream");
        assert_eq!(stream.version, 1);
        assert_eq!(stream.events.len(), 2);
        let from_version = cluster
            .client(&[id])
            .stream("task-1", 1, 100)
            .await
            .expect("stream");
        assert_eq!(from_version.events.len(), 1);
        assert_eq!(from_version.events[0].position, 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn optimistic_concurrency_and_idempotent_retries() {
    let cluster = Cluster::start(&[]).await;
    let client = cluster.client(&[1, 2, 3]);
    let first = AppendRequest {
        events: vec![event("order-7", 0)],
        expected_versions: BTreeMap::from([("order-7".to_string(), -1)]),
    };
    client.append(&first).await.expect("first append");

    let mut stale = first.clone();
    stale.events = vec![event("order-7", 1)];
    let err = client
        .append(&stale)
        .await
        .expect_err("stream exists already");
    assert_eq!(err.code(), Some("wrong_expected_version"));
    let taskpool_api::ClientError::Api { status, body } = err else {
        panic!("api error")
    };
    assert_eq!(status, 409);
    assert_eq!(body.error.extra["stream"], json!("order-7"));
    assert_eq!(body.error.extra["currentVersion"], json!(0));

    stale.expected_versions.insert("order-7".into(), 0);
    let ok = client
        .append(&stale)
        .await
        .expect("append at the right version");
    assert_eq!(ok.events[0].version, 1);

    // A retried batch is answered with the original positions and appends nothing.
    let batch = AppendRequest {
        events: (0..3).map(|n| event("retry", n)).collect(),
        ..Default::default()
    };
    let original = client.append(&batch).await.expect("batch");
    let last = original.events.last().expect("events").position;
    let again = client.append(&batch).await.expect("retry");
    assert_eq!(again, original);
    // The next new event lands right after the original batch: the retry appended nothing.
    let next = client.append(&one("sentinel", 0)).await.expect("sentinel");
    assert_eq!(next.events[0].position, last + 1);

    // A new batch that reuses one old id is not a retry.
    let mut mixed = batch.clone();
    mixed.events[1] = event("retry", 9);
    let err = client.append(&mixed).await.expect_err("reused id");
    assert_eq!(err.code(), Some("event_id_reused"));
    let next = client.append(&one("sentinel", 1)).await.expect("sentinel");
    assert_eq!(
        next.events[0].position,
        last + 2,
        "the refused batch appended nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriber_from_1_gets_every_event_once_in_order_while_appending() {
    let cluster = Cluster::start(&[]).await;
    let (_, follower) = cluster.leader_and_follower().await;
    let mut subscription = cluster.client(&[follower]).subscribe(1);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers = spawn_writers(cluster.client(&[1, 2, 3]), 4, stop.clone(), acked.clone());
    let mut received = Vec::new();
    let collect = async {
        while received.len() < 500 {
            let e = subscription
                .next()
                .await
                .expect("subscription ended")
                .expect("event");
            received.push(e);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), collect)
        .await
        .expect("500 events within 60 s");
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    assert_dense(&received);
    let ids: HashSet<Uuid> = received.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), received.len(), "no event twice");
    for (id, position) in acked
        .lock()
        .expect("lock")
        .iter()
        .filter(|(_, p)| *p <= 500)
    {
        assert_eq!(received[(*position - 1) as usize].id, *id);
    }

    // Resume after the last id seen, as a reconnecting EventSource does.
    let resp = cluster
        .http()
        .get(format!("{}/v1/subscribe", cluster.node(follower).url()))
        .bearer_auth(TOKEN)
        .header("Last-Event-ID", "499")
        .send()
        .await
        .expect("subscribe");
    let mut body = resp.bytes_stream();
    let mut parser = taskpool_api::sse::SseParser::new();
    let first = loop {
        let chunk = body.next().await.expect("stream open").expect("chunk");
        if let Some(m) = parser.feed(&chunk).into_iter().next() {
            break m;
        }
    };
    assert_eq!(first.id.as_deref(), Some("500"));
}
