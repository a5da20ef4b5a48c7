//! `terminate_sessions` of `remove_keys`/`replace_keys`, and of an expiring
//! key, through the engine: which keys' sessions it asks to end, when (only
//! after the lines are gone; never after a failed edit), and what the
//! result says. The sessions are behind `KeySessions`; here a recorder
//! stands in for sshd's log and /proc (the real ones are exercised by
//! `ssh_sessions.rs` and the boot suite).

mod protocol_support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use accessd::engine::{Engine, Status};
use accessd::error::{Code, Error, Result};
use accessd::protocol::format_time;
use accessd::sessions::by_key::Outcome;
use accessd::sessions::revoked::KeySessions;
use accessd::sessions::Ended;
use accessd::ssh::authkeys::KeyLine;
use accessd::sys::{System, TestClock};
use protocol_support::*;
use serde_json::{json, Value};

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

fn fp(line: &str) -> String {
    KeyLine::parse(line).unwrap().fingerprint()
}

fn fps(lines: &[&str]) -> BTreeSet<String> {
    lines.iter().map(|l| fp(l)).collect()
}

/// One call the engine made.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    end: bool,
    user: String,
    uid: u32,
    fingerprints: BTreeSet<String>,
    /// alice's authorized_keys at the time of the call.
    file_then: String,
}

/// Records every call; `end` says each asked-for key had one session
/// (pid 4000 + n, from 127.0.0.1), `count` says `open`.
struct Recorder {
    authorized_keys: std::path::PathBuf,
    calls: Mutex<Vec<Call>>,
    open: usize,
    fail: bool,
    /// Live sessions of the user whose key is unknown (no record).
    unmatched: usize,
}

impl Recorder {
    fn new(rig: &Rig) -> Arc<Recorder> {
        Arc::new(Recorder {
            authorized_keys: rig.root.join("home/alice/.ssh/authorized_keys"),
            calls: Mutex::new(Vec::new()),
            open: 1,
            fail: false,
            unmatched: 0,
        })
    }

    fn failing(rig: &Rig) -> Arc<Recorder> {
        let mut r = Arc::into_inner(Recorder::new(rig)).unwrap();
        r.fail = true;
        Arc::new(r)
    }

