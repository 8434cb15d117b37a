//! What every Taskpool service does alike, in one place each: metric registration and the
//! text exposition ([`metrics`]), request metrics, admission and health routes for axum
//! ([`http`]), connecting to a backend that may start later ([`connect`]), logging, serving
//! until stopped and shutdown ([`service`]), and the conventions their configurations share
//! ([`config`]).

pub mod config;
pub mod connect;
pub mod http;
pub mod metrics;
pub mod service;

pub use connect::connect_with_retry;
pub use http::{health_routes, Admission, RequestMetrics};
pub use metrics::Registrar;
pub use service::{init_tracing, serve_until_stopped, shutdown_signal};
