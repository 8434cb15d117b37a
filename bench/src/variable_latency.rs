//! Variable change → payload on the bus: a process variable set through the engine's REST
//! API, one change at a time, until the task's `TaskUpdated` carrying the new value is
//! accepted by the bus. A variable change leaves the task's timestamp alone, so the clock
//! starts when the engine answered the change (it has committed), on this machine's clock,
//! and stops at the bus's acceptance timestamp.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Result};
use serde_json::{json, Value};
use taskpool_api::BusClient;

use crate::collector::Engine;

/// Sets `amount` on each instance in turn and measures each change's arrival (ms, sorted).
pub(crate) async fn variable_latencies(
    engine: &Engine,
    bus: &BusClient,
    app: &str,
    instances: &[String],
) -> Result<Vec<f64>> {
    let mut found = Vec::with_capacity(instances.len());
    for (i, instance) in instances.iter().enumerate() {
        let amount = 1_000_000 + i as i64;
        let mut from = bus.cluster().await?.head_position + 1;
        let path = format!("/process-instance/{instance}/variables/amount");
        let value = json!({"value": amount, "type": "Long"});
        engine
            .call(reqwest::Method::PUT, &path, Some(value))
            .await?;
        let committed = SystemTime::now();
        let deadline = Instant::now() + Duration::from_secs(60);
        'wait: loop {
            if Instant::now() > deadline {
                bail!("the change of instance {instance} did not reach the bus within a minute");
            }
            let page = bus.events(from, 1000).await?;
            if page.events.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            for e in &page.events {
                from = e.position + 1;
                let data: Value = serde_json::from_str(e.data.get()).unwrap_or_default();
                let ours = e.event_type == "TaskUpdated"
                    && data["source"]["application"] == app
                    && data["source"]["processInstanceId"] == instance.as_str()
                    && data["payload"]["amount"] == amount;
                if !ours {
                    continue;
                }
                let accepted = humantime::parse_rfc3339(&e.timestamp)?;
                let ms = accepted.duration_since(committed).unwrap_or_default();
                found.push(ms.as_secs_f64() * 1000.0);
                break 'wait;
            }
        }
    }
    found.sort_by(f64::total_cmp);
    Ok(found)
}
