//! An API fuzz run of taskpool-core's own OpenAPI document with schemathesis (PyPI, installed by
//! `deploy/scripts/test-tools.sh`): generated requests to every operation, valid and not, as an
//! authenticated user; no answer may be a 5xx and the process must live on.

use testkit::core::mongo_url;
use testkit::{Cluster, Core};

#[tokio::test]
async fn fuzzing_the_task_api_finds_no_server_error() {
    let _shared = e2e::stack::use_shared_parts().await;
    let bus = Cluster::start(&[]).await;
    let database = format!(
        "e2e_fuzz_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let mut core = Core::start_on(&bus, &mongo_url(), &database, &[]).await;
    let schema = format!("{}/api/v1/openapi.json", core.url());
    // An endless event stream is not a request to fuzz.
    testkit::schemathesis(
        &schema,
        &[
            "--exclude-path",
            "/api/v1/tasks/stream",
            "-H",
            "X-User: fuzzer",
            "-H",
            "X-Groups: reviewers",
        ],
    )
    .await;
    assert!(
        core.service.is_running(),
        "taskpool-core survived the fuzzing"
    );
}
