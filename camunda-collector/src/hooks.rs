//! Hook mode: the engine plugin (`engine-plugin/`) POSTs each committed transaction's task
//! changes to `POST /v1/hooks`, signed with HMAC-SHA256 over `timestamp + "." + body`.
//! A hook is a fast path only: polling and reconciliation still run and find a lost hook.

use std::collections::BTreeSet;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::engine::EngineTask;
use crate::snapshot::{Observation, Snapshots};

pub const SIGNATURE_HEADER: &str = "x-taskpool-signature";
pub const TIMESTAMP_HEADER: &str = "x-taskpool-timestamp";
/// A signed hook older or newer than this is refused (a replayed capture).
pub const MAX_SKEW_MS: i64 = 5 * 60 * 1000;

/// The body the plugin sends.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookBatch {
    #[serde(default)]
    pub engine: Option<String>,
    pub tasks: Vec<HookTask>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookTask {
    /// create, assignment, update, complete or delete: the most telling of the transaction.
    pub event: String,
    pub task: EngineTask,
    #[serde(default)]
    pub candidate_users: Vec<String>,
    #[serde(default)]
    pub candidate_groups: Vec<String>,
    pub process_definition_key: Option<String>,
    pub process_name: Option<String>,
    pub business_key: Option<String>,
    #[serde(default)]
    pub variables: Map<String, Value>,
    pub delete_reason: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SignatureError {
    #[error("missing header {0}")]
    Missing(&'static str),
    #[error("header {0} is malformed")]
    Malformed(&'static str),
    #[error("timestamp is more than 5 minutes away from this collector's clock")]
    Skew,
    #[error("signature does not match the body (wrong secret, or the body was changed)")]
    Mismatch,
}

/// `sha256=<hex>` of `timestamp.body`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a hook's signature in constant time, and that it is recent.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_ms: i64,
) -> Result<(), SignatureError> {
    let ts = timestamp.ok_or(SignatureError::Missing(TIMESTAMP_HEADER))?;
    let sig = signature.ok_or(SignatureError::Missing(SIGNATURE_HEADER))?;
    let ts_ms: i64 = ts
        .parse()
        .map_err(|_| SignatureError::Malformed(TIMESTAMP_HEADER))?;
    let hex_sig = sig
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed(SIGNATURE_HEADER))?;
    let given = hex::decode(hex_sig).map_err(|_| SignatureError::Malformed(SIGNATURE_HEADER))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)?;
    // abs_diff: any i64 the sender put there, without overflow.
    if now_ms.abs_diff(ts_ms) > MAX_SKEW_MS.unsigned_abs() {
        return Err(SignatureError::Skew);
    }
    Ok(())
}

