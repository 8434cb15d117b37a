//! Bounded sizes: no event the collector writes is larger than `--max-event-bytes`. A task
//! too large leaves its largest variables out of the payload and names them, the same way in
//! hook and poll mode; an identity of 100,000 users (written into the audit engine's own
//! identity tables) goes in parts that each fit and together hold everyone.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use taskpool_api::streams::identity_stream;
use taskpool_api::tasks::IdentitySynced;
use testkit::engine::{audit_database_url, audit_engine_url};

use crate::harness::{
    app_name, data, expect_stream, wait_for, AppBus, Cluster, Collector, Engine, AUDIT_ENGINE,
    HOOK_ADDRESS,
};

const LIMIT: usize = 16 * 1024;

fn json_variable(bytes: usize) -> Value {
    let text =
        serde_json::to_string(&json!({ "text": "Grüße ✓ ".repeat(bytes / 12) })).expect("encode");
    json!({"value": text, "type": "Json"})
}

#[tokio::test]
async fn a_task_too_large_for_one_event_leaves_its_largest_variables_out_in_either_mode() {
    let _hook_address = HOOK_ADDRESS.lock().await;
    let engine = Engine::connect().await;
    let bus = Cluster::start(&[]).await;
    let limit = LIMIT.to_string();
    let flags = ["--max-event-bytes", limit.as_str()];
    let hooked = crate::variables::hook_collector(&engine, &bus, "size-hook", &flags).await;
    let polled = Collector::start(&app_name("size-poll"), &bus, &flags);
    polled.wait_active(Duration::from_secs(30)).await;
    let instance = engine
        .start(
            "simpleUserTask",
            "size-1",
            json!({
                "big": json_variable(40_000),
                "mid": json_variable(8_000),
                "small": {"value": "kept", "type": "String"},
            }),
        )
        .await;
    let task = engine.task_id(&instance).await;
    let mut created = Vec::new();
    for (collector, via) in [(&hooked, "hook"), (&polled, "poll")] {
        let app = AppBus::new(bus.client(&[1, 2, 3]), &collector.app);
        let e = expect_stream(&app, &task, &["TaskCreated"]).await;
        assert!(
            e[0].data.get().len() <= LIMIT,
            "{via}: {} bytes",
            e[0].data.get().len()
        );
        let d = data(&e[0]);
        assert_eq!(d["payloadTruncated"], json!(["big"]), "{via}");
        assert_eq!(d["payload"]["small"], "kept", "{via}");
        assert!(d["payload"]["mid"].is_object(), "{via}");
        assert!(d["payload"].get("big").is_none(), "{via}");
        created.push((d["payload"].clone(), d["payloadTruncated"].clone()));
        let metrics = collector.metrics().await;
        assert!(
            metrics.contains("collector_payloads_truncated_total"),
            "{via}: {metrics}"
        );
    }
    assert_eq!(created[0], created[1], "hook and poll give the same task");

    // Once the large variable is small again, it is back and nothing is left out.
    let path = format!("/process-instance/{instance}/variables/big");
    engine
        .ok(
            Method::PUT,
            &path,
            Some(json!({"value": 7, "type": "Integer"})),
        )
        .await;
    for collector in [&hooked, &polled] {
        let app = AppBus::new(bus.client(&[1, 2, 3]), &collector.app);
        let e = expect_stream(&app, &task, &["TaskCreated", "TaskUpdated"]).await;
        let d = data(&e[1]);
        assert_eq!(d["payload"]["big"], 7);
        assert_eq!(d["payloadTruncated"], json!([]));
    }
    engine.delete_instance(&instance).await;
}

/// Fills the audit engine's identity tables with `users` users in 20 groups, as its own
/// identity service would store them (ids `load-…`), after removing an earlier run's.
async fn fill_identity(db: &sqlx::PgPool, users: i32) {
    clear_identity(db).await;
    let statements = [
        "INSERT INTO act_id_group (id_, rev_, name_, type_) \
         SELECT 'load-g' || lpad(g::text, 2, '0'), 1, 'Load group ' || g, 'WORKFLOW' \
         FROM generate_series(0, 19) g",
        "INSERT INTO act_id_user (id_, rev_, first_, last_, email_) \
         SELECT 'load-' || lpad(n::text, 6, '0'), 1, 'Load', 'User ' || n, \
                'load-' || n || '@example.com' \
         FROM generate_series(0, $1 - 1) n",
        "INSERT INTO act_id_membership (user_id_, group_id_) \
         SELECT 'load-' || lpad(n::text, 6, '0'), 'load-g' || lpad((n % 20)::text, 2, '0') \
         FROM generate_series(0, $1 - 1) n",
    ];
    for sql in statements {
        let query = sqlx::query(sql);
        let query = if sql.contains("$1") {
            query.bind(users)
        } else {
            query
        };
        query.execute(db).await.expect(sql);
    }
}

async fn clear_identity(db: &sqlx::PgPool) {
    for sql in [
        "DELETE FROM act_id_membership WHERE user_id_ LIKE 'load-%'",
        "DELETE FROM act_id_user WHERE id_ LIKE 'load-%'",
        "DELETE FROM act_id_group WHERE id_ LIKE 'load-%'",
    ] {
        sqlx::query(sql).execute(db).await.expect(sql);
    }
}

#[tokio::test]
async fn an_identity_of_100000_users_goes_in_parts_that_each_fit() {
    const USERS: i32 = 100_000;
    let _audit = AUDIT_ENGINE.lock().await;
    // Reachable first, so that a missing engine fails with how to start it.
    Engine::connect_to(&audit_engine_url()).await;
    let db = sqlx::PgPool::connect(&audit_database_url())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the audit engine's database ({}): {e}",
                audit_database_url()
            )
        });
    fill_identity(&db, USERS).await;
    let bus = Cluster::start(&[]).await;
    // Hook mode: the audit engine's history is too low for poll mode; identity is the same.
    let collector = crate::engine_checks::audit_hook_collector(&bus, "identity-load");
    let client = bus.client(&[1, 2, 3]);
    let stream = identity_stream(&collector.app);
    let events = wait_for(
        "every part of the identity on the bus",
        Duration::from_secs(300),
        || async {
            let page = client.stream(&stream, 0, 1000).await.ok()?;
            let last: IdentitySynced = serde_json::from_str(page.events.last()?.data.get()).ok()?;
            let part = last.part?;
            (part.index + 1 == part.count && page.events.len() as u32 >= part.count)
                .then_some(page.events)
        },
    )
    .await;
    clear_identity(&db).await;
    let mut held: Option<IdentitySynced> = None;
    for e in &events {
        let bytes = e.data.get().len();
        assert!(bytes <= 1 << 20, "an identity event of {bytes} bytes");
        let part: IdentitySynced = serde_json::from_str(e.data.get()).expect("an identity");
        held = Some(part.applied_to(held.as_ref()));
    }
    let held = held.expect("an identity");
    let loaded: Vec<_> = held
        .users
        .iter()
        .filter(|u| u.id.starts_with("load-"))
        .collect();
    assert_eq!(loaded.len(), USERS as usize);
    let u = held
        .users
        .iter()
        .find(|u| u.id == "load-000042")
        .expect("user 42");
    assert_eq!(u.groups, ["load-g02"]);
    assert!(events.len() >= 5, "{} parts", events.len());
    let metrics = collector.metrics().await;
    assert!(
        metrics.contains(&format!("collector_identity_parts {}", events.len())),
        "{metrics}"
    );
}
