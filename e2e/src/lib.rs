//! The whole system as its users run it, for the end-to-end tests and the end-to-end
//! benchmark: the local Camunda engine (with the hook plugin), a three-node bus, a collector,
//! taskpool-core, Prometheus scraping them with `deploy/prometheus.yml`, and a headless
//! Chromium driving Camunda's own Tasklist; and the fault-injection suite (`faults`).

pub mod browser;
pub mod faults;
pub mod prometheus;
pub mod stack;

pub use browser::Browser;
pub use prometheus::Prometheus;
pub use stack::{Mode, Stack};
