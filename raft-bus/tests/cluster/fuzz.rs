//! An API fuzz run of the bus's own OpenAPI document with schemathesis (PyPI, installed by
//! `deploy/scripts/test-tools.sh`): generated requests, valid and not, with the token (and as a
//! collector of a credentialed cluster); no answer may be a 5xx, and the nodes live on. Left out: the endless event streams, the
//! membership changes (random members would rightly take the cluster down), and commands
//! (with no handler for a random type, 503 `no_handler` is the designed answer).

use crate::harness::{BusCredential, Cluster, TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fuzzing_the_client_api_finds_no_server_error() {
    let cluster = Cluster::start(&[]).await;
    fuzz(&cluster, TOKEN).await;
}

/// The same as a collector of a credentialed cluster: random streams and routing keys are
/// refused (403) by rules that look into bodies and queries; none may end in a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fuzzing_as_a_collector_finds_no_server_error() {
    let collector = BusCredential::collector("collector-billing", "billing");
    let cluster = Cluster::start_with_credentials(std::slice::from_ref(&collector), &[]).await;
    fuzz(&cluster, &collector.secret).await;
}

async fn fuzz(cluster: &Cluster, secret: &str) {
    let schema = format!("{}/v1/openapi.json", cluster.node(2).url());
    let token = format!("Authorization: Bearer {secret}");
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
