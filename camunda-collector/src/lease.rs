//! Which collector of an application is active, and the fence that stops a former one.
//!
//! **The lease** is a row in PostgreSQL (`lease`, migration 0002) that the holder renews every
//! fifth of `--lease-ttl` on its own connection. A standby takes it over when it expired (by
//! the database's clock: the holder was paused, or its host vanished or was cut off) or when
//! the holder's session is gone (its process died: taken over within a second). The holder
//! stops acting once four fifths of the TTL passed, on its own monotonic clock, since the
//! start of its last successful renewal — before the lease can expire in the database.
//!
//! **The fence** covers what timing cannot (a holder paused in the middle of a write): each
//! new holder appends `CollectorLeaseTaken` to `collector-lease/{application}`, and every
//! append it makes names that event's version in `expectedVersions`. Once a successor has
//! appended its own, the bus refuses the former holder's appends, which then step down.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use taskpool_api::bus::{AppendRequest, AppendResponse, NewEvent, NO_STREAM};
use taskpool_api::lease::{CollectorLeaseTaken, COLLECTOR_LEASE_TAKEN};
use taskpool_api::streams::collector_lease_stream;
use taskpool_api::{BusClient, ClientError};

use crate::emitter::EmitError;

/// A lease this collector holds.
pub struct Lease {
    /// The holder's own session; `None` after it failed, until a renewal reconnects.
    conn: Option<PgConnection>,
    options: PgConnectOptions,
    application: String,
    holder: String,
    pub token: i64,
    ttl: Duration,
    /// When the last successful renewal (or the acquisition) was sent.
    renewed: Instant,
}

impl Lease {
    /// `Some` when this collector took the lease: it was free, expired, or its holder's session
    /// is gone.
    pub async fn try_acquire(
        url: &str,
        application: &str,
        holder: &str,
        ttl: Duration,
    ) -> anyhow::Result<Option<Lease>> {
        let options: PgConnectOptions = url.parse()?;
        let options = options.options([("search_path", crate::store::SCHEMA)]);
        let sent = Instant::now();
        let mut conn = PgConnection::connect_with(&options).await?;
        let token: Option<i64> = sqlx::query_scalar(
            "INSERT INTO lease AS l (application, holder, token, expires_at, holder_pid, holder_started)
             SELECT $1, $2, 1, now() + make_interval(secs => $3), pid, backend_start
             FROM pg_stat_activity WHERE pid = pg_backend_pid()
             ON CONFLICT (application) DO UPDATE SET
                 holder = EXCLUDED.holder, token = l.token + 1, expires_at = EXCLUDED.expires_at,
                 holder_pid = EXCLUDED.holder_pid, holder_started = EXCLUDED.holder_started
             WHERE l.expires_at < now()
                OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = l.holder_pid
                               AND (a.backend_start IS NULL OR a.backend_start = l.holder_started))
             RETURNING token",
        )
        .bind(application)
        .bind(holder)
        .bind(ttl.as_secs_f64())
        .fetch_optional(&mut conn)
        .await?;
        match token {
            Some(token) => Ok(Some(Lease {
                conn: Some(conn),
                options,
                application: application.to_owned(),
                holder: holder.to_owned(),
                token,
                ttl,
                renewed: sent,
            })),
            None => {
                conn.close().await?;
                Ok(None)
            }
        }
    }

    /// How often the holder renews.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 5
    }

    /// Whether the holder may still act: less than four fifths of the TTL since the last
    /// successful renewal was sent.
    pub fn valid(&self) -> bool {
        self.renewed.elapsed() < self.ttl * 4 / 5
    }

    /// Extends the lease. `Ok(false)`: another collector holds it now. A session that failed
    /// is replaced (a restarted PostgreSQL), and the lease names the new one.
    pub async fn renew(&mut self) -> anyhow::Result<bool> {
        let sent = Instant::now();
        let within = self.renew_every();
        let renewed = tokio::time::timeout(within, self.renew_on_session()).await;
        match renewed {
            Ok(Ok(renewed)) => {
                if renewed {
                    self.renewed = sent;
                }
                Ok(renewed)
            }
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                anyhow::bail!("the lease was not renewed within {within:?}")
            }
        }
    }

    async fn renew_on_session(&mut self) -> anyhow::Result<bool> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self
                .conn
                .insert(PgConnection::connect_with(&self.options).await?),
        };
        let renewed = sqlx::query(
            "UPDATE lease SET expires_at = now() + make_interval(secs => $4),
                 holder_pid = a.pid, holder_started = a.backend_start
             FROM pg_stat_activity a
             WHERE a.pid = pg_backend_pid()
               AND application = $1 AND holder = $2 AND token = $3",
        )
        .bind(&self.application)
        .bind(&self.holder)
        .bind(self.token)
        .bind(self.ttl.as_secs_f64())
        .execute(conn)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Ends the lease at once (shutdown), so that a standby takes over without waiting.
    pub async fn release(self) {
        let Some(mut conn) = self.conn else {
            return;
        };
        let _ = sqlx::query(
            "UPDATE lease SET expires_at = now() - interval '1 second'
             WHERE application = $1 AND holder = $2 AND token = $3",
        )
        .bind(&self.application)
        .bind(&self.holder)
        .bind(self.token)
        .execute(&mut conn)
        .await;
        let _ = conn.close().await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("another collector took the lease (token {0}) after this one")]
    Superseded(i64),
    #[error("bus: {0}")]
    Bus(#[from] ClientError),
}

