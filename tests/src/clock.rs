//! Time: the clock as shadow and RFC 3339 count it.

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}

/// Days since the epoch, as shadow's lastchg counts them.
pub fn days_since_epoch() -> i64 {
    unix_now().div_euclid(86_400)
}

/// RFC 3339 UTC time `offset` seconds from now (`2026-11-29T18:00:00Z`).
pub fn rfc3339_from_now(offset: i64) -> String {
    rfc3339_at(unix_now() + offset)
}

/// RFC 3339 UTC time of the Unix time `t`.
pub fn rfc3339_at(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod unit {
    use super::*;
    use crate::run::host_ok;

    #[test]
    fn rfc3339_matches_date_for_the_same_instant() {
        // One fixed instant for both sides: reading two clocks could
        // straddle a minute (this test once compared `now` twice and failed so).
        let now = unix_now();
        for t in [0, 951_782_400, 1_709_164_800, 4_107_542_399, now] {
            let date = host_ok(&["date", "-u", "-d", &format!("@{t}"), "+%Y-%m-%dT%H:%M:%SZ"]);
            assert_eq!(rfc3339_at(t), date.trim(), "t = {t}");
        }
    }
}
