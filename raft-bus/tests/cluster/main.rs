//! Cluster tests: three real `raft-bus` processes on loopback per test.

mod commands;
mod credentials;
mod credentials_reload;
mod fuzz;
mod harness;
mod limits;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use harness::{wait_for, Cluster, TOKEN};
use serde_json::{json, Value};
use taskpool_api::bus::{AppendRequest, NewEvent, RecordedEvent};
use taskpool_api::BusClient;
use uuid::Uuid;

fn event(stream: &str, n: u64) -> NewEvent {
    NewEvent::new(stream, "TestEvent", &json!({ "n": n })).expect("event")
}

fn one(stream: &str, n: u64) -> AppendRequest {
    AppendRequest {
        events: vec![event(stream, n)],
        ..Default::default()
    }
}

/// (position, stream, version, id) of each event: what must agree across nodes.
fn fingerprint(events: &[RecordedEvent]) -> Vec<(u64, String, u64, Uuid)> {
    events
        .iter()
        .map(|e| (e.position, e.stream.clone(), e.version, e.id))
        .collect()
}

fn assert_dense(events: &[RecordedEvent]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.position, i as u64 + 1, "positions are dense from 1");
    }
    let mut versions: HashMap<&str, u64> = HashMap::new();
    for e in events {
        let v = versions.entry(&e.stream).or_insert(0);
        assert_eq!(e.version, *v, "versions of {} are dense from 0", e.stream);
        *v += 1;
    }
}

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

/// Appends single events from `writers` tasks until `stop`, recording each acknowledged id
/// with its position.
fn spawn_writers(
    client: BusClient,
    writers: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(Uuid, u64)>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let (client, stop, acked) = (client.clone(), stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let req = one(&format!("writer-{w}"), n);
                    // The client retries across nodes with the same ids; an append it gives up
                    // on may or may not be in the log, and is simply not counted as acknowledged.
                    if let Ok(resp) = client.append(&req).await {
                        acked
                            .lock()
                            .expect("lock")
                            .push((req.events[0].id, resp.events[0].position));
                    }
                    n += 1;
                }
            })
        })
        .collect()
}

