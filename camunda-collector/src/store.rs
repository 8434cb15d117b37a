//! The collector's durable state in PostgreSQL (schema `taskpool_collector`, migrations in
//! `migrations/`); the lease that makes one collector per application active is `lease.rs`.

use std::time::Duration;

use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool, Row};
use taskpool_api::handler::{Answer, Claim, Dedupe};
use taskpool_api::tasks::Task;
use uuid::Uuid;

pub const SCHEMA: &str = "taskpool_collector";

/// A running command whose collector died is taken over after this long.
const STALE_CLAIM_SECS: i64 = 60;

/// What the collector last emitted for one task.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub version: u64,
    pub position: u64,
    pub changed_at: String,
    pub finished: bool,
    pub task: Task,
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    app: String,
}

impl Store {
    /// Connects, creates the schema and runs the migrations (safe from two collectors at once:
    /// sqlx serialises migrations with an advisory lock).
    pub async fn connect(url: &str, app: &str) -> anyhow::Result<Store> {
        let options: PgConnectOptions = url.parse()?;
        let mut conn = PgConnection::connect_with(&options).await?;
        // Two collectors starting together may race on CREATE SCHEMA; the loser sees it exist.
        if let Err(e) = conn
            .execute(format!("CREATE SCHEMA IF NOT EXISTS {SCHEMA}").as_str())
            .await
        {
            tracing::debug!(error = %e, "create schema raced; checking it exists");
        }
        conn.close().await?;
        let options = options.options([("search_path", SCHEMA)]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store {
            pool,
            app: app.to_owned(),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn load(&self, task_id: &str) -> sqlx::Result<Option<Stored>> {
        let row = sqlx::query(
            "SELECT version, position, changed_at, finished, state FROM task_state
             WHERE application = $1 AND task_id = $2",
        )
        .bind(&self.app)
        .bind(task_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| stored(&r)).transpose()
    }

    /// `changed_at` of each known task among `ids` (`None` = finished).
    pub async fn changed_at_of(
        &self,
        ids: &[String],
    ) -> sqlx::Result<std::collections::HashMap<String, Option<String>>> {
        let rows = sqlx::query(
            "SELECT task_id, changed_at, finished FROM task_state
             WHERE application = $1 AND task_id = ANY($2)",
        )
        .bind(&self.app)
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let finished: bool = r.get("finished");
                let at: String = r.get("changed_at");
                (r.get("task_id"), (!finished).then_some(at))
            })
            .collect())
    }

    /// The state last emitted for each open task among `ids`.
    pub async fn open_states_of(
        &self,
        ids: &[String],
    ) -> sqlx::Result<std::collections::HashMap<String, Task>> {
        let rows = sqlx::query(
            "SELECT task_id, state FROM task_state
             WHERE application = $1 AND task_id = ANY($2) AND NOT finished",
        )
        .bind(&self.app)
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let state: Value = r.get("state");
                serde_json::from_value(state)
                    .map(|task| (r.get("task_id"), task))
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))
            })
            .collect()
    }

    /// The open tasks last emitted as suspended.
    pub async fn suspended_task_ids(&self) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT task_id FROM task_state
             WHERE application = $1 AND NOT finished AND state->>'suspended' = 'true'",
        )
        .bind(&self.app)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn open_task_ids(&self) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar("SELECT task_id FROM task_state WHERE application = $1 AND NOT finished")
            .bind(&self.app)
            .fetch_all(&self.pool)
            .await
    }

    pub async fn save(&self, task_id: &str, s: &Stored) -> sqlx::Result<()> {
        let state = serde_json::to_value(&s.task).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        sqlx::query(
            "INSERT INTO task_state (application, task_id, version, position, changed_at, finished, state)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (application, task_id) DO UPDATE SET version = $3, position = $4,
               changed_at = $5, finished = $6, state = $7, updated_at = now()",
        )
        .bind(&self.app)
        .bind(task_id)
        .bind(s.version as i64)
        .bind(s.position as i64)
        .bind(&s.changed_at)
        .bind(s.finished)
        .bind(state)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn watermark(&self, name: &str) -> sqlx::Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM watermark WHERE application = $1 AND name = $2")
            .bind(&self.app)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn set_watermark(&self, name: &str, value: &str) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO watermark (application, name, value) VALUES ($1, $2, $3)
             ON CONFLICT (application, name) DO UPDATE SET value = $3",
        )
        .bind(&self.app)
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn definition_seen(&self, id: &str) -> sqlx::Result<bool> {
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM process_definition_seen WHERE application = $1 AND id = $2",
        )
        .bind(&self.app)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    pub async fn mark_definition_seen(&self, id: &str) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO process_definition_seen (application, id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&self.app)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets finished tasks and answered commands older than `age`.
    pub async fn prune(&self, age: Duration) -> sqlx::Result<()> {
        let secs = age.as_secs() as f64;
        sqlx::query(
            "DELETE FROM task_state WHERE application = $1 AND finished
             AND updated_at < now() - make_interval(secs => $2)",
        )
        .bind(&self.app)
        .bind(secs)
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "DELETE FROM command_run WHERE application = $1 AND answer IS NOT NULL
             AND claimed_at < now() - make_interval(secs => $2)",
        )
        .bind(&self.app)
        .bind(secs)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

