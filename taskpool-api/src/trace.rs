//! W3C trace context (`traceparent`): what ties the log lines of one user action together
//! across taskpool-core, the bus, the collector and the engine call it makes.
//!
//! Each service opens a span with the `trace_id` field for the work it does for a request;
//! JSON logs carry the span's fields, so `trace_id` finds one action's lines in every log.

use std::fmt;

/// The HTTP header (and the field of a command) that carries the context.
pub const HEADER: &str = "traceparent";

/// `00-{trace id: 32 hex}-{parent span id: 16 hex}-{flags: 2 hex}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traceparent {
    trace_id: u128,
    span_id: u64,
    flags: u8,
}

impl Traceparent {
    /// A new trace: what a service starts when a request comes without one.
    pub fn new_root() -> Traceparent {
        Traceparent {
            trace_id: uuid::Uuid::new_v4().as_u128(),
            span_id: new_span_id(),
            // sampled: every service logs what it does for the action.
            flags: 1,
        }
    }

    /// The same trace, one step further: the context to pass on to the next service.
    pub fn child(&self) -> Traceparent {
        Traceparent {
            span_id: new_span_id(),
            ..self.clone()
        }
    }

    /// Reads a header value; `None` for anything that is not version 00 with non-zero ids
    /// (the W3C rule: an invalid context is ignored and a new trace begins).
    pub fn parse(value: &str) -> Option<Traceparent> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != "00" {
            return None;
        }
        let trace_id = u128::from_str_radix(hex(trace, 32)?, 16).ok()?;
        let span_id = u64::from_str_radix(hex(span, 16)?, 16).ok()?;
        let flags = u8::from_str_radix(hex(flags, 2)?, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(Traceparent {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The context of an incoming request, or a new trace when it carries none (or a bad one).
    pub fn from_header_or_new(value: Option<&str>) -> Traceparent {
        value
            .and_then(Traceparent::parse)
            .unwrap_or_else(Traceparent::new_root)
    }

    /// The trace id as logs show it (32 lowercase hex digits).
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

impl fmt::Display for Traceparent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

/// `s` when it is `len` lowercase hex digits (W3C forbids upper case and signs).
fn hex(s: &str, len: usize) -> Option<&str> {
    (s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(s)
}

fn new_span_id() -> u64 {
    // The low half of a random UUID: never zero in practice, and made non-zero anyway.
    (uuid::Uuid::new_v4().as_u128() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_survives_its_text_and_its_children_keep_the_trace() {
        let root = Traceparent::new_root();
        let text = root.to_string();
        assert_eq!(text.len(), 55, "{text}");
        assert_eq!(Traceparent::parse(&text), Some(root.clone()));
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child.to_string(), text);
    }

    #[test]
    fn invalid_contexts_are_ignored() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            Traceparent::parse(ok).map(|t| t.trace_id()),
            Some("4bf92f3577b34da6a3ce929d0e0e4736".into())
        );
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(Traceparent::parse(bad), None, "{bad}");
        }
        let fresh = Traceparent::from_header_or_new(Some("garbage"));
        assert_eq!(fresh.trace_id().len(), 32);
    }
}
