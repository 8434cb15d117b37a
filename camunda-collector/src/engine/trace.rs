//! The trace context of the work at hand (a command), so that every engine call made for it
//! sends a `traceparent` of the same trace: the engine's side of one action is found by the
//! trace id the collector's log names.

use std::future::Future;

use taskpool_api::trace::Traceparent;

tokio::task_local! {
    static CONTEXT: Traceparent;
}

/// Runs `work` with `context` as the trace of the engine calls it makes.
pub async fn in_trace<F: Future>(context: Traceparent, work: F) -> F::Output {
    CONTEXT.scope(context, work).await
}

/// The `traceparent` an engine call sends: a child of the current context, if there is one.
pub(super) fn outgoing() -> Option<Traceparent> {
    CONTEXT.try_with(Traceparent::child).ok()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::http::HeaderMap;
    use axum::routing::get;

    use super::*;
    use crate::engine::{Engine, EngineConfig};
    use crate::metrics::Metrics;

    #[tokio::test]
    async fn engine_calls_in_a_trace_send_a_child_of_it() {
        let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().route(
            "/engine",
            get(move |headers: HeaderMap| async move {
                let tp = headers.get(taskpool_api::trace::HEADER);
                let tp = tp.and_then(|v| v.to_str().ok()).map(str::to_owned);
                record.lock().expect("lock").push(tp);
                axum::Json(serde_json::json!([]))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = EngineConfig {
            url,
            user: None,
            password: None,
            timeout: Duration::from_secs(5),
        };
        let engine = Engine::new(config, Metrics::new()).expect("engine");
        let context = Traceparent::new_root();
        in_trace(context.clone(), engine.engine_names())
            .await
            .expect("in a trace");
        engine.engine_names().await.expect("outside one");
        let seen = seen.lock().expect("lock").clone();
        let sent = seen[0]
            .as_deref()
            .and_then(Traceparent::parse)
            .expect("a traceparent");
        assert_eq!(sent.trace_id(), context.trace_id());
        assert_ne!(sent, context, "a child, not the context itself");
        assert_eq!(seen[1], None);
    }
}
