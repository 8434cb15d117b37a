//! What this collector knows of its engine: the version it runs, whether its history keeps
//! what poll mode reads, and how the poll cycles fare (failures in a row, the last error, the
//! pause before the next try). Shown on `/v1/status` and as metrics.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::Mode;
use crate::engine::{Engine, HistoryCheck};
use crate::metrics::Metrics;
use crate::poller::Kind;

/// How one kind of poll cycle fares.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CycleHealth {
    /// Failed cycles in a row (0: the last one went through).
    pub failures: u32,
    pub last_error: Option<String>,
    /// The pause before the next try, after a failure.
    pub retry_in_ms: Option<u64>,
    pub last_ok_at: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `GET /version` of the engine, once it answered.
    pub version: Option<String>,
    /// `full`, `too_low` or `undecided` (poll mode needs `full`); absent until checked.
    pub history: Option<&'static str>,
    /// The engine's clock less this host's, in whole seconds (from the engine's `Date`
    /// header), as of the last incremental cycle. Watermarks are in the engine's time, so an
    /// offset costs nothing; it explains timestamps that disagree.
    pub clock_offset_seconds: Option<i64>,
    pub incremental: CycleHealth,
    pub reconcile: CycleHealth,
}

pub struct EngineHealth {
    state: Mutex<Health>,
    metrics: Metrics,
}

impl EngineHealth {
    pub fn new(metrics: Metrics) -> EngineHealth {
        EngineHealth {
            state: Mutex::new(Health::default()),
            metrics,
        }
    }

    pub fn snapshot(&self) -> Health {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Health> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cycle(health: &mut Health, kind: Kind) -> &mut CycleHealth {
        match kind {
            Kind::Incremental => &mut health.incremental,
            Kind::Reconcile => &mut health.reconcile,
        }
    }

    pub fn cycle_ok(&self, kind: Kind) {
        let mut h = self.lock();
        let c = Self::cycle(&mut h, kind);
        c.failures = 0;
        c.last_error = None;
        c.retry_in_ms = None;
        c.last_ok_at =
            Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        self.metrics
            .poll_failures
            .with_label_values(&[kind.label()])
            .set(0);
        self.metrics
            .poll_backoff_seconds
            .with_label_values(&[kind.label()])
            .set(0.0);
    }

    pub fn cycle_failed(&self, kind: Kind, error: &str, retry_in: Duration) {
        let mut h = self.lock();
        let c = Self::cycle(&mut h, kind);
        c.failures += 1;
        c.last_error = Some(error.to_owned());
        c.retry_in_ms = Some(retry_in.as_millis() as u64);
        let failures = c.failures;
        self.metrics
            .poll_failures
            .with_label_values(&[kind.label()])
            .set(i64::from(failures));
        self.metrics
            .poll_backoff_seconds
            .with_label_values(&[kind.label()])
            .set(retry_in.as_secs_f64());
    }

    /// Records the engine's clock `engine_now` as read just now.
    pub fn engine_clock(&self, engine_now: chrono::DateTime<chrono::Utc>) {
        let offset = (engine_now - chrono::Utc::now()).num_milliseconds() as f64 / 1000.0;
        let offset = offset.round() as i64;
        let before = self.lock().clock_offset_seconds.replace(offset);
        if offset.abs() >= 2 && before.is_none_or(|b| (b - offset).abs() >= 2) {
            tracing::warn!(
                offset_seconds = offset,
                "the engine's clock and this host's differ; watermarks follow the engine's, \
                 so no change is missed"
            );
        }
        self.metrics.engine_clock_offset_seconds.set(offset);
    }

    /// The last offset measured (0 before any).
    pub fn clock_offset(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.lock().clock_offset_seconds.unwrap_or(0))
    }

    fn set_version(&self, version: &str) {
        self.lock().version = Some(version.to_owned());
        self.metrics
            .engine_info
            .with_label_values(&[version])
            .set(1);
    }

    fn set_history(&self, check: &HistoryCheck) {
        self.lock().history = Some(match check {
            HistoryCheck::Full => "full",
            HistoryCheck::TooLow(_) => "too_low",
            HistoryCheck::Undecided => "undecided",
        });
    }
}

/// The pause after `failures` failed cycles in a row: doubling from half a second up to
/// `cap`, a random part of it left out so that collectors of many applications do not retry
/// in step against an engine or bus that comes back, never below `floor`.
pub fn backoff(failures: u32, floor: Duration, cap: Duration) -> Duration {
    let full = Duration::from_millis(500)
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(cap);
    let share = rand::thread_rng().gen_range(0.5..=1.0);
    full.mul_f64(share).max(floor)
}

/// Reads the engine's version (until it answers), then, in poll mode, checks its history
/// level until it can tell. Returns the message to stop with when poll mode cannot work on
/// this engine; `None` once nothing stands in the way, or on `stop`.
pub async fn probe(
    engine: Engine,
    mode: Mode,
    health: Arc<EngineHealth>,
    mut stop: watch::Receiver<bool>,
) -> Option<String> {
    let mut failures = 0;
    let mut version_known = false;
    loop {
        let result = async {
            if !version_known {
                let version = engine.version().await?;
                tracing::info!(%version, "engine version");
                health.set_version(&version);
                version_known = true;
            }
            engine.check_history().await
        }
        .await;
        let pause = match result {
            Ok(check) => {
                health.set_history(&check);
                failures = 0;
                match (check, mode) {
                    (HistoryCheck::Full, _) => return None,
                    (HistoryCheck::TooLow(why), Mode::Poll) => return Some(why),
                    (HistoryCheck::TooLow(why), Mode::Hook) => {
                        // Hooks carry the changes; reconciliation reads only what is open.
                        tracing::warn!(%why, "the engine's history is below full");
                        return None;
                    }
                    // An empty engine: judge again once it holds work.
                    (HistoryCheck::Undecided, _) => Duration::from_secs(60),
                }
            }
            Err(e) => {
                failures += 1;
                let pause = backoff(failures, Duration::from_secs(1), Duration::from_secs(30));
                tracing::debug!(error = %e, retry_in = ?pause, "engine not reached for its version yet");
                pause
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_and_keeps_its_floor() {
        let (floor, cap) = (Duration::from_millis(100), Duration::from_secs(30));
        for failures in 1..40 {
            let full = Duration::from_millis(500 << (failures - 1).min(16)).min(cap);
            let d = backoff(failures, floor, cap);
            assert!(d >= full / 2 && d <= full, "{failures}: {d:?} of {full:?}");
        }
        assert_eq!(
            backoff(1, Duration::from_secs(5), cap),
            Duration::from_secs(5)
        );
        let spread: std::collections::HashSet<_> = (0..50)
            .map(|_| backoff(8, floor, cap).as_millis())
            .collect();
        assert!(spread.len() > 1, "jitter varies the pause");
    }
}
