//! The wire protocol (PROTOCOL §2–4), free of side effects: DSSE envelopes,
//! typed commands, result payloads, and the client half (build, sign, seal,
//! verify) that `accessctl`, the demos and the tests share.

pub mod client;
pub mod command;
pub mod dsse;
pub mod result;

/// payloadType of a command envelope.
pub const COMMAND_TYPE: &str = "application/vnd.accessd.command.v1+json";
/// payloadType of a result envelope.
pub const RESULT_TYPE: &str = "application/vnd.accessd.result.v1+json";
/// keyid on result signatures.
pub const AGENT_KEY_ID: &str = "agent";

/// Format a time as RFC 3339 UTC with whole seconds (`2026-11-29T18:00:00Z`).
pub fn format_time(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parse an RFC 3339 time in UTC: `Z` or an explicit `+00:00` offset,
/// optional fractional seconds. Other offsets are refused rather than
/// guessed at.
pub fn parse_time(s: &str) -> Option<std::time::SystemTime> {
    let z;
    let s = match s.strip_suffix("+00:00") {
        Some(head) => {
            z = format!("{head}Z");
            z.as_str()
        }
        None => s,
    };
    humantime::parse_rfc3339(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_in_utc() {
        let t = parse_time("2026-11-29T18:00:00Z").unwrap();
        assert_eq!(format_time(t), "2026-11-29T18:00:00Z");
        assert_eq!(parse_time("2026-11-29T18:00:00+00:00"), Some(t));
        assert!(parse_time("2026-11-29T18:00:00.5Z").is_some());
        assert!(parse_time("2026-11-29T18:00:00+02:00").is_none());
        assert!(parse_time("2026-11-29 18:00:00").is_none());
        assert!(parse_time("").is_none());
    }
}
