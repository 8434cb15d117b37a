//! An API fuzz run of taskpool-core's own OpenAPI document with schemathesis (PyPI, installed by
//! `deploy/scripts/test-tools.sh`): generated requests to every operation, valid and not, as an
//! authenticated user; no answer may be a 5xx and the process must live on.

use std::process::Command;

use testkit::core::mongo_url;
use testkit::{Cluster, Core};

#[tokio::test]
async fn fuzzing_the_task_api_finds_no_server_error() {
    let bus = Cluster::start(&[]).await;
    let database = format!(
        "e2e_fuzz_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let mut core = Core::start_on(&bus, &mongo_url(), &database, &[]).await;
    let st = std::env::var("SCHEMATHESIS_BIN").unwrap_or_else(|_| "st".into());
    let schema = format!("{}/api/v1/openapi.json", core.url());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&st)
            .args(["run", &schema, "--checks", "not_a_server_error"])
            .args(["--max-examples", "40", "--seed", "7", "--request-timeout", "10"])
            // An endless event stream is not a request to fuzz.
            .args(["--exclude-path", "/api/v1/tasks/stream"])
            .args(["-H", "X-User: fuzzer", "-H", "X-Groups: reviewers"])
            .output()
            .unwrap_or_else(|e| {
                panic!("{st}: {e}; install it with `pip install schemathesis` (deploy/scripts/test-tools.sh does)")
            })
    })
    .await
    .expect("schemathesis");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}"
    );
    assert!(report.contains("passed"), "{report}");
    assert!(
        core.service.is_running(),
        "taskpool-core survived the fuzzing"
    );
}
