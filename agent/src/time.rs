//! The one RFC 3339 form accessd writes and reads (PROTOCOL §2 times:
//! `2026-11-29T18:00:00Z`).
//!
//! It lives below `protocol` and `ssh` because both need it: `protocol`
//! for `issued_at`/`expires_at`, `ssh::authkeys` for a managed key's
//! `expires_at` in the inventory. While it lived in `protocol`, `ssh`
//! importing it and `protocol` importing `ssh`'s key types made a cycle
//! between the two (issue 14). `protocol` re-exports both functions, the
//! wire's time format, so callers above it may keep naming them there.

use std::time::SystemTime;

/// Format a time as RFC 3339 UTC with whole seconds (`2026-11-29T18:00:00Z`).
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parse an RFC 3339 time in UTC: `Z` or an explicit `+00:00` offset,
/// optional fractional seconds. Other offsets are refused rather than
/// guessed at.
pub fn parse_time(s: &str) -> Option<SystemTime> {
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
