//! `--credentials`: one secret per bus client and the rights of its role, on real three-node
//! clusters, through the leader and through followers; rotation without restart.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};
use taskpool_api::bus::{AppendRequest, NewEvent};
use taskpool_api::commands::{CommandMessage, CommandRequest};
use uuid::Uuid;

use crate::harness::credentials::PEER_CLIENT;
use crate::harness::{wait_for, BusCredential, Cluster};

pub(crate) const BILLING: &str = "collector-billing";
pub(crate) const LOCAL: &str = "collector-local";
pub(crate) const CORE: &str = "core";
pub(crate) const ADMIN: &str = "ops";
pub(crate) const WHO_BILLING: &str = "client collector-billing (collector of application billing)";
pub(crate) const WAIT: Duration = Duration::from_secs(20);

pub(crate) fn clients() -> Vec<BusCredential> {
    vec![
        BusCredential::collector(BILLING, "billing"),
        BusCredential::collector(LOCAL, "local").with_data_entry_types(&["invoice"]),
        BusCredential::core(CORE),
        BusCredential::admin(ADMIN),
    ]
}

/// A request to node `id` with `secret` (and a JSON body): its status and JSON answer.
pub(crate) async fn call(
    cluster: &Cluster,
    id: u64,
    method: Method,
    path: &str,
    secret: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let url = format!("{}{path}", cluster.node(id).url());
    let mut req = cluster
        .http()
        .request(method, &url)
        .timeout(Duration::from_secs(30));
    if let Some(secret) = secret {
        req = req.bearer_auth(secret);
    }
    if let Some(body) = body {
        req = req.json(body);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[track_caller]
pub(crate) fn assert_forbidden(answer: &(u16, Value), message: &str) {
    assert_eq!(answer.0, 403, "{answer:?}");
    assert_eq!(answer.1["error"]["code"], "forbidden", "{answer:?}");
    let got = answer.1["error"]["message"].as_str().unwrap_or_default();
    assert!(got.contains(message), "`{got}` does not say `{message}`");
}

pub(crate) fn append_of(streams: &[&str], expected: &[&str]) -> Value {
    let request = AppendRequest {
        events: streams
            .iter()
            .map(|s| NewEvent::new(*s, "TestEvent", &json!({})).expect("event"))
            .collect(),
        expected_versions: expected.iter().map(|s| (s.to_string(), -1)).collect(),
    };
    serde_json::to_value(request).expect("json")
}

pub(crate) fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_role_may_call_its_routes_only() {
    let cluster = Cluster::start_with_credentials(&clients(), &[]).await;
    let (leader, follower) = cluster.leader_and_follower().await;
    // Bodies and queries the handlers refuse (400 and the like) once the role may call them:
    // nothing is changed, nothing streams forever.
    let routes: [(Method, &str, &[&str]); 13] = [
        (Method::POST, "/v1/append", &["collector"]),
        (
            Method::GET,
            "/v1/events?from=0",
            &["collector", "core", "admin"],
        ),
        (
            Method::GET,
            "/v1/streams/s?limit=0",
            &["collector", "core", "admin"],
        ),
        (
            Method::GET,
            "/v1/subscribe?from=0",
            &["collector", "core", "admin"],
        ),
        (Method::GET, "/v1/cluster", &["collector", "core", "admin"]),
        (Method::POST, "/v1/commands", &["core"]),
        (
            Method::GET,
            "/v1/handlers/subscribe?handlerId=&types=T&routingKeys=billing",
            &["collector"],
        ),
        (Method::POST, "/v1/commands/x/result", &["collector"]),
        (Method::POST, "/v1/cluster/learners", &["admin"]),
        (Method::POST, "/v1/cluster/membership", &["admin"]),
        (Method::POST, "/raft/vote", &["peer"]),
        (Method::POST, "/raft/propose", &["peer"]),
        (Method::POST, "/raft/stream", &["peer"]),
    ];
    let callers = [
        (BILLING, "collector", WHO_BILLING),
        (CORE, "core", "client core (core)"),
        (ADMIN, "admin", "client ops (admin)"),
        (PEER_CLIENT, "peer", "client testkit-peer (peer)"),
    ];
    for node in [follower, leader] {
        for (method, path, roles) in &routes {
            for (name, role, who) in callers {
                let secret = cluster.secret(name);
                let answer = call(
                    &cluster,
                    node,
                    method.clone(),
                    path,
                    Some(&secret),
                    Some(&json!({})),
                )
                .await;
                if roles.contains(&role) {
                    assert!(
                        ![401, 403].contains(&answer.0),
                        "{role} on {path}: {answer:?}"
                    );
                } else {
                    assert_forbidden(&answer, &format!("{who} may not"));
                }
            }
            // A wrong or missing secret is 401 everywhere, and so is a forged forward marker.
            for secret in [Some("nope"), None] {
                let answer = call(&cluster, node, method.clone(), path, secret, None).await;
                assert_eq!(answer.0, 401, "{path}: {answer:?}");
                assert_eq!(answer.1["error"]["code"], "unauthorized");
            }
            let url = format!("{}{path}", cluster.node(node).url());
            let forged = cluster
                .http()
                .request(method.clone(), &url)
                .bearer_auth(cluster.secret(ADMIN))
                .header("x-raft-bus-forwarded", "1")
                .send()
                .await
                .expect("forged forward");
            assert_eq!(forged.status().as_u16(), 401, "{path}");
        }
    }
    // The admin changes the membership (to what it is, through a follower: forwarded).
    let info = call(
        &cluster,
        follower,
        Method::POST,
        "/v1/cluster/membership",
        Some(&cluster.secret(ADMIN)),
        Some(&json!({"members": [1, 2, 3]})),
    )
    .await;
    assert_eq!(info.0, 200, "{info:?}");
    assert_eq!(info.1["members"].as_object().map(|m| m.len()), Some(3));
    for name in [BILLING, CORE, PEER_CLIENT] {
        let answer = call(
            &cluster,
            follower,
            Method::POST,
            "/v1/cluster/membership",
            Some(&cluster.secret(name)),
            Some(&json!({"members": [1, 2]})),
        )
        .await;
        assert_forbidden(&answer, "may not change the cluster membership");
    }
    let text = testkit::get_text(&format!("{}/metrics", cluster.node(leader).url())).await;
    for role in ["collector", "core", "admin", "peer"] {
        let refused = metric(
            &text,
            &format!("raftbus_forbidden_total{{role=\"{role}\"}}"),
        );
        assert!(refused.is_some_and(|n| n > 0.0), "{role}: {refused:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_collector_appends_to_its_own_application_only() {
    let cluster = Cluster::start_with_credentials(&clients(), &[]).await;
    let (leader, follower) = cluster.leader_and_follower().await;
    let (billing, local, core) = (
        cluster.secret(BILLING),
        cluster.secret(LOCAL),
        cluster.secret(CORE),
    );
    let may_not = format!("{WHO_BILLING} may not append to stream");
    for (n, node) in [leader, follower].into_iter().enumerate() {
        let own = format!("task/billing/{n}");
        let append = |body: Value, secret: String| {
            let cluster = &cluster;
            async move {
                call(
                    cluster,
                    node,
                    Method::POST,
                    "/v1/append",
                    Some(&secret),
                    Some(&body),
                )
                .await
            }
        };
        let ok = append(
            append_of(&[&own, "identity/billing"], &[&own]),
            billing.clone(),
        )
        .await;
        assert_eq!(ok.0, 200, "{ok:?}");
        let refused = [
            (
                append_of(&["task/local/1"], &[]),
                format!("{may_not} task/local/1: it belongs to application local"),
            ),
            (
                append_of(&["task-1"], &[]),
                format!("{may_not} task-1: it belongs to no application"),
            ),
            (
                append_of(&["task/billing/mixed", "task/local/1"], &[]),
                format!("{may_not} task/local/1"),
            ),
            (
                append_of(&["task/billing/mixed"], &["task/local/1"]),
                format!("{may_not} task/local/1 (named in expectedVersions)"),
            ),
            (
                append_of(&["data-entry/invoice/1"], &[]),
                format!("{may_not} data-entry/invoice/1: data-entry type invoice is not granted"),
            ),
        ];
        for (body, message) in refused {
            assert_forbidden(&append(body, billing.clone()).await, &message);
        }
        let entry = format!("data-entry/invoice/{n}");
        let granted = append(append_of(&[&entry], &[]), local.clone()).await;
        assert_eq!(granted.0, 200, "{granted:?}");
        assert_forbidden(
            &append(append_of(&[&own], &[]), core.clone()).await,
            "client core (core) may not append events",
        );
    }
    // Only what was accepted is there, on every node: nothing of a refused batch.
    let accepted: BTreeSet<&str> = [
        "task/billing/0",
        "task/billing/1",
        "identity/billing",
        "data-entry/invoice/0",
        "data-entry/invoice/1",
    ]
    .into();
    for id in 1..=3 {
        cluster.wait_head(id, 6).await;
        let events = cluster.all_events(id).await;
        assert_eq!(events.len(), 6, "node {id}");
        let streams: BTreeSet<&str> = events.iter().map(|e| e.stream.as_str()).collect();
        assert_eq!(streams, accepted, "node {id}");
    }
    // Each node counted the refusals it decided, once.
    for node in [leader, follower] {
        let text = testkit::get_text(&format!("{}/metrics", cluster.node(node).url())).await;
        assert_eq!(
            metric(&text, "raftbus_forbidden_total{role=\"collector\"}"),
            Some(5.0),
            "node {node}"
        );
        assert_eq!(
            metric(&text, "raftbus_forbidden_total{role=\"core\"}"),
            Some(1.0),
            "node {node}"
        );
    }
}

/// The next `data:` of an SSE body, skipping heartbeats.
async fn next_data(
    body: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buf: &mut String,
) -> String {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let message: String = buf.drain(..end + 2).collect();
            if let Some(data) = message.lines().find_map(|l| l.strip_prefix("data:")) {
                return data.trim().to_owned();
            }
            continue;
        }
        let chunk = tokio::time::timeout(WAIT, body.next())
            .await
            .expect("an SSE message in time")
            .expect("the stream goes on")
            .expect("SSE bytes");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

async fn wait_handler(cluster: &Cluster, node: u64, key: &str) {
    let url = format!("{}/metrics", cluster.node(node).url());
    let line = format!("raftbus_command_handlers{{routing_key=\"{key}\"}} 1");
    wait_for(&format!("a handler of {key}"), WAIT, || {
        let (url, line) = (url.clone(), line.clone());
        async move {
            testkit::get_text(&url)
                .await
                .lines()
                .any(|l| l == line)
                .then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_go_only_to_handlers_of_their_routing_key() {
    let cluster = Cluster::start_with_credentials(&clients(), &[]).await;
    let (leader, follower) = cluster.leader_and_follower().await;
    let billing = cluster.secret(BILLING);
    for node in [follower, leader] {
        for keys in ["local", "billing,local"] {
            let path =
                format!("/v1/handlers/subscribe?handlerId=h&types=ClaimTask&routingKeys={keys}");
            let answer = call(&cluster, node, Method::GET, &path, Some(&billing), None).await;
            assert_forbidden(
                &answer,
                &format!("{WHO_BILLING} may not handle commands of routing key local"),
            );
        }
    }

    // local's handler connects through a follower; core sends through the leader.
    let handler = cluster
        .http()
        .get(format!(
            "{}/v1/handlers/subscribe?handlerId=h-local&types=ClaimTask&routingKeys=local",
            cluster.node(follower).url()
        ))
        .bearer_auth(cluster.secret(LOCAL))
        .send()
        .await
        .expect("handler stream");
    assert_eq!(handler.status().as_u16(), 200);
    let mut body = handler.bytes_stream();
    wait_handler(&cluster, leader, "local").await;
    let command = CommandRequest {
        id: Uuid::new_v4(),
        command_type: "ClaimTask".into(),
        routing_key: "local".into(),
        payload: json!({"taskId": "t-1"}),
        timeout_ms: Some(20_000),
        traceparent: None,
    };
    let sender = cluster.client_as(CORE, &[leader]);
    let sent = tokio::spawn({
        let command = command.clone();
        async move { sender.send_command(&command).await }
    });
    let mut buf = String::new();
    let message: CommandMessage =
        serde_json::from_str(&next_data(&mut body, &mut buf).await).expect("command");
    assert_eq!(message.id, command.id);

    // billing may not answer it, whichever node it asks: the leader knows its routing key.
    let path = format!("/v1/commands/{}/result", command.id);
    let answer = json!({"ok": true, "handlerId": "h-local", "result": {"by": "billing"}});
    for node in [follower, leader] {
        let refused = call(
            &cluster,
            node,
            Method::POST,
            &path,
            Some(&billing),
            Some(&answer),
        )
        .await;
        assert_forbidden(
            &refused,
            &format!(
                "{WHO_BILLING} may not answer command {}: its routing key is local",
                command.id
            ),
        );
    }
    let local_answer = json!({"ok": true, "handlerId": "h-local", "result": {"by": "local"}});
    let taken = call(
        &cluster,
        follower,
        Method::POST,
        &path,
        Some(&cluster.secret(LOCAL)),
        Some(&local_answer),
    )
    .await;
    assert_eq!(taken.0, 204, "{taken:?}");
    let response = sent.await.expect("sender").expect("the command's result");
    assert_eq!(response.result, json!({"by": "local"}));

    // core reads and subscribes, through a follower too.
    let reader = cluster.client_as(CORE, &[follower]);
    cluster
        .client_as(LOCAL, &[leader])
        .append(&serde_json::from_value(append_of(&["task/local/1"], &[])).expect("request"))
        .await
        .expect("local appends its own");
    // A follower applies what the leader committed a moment later: wait for it, with a deadline.
    wait_for("the follower to read task/local/1", WAIT, || async {
        let version = reader
            .stream("task/local/1", 0, 10)
            .await
            .expect("read stream")
            .version;
        (version == 0).then_some(())
    })
    .await;
    let first = tokio::time::timeout(WAIT, reader.subscribe(1).next())
        .await
        .expect("in time");
    assert_eq!(
        first.expect("an event").expect("event").stream,
        "task/local/1"
    );
}