/// The fence of this collector's appends: `None` while it is not the active one.
#[derive(Clone, Default)]
pub struct Fence {
    state: Arc<Mutex<FenceState>>,
}

#[derive(Default)]
struct FenceState {
    /// The lease stream and the version of this holder's `CollectorLeaseTaken`.
    guard: Option<(String, i64)>,
    /// Set when the bus refused an append for the fence: the holder steps down.
    fenced_out: bool,
}

impl Fence {
    fn lock(&self) -> std::sync::MutexGuard<'_, FenceState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records on the bus that `lease` is the application's active one and guards every
    /// later append with it. Refused when a later holder recorded itself already.
    pub async fn raise(
        &self,
        bus: &BusClient,
        application: &str,
        lease: &Lease,
    ) -> Result<(), FenceError> {
        let stream = collector_lease_stream(application);
        let taken = CollectorLeaseTaken {
            application: application.to_owned(),
            holder: lease.holder.clone(),
            token: lease.token,
        };
        loop {
            let first = bus.stream(&stream, 0, 1).await?;
            let head = first.version;
            let last = match head {
                ..=0 => first,
                _ => bus.stream(&stream, head as u64, 1).await?,
            };
            let newest = last
                .events
                .first()
                .and_then(|e| serde_json::from_str::<CollectorLeaseTaken>(e.data.get()).ok())
                .map_or(0, |t| t.token);
            if newest > lease.token {
                return Err(FenceError::Superseded(newest));
            }
            let request = AppendRequest {
                events: vec![
                    NewEvent::new(&stream, COLLECTOR_LEASE_TAKEN, &taken).expect("serializable")
                ],
                expected_versions: [(stream.clone(), if head < 0 { NO_STREAM } else { head })]
                    .into(),
            };
            match bus.append(&request).await {
                Ok(resp) => {
                    let version = resp.events.first().map_or(0, |e| e.version) as i64;
                    *self.lock() = FenceState {
                        guard: Some((stream, version)),
                        fenced_out: false,
                    };
                    return Ok(());
                }
                // Another holder wrote meanwhile: look again.
                Err(e) if e.code() == Some("wrong_expected_version") => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Stops guarding: this collector is not the active one any more.
    pub fn lower(&self) {
        self.lock().guard = None;
    }

    /// Appends `request` under the fence: refused without a bus call when this collector is
    /// not active, `Fenced` when the bus refused it for the fence; other bus errors as they are.
    pub async fn append(
        &self,
        bus: &BusClient,
        mut request: AppendRequest,
    ) -> Result<AppendResponse, EmitError> {
        if !self.guard(&mut request) {
            return Err(EmitError::NotActive);
        }
        match bus.append(&request).await {
            Ok(resp) => Ok(resp),
            Err(e) if self.refused(&e) => Err(EmitError::Fenced),
            Err(e) => Err(e.into()),
        }
    }

    /// Adds the fence to `request`; `false` when this collector is not active.
    pub fn guard(&self, request: &mut AppendRequest) -> bool {
        let state = self.lock();
        let Some((stream, version)) = &state.guard else {
            return false;
        };
        request.expected_versions.insert(stream.clone(), *version);
        true
    }

    /// Whether `error` is the bus refusing an append for the fence (a successor took the
    /// lease); remembers it, so the holder steps down.
    pub fn refused(&self, error: &ClientError) -> bool {
        let ClientError::Api { body, .. } = error else {
            return false;
        };
        let mut state = self.lock();
        let ours = body.error.code == "wrong_expected_version"
            && state.guard.as_ref().map(|(s, _)| s.as_str())
                == body.error.extra.get("stream").and_then(|s| s.as_str());
        if ours {
            state.fenced_out = true;
        }
        ours
    }

    pub fn fenced_out(&self) -> bool {
        self.lock().fenced_out
    }
}