    fn record(&self, end: bool, user: &str, uid: u32, fingerprints: &BTreeSet<String>) {
        self.calls.lock().unwrap().push(Call {
            end,
            user: user.into(),
            uid,
            fingerprints: fingerprints.clone(),
            file_then: std::fs::read_to_string(&self.authorized_keys).unwrap_or_default(),
        });
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl KeySessions for Recorder {
    fn end(
        &self,
        _sys: &System,
        user: &str,
        uid: u32,
        fingerprints: &BTreeSet<String>,
    ) -> Result<Outcome> {
        self.record(true, user, uid, fingerprints);
        if self.fail {
            return Err(Error::Io {
                context: "reading sshd's login records".into(),
                source: std::io::Error::other("no journal"),
            });
        }
        Ok(Outcome {
            ended: fingerprints
                .iter()
                .enumerate()
                .map(|(i, f)| Ended {
                    pid: 4000 + i as i32,
                    user: user.into(),
                    fingerprint: Some(f.clone()),
                    from: Some("127.0.0.1".into()),
                })
                .collect(),
            open: 0,
            unmatched: self.unmatched,
            unmatched_why: Some("their login records are no longer in the journal".into()),
        })
    }

    fn count(
        &self,
        _sys: &System,
        user: &str,
        uid: u32,
        fingerprints: &BTreeSet<String>,
    ) -> Result<Outcome> {
        self.record(false, user, uid, fingerprints);
        if self.fail {
            return Err(Error::Io {
                context: "reading sshd's login records".into(),
                source: std::io::Error::other("no journal"),
            });
        }
        Ok(Outcome {
            open: self.open,
            unmatched: self.unmatched,
            unmatched_why: Some("their login records are no longer in the journal".into()),
            ..Outcome::default()
        })
    }
}

/// alice, created with KEY1 and KEY2 (both managed); her uid.
fn alice(rig: &Rig, e: &mut Engine) -> u32 {
    let h = e.handle(&rig.signed(
        "c-create",
        "create_user",
        json!({"user": "alice", "keys": [KEY1, KEY2]}),
    ));
    assert_eq!(h.status, Status::Ok, "{}", h.message);
    let p = payload(&agent_key(e), &h);
    p.data["uid"].as_u64().unwrap() as u32
}

fn data(e: &Engine, h: &accessd::engine::Handled) -> Value {
    payload(&agent_key(e), h).data
}

#[test]
fn remove_keys_with_terminate_sessions_ends_the_removed_keys_sessions_after_their_lines_are_gone() {
    let Some(rig) = rig() else { return };
    let rec = Recorder::new(&rig);
    let mut e = rig.engine().with_key_sessions(rec.clone());
    let uid = alice(&rig, &mut e);
    let h = e.handle(&rig.signed(
        "c-rm",
        "remove_keys",
        json!({"user": "alice", "keys": [fp(KEY1)], "terminate_sessions": true}),
    ));
    assert_eq!(h.status, Status::Ok, "{}", h.message);
    let calls = rec.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let c = &calls[0];
    assert_eq!(
        (c.end, c.user.as_str(), c.uid, &c.fingerprints),
        (true, "alice", uid, &fps(&[KEY1])),
        "only the removed key's sessions, not KEY2's"
    );
    assert!(
        !c.file_then.contains(KEY1.split(' ').nth(1).unwrap()),
        "sessions were ended while the key could still log in:\n{}",
        c.file_then
    );
    assert!(c.file_then.contains(KEY2.split(' ').nth(1).unwrap()));
    let d = data(&e, &h);
    assert_eq!(
        d["sessions_ended"],
        json!([{"pid": 4000, "user": "alice", "fingerprint": fp(KEY1), "from": "127.0.0.1"}])
    );
    assert_eq!(d["sessions_open"], 0);
    assert_eq!(d["removed"], 1);
    assert!(h.message.contains("ended 1 session(s)"), "{}", h.message);
}

#[test]
fn remove_keys_without_terminate_sessions_ends_nothing_and_reports_the_sessions_left_open() {
    let Some(rig) = rig() else { return };
    let rec = Recorder::new(&rig);
    let mut e = rig.engine().with_key_sessions(rec.clone());
    alice(&rig, &mut e);
    let h = e.handle(&rig.signed(
        "c-rm",
        "remove_keys",
        json!({"user": "alice", "keys": [KEY1]}),
    ));
    assert_eq!(h.status, Status::Ok, "{}", h.message);
    let calls = rec.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(!calls[0].end, "nothing is ended without terminate_sessions");
    assert_eq!(calls[0].fingerprints, fps(&[KEY1]));
    let d = data(&e, &h);
    assert_eq!(d["sessions_open"], 1);
    assert!(d.get("sessions_ended").is_none(), "{d}");
    assert!(h.message.contains("stay open"), "{}", h.message);
}

#[test]
fn a_failed_key_removal_ends_no_session() {
    let Some(rig) = rig() else { return };
    let rec = Recorder::new(&rig);
    let mut e = rig.engine().with_key_sessions(rec.clone());
    alice(&rig, &mut e);
    // alice turns ~/.ssh into a symlink: the edit is refused.
    let ssh = rig.root.join("home/alice/.ssh");
    std::fs::rename(&ssh, rig.root.join("home/alice/elsewhere")).unwrap();
    std::os::unix::fs::symlink("elsewhere", &ssh).unwrap();
    for (id, op, args) in [
        (
            "c-rm",
            "remove_keys",
            json!({"user": "alice", "keys": [KEY1], "terminate_sessions": true}),
        ),
        (
            "c-rep",
            "replace_keys",
            json!({"user": "alice", "keys": [KEY3], "terminate_sessions": true}),
        ),
    ] {
        let h = e.handle(&rig.signed(id, op, args));
        assert_eq!(
            (h.status, h.code),
            (Status::Failed, Code::UnsafePath),
            "{op}: {}",
            h.message
        );
    }
    assert_eq!(rec.calls(), [], "a removal that failed ended sessions");
}

#[test]
fn sessions_that_cannot_be_ended_leave_the_removal_ok_and_say_so() {
    let Some(rig) = rig() else { return };
    let rec = Recorder::failing(&rig);
    let mut e = rig.engine().with_key_sessions(rec.clone());
    alice(&rig, &mut e);
    let h = e.handle(&rig.signed(
        "c-rm",
        "remove_keys",
        json!({"user": "alice", "keys": [KEY1], "terminate_sessions": true}),
    ));
    assert_eq!((h.status, h.code), (Status::Ok, Code::Ok), "{}", h.message);
    assert!(
        h.message
            .contains("could not be ended: reading sshd's login records"),
        "{}",
        h.message
    );
    let d = data(&e, &h);
    assert_eq!(d["removed"], 1);
    assert_eq!(d["sessions_ended"], json!([]));
    assert!(d["sessions_error"].as_str().unwrap().contains("no journal"));
    assert!(d.get("sessions_open").is_none(), "unknown, not 0: {d}");
    let text = std::fs::read_to_string(rig.root.join("home/alice/.ssh/authorized_keys")).unwrap();
    assert!(!text.contains(KEY1.split(' ').nth(1).unwrap()), "{text}");
    // Without the flag, a count that fails is told the same way.
    let h = e.handle(&rig.signed(
        "c-rm-2",
        "remove_keys",
        json!({"user": "alice", "keys": [KEY2]}),
    ));
    assert_eq!(h.status, Status::Ok, "{}", h.message);
    assert!(data(&e, &h)["sessions_error"].is_string());
}

/// A live session of the user whose record is gone: its key is unknown,
/// so it is neither ended nor counted, and the result does not claim that
/// the removed keys' sessions are all accounted for.
#[test]
fn sessions_that_match_no_key_are_told_not_counted_as_closed() {
    let Some(rig) = rig() else { return };
    let mut r = Arc::into_inner(Recorder::new(&rig)).unwrap();
    r.unmatched = 2;
    let rec = Arc::new(r);
    let mut e = rig.engine().with_key_sessions(rec.clone());
    alice(&rig, &mut e);
    let h = e.handle(&rig.signed(
        "c-rm",
        "remove_keys",
        json!({"user": "alice", "keys": [KEY1], "terminate_sessions": true}),
    ));
    assert_eq!(h.status, Status::Ok, "{}", h.message);
    let d = data(&e, &h);
    assert_eq!(d["sessions_ended"].as_array().unwrap().len(), 1, "{d}");
    // Two live sessions of an unknown key: how many of the removed keys'
    // sessions are open is unknown, not 0.
    assert!(d.get("sessions_open").is_none(), "unknown, not 0: {d}");
    let err = d["sessions_error"].as_str().unwrap();
    assert_eq!(
        err,
        "2 live session(s) of alice could not be matched to a key: \
         their login records are no longer in the journal"
    );
    assert!(h.message.contains(err), "{}", h.message);
    assert!(h.message.contains("they were not ended"), "{}", h.message);
    // Without the flag: counted as far as known, and told the same way.
    let h = e.handle(&rig.signed(
        "c-rm-2",
        "remove_keys",
        json!({"user": "alice", "keys": [KEY2]}),
    ));
    let d = data(&e, &h);
    assert!(d.get("sessions_open").is_none(), "unknown, not 1: {d}");
    assert!(h.message.contains("1 live session(s)"), "{}", h.message);
    assert!(d["sessions_error"]
        .as_str()
        .unwrap()
        .starts_with("2 live session(s) of alice"));
}

#[test]
fn replace_keys_ends_the_sessions_of_the_keys_it_removes_and_not_of_those_it_keeps() {
    let Some(rig) = rig() else { return };
    let rec = Recorder::new(&rig);
    let mut e = rig.engine().with_key_sessions(rec.clone());
    let uid = alice(&rig, &mut e);
    let h = e.handle(&rig.signed(
        "c-rep",
        "replace_keys",
        json!({"user": "alice", "keys": [KEY2, KEY3], "terminate_sessions": true}),
    ));
    assert_eq!(h.status, Status::Ok, "{}", h.message);
    let calls = rec.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        (calls[0].end, calls[0].uid, &calls[0].fingerprints),
        (true, uid, &fps(&[KEY1]))
    );
    assert!(!calls[0].file_then.contains(KEY1.split(' ').nth(1).unwrap()));
    let d = data(&e, &h);
    assert_eq!(d["sessions_ended"].as_array().unwrap().len(), 1);
    assert_eq!(d["sessions_open"], 0);
    // Nothing removed: nothing to look for, and nothing left open.
    let h = e.handle(&rig.signed(
        "c-rep-2",
        "replace_keys",
        json!({"user": "alice", "keys": [KEY2, KEY3], "terminate_sessions": true}),
    ));
    assert_eq!(h.status, Status::Ok, "{}", h.message);
    assert_eq!(rec.calls().len(), 1, "no call when no key was removed");
    let d = data(&e, &h);
    assert_eq!(
        (d["sessions_ended"].clone(), d["sessions_open"].clone()),
        (json!([]), json!(0))
    );
}

#[test]
fn an_expiring_key_bound_with_terminate_sessions_ends_its_sessions_at_expiry() {
    let Some(rig) = rig() else { return };
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let rec = Recorder::new(&rig);
    let clock = Arc::new(TestClock::at(rig.now));
    let mut e = rig.engine_on(clock.clone()).with_key_sessions(rec.clone());
    let uid = alice(&rig, &mut e);
    let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
    // KEY2 and KEY3 end at NOW+600 and asked for their sessions to end
    // then (replace_keys also ends KEY1's now, which it removes); KEY1,
    // bound again by add_keys (which has no terminate_sessions), ends at
    // NOW+300 alone.
    let h = e.handle(&rig.signed(
        "c-bind",
        "replace_keys",
        json!({
            "user": "alice",
            "keys": [KEY2, KEY3],
            "expires_at": format_time(at(NOW + 600)),
            "terminate_sessions": true,
        }),
    ));
    assert_eq!(h.status, Status::Ok, "{}", h.message);
    assert_eq!(rec.calls()[0].fingerprints, fps(&[KEY1]));
    let h = e.handle(&rig.signed(
        "c-add",
        "add_keys",
        json!({"user": "alice", "keys": [KEY1], "expires_at": format_time(at(NOW + 300))}),
    ));
    assert_eq!(h.status, Status::Ok, "{}", h.message);
    let record = std::fs::read_to_string(rig.state.join("keys/alice.json")).unwrap();
    let record: Value = serde_json::from_str(&record).unwrap();
    assert_eq!(
        record["expiring"][fp(KEY3)]["terminate_sessions"],
        true,
        "{record}"
    );
    assert!(
        record["expiring"][fp(KEY1)]
            .get("terminate_sessions")
            .is_none(),
        "{record}"
    );
    let before = rec.calls().len();

    clock.pass(Duration::from_secs(300));
    assert_eq!(e.expire_keys(), Some(at(NOW + 600)));
    assert_eq!(rec.calls().len(), before, "KEY1 did not ask for it");

    clock.pass(Duration::from_secs(300));
    assert_eq!(e.expire_keys(), None);
    let calls = rec.calls();
    assert_eq!(calls.len(), before + 1, "{calls:?}");
    let c = calls.last().unwrap();
    assert_eq!(
        (c.end, c.user.as_str(), c.uid, &c.fingerprints),
        (true, "alice", uid, &fps(&[KEY2, KEY3])),
        "one call for the user's keys expired together"
    );
    assert!(
        !c.file_then.contains(KEY2.split(' ').nth(1).unwrap())
            && !c.file_then.contains(KEY3.split(' ').nth(1).unwrap()),
        "ended before the line was removed:\n{}",
        c.file_then
    );
    // Each KEY_EXPIRED event lists the sessions it ended for that key.
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let event = |f: &str| {
        text.lines()
            .find(|l| l.contains("3f9d2a6c8b1e4f07a5c3d9e2b6f1a845") && l.contains(f))
            .unwrap_or_else(|| panic!("no KEY_EXPIRED event for {f}:\n{text}"))
            .to_owned()
    };
    let key3 = event(&fp(KEY3));
    // (The recorder numbers pids by fingerprint order; fmt escapes quotes.)
    let listed = key3.split("sessions_ended=").nth(1).unwrap_or_default();
    assert!(listed.contains(r#"\"pid\":400"#), "{key3}");
    assert!(listed.contains(&fp(KEY3)), "{key3}");
    assert!(
        !listed.contains(&fp(KEY2)),
        "only this key's sessions: {key3}"
    );
    assert!(key3.contains("sessions_open=0"), "{key3}");
    assert!(key3.contains("ended 1 of its session(s)"), "{key3}");
    let key1 = event(&fp(KEY1));
    assert!(!key1.contains("sessions_"), "KEY1 did not ask: {key1}");
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// With the real sessions (sshd's log and /proc) on a root that is not the
/// running system (an image, this test's sandbox): there are no live
/// sessions, so nothing is read, nothing is ended, none is open.
#[test]
fn in_image_mode_no_session_is_ended_and_none_is_open() {
    let Some(rig) = rig() else { return };
    let mut e = rig.engine();
    alice(&rig, &mut e);
    let h = e.handle(&rig.signed(
        "c-rm",
        "remove_keys",
        json!({"user": "alice", "keys": [KEY1], "terminate_sessions": true}),
    ));
    assert_eq!(h.status, Status::Ok, "{}", h.message);
    let d = data(&e, &h);
    assert_eq!(d["sessions_ended"], json!([]), "{d}");
    assert_eq!(d["sessions_open"], 0, "{d}");
    assert!(d.get("sessions_error").is_none(), "{d}");
    let h = e.handle(&rig.signed(
        "c-rep",
        "replace_keys",
        json!({"user": "alice", "keys": [KEY3]}),
    ));
    assert_eq!(h.status, Status::Ok, "{}", h.message);
    let d = data(&e, &h);
    assert_eq!(d["removed"], 1, "{d}");
    assert_eq!(d["sessions_open"], 0, "{d}");
    assert!(d.get("sessions_ended").is_none(), "{d}");
}
