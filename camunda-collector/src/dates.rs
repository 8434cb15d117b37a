//! Camunda writes dates as `2026-11-23T20:40:05.123+0000`; task events carry RFC 3339 in UTC
//! with milliseconds (`2026-11-23T20:40:05.123Z`), which sorts as text.

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};

const CAMUNDA: &str = "%Y-%m-%dT%H:%M:%S%.3f%z";

/// Parses Camunda's format, or RFC 3339 (what users send in commands).
pub fn parse(s: &str) -> Option<DateTime<Utc>> {
    DateTime::<FixedOffset>::parse_from_str(s, CAMUNDA)
        .or_else(|_| DateTime::parse_from_rfc3339(s))
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// An engine date as an event date; text that is not a date is kept as it is (and logged).
pub fn to_event(s: &str) -> String {
    match parse(s) {
        Some(d) => d.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => {
            tracing::warn!(
                value = s,
                "engine sent a date in an unknown format; kept as text"
            );
            s.to_owned()
        }
    }
}

pub fn opt_to_event(s: &Option<String>) -> Option<String> {
    s.as_deref().map(to_event)
}

/// A date as Camunda's REST API takes it (in a body, or percent-encoded in a query).
pub fn to_engine(d: DateTime<Utc>) -> String {
    d.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_dates_become_utc_rfc3339() {
        assert_eq!(
            to_event("2026-11-23T21:40:05.123+0100"),
            "2026-11-23T20:40:05.123Z"
        );
        assert_eq!(to_event("2026-11-23T20:40:05Z"), "2026-11-23T20:40:05.000Z");
        let d = parse("2026-11-23T20:40:05.123+0000").expect("parse");
        assert_eq!(to_engine(d), "2026-11-23T20:40:05.123+0000");
        assert_eq!(to_event("soon"), "soon");
    }
}
