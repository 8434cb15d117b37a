//! Logging setup and the shutdown signal now live in `service-kit`; re-exported here so the
//! binaries that call them from this path keep working until they name the kit.

pub use service_kit::{init_tracing, shutdown_signal};
