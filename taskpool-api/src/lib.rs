//! The one definition of every wire type that crosses a process boundary in Taskpool,
//! and the Rust client of the raft-bus HTTP API.
//!
//! - [`bus`]: the event-store and cluster types of the raft-bus client API.
//! - [`error`]: the `{"error":{"code","message"}}` body every service answers with.
//! - [`sse`]: a small incremental parser for `text/event-stream`.
//! - [`tasks`]: task events, their fold, and the task commands.
//! - [`client`]: [`client::BusClient`], which retries across nodes and follows subscriptions.

pub mod bus;
pub mod client;
pub mod commands;
pub mod error;
pub mod handler;
pub mod service;
pub mod sse;
pub mod tasks;

pub use client::{BusClient, ClientConfig, ClientError};
