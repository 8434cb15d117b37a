//! The behaviour every [`Dedupe`] store must have, as one suite each implementation runs:
//! [`MemoryDedupe`](crate::handler::MemoryDedupe) in this crate's tests, the collector's
//! Postgres store in its integration tests. A store that passes executes each command once
//! however often, and by however many handlers, it is delivered.
//!
//! Every case claims fresh random ids, so the suite may run on a store that holds other rows.

use std::sync::Arc;

use uuid::Uuid;

use crate::commands::CommandResult;
use crate::handler::{Claim, Dedupe};

/// Concurrent claims of one id in [`concurrent_claims_of_one_id_run_once`].
pub const CONCURRENT_CLAIMS: usize = 32;

/// Runs every case against `store`.
pub async fn run<D: Dedupe>(store: Arc<D>) {
    the_first_claim_runs(&store).await;
    a_claim_while_running_is_busy(&store).await;
    after_finish_it_is_done_with_the_same_answer(&store).await;
    concurrent_claims_of_one_id_run_once(&store).await;
    distinct_ids_are_independent(&store).await;
}

/// An answer that tells its command apart.
pub fn answer(id: Uuid) -> CommandResult {
    CommandResult::success(
        "suite-handler",
        serde_json::json!({ "command": id.to_string() }),
    )
}

pub async fn the_first_claim_runs<D: Dedupe>(store: &Arc<D>) {
    assert_eq!(store.claim(Uuid::new_v4()).await, Claim::Run);
}

pub async fn a_claim_while_running_is_busy<D: Dedupe>(store: &Arc<D>) {
    let id = Uuid::new_v4();
    assert_eq!(store.claim(id).await, Claim::Run);
    assert_eq!(store.claim(id).await, Claim::Busy, "a second claim");
    assert_eq!(store.claim(id).await, Claim::Busy, "a third claim");
}

pub async fn after_finish_it_is_done_with_the_same_answer<D: Dedupe>(store: &Arc<D>) {
    let id = Uuid::new_v4();
    assert_eq!(store.claim(id).await, Claim::Run);
    store.finish(id, &answer(id)).await;
    assert_eq!(store.claim(id).await, Claim::Done(answer(id)));
    assert_eq!(store.claim(id).await, Claim::Done(answer(id)), "again");
    let failed = CommandResult::failure("suite-handler", 409, "conflict", "taken");
    let other = Uuid::new_v4();
    assert_eq!(store.claim(other).await, Claim::Run);
    store.finish(other, &failed).await;
    assert_eq!(store.claim(other).await, Claim::Done(failed), "a failure");
}

/// Handlers sharing a store claim one command at once (one spawned task each): exactly one
/// runs it, every other is told it is busy.
pub async fn concurrent_claims_of_one_id_run_once<D: Dedupe>(store: &Arc<D>) {
    let id = Uuid::new_v4();
    let claims: Vec<_> = (0..CONCURRENT_CLAIMS)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.claim(id).await })
        })
        .collect();
    let mut runs = 0;
    for claim in claims {
        match claim.await.expect("claim task") {
            Claim::Run => runs += 1,
            Claim::Busy => {}
            Claim::Done(a) => panic!("nothing finished {id}, yet a claim found {a:?}"),
        }
    }
    assert_eq!(runs, 1, "claims of {id} that run");
}

pub async fn distinct_ids_are_independent<D: Dedupe>(store: &Arc<D>) {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(store.claim(a).await, Claim::Run);
    assert_eq!(
        store.claim(b).await,
        Claim::Run,
        "another id while one runs"
    );
    store.finish(a, &answer(a)).await;
    assert_eq!(
        store.claim(b).await,
        Claim::Busy,
        "finishing one leaves the other"
    );
    store.finish(b, &answer(b)).await;
    assert_eq!(store.claim(a).await, Claim::Done(answer(a)));
    assert_eq!(store.claim(b).await, Claim::Done(answer(b)));
}
