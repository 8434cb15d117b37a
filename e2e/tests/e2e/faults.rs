//! The short version of the fault-injection suite (`scripts/faults` runs the long one): a
//! three-node bus under appends and commands while nodes are killed, paused and cut off the
//! network, then every node's log checked against what the clients were told.

use std::time::Duration;

use e2e::faults::{run, Config};

#[tokio::test]
async fn the_bus_loses_nothing_while_nodes_are_killed_paused_and_cut_off() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config {
        raft_bus_bin: testkit::raft_bus_binary(),
        duration: Duration::from_secs(30),
        appenders: 4,
        senders: 2,
        partitions: true,
        dir: dir.path().to_owned(),
    };
    let summary = run(&config).await.expect("fault run");
    println!("{summary}");
    if !summary.anomalies.is_empty() {
        let kept = dir.keep();
        panic!(
            "anomalies (history and logs in {}):\n{summary}",
            kept.display()
        );
    }
    let faults: usize = summary.faults.values().sum();
    assert!(faults >= 5, "the nemesis did its work: {summary}");
    let acknowledged = summary.appends.get("ok").copied().unwrap_or(0);
    assert!(acknowledged >= 100, "the workload ran: {summary}");
    assert!(
        summary.commands.get("ok").copied().unwrap_or(0) >= 10,
        "{summary}"
    );
}
