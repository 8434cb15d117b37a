//! camunda-collector: the sidecar of one Camunda 7 engine. It reports every user-task change
//! to the raft-bus as task events and executes task commands on the engine.
//!
//! - [`engine`]: the engine's REST API; [`snapshot`]: REST answers or hooks → observations;
//!   [`payload`]: which variables a task's payload holds, and as what.
//! - [`emitter`]: observations → events on the bus, with optimistic concurrency per task.
//! - [`poller`]: incremental polls and reconciliation; [`hooks`]: the signed hook endpoint.
//! - [`registry`]: process definitions and users; [`commands`]: task commands.
//! - [`store`]: state in PostgreSQL and the advisory lock; [`app`]: the wiring.

pub mod app;
pub mod authority;
pub mod commands;
pub mod config;
pub mod dates;
pub mod emitter;
pub mod engine;
pub mod engine_health;
pub mod error;
pub mod follow_up;
pub mod hooks;
mod http;
pub mod lease;
pub mod metrics;
pub mod payload;
pub mod poller;
pub mod registry;
pub mod snapshot;
pub mod store;

pub use app::App;
pub use config::Config;
