//! The active collector lost without dying: paused (SIGSTOP), or its host cut off the network
//! (every connection it has — to PostgreSQL, the bus nodes and the engine — goes through a
//! relay that stops passing bytes but keeps the connections open, as a pulled cable does).
//! Either way its PostgreSQL session stays, so only the lease's expiry frees the application:
//! the standby takes over within 15 s, the former one stops acting, and no change is lost or
//! doubled. The fence is shown on its own: a former holder's append after a takeover is
//! refused by the real bus, and a former holder cannot record itself after its successor.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use serde_json::json;
use taskpool_api::lease::CollectorLeaseTaken;
use taskpool_api::streams::collector_lease_stream;
use testkit::relay::Link;

use crate::harness::{
    app_name, engine_url, expect_stream, wait_for, AppBus, Cluster, Collector, Engine,
};

const TAKEOVER_GOAL: Duration = Duration::from_secs(15);

/// The lease's holders as the bus recorded them, in order.
async fn lease_takers(cluster: &Cluster, app: &str) -> Vec<CollectorLeaseTaken> {
    let page = cluster
        .client(&[1, 2, 3])
        .stream(&collector_lease_stream(app), 0, 100)
        .await
        .expect("lease stream");
    page.events
        .iter()
        .map(|e| serde_json::from_str(e.data.get()).expect("a lease event"))
        .collect()
}

