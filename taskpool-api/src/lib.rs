//! The one definition of every wire type that crosses a process boundary in Taskpool,
//! and the Rust client of the raft-bus HTTP API.
//!
//! - [`bus`]: the event-store and cluster types of the raft-bus client API.
//! - [`error`]: the `{"error":{"code","message"}}` body every service answers with.
//! - [`sse`]: a small incremental parser for `text/event-stream`.
//! - [`tasks`]: task events, their fold, and the stream and key of a task.
//! - [`task_body`]: [`task_body::TaskBody`], one open task as the task API answers it.
//! - [`task_commands`]: [`task_commands::TaskCommand`], every task command, and their results.
//! - [`trace`]: the W3C `traceparent` that ties one action's log lines together.
//! - [`client`]: [`client::BusClient`], which retries across nodes and follows subscriptions.
//! - `dedupe_suite` (feature `testing`): the behaviour suite every command `Dedupe` store runs.

pub mod bus;
pub mod client;
pub mod commands;
pub mod data_entries;
#[cfg(any(test, feature = "testing"))]
pub mod dedupe_suite;
pub mod error;
pub mod handler;
pub mod identity;
pub mod lease;
pub mod sse;
pub mod streams;
pub mod task_body;
pub mod task_commands;
pub mod task_fold;
pub mod tasks;
pub mod trace;

pub use client::{BusClient, ClientConfig, ClientError};

/// Pieces of the OpenAPI documents the services generate.
#[cfg(feature = "openapi")]
pub mod openapi {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

    /// Adds the `bearer` security scheme (`Authorization: Bearer …`, of `format` if given).
    pub fn add_bearer(openapi: &mut utoipa::openapi::OpenApi, format: Option<&str>) {
        let mut scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer);
        if let Some(f) = format {
            scheme = scheme.bearer_format(f);
        }
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme.build()));
    }
}
