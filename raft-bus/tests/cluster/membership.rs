//! Cluster admin: a learner joins, membership changes, a bad membership is refused.

use serde_json::{json, Value};

use crate::harness::Cluster;
use crate::one;

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
