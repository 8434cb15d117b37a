//! taskpool-core: the projection of task events into MongoDB and the HTTP task API.
//!
//! `view` is the task view (in-memory index and the fold of events), `store` its durable copy
//! in MongoDB (the only module that talks to MongoDB), `projection` follows the bus, `query`
//! answers list questions, `identity` says who is asking, `api` serves HTTP.

pub mod api;
pub mod app;
pub mod config;
pub mod identity;
pub mod metrics;
pub mod projection;
pub mod query;
pub mod realms;
pub mod rebuild;
pub mod store;
pub mod view;

pub use app::App;
