//! The collector's command `Dedupe` store in PostgreSQL passes the suite every store passes.

use std::sync::Arc;

use camunda_collector::store::{CommandRuns, Store};

use crate::harness::app_name;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_postgres_dedupe_store_passes_the_suite() {
    let url = testkit::collector::database_url();
    let store = Store::connect(&url, &app_name("dedupe"))
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL at COLLECTOR_TEST_DATABASE_URL ({url}): {e}; start it with deploy/scripts/postgres.sh start")
        });
    taskpool_api::dedupe_suite::run(Arc::new(CommandRuns(store))).await;
}
