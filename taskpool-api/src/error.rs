//! The error body shared by every HTTP service of the project.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `{"error":{"code":"snake_case","message":"…", …extra}}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable, machine-readable, snake_case.
    pub code: String,
    /// What went wrong and what to do about it.
    pub message: String,
    /// Context that depends on the code, e.g. `stream` and `currentVersion` for a conflict.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                extra: Map::new(),
            },
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.error.extra.insert(key.to_owned(), value.into());
        self
    }
}
