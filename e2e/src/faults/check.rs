//! After the faults: every node's whole log, read back and held to the history.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use anyhow::{bail, Result};
use taskpool_api::bus::RecordedEvent;
use taskpool_api::BusClient;
use uuid::Uuid;

use super::workload::{History, Outcome};

/// The events a node holds from position 1 up to `upto`: the head all nodes agreed on. An
/// append still in flight when the clients stopped may land after it; it is unacknowledged, so
/// its absence is allowed, and cutting there compares every node at the same point.
pub async fn read_all(node: &BusClient, upto: u64) -> Result<Vec<RecordedEvent>> {
    let mut out = Vec::new();
    let mut from = 1;
    loop {
        let page = node.events(from, 1000).await?;
        let n = page.events.len();
        out.extend(page.events.into_iter().filter(|e| e.position <= upto));
        if n == 0 || out.len() as u64 >= page.head.min(upto) {
            break;
        }
        from = out.last().map_or(from, |e| e.position + 1);
    }
    Ok(out)
}

/// Waits until every node has applied the same head position, at least `at_least`.
pub async fn converge(nodes: &[BusClient], at_least: u64, within: Duration) -> Result<u64> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut heads = Vec::new();
        for n in nodes {
            heads.push(n.cluster().await.ok().map(|c| c.head_position));
        }
        if let Some(Some(h)) = heads.first() {
            if *h >= at_least && heads.iter().all(|x| *x == Some(*h)) {
                return Ok(*h);
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the nodes did not converge within {within:?}: heads {heads:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The anomalies found: each a sentence; none is the only good result.
pub fn check(logs: &[Vec<RecordedEvent>], history: &History) -> Vec<String> {
    let mut anomalies = Vec::new();
    let first = &logs[0];
    for (i, log) in logs.iter().enumerate().skip(1) {
        let same = log.len() == first.len()
            && log.iter().zip(first).all(|(a, b)| {
                (a.position, &a.stream, a.version, a.id) == (b.position, &b.stream, b.version, b.id)
            });
        if !same {
            anomalies.push(format!(
                "node {} holds a different sequence than node 1 ({} vs {} events)",
                i + 1,
                log.len(),
                first.len()
            ));
        }
    }
    for (i, e) in first.iter().enumerate() {
        if e.position != i as u64 + 1 {
            anomalies.push(format!("position {} where {} was due", e.position, i + 1));
            break;
        }
    }
    let mut at: HashMap<Uuid, u64> = HashMap::new();
    for e in first {
        if at.insert(e.id, e.position).is_some() {
            anomalies.push(format!("event {} is in the log twice", e.id));
        }
    }
    // A stream's versions count from 0, one per event, in log order.
    let mut next: BTreeMap<&str, u64> = BTreeMap::new();
    for e in first {
        let v = next.entry(&e.stream).or_default();
        if e.version != *v {
            anomalies.push(format!(
                "stream {} has version {} at position {} where {} was due",
                e.stream, e.version, e.position, v
            ));
        }
        *v = e.version + 1;
    }
    let ops = history.ops.lock().expect("history");
    let executions = history.executions.lock().expect("executions");
    for op in ops.iter() {
        match (op.kind, &op.outcome) {
            ("append", Outcome::Ok(p)) => match at.get(&op.id) {
                None => anomalies.push(format!(
                    "acknowledged append {} (position {p}) is lost",
                    op.id
                )),
                Some(q) if q != p => anomalies.push(format!(
                    "append {} acknowledged at position {p} is at {q}",
                    op.id
                )),
                Some(_) => {}
            },
            ("append", Outcome::Failed(why)) if at.contains_key(&op.id) => {
                anomalies.push(format!("append {} was refused ({why}) yet written", op.id));
            }
            ("command", Outcome::Ok(_)) if executions.get(&op.id).copied().unwrap_or(0) == 0 => {
                anomalies.push(format!("command {} answered ok but never executed", op.id));
            }
            _ => {}
        }
    }
    let sent: HashSet<Uuid> = ops
        .iter()
        .filter(|o| o.kind == "command")
        .map(|o| o.id)
        .collect();
    for (id, n) in executions.iter() {
        if *n > 1 {
            anomalies.push(format!("command {id} executed {n} times"));
        }
        if !sent.contains(id) {
            anomalies.push(format!("command {id} executed but never sent"));
        }
    }
    anomalies
}
