//! The shared cluster harness (crate `testkit`).
pub use testkit::*;
