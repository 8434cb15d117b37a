//! An API fuzz run of the bus's own OpenAPI document with schemathesis (PyPI, installed by
//! `deploy/scripts/test-tools.sh`): generated requests, valid and not, with the token; no
//! answer may be a 5xx, and the nodes live on. Left out: the endless event streams, the
//! membership changes (random members would rightly take the cluster down), and commands
//! (with no handler for a random type, 503 `no_handler` is the designed answer).

use crate::harness::{Cluster, TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fuzzing_the_client_api_finds_no_server_error() {
    let cluster = Cluster::start(&[]).await;
    let schema = format!("{}/v1/openapi.json", cluster.node(2).url());
    let token = format!("Authorization: Bearer {TOKEN}");
    testkit::schemathesis(
        &schema,
        &[
            "--exclude-path",
            "/v1/subscribe",
            "--exclude-path",
            "/v1/handlers/subscribe",
            "--exclude-path",
            "/v1/cluster/membership",
            "--exclude-path",
            "/v1/cluster/learners",
            "--exclude-path",
            "/v1/commands",
            "-H",
            &token,
        ],
    )
    .await;
    for id in 1..=3 {
        assert!(
            cluster.cluster_info(id).await.is_some(),
            "node {id} survived the fuzzing"
        );
    }
    cluster.leader().await;
}