async fn wait_acked(acked: &Arc<Mutex<Vec<(Uuid, u64)>>>, n: usize, what: &str) {
    wait_for(what, Duration::from_secs(60), || async {
        (acked.lock().expect("lock").len() >= n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_under_load_loses_no_acknowledged_append() {
    let mut cluster = Cluster::start(&[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers = spawn_writers(cluster.client(&[1, 2, 3]), 8, stop.clone(), acked.clone());
    wait_acked(&acked, 200, "200 acknowledged appends").await;

    let leader = cluster.leader().await;
    cluster.kill(leader);
    let before = acked.lock().expect("lock").len();
    wait_acked(
        &acked,
        before + 200,
        "appends to resume after the leader was killed",
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }

    let acked = acked.lock().expect("lock").clone();
    let max_position = acked.iter().map(|(_, p)| *p).max().expect("acks");
    let survivors = cluster.running();
    let mut histories = Vec::new();
    for id in &survivors {
        cluster.wait_head(*id, max_position).await;
        let events = cluster.all_events(*id).await;
        assert_dense(&events);
        let at: HashMap<Uuid, Vec<u64>> = events.iter().fold(HashMap::new(), |mut m, e| {
            m.entry(e.id).or_default().push(e.position);
            m
        });
        for (id_, position) in &acked {
            assert_eq!(
                at.get(id_),
                Some(&vec![*position]),
                "acknowledged {id_} exactly once, where acknowledged"
            );
        }
        histories.push(fingerprint(&events));
    }
    let shortest = histories.iter().map(Vec::len).min().expect("histories");
    for h in &histories {
        assert_eq!(
            h[..shortest],
            histories[0][..shortest],
            "every node holds the same sequence"
        );
    }

    // The killed node comes back from its data dir and catches up.
    cluster.spawn(leader);
    cluster.wait_ready(leader).await;
    let head = cluster
        .cluster_info(survivors[0])
        .await
        .expect("info")
        .head_position;
    cluster.wait_head(leader, head).await;
    let restarted = fingerprint(&cluster.all_events(leader).await);
    assert_eq!(restarted[..head as usize], histories[0][..head as usize]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_down_past_a_snapshot_installs_it() {
    let mut cluster = Cluster::start(&["--snapshot-logs", "50"]).await;
    let (leader, down) = cluster.leader_and_follower().await;
    cluster.kill(down);
    let client = cluster.client(&[leader]);
    for n in 0..300 {
        client
            .append(&one(&format!("s-{}", n % 7), n))
            .await
            .expect("append");
    }
    cluster.spawn(down);
    cluster.wait_ready(down).await;
    cluster.wait_head(down, 300).await;
    let expected = fingerprint(&cluster.all_events(leader).await);
    assert_eq!(fingerprint(&cluster.all_events(down).await), expected);
    let log = std::fs::read_to_string(cluster.node(down).log_path()).expect("node log");
    assert!(
        log.contains("installed snapshot from the leader"),
        "node {down} caught up by snapshot"
    );

    // The restored node keeps serving stream reads from the rebuilt indexes, and takes writes.
    let stream = cluster
        .client(&[down])
        .stream("s-3", 0, 1000)
        .await
        .expect("stream");
    assert_eq!(stream.events.len(), 43);
    assert_eq!(stream.version, 42);
    let resp = cluster
        .client(&[down])
        .append(&one("s-3", 1000))
        .await
        .expect("append after snapshot");
    assert_eq!(resp.events[0].version, 43);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_that_lost_its_data_dir_rejoins_by_snapshot() {
    let mut cluster = Cluster::start(&["--snapshot-logs", "50"]).await;
    let (leader, lost) = cluster.leader_and_follower().await;
    let client = cluster.client(&[leader]);
    for n in 0..100 {
        client.append(&one("before", n)).await.expect("append");
    }
    cluster.wait_head(lost, 100).await;
    cluster.kill(lost);
    let dir = cluster.node(lost).dir.clone();
    std::fs::remove_dir_all(&dir).expect("remove the data dir");
    for n in 100..300 {
        client.append(&one("after", n)).await.expect("append");
    }
    // Back with an empty data dir and the same --peers: it must not start a cluster of its
    // own, but take the leader's snapshot and log.
    cluster.spawn(lost);
    cluster.wait_ready(lost).await;
    cluster.wait_head(lost, 300).await;
    let expected = fingerprint(&cluster.all_events(leader).await);
    assert_eq!(fingerprint(&cluster.all_events(lost).await), expected);
    let log = std::fs::read_to_string(cluster.node(lost).log_path()).expect("node log");
    assert!(
        log.contains("installed snapshot from the leader"),
        "node {lost} caught up by snapshot"
    );
    let info = cluster.cluster_info(lost).await.expect("cluster info");
    assert_eq!(info.members.len(), 3, "one cluster of three: {info:?}");
    client
        .append(&one("after", 300))
        .await
        .expect("append after the rejoin");
    cluster.wait_head(lost, 301).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_cluster_restart_keeps_every_event() {
    let mut cluster = Cluster::start(&[]).await;
    let client = cluster.client(&[1, 2, 3]);
    let batch = AppendRequest {
        events: (0..100).map(|n| event("restart", n)).collect(),
        ..Default::default()
    };
    client.append(&batch).await.expect("append");
    cluster.wait_head(1, 100).await;
    let before = fingerprint(&cluster.all_events(1).await);
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.spawn(id);
    }
    for id in 1..=3 {
        cluster.wait_ready(id).await;
        cluster.wait_head(id, 100).await;
        assert_eq!(
            fingerprint(&cluster.all_events(id).await),
            before,
            "node {id}"
        );
    }
    let resp = client
        .append(&one("restart", 100))
        .await
        .expect("append after restart");
    assert_eq!(resp.events[0].position, 101);
    assert_eq!(resp.events[0].version, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn learner_joins_and_membership_changes() {
    let mut cluster = Cluster::start(&[]).await;
    let client = cluster.client(&[1, 2, 3]);
    client.append(&one("m", 0)).await.expect("append");
    let new = cluster.add_node();
    let addr = cluster.node(new).addr.clone();
    let info: Value = client
        .call(
            reqwest::Method::POST,
            "/v1/cluster/learners",
            Some(&json!({"nodeId": new, "addr": addr})),
        )
        .await
        .expect("add learner");
    assert_eq!(info["learners"][new.to_string()], json!(addr));
    cluster.wait_head(new, 1).await;

    let info: Value = client
        .call(
            reqwest::Method::POST,
            "/v1/cluster/membership",
            Some(&json!({"members": [1, 2, new]})),
        )
        .await
        .expect("change membership");
    let members: Vec<&String> = info["members"]
        .as_object()
        .expect("members")
        .keys()
        .collect();
    assert_eq!(members, vec!["1", "2", &new.to_string()]);
    cluster.kill(3);
    let resp = cluster
        .client(&[1, 2, new])
        .append(&one("m", 1))
        .await
        .expect("append");
    cluster.wait_head(new, resp.events[0].position).await;

    let err = client
        .call::<Value>(
            reqwest::Method::POST,
            "/v1/cluster/membership",
            Some(&json!({"members": []})),
        )
        .await
        .expect_err("empty membership");
    assert_eq!(err.code(), Some("bad_request"));
}

/// Sends a raw request and returns (status, JSON body).
async fn raw(http: &reqwest::Client, req: reqwest::RequestBuilder) -> (u16, Value) {
    let _ = http;
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

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
async fn paused_leader_is_replaced_and_catches_up_when_resumed() {
    let cluster = Cluster::start(&[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers = spawn_writers(cluster.client(&[1, 2, 3]), 4, stop.clone(), acked.clone());
    wait_acked(&acked, 100, "100 acknowledged appends").await;
    let paused = cluster.leader().await;
    cluster.signal(paused, nix::sys::signal::Signal::SIGSTOP);
    let before = acked.lock().expect("lock").len();
    wait_acked(
        &acked,
        before + 100,
        "appends to go on while the leader is paused",
    )
    .await;
    cluster.signal(paused, nix::sys::signal::Signal::SIGCONT);
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let head = acked
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, p)| *p)
        .max()
        .expect("acks");
    let mut histories = Vec::new();
    for id in 1..=3 {
        cluster.wait_head(id, head).await;
        let events = cluster.all_events(id).await;
        assert_dense(&events);
        histories.push(fingerprint(&events[..head as usize]));
    }
    assert!(
        histories.iter().all(|h| *h == histories[0]),
        "the resumed node holds the same history"
    );
    assert_ne!(
        cluster.leader().await,
        paused,
        "a paused leader lost its leadership"
    );
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
