//! raft-bus: one node of Taskpool's Raft cluster, a durable, replicated event store.
//!
//! Module map (see ARCHITECTURE.md): [`config`] → [`app`] builds a node from
//! [`log_store`] (the Raft log), [`state_machine`] over [`event_store`] (the replicated
//! state), [`network`] (Raft RPC client) and [`api`] (every HTTP route); [`access`] says who
//! a request comes from ([`credentials`]) and [`rights`] what it may do.

// openraft's storage traits fix the (large) error type; boxing it would only add copies.
#![allow(clippy::result_large_err)]

pub mod access;
pub mod api;
pub mod app;
pub mod command_router;
pub mod config;
pub mod credentials;
pub mod error;
pub mod event_chunk;
pub mod event_store;
pub mod id_filter;
pub mod id_runs;
pub mod log_segments;
pub mod log_store;
pub mod metrics;
pub mod network;
pub mod proposer;
pub mod rights;
pub mod rpc_stream;
pub mod state_machine;
#[cfg(test)]
mod storage_suite;
pub mod stream_runs;
pub mod types;

pub use app::App;
pub use config::Config;