async fn wait_inactive(collector: &Collector, within: Duration) {
    wait_for("the former collector to step down", within, || async {
        (!collector.is_active().await).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_paused_active_collector_is_replaced_within_its_lease_and_steps_down_when_it_wakes() {
    let engine = Engine::connect().await;
    let cluster = Cluster::start(&[]).await;
    let app = app_name("paused");
    let bus = AppBus::new(cluster.client(&[1, 2, 3]), &app);
    let first = Collector::start(&app, &cluster, &[]);
    first.wait_active(Duration::from_secs(30)).await;
    let second = Collector::start(&app, &cluster, &[]);
    let one = engine.start("simpleUserTask", "paused-1", json!({})).await;
    let task = engine.task_id(&one).await;
    expect_stream(&bus, &task, &["TaskCreated"]).await;
    assert!(!second.is_active().await);

    let pid = first.pid().expect("running");
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
    let paused_at = Instant::now();
    engine.claim(&task, "demo").await;
    let two = engine.start("simpleUserTask", "paused-2", json!({})).await;
    let later = engine.task_id(&two).await;
    second.wait_active(Duration::from_secs(30)).await;
    let takeover = paused_at.elapsed();
    kill(pid, Signal::SIGCONT).expect("SIGCONT");
    assert!(takeover < TAKEOVER_GOAL, "takeover took {takeover:?}");
    expect_stream(&bus, &task, &["TaskCreated", "TaskAssigned"]).await;
    expect_stream(&bus, &later, &["TaskCreated"]).await;
    wait_inactive(&first, Duration::from_secs(15)).await;

    engine.delete_instance(&one).await;
    engine.delete_instance(&two).await;
    expect_stream(&bus, &task, &["TaskCreated", "TaskAssigned", "TaskDeleted"]).await;
    expect_stream(&bus, &later, &["TaskCreated", "TaskDeleted"]).await;
    let takers = lease_takers(&cluster, &app).await;
    assert_eq!(takers.len(), 2, "{takers:?}");
    assert!(takers[1].token > takers[0].token && takers[0].holder != takers[1].holder);
}

#[tokio::test]
async fn an_active_collector_cut_off_the_network_is_replaced_and_stops_acting_on_its_own() {
    let engine = Engine::connect().await;
    let cluster = Cluster::start(&[]).await;
    let app = app_name("cut-off");
    let bus = AppBus::new(cluster.client(&[1, 2, 3]), &app);
    let link = Link::new();
    let mut nodes = Vec::new();
    for url in cluster.urls() {
        nodes.push(link.relayed(&url).await);
    }
    let (nodes, database, engine_at) = (
        nodes.join(","),
        link.relayed(&testkit::collector::database_url()).await,
        link.relayed(&engine_url()).await,
    );
    let first = Collector::start(
        &app,
        &cluster,
        &[
            "--bus",
            &nodes,
            "--database-url",
            &database,
            "--engine-url",
            &engine_at,
        ],
    );
    first.wait_active(Duration::from_secs(30)).await;
    let second = Collector::start(&app, &cluster, &[]);
    let one = engine.start("simpleUserTask", "cut-1", json!({})).await;
    let task = engine.task_id(&one).await;
    expect_stream(&bus, &task, &["TaskCreated"]).await;

    link.hold();
    let cut_at = Instant::now();
    engine.claim(&task, "demo").await;
    second.wait_active(Duration::from_secs(30)).await;
    let takeover = cut_at.elapsed();
    assert!(takeover < TAKEOVER_GOAL, "takeover took {takeover:?}");
    expect_stream(&bus, &task, &["TaskCreated", "TaskAssigned"]).await;
    // Cut off, the former one stopped acting on its own (it could not renew).
    wait_for(
        "the cut-off collector to stop acting",
        Duration::from_secs(15),
        || async { first.log().contains("stepping down").then_some(()) },
    )
    .await;

    // Back on the network: it stays on standby (what it still had in flight meets the fence).
    link.restore();
    wait_inactive(&first, Duration::from_secs(15)).await;
    engine.delete_instance(&one).await;
    expect_stream(&bus, &task, &["TaskCreated", "TaskAssigned", "TaskDeleted"]).await;
    let takers = lease_takers(&cluster, &app).await;
    assert_eq!(takers.len(), 2, "{takers:?}");
    assert!(takers[1].token > takers[0].token);
}

#[tokio::test]
async fn a_former_holders_writes_are_refused_by_the_bus_once_another_took_the_lease() {
    use camunda_collector::lease::{Fence, FenceError, Lease};
    use taskpool_api::bus::{AppendRequest, NewEvent, NO_STREAM};

    let cluster = Cluster::start(&[]).await;
    let bus = cluster.client(&[1, 2, 3]);
    let app = app_name("fence");
    let url = testkit::collector::database_url();
    camunda_collector::store::Store::connect(&url, &app)
        .await
        .expect("the collector's database (COLLECTOR_TEST_DATABASE_URL)");
    let ttl = Duration::from_secs(1);
    let former = Lease::try_acquire(&url, &app, "former", ttl)
        .await
        .expect("lease")
        .expect("a free lease");
    let former_fence = Fence::default();
    former_fence
        .raise(&bus, &app, &former)
        .await
        .expect("fence");
    assert!(
        Lease::try_acquire(&url, &app, "successor", ttl)
            .await
            .expect("lease")
            .is_none(),
        "a held, live lease is not taken"
    );
    // The former holder stops renewing (as if paused): its lease expires.
    let successor = wait_for("the lease to expire", Duration::from_secs(10), || async {
        Lease::try_acquire(&url, &app, "successor", ttl)
            .await
            .ok()
            .flatten()
    })
    .await;
    assert!(successor.token > former.token);
    let successor_fence = Fence::default();
    successor_fence
        .raise(&bus, &app, &successor)
        .await
        .expect("fence");

    let append = |fence: &Fence, stream: &str| {
        let mut request = AppendRequest {
            events: vec![
                NewEvent::new(stream, "TaskCreated", &json!({"taskId": "t"})).expect("event"),
            ],
            expected_versions: [(stream.to_owned(), NO_STREAM)].into(),
        };
        assert!(fence.guard(&mut request));
        request
    };
    let stream = format!("task/{app}/fenced");
    let refused = bus
        .append(&append(&former_fence, &stream))
        .await
        .expect_err("the former holder's append is refused");
    assert!(former_fence.refused(&refused), "{refused}");
    assert!(former_fence.fenced_out());
    bus.append(&append(&successor_fence, &stream))
        .await
        .expect("the successor's append goes through");
    // Nor can the former holder record itself again after its successor.
    assert!(matches!(
        former_fence.raise(&bus, &app, &former).await,
        Err(FenceError::Superseded(t)) if t == successor.token
    ));
    former.release().await;
    successor.release().await;
}
