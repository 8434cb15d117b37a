//! `CollectorLeaseTaken`, stream `collector-lease/{application}`: a collector became its
//! application's active one under fencing token `token`. The version of that event fences
//! every later append of the holder (`expectedVersions`), so once another collector takes
//! the lease, the bus refuses whatever the former holder still tries to write.

use serde::{Deserialize, Serialize};

pub const COLLECTOR_LEASE_TAKEN: &str = "CollectorLeaseTaken";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectorLeaseTaken {
    pub application: String,
    /// The collector process (a fresh id per start).
    pub holder: String,
    /// One more at every takeover.
    pub token: i64,
}
