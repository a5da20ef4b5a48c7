//! Capped exponential backoff with jitter, between reconnect attempts.
//!
//! Jitter matters for a fleet: when a broker restarts, thousands of agents
//! lose their connection at the same instant; without jitter they would all
//! come back in the same millisecond, every time.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
    /// Where the jitter comes from: random, or fixed in the delivery
    /// state machine's tests so that their delays are exact.
    jitter: fn() -> u64,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff::with_jitter(min, max, random_jitter)
    }

    /// A backoff whose jitter is drawn from `jitter` (any `u64`; it is
    /// reduced into the jitter span).
    pub fn with_jitter(min: Duration, max: Duration, jitter: fn() -> u64) -> Self {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
            jitter,
        }
    }

    /// After a successful connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The delay before the next attempt: `min * 2^n`, capped at `max`, then
    /// drawn uniformly from its upper half ("equal jitter": never zero, so a
    /// broker that refuses us is never hammered).
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.min.saturating_mul(1u32 << self.attempt.min(20));
        let cap = exp.min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = cap / 2;
        let r = (self.jitter)();
        let span = half.as_nanos() as u64;
        half + Duration::from_nanos(if span == 0 { 0 } else { r % (span + 1) })
    }
}

/// Jitter does not need to be unpredictable; a failed read means none.
fn random_jitter() -> u64 {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).map_or(0, |_| u64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_is_capped_jittered_and_resets() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(3);
        let mut b = Backoff::new(min, max);
        let first = b.next_delay();
        assert!(first >= min / 2 && first <= min, "{first:?}");
        let mut seen = std::collections::HashSet::new();
        for _ in 0..40 {
            let d = b.next_delay();
            assert!(
                d <= max && d >= max / 2 || d < max / 2 && b.attempt < 6,
                "{d:?}"
            );
            seen.insert(d);
        }
        // Capped: the last delays sit in [max/2, max], and they differ (jitter).
        assert!(seen.len() > 10);
        b.reset();
        assert!(b.next_delay() <= min);
    }

    #[test]
    fn with_no_jitter_each_delay_is_half_its_cap() {
        let mut b = Backoff::with_jitter(Duration::from_secs(1), Duration::from_secs(4), || 0);
        let delays: Vec<_> = (0..4).map(|_| b.next_delay()).collect();
        let ms = Duration::from_millis;
        assert_eq!(delays, [ms(500), ms(1000), ms(2000), ms(2000)]);
    }
}
