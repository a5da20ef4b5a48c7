//! The one way a test waits for a condition: poll it until it holds, or
//! panic naming what was awaited and how long the test waited.
//!
//! Included by path (`#[path = ".../wait/mod.rs"] mod wait;`) from the
//! suites' support modules and from the end-to-end harness, as `gate` is,
//! so that every wait loop has the same shape and the same failure message.

#![allow(dead_code)] // each suite uses the part it needs

use std::time::{Duration, Instant};

/// How often the condition is polled: short next to any deadline a test
/// gives, long enough not to busy-spin a shared machine.
pub const POLL: Duration = Duration::from_millis(10);

/// Poll `f` every [`POLL`] until it returns true. When it has not after
/// `deadline`, panic with `what` and the time waited. `f` is always called
/// at least once, and once more after the deadline has passed, so a
/// condition that became true while the test slept is not reported as a
/// timeout.
pub fn wait_until(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        let expired = start.elapsed() >= deadline;
        if f() {
            return;
        }
        if expired {
            panic!(
                "timed out waiting for {what} (waited {:?}, the limit is {deadline:?})",
                start.elapsed()
            );
        }
        std::thread::sleep(POLL);
    }
}