impl HookTask {
    /// What the hook saw, as an observation; the source is complete without a REST call.
    pub async fn observation(
        self,
        snapshots: &Snapshots,
    ) -> Result<Observation, crate::engine::EngineError> {
        let t = &self.task;
        let known = (
            self.process_definition_key.clone(),
            self.process_name.clone(),
            self.business_key.clone(),
        );
        let source = snapshots.source(t, Some(known)).await?;
        let sorted = |v: Vec<String>| v.into_iter().collect::<BTreeSet<_>>().into_iter().collect();
        let candidates = (sorted(self.candidate_users), sorted(self.candidate_groups));
        let payload = snapshots.payload(self.process_definition_key.as_deref(), &self.variables);
        let open = Snapshots::task_from(t, candidates, payload, source);
        Ok(match self.event.as_str() {
            "complete" | "delete" => Observation::Finished {
                task: open.task().clone(),
                delete_reason: Some(self.delete_reason.unwrap_or_else(|| {
                    if self.event == "complete" {
                        "completed"
                    } else {
                        "deleted"
                    }
                    .to_owned()
                })),
            },
            _ => open,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector the engine plugin's tests assert too.
    const SECRET: &[u8] = b"taskpool-test-secret";
    const BODY: &[u8] = br#"{"engine":"default","tasks":[]}"#;
    const SIG: &str = "sha256=fcc22f111cc81f3159ec22b91addb0feb2bda5a242986a01dccd2545a77bd2d4";

    #[test]
    fn signature_matches_the_shared_vector() {
        assert_eq!(sign(SECRET, "1700000000000", BODY), SIG);
        let now = 1_700_000_000_000 + 1000;
        assert_eq!(
            verify(SECRET, Some("1700000000000"), Some(SIG), BODY, now),
            Ok(())
        );
    }

    #[test]
    fn bad_signatures_are_told_apart() {
        let now = 1_700_000_000_000;
        let ts = Some("1700000000000");
        assert_eq!(
            verify(SECRET, None, Some(SIG), BODY, now),
            Err(SignatureError::Missing(TIMESTAMP_HEADER))
        );
        assert_eq!(
            verify(SECRET, ts, None, BODY, now),
            Err(SignatureError::Missing(SIGNATURE_HEADER))
        );
        assert_eq!(
            verify(SECRET, ts, Some("md5=00"), BODY, now),
            Err(SignatureError::Malformed(SIGNATURE_HEADER))
        );
        assert_eq!(
            verify(b"other", ts, Some(SIG), BODY, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, ts, Some(SIG), b"{}", now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, Some("1700000000001"), Some(SIG), BODY, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, ts, Some(SIG), BODY, now + MAX_SKEW_MS + 1),
            Err(SignatureError::Skew)
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            /// Whatever arrives, verification answers and never panics; only the right
            /// signature of a recent timestamp passes.
            #[test]
            fn verify_takes_any_input(
                secret in proptest::collection::vec(any::<u8>(), 0..40),
                ts in proptest::option::of(".{0,24}"),
                sig in proptest::option::of(".{0,80}"),
                body in proptest::collection::vec(any::<u8>(), 0..200),
                now in any::<i64>(),
            ) {
                let r = verify(&secret, ts.as_deref(), sig.as_deref(), &body, now);
                if r.is_ok() {
                    let expected = sign(&secret, &ts.expect("checked"), &body);
                    prop_assert_eq!(sig.as_deref(), Some(expected.as_str()));
                }
            }

            /// A signed hook verifies; any other body, timestamp far off or other secret fails.
            #[test]
            fn signed_hooks_verify_and_changed_ones_do_not(
                secret in proptest::collection::vec(any::<u8>(), 1..40),
                ts in any::<i64>(),
                body in proptest::collection::vec(any::<u8>(), 1..200),
                flip in any::<proptest::sample::Index>(),
            ) {
                let t = ts.to_string();
                let sig = sign(&secret, &t, &body);
                prop_assert_eq!(verify(&secret, Some(&t), Some(&sig), &body, ts), Ok(()));
                let mut changed = body.clone();
                let i = flip.index(changed.len());
                changed[i] ^= 1;
                prop_assert_eq!(
                    verify(&secret, Some(&t), Some(&sig), &changed, ts),
                    Err(SignatureError::Mismatch)
                );
                let far = ts.saturating_add(MAX_SKEW_MS + 1);
                if far != ts.saturating_add(MAX_SKEW_MS) {
                    prop_assert_eq!(
                        verify(&secret, Some(&t), Some(&sig), &body, far),
                        Err(SignatureError::Skew)
                    );
                }
            }

            /// Hook bodies are parsed from untrusted bytes: an answer, never a panic.
            #[test]
            fn any_hook_body_parses_or_is_refused(body in proptest::collection::vec(any::<u8>(), 0..300)) {
                let _ = serde_json::from_slice::<HookBatch>(&body);
            }

            #[test]
            fn any_json_hook_body_parses_or_is_refused(
                tasks in proptest::collection::vec(
                    proptest::collection::btree_map("[a-zA-Z]{1,12}", ".{0,12}", 0..6), 0..4)
            ) {
                let body = serde_json::json!({ "engine": "default", "tasks": tasks });
                let _ = serde_json::from_value::<HookBatch>(body);
            }
        }
    }
}
