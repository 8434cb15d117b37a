//! Connecting to a backend (a database, the bus) that may start after the service.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// The first pause between attempts; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(200);
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// How long the services wait for their store at startup: as long as the 30 attempts they
/// made before (about two minutes).
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(120);

/// Runs `attempt` until it succeeds, backing off between tries, until `deadline` has passed;
/// then fails with the last error and `what` it was connecting to. Each failure is logged once,
/// with `what`.
pub async fn connect_with_retry<T, E, F, Fut>(
    what: &str,
    deadline: Duration,
    mut attempt: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Into<anyhow::Error>,
{
    let give_up = Instant::now() + deadline;
    let mut pause = FIRST_PAUSE;
    loop {
        let e = match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) => e.into(),
        };
        if Instant::now() + pause > give_up {
            return Err(e.context(format!("cannot reach {what} within {deadline:?}")));
        }
        tracing::warn!(
            error = format!("{e:#}"),
            "{what} not reachable yet; retrying"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_until_it_connects() {
        let tries = Cell::new(0);
        let got = connect_with_retry("the store", Duration::from_secs(60), || {
            tries.set(tries.get() + 1);
            let n = tries.get();
            async move {
                if n < 4 {
                    Err(anyhow::anyhow!("refused"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(got.ok(), Some(4));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_deadline_naming_what() {
        let started = Instant::now();
        let tries = Cell::new(0);
        let err = connect_with_retry(
            "the view store (--mongo-url)",
            Duration::from_secs(10),
            || {
                tries.set(tries.get() + 1);
                async { Err::<(), _>(std::io::Error::other("connection refused")) }
            },
        )
        .await
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
        assert!(err.contains("the view store (--mongo-url)"), "{err}");
        assert!(err.contains("connection refused"), "{err}");
        assert!(started.elapsed() <= Duration::from_secs(10));
        // 0.2 + 0.4 + 0.8 + 1.6 + 3.2 s of pauses fit in 10 s, the next 5 s would not.
        assert_eq!(tries.get(), 6);
    }
}
