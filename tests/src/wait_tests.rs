//! Unit tests of the shared wait loop (agent/tests/wait), here because a
//! test inside that file would run again in every suite that includes it.

use std::time::{Duration, Instant};

use crate::wait::wait_until;

#[test]
fn wait_until_returns_as_soon_as_the_condition_holds() {
    let mut calls = 0;
    let start = Instant::now();
    wait_until("the third poll", Duration::from_secs(20), || {
        calls += 1;
        calls == 3
    });
    assert_eq!(calls, 3);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn wait_until_panics_naming_what_and_how_long_it_waited() {
    let deadline = Duration::from_millis(50);
    let start = Instant::now();
    let panic = std::panic::catch_unwind(|| {
        wait_until("a condition that never holds", deadline, || false);
    })
    .expect_err("a condition that never holds must time out");
    assert!(start.elapsed() >= deadline);
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("a condition that never holds") && message.contains("waited"),
        "{message}"
    );
}

#[test]
fn wait_until_polls_once_more_after_the_deadline() {
    // A condition that turned true while the loop slept past the deadline
    // has been met; reporting a timeout then would be a false failure.
    let mut calls = 0;
    wait_until("the second poll", Duration::from_millis(1), || {
        calls += 1;
        calls == 2
    });
    assert_eq!(calls, 2);
}