fn stored(r: &sqlx::postgres::PgRow) -> sqlx::Result<Stored> {
    let state: Value = r.try_get("state")?;
    let task: Task = serde_json::from_value(state).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(Stored {
        version: r.try_get::<i64, _>("version")? as u64,
        position: r.try_get::<i64, _>("position")? as u64,
        changed_at: r.try_get("changed_at")?,
        finished: r.try_get("finished")?,
        task,
    })
}

/// Executed command ids, shared by every collector of the application.
pub struct CommandRuns(pub Store);

impl Dedupe for CommandRuns {
    async fn claim(&self, id: Uuid) -> Claim {
        let store = &self.0;
        loop {
            match claim_once(store, id).await {
                Ok(claim) => return claim,
                Err(e) => {
                    tracing::warn!(%id, error = %e, "command claim failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn finish(&self, id: Uuid, answer: &Answer) {
        let Ok(json) = serde_json::to_value(answer) else {
            return;
        };
        for _ in 0..20 {
            let done = sqlx::query(
                "UPDATE command_run SET answer = $3 WHERE application = $1 AND id = $2",
            )
            .bind(&self.0.app)
            .bind(id)
            .bind(&json)
            .execute(&self.0.pool)
            .await;
            match done {
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(%id, error = %e, "could not record a command's answer; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

async fn claim_once(store: &Store, id: Uuid) -> sqlx::Result<Claim> {
    let inserted = sqlx::query(
        "INSERT INTO command_run (application, id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(&store.app)
    .bind(id)
    .execute(&store.pool)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Claim::Run);
    }
    // A run whose collector died long ago is taken over, so its command is not stuck forever.
    let taken = sqlx::query(
        "UPDATE command_run SET claimed_at = now() WHERE application = $1 AND id = $2
         AND answer IS NULL AND claimed_at < now() - make_interval(secs => $3)",
    )
    .bind(&store.app)
    .bind(id)
    .bind(STALE_CLAIM_SECS as f64)
    .execute(&store.pool)
    .await?;
    if taken.rows_affected() == 1 {
        return Ok(Claim::Run);
    }
    let answer: Option<Option<Value>> =
        sqlx::query_scalar("SELECT answer FROM command_run WHERE application = $1 AND id = $2")
            .bind(&store.app)
            .bind(id)
            .fetch_optional(&store.pool)
            .await?;
    Ok(match answer.flatten() {
        Some(a) => serde_json::from_value(a).map_or(Claim::Busy, Claim::Done),
        None => Claim::Busy,
    })
}
