//! Replay records against clock steps (issue 12 item 10): a record is kept
//! until the command's window has passed by the wall clock *and* by a
//! clock that is never stepped, so stepping the wall clock forward (records
//! look expired) and back (the captured command looks fresh) cannot make
//! an applied command apply again.

mod protocol_support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use accessd::engine::Engine;
use accessd::error::Code;
use accessd::protocol::client::CommandSpec;
use accessd::sys::TestClock;
use protocol_support::*;
use serde_json::json;

fn rig() -> Option<Rig> {
    require(
        is_root(),
        "root (the engine chowns its state and reads a copied /etc)",
    )
    .then(Rig::new)
}

/// An `add_keys` for root valid from `at` - 60 s to `at` + 540 s.
fn add_key_at(rig: &Rig, id: &str, at: SystemTime) -> Vec<u8> {
    CommandSpec {
        id: id.into(),
        instance_id: INSTANCE.into(),
        issued_at: at - Duration::from_secs(60),
        expires_at: at + Duration::from_secs(540),
        op: "add_keys".into(),
        args: json!({"user": "root", "keys": [KEY1]}),
    }
    .sign(&rig.cp, KEY_ID)
    .into_bytes()
}

fn records(rig: &Rig) -> usize {
    std::fs::read_dir(rig.state.join("replay"))
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count()
}

/// Step the wall clock to `to` and give the engine a reason to prune: a
/// fresh command, valid at that time.
fn prune_at(e: &mut Engine, rig: &Rig, clock: &TestClock, to: SystemTime, id: &str) {
    clock.set_wall(to);
    let h = e.handle(&add_key_at(rig, id, to));
    assert_eq!(h.code, Code::Ok, "{id}: {}", h.message);
}

#[test]
fn a_clock_stepped_forward_then_back_does_not_make_a_captured_command_fresh() {
    let Some(rig) = rig() else { return };
    let clock = Arc::new(TestClock::at(rig.now));
    let mut e = rig.engine_on(clock.clone());
    let captured = add_key_at(&rig, "c-captured", rig.now);
    assert_eq!(e.handle(&captured).code, Code::Ok);

    // A day forward: by the wall clock the record is long expired.
    prune_at(
        &mut e,
        &rig,
        &clock,
        rig.now + Duration::from_secs(86_400),
        "c-later",
    );
    // And back (NTP correcting a bad step): the captured command is in its
    // window again, and must still be refused.
    clock.set_wall(rig.now + Duration::from_secs(30));
    let h = e.handle(&captured);
    assert_eq!(
        (h.code, h.id.as_deref()),
        (Code::Replayed, Some("c-captured")),
        "{}",
        h.message
    );

    // Also across a restart of the agent in the same boot.
    drop(e);
    let mut e = rig.engine_on(clock.clone());
    prune_at(
        &mut e,
        &rig,
        &clock,
        rig.now + Duration::from_secs(86_400 * 2),
        "c-later-2",
    );
    clock.set_wall(rig.now + Duration::from_secs(40));
    assert_eq!(e.handle(&captured).code, Code::Replayed);
}

#[test]
fn a_reboot_with_a_wrong_clock_does_not_forget_a_record() {
    let Some(rig) = rig() else { return };
    let clock = Arc::new(TestClock::at(rig.now));
    let mut e = rig.engine_on(clock.clone());
    let captured = add_key_at(&rig, "c-captured", rig.now);
    assert_eq!(e.handle(&captured).code, Code::Ok);
    drop(e);
    // A quick reboot whose RTC reads a year ahead, corrected minutes later.
    clock.reboot(Duration::from_secs(60));
    let mut e = rig.engine_on(clock.clone());
    prune_at(
        &mut e,
        &rig,
        &clock,
        rig.now + Duration::from_secs(365 * 86_400),
        "c-rtc",
    );
    clock.set_wall(rig.now + Duration::from_secs(120));
    assert_eq!(e.handle(&captured).code, Code::Replayed);
}

#[test]
fn records_are_pruned_once_the_window_has_passed_by_both_clocks() {
    let Some(rig) = rig() else { return };
    let clock = Arc::new(TestClock::at(rig.now));
    let mut e = rig.engine_on(clock.clone());
    assert_eq!(e.handle(&add_key_at(&rig, "c-old", rig.now)).code, Code::Ok);
    assert_eq!(records(&rig), 1);
    // The whole window (ttl 600 s + 2 x 300 s skew) really passes, and a bit.
    clock.pass(Duration::from_secs(600 + 600 + 61));
    let now = clock_now(&clock);
    prune_at(&mut e, &rig, &clock, now, "c-new");
    assert_eq!(records(&rig), 1, "c-old pruned, c-new recorded");
    // c-old is expired now anyway, and rejected as such.
    let h = e.handle(&add_key_at(&rig, "c-old", rig.now));
    assert_eq!(h.code, Code::Expired, "{}", h.message);
}

fn clock_now(c: &TestClock) -> SystemTime {
    use accessd::sys::Clock;
    c.now()
}
