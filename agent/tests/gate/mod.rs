//! The one rule every test suite uses for a missing prerequisite (root, a
//! tool, a kernel feature): under CI it fails the test, elsewhere the test
//! is skipped *visibly*.
//!
//! Included by path (`#[path = ".../gate/mod.rs"] mod gate;`) from each
//! suite's support module and from the end-to-end harness, so that there
//! is one definition of "are we in CI" instead of one per suite.
//!
//! Why the skip line is written with `io::stderr().write_all` and not
//! `eprintln!`: libtest captures the print macros of a passing test, so a
//! skipped test used to show as a plain `ok`. A direct write to the stderr
//! handle is not captured and reaches the terminal.

#![allow(dead_code)] // each suite uses the part it needs

use std::io::Write;

/// True when `CI` says so. `.ci/run` exports `CI=true`; `1` and any case
/// of `true` count too. Any other value (`false`, `0`, empty) is not CI: a
/// developer's shell with `CI=false` runs the suite as a local run.
pub fn in_ci() -> bool {
    ci_value_means_ci(std::env::var("CI").ok().as_deref())
}

/// [`in_ci`] for a given value of `CI` (none when unset).
pub fn ci_value_means_ci(value: Option<&str>) -> bool {
    matches!(value, Some(v) if v == "1" || v.eq_ignore_ascii_case("true"))
}

/// True when the test can run. Otherwise, under CI, panics with `why`
/// (scripts/install-test-deps installs every tool the suites need, so a
/// missing one in CI is a defect of the setup, not a reason to pass); else
/// prints a visible `SKIP` line and returns false.
pub fn require(ok: bool, why: &str) -> bool {
    if ok {
        return true;
    }
    if in_ci() {
        panic!("test prerequisite missing under CI: {why} (scripts/install-test-deps installs it)");
    }
    skip(why);
    false
}

/// Print the skip where a person running `cargo test` sees it.
pub fn skip(why: &str) {
    let name = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    let _ = std::io::stderr().write_all(format!("SKIP {name}: {why}\n").as_bytes());
}
