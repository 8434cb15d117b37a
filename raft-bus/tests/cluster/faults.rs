//! Failures: a leader killed or paused under load, a node down past a snapshot or without its
//! data dir, the whole cluster restarted. No acknowledged append is lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use taskpool_api::bus::AppendRequest;
use uuid::Uuid;

use crate::harness::Cluster;
use crate::{assert_dense, event, fingerprint, one, spawn_writers, wait_acked};

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
