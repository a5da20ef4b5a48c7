//! Key expiry through the engine, on a clock the test moves: the next
//! expiry the daemon's timer is armed to, removal when the wall clock gets
//! there (also by a step), and no removal when it is stepped back.

mod protocol_support;

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use accessd::engine::Status;
use accessd::error::Code;
use accessd::protocol::format_time;
use accessd::sys::TestClock;
use protocol_support::*;
use serde_json::json;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMU3PG77wArVV58QldS0w27ZKeU/f5DVdcL7Fbmo4fgY laptop";

fn rig() -> Option<Rig> {
    if !require(is_root(), "root (files are chowned to new users)") {
        return None;
    }
    if !require(
        accessd::sys::find_program("useradd").is_some(),
        "useradd (create_user's oracle)",
    ) {
        return None;
    }
    Some(Rig::new())
}

fn at(secs: u64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn authorized_keys(rig: &Rig) -> String {
    std::fs::read_to_string(rig.root.join("home/alice/.ssh/authorized_keys")).unwrap_or_default()
}

#[test]
fn the_next_expiry_follows_the_wall_clock_through_steps_forward_and_back() {
    let Some(rig) = rig() else { return };
    let clock = Arc::new(TestClock::at(rig.now));
    let mut e = rig.engine_on(clock.clone());
    assert_eq!(e.expire_keys(), None, "nothing expires: no timer");

    let h = e.handle(&rig.signed(
        "c-bind",
        "create_user",
        json!({"user": "alice", "keys": [KEY], "keys_expire_at": format_time(at(NOW + 600))}),
    ));
    assert_eq!(h.status, Status::Ok, "{}", h.message);
    assert!(authorized_keys(&rig).contains("expiry-time="));
    assert_eq!(e.expire_keys(), Some(at(NOW + 600)));

    // Time passes, not enough: nothing removed, same deadline.
    clock.pass(Duration::from_secs(599));
    assert_eq!(e.expire_keys(), Some(at(NOW + 600)));
    assert!(authorized_keys(&rig).contains("AAAAC3Nza"));

    // The clock is stepped past it (NTP at boot): removed, no timer left.
    clock.set_wall(at(NOW + 5000));
    assert_eq!(e.expire_keys(), None);
    assert!(!authorized_keys(&rig).contains("AAAAC3Nza"));

    // A key bound now, then the clock stepped back before its binding:
    // nothing is due, the deadline stays, the line stays.
    let mut spec = rig.spec(
        "c-bind-2",
        "add_keys",
        json!({"user": "alice", "keys": [KEY], "expires_at": format_time(at(NOW + 6000))}),
    );
    spec.issued_at = at(NOW + 5000 - 60);
    spec.expires_at = at(NOW + 5000 + 540);
    let h = e.handle(spec.sign(&rig.cp, KEY_ID).as_bytes());
    assert_eq!(h.status, Status::Ok, "{}", h.message);
    clock.set_wall(rig.now);
    assert_eq!(e.expire_keys(), Some(at(NOW + 6000)));
    assert!(authorized_keys(&rig).contains("AAAAC3Nza"));

    // Another engine on the same state (a restart) knows the same deadline.
    let mut again = rig.engine_on(Arc::new(TestClock::at(at(NOW + 6000))));
    assert_eq!(again.expire_keys(), None, "due at start: removed");
    assert!(!authorized_keys(&rig).contains("AAAAC3Nza"));
}

#[test]
fn an_expiry_that_is_not_in_the_future_is_invalid_command_and_nothing_is_created() {
    let Some(rig) = rig() else { return };
    let mut e = rig.engine();
    let before = rig.snapshot();
    for (id, t) in [("c-now", NOW), ("c-past", NOW - 3600)] {
        let h = e.handle(&rig.signed(
            id,
            "create_user",
            json!({"user": "alice", "keys": [KEY], "keys_expire_at": format_time(at(t))}),
        ));
        assert_eq!(
            (h.status, h.code),
            (Status::Rejected, Code::InvalidCommand),
            "{}",
            h.message
        );
    }
    assert_unchanged(&before, &rig.snapshot(), "refused create_user");
    assert_eq!(e.expire_keys(), None);
}
