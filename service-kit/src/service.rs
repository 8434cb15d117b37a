//! Logging, serving until told to stop, and the shutdown signal, the same in every binary.

use std::future::{Future, IntoFuture};

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Logs to stderr as text, or as JSON lines when asked; `RUST_LOG` filters (default: `default`).
pub fn init_tracing(json: bool, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on SIGINT or SIGTERM: the cue for a graceful shutdown.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Serves `router` on `listener` until `shutdown` resolves; then turns `stop` true, so what
/// watches it (open streams, the service's background work) ends, and returns once the server
/// has answered the requests it had. The caller waits for its background work after this.
pub async fn serve_until_stopped(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
    stop: &watch::Sender<bool>,
) -> anyhow::Result<()> {
    let mut server_stop = stop.subscribe();
    let serving = axum::serve(listener, router).with_graceful_shutdown(async move {
        let _ = server_stop.wait_for(|s| *s).await;
    });
    let stopping = async {
        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    };
    let (served, ()) = tokio::join!(serving.into_future(), stopping);
    Ok(served?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    #[tokio::test]
    async fn serves_until_shutdown_then_turns_stop_true() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/", get(|| async { "hello" }));
        let (stop, watching) = watch::channel(false);
        let (tell, told) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(async move {
            serve_until_stopped(listener, router, async { told.await.unwrap_or(()) }, &stop).await
        });

        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("hello"), "{answer}");
        assert!(!*watching.borrow());

        tell.send(()).unwrap();
        serving.await.unwrap().unwrap();
        assert!(*watching.borrow());
    }
}
