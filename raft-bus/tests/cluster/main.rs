//! Cluster tests: three real `raft-bus` processes on loopback per test.

mod bad_input;
mod commands;
mod credentials;
mod credentials_reload;
mod events;
mod faults;
mod fuzz;
mod harness;
mod limits;
mod membership;
mod tokens;
mod trace_context;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::wait_for;
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

/// Sends a raw request and returns (status, JSON body).
async fn raw(http: &reqwest::Client, req: reqwest::RequestBuilder) -> (u16, Value) {
    let _ = http;
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}
