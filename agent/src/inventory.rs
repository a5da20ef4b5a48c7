//! The `inventory` op: local users (uid 0 and uid >= UID_MIN) with their
//! password state (never the hash), sudo, keys, and sshd's effective
//! settings. A part that cannot be read is reported in place (`keys_error`,
//! `sshd_error`) instead of failing the whole report.
//!
//! Bounded (PROTOCOL §3, §4): users and their keys live in files that
//! users (and, in image mode, disk images) control, so nothing here grows
//! with them. A report is built one user at a time and stops at the page
//! budget the engine gives it (what fits `max_result_bytes`), cut at a whole
//! user, with `truncated` and an opaque `next` cursor; at most
//! [`MAX_KEYS_PER_USER`] keys are listed per user, with `keys_total`; long
//! strings are shortened by [`shorten`]. Keys are streamed from the file
//! (`authkeys::for_each_key`), never all held at once.
//!
//! Logins (PROTOCOL §3 "Sessions"): sshd's records are read once per page
//! ([`Logins::read`], at most [`MAX_LOGIN_RECORDS`] of them, newest first,
//! through [`crate::ssh::logins`]). A key's `last_login` is the newest
//! `publickey` record of that user and fingerprint, absent when the
//! retained log has none; `logins_incomplete` says when a bound stopped
//! the read (an older `last_login` may then be absent). A user's
//! `sessions` is the number of their live SSH sessions found in /proc
//! ([`by_key::candidates`]), whichever key or method they used and
//! whatever the log still holds. When the log cannot be read (or there is
//! none), `logins_error` says why and keys carry no `last_login`; when
//! /proc cannot be read, `sessions` is null. In image mode there are no
//! records: no `last_login`, and `sessions` is 0 (an image runs nothing).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::SystemTime;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::accounts;
use crate::error::{Error, Result};
use crate::names::UserName;
use crate::sessions::by_key::{self, Snapshot};
use crate::ssh::logins::{self, Records};
use crate::ssh::{authkeys, sshd};
use crate::sys::System;

/// Keys listed per user; `keys_total` says how many the file has.
pub const MAX_KEYS_PER_USER: usize = 100;
/// A key comment longer than this (bytes) is shortened.
pub const MAX_COMMENT_BYTES: usize = 128;
/// Key options, home, shell, user names and error texts longer than this
/// (bytes) are shortened.
pub const MAX_FIELD_BYTES: usize = 256;
/// sshd records read per page at most (newest first): beyond any real
/// machine's logins within the log's retention, a bound on a noisy one's.
pub const MAX_LOGIN_RECORDS: usize = 50_000;
/// Longest cursor accepted back (a cursor this agent made is far shorter).
const MAX_CURSOR_CHARS: usize = 512;
const CURSOR_PREFIX: &str = "c1.";

/// Where the next page starts: after the user with this (uid, name), in the
/// report's order (uid, then name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    uid: u32,
    name: String,
}

impl Cursor {
    /// A cursor from a command: only ones this agent could have made.
    pub fn parse(s: &str) -> Result<Cursor> {
        let bad = || {
            Error::invalid(
                "inventory cursor is not one this agent made (pass data.next of an earlier inventory result unchanged)",
            )
        };
        if s.len() > MAX_CURSOR_CHARS {
            return Err(bad());
        }
        let body = s.strip_prefix(CURSOR_PREFIX).ok_or_else(bad)?;
        let raw = B64URL.decode(body).map_err(|_| bad())?;
        let text = String::from_utf8(raw).map_err(|_| bad())?;
        let (uid, name) = text.split_once(':').ok_or_else(bad)?;
        let uid = uid.parse::<u32>().map_err(|_| bad())?;
        if name.is_empty() || name.len() > MAX_FIELD_BYTES || name.chars().any(char::is_control) {
            return Err(bad());
        }
        Ok(Cursor {
            uid,
            name: name.to_owned(),
        })
    }

    fn after(uid: u32, name: &str) -> Cursor {
        Cursor {
            uid,
            // A passwd name this long is no valid user name (hostile image);
            // its shortened form sorts before it, so at worst that entry is
            // listed once more on the next page, never skipped.
            name: shorten(name, MAX_FIELD_BYTES),
        }
    }

    fn encode(&self) -> String {
        format!(
            "{CURSOR_PREFIX}{}",
            B64URL.encode(format!("{}:{}", self.uid, self.name))
        )
    }

    fn key(&self) -> (u32, &str) {
        (self.uid, &self.name)
    }
}

/// What to report, from the command's `users` and `cursor`.
#[derive(Debug, Default)]
pub struct Request {
    /// Empty: every local user.
    pub users: Vec<UserName>,
    pub cursor: Option<Cursor>,
}

/// `s` if it has at most `max` bytes; otherwise its start (cut at a char
/// boundary) followed by `...[N bytes]`, N being the original length, so
/// that the result stays within `max` bytes and says that it was cut.
pub fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let tail = format!("...[{} bytes]", s.len());
    let mut end = max.saturating_sub(tail.len());
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{tail}", &s[..end])
}

/// Serialized size of a JSON value.
fn size_of(v: &Value) -> usize {
    serde_json::to_vec(v).map_or(usize::MAX, |b| b.len())
}

/// One page of the report; `budget` is the most bytes the serialized
/// `data` may take (the engine derives it from `max_result_bytes`).
pub fn collect(
    sys: &System,
    opts: &sshd::SshdOptions,
    req: &Request,
    budget: usize,
) -> Result<Value> {
    let mut all = accounts::list_users(sys)?;
    if !req.users.is_empty() {
        let mut wanted = Vec::new();
        for name in &req.users {
            match all.iter().position(|u| u.record.name == name.as_str()) {
                Some(i) => wanted.push(i),
                None => {
                    // Missing from the local users: unknown, or a system
                    // account that commands may not name.
                    accounts::managed_user(sys, name)?;
                    return Err(Error::invalid(format!(
                        "inventory: {name} is not a local user (uid 0 or UID_MIN..UID_MAX)"
                    )));
                }
            }
        }
        wanted.sort_unstable();
        wanted.dedup();
        all = wanted.into_iter().map(|i| all[i].clone()).collect();
    }
    all.sort_by(|a, b| (a.record.uid, &a.record.name).cmp(&(b.record.uid, &b.record.name)));
    if let Some(c) = &req.cursor {
        all.retain(|u| (u.record.uid, u.record.name.as_str()) > c.key());
    }

    let logins = Logins::read(sys);
    let mut data = json!({ "users": [], "truncated": false });
    if let Some(e) = &logins.error {
        data["logins_error"] = json!(shorten(e, MAX_FIELD_BYTES));
    }
    if let Some(c) = &logins.incomplete {
        data["logins_incomplete"] = json!(shorten(c, MAX_FIELD_BYTES));
    }
    match sshd::effective(sys, opts) {
        Ok(eff) => data["sshd"] = json!(eff),
        Err(e) => {
            data["sshd"] = Value::Null;
            data["sshd_error"] = json!(shorten(&e.to_string(), MAX_FIELD_BYTES));
        }
    }
    // Room for `"truncated":true` and the longest `next` this can write.
    let longest_next = Cursor {
        uid: u32::MAX,
        name: "x".repeat(MAX_FIELD_BYTES),
    }
    .encode()
    .len();
    let mut used = size_of(&data) + longest_next + 16;
    let mut users = Vec::new();
    let mut last: Option<(u32, String)> = None;
    let total = all.len();
    for u in all {
        let room = budget.saturating_sub(used + 1);
        let mut entry = user_entry(sys, &u, MAX_KEYS_PER_USER, &logins);
        let mut size = size_of(&entry);
        if size > room {
            if !users.is_empty() {
                break;
            }
            // Even alone this user does not fit (only with a small
            // max_result_bytes): list fewer keys rather than never move
            // on; keys_total still says how many there are.
            let mut keys = entry["keys"].as_array().map_or(0, Vec::len);
            while size > room && keys > 0 {
                keys /= 2;
                entry = user_entry(sys, &u, keys, &logins);
                size = size_of(&entry);
            }
        }
        used += size + 1;
        last = Some((u.record.uid, u.record.name.clone()));
        users.push(entry);
    }
    if users.len() < total {
        if let Some((uid, name)) = last {
            data["truncated"] = json!(true);
            data["next"] = json!(Cursor::after(uid, &name).encode());
        }
    }
    data["users"] = Value::Array(users);
    Ok(data)
}

/// sshd's login records and the live sessions, as one inventory page
/// needs them.
#[derive(Debug, Default)]
pub struct Logins {
    /// The newest `publickey` record's time and address, by user and
    /// fingerprint.
    last: HashMap<String, HashMap<String, (SystemTime, IpAddr)>>,
    /// The number of live sessions by uid; `None` when /proc could not be
    /// read.
    live: Option<HashMap<u32, usize>>,
    /// Why the records (or the process table) could not be read.
    error: Option<String>,
    /// Why the records read are not all the log holds.
    incomplete: Option<String>,
}

impl Logins {
    /// The records and sessions of this machine, read once (none in image
    /// mode).
    pub fn read(sys: &System) -> Logins {
        if !sys.is_live() {
            return Logins::from_parts(Ok(None), Ok(Snapshot::default()));
        }
        Logins::from_parts(
            logins::accepted(sys, None, MAX_LOGIN_RECORDS).map(Some),
            Snapshot::read(),
        )
    }

    /// From sshd's records (newest first; `None`: there is no log, as in
    /// an image) and the process table.
    pub fn from_parts(records: Result<Option<Records>>, snap: Result<Snapshot>) -> Logins {
        let mut out = Logins::default();
        let mut errors = Vec::new();
        match records {
            Ok(Some(r)) => {
                out.incomplete = r.cut;
                for l in r.logins {
                    if l.method != "publickey" {
                        continue;
                    }
                    if let Some(fp) = l.fingerprint {
                        let per_user = out.last.entry(l.user).or_default();
                        let newest = per_user.entry(fp).or_insert((l.at, l.addr));
                        if l.at > newest.0 {
                            *newest = (l.at, l.addr);
                        }
                    }
                }
            }
            Ok(None) => {}
            Err(e) => errors.push(format!("reading sshd's log: {e}")),
        }
        match snap {
            Ok(snap) => {
                let mut live = HashMap::new();
                for c in by_key::candidates(&snap) {
                    *live.entry(c.uid).or_insert(0) += 1;
                }
                out.live = Some(live);
            }
            Err(e) => errors.push(format!("reading the process table: {e}")),
        }
        if !errors.is_empty() {
            out.error = Some(errors.join("; "));
        }
        out
    }

    /// `{"at", "from"}` of the newest login of `user` with the key
    /// `fingerprint`, when there is one.
    pub fn last_login(&self, user: &str, fingerprint: &str) -> Option<Value> {
        let (at, addr) = self.last.get(user)?.get(fingerprint)?;
        Some(json!({
            "at": humantime::format_rfc3339_seconds(*at).to_string(),
            "from": crate::sessions::canonical(*addr).to_string(),
        }))
    }

    /// The number of live SSH sessions of uid `uid`; null when they cannot
    /// be counted.
    pub fn sessions(&self, uid: u32) -> Value {
        match &self.live {
            Some(live) => json!(live.get(&uid).copied().unwrap_or(0)),
            None => Value::Null,
        }
    }
}

/// One user's entry, with at most `max_keys` keys.
fn user_entry(sys: &System, u: &accounts::UserSummary, max_keys: usize, logins: &Logins) -> Value {
    let mut entry = serde_json::to_value(u).expect("a summary serializes");
    for field in ["name", "home", "shell"] {
        if let Some(s) = entry[field].as_str() {
            if s.len() > MAX_FIELD_BYTES {
                entry[field] = json!(shorten(s, MAX_FIELD_BYTES));
            }
        }
    }
    let mut keys = Vec::new();
    let mut total = 0usize;
    // Names the agent cannot manage are still listed, without keys.
    if let Ok(name) = UserName::parse(&u.record.name) {
        let listed = authkeys::for_each_key(sys, &name, |mut k| {
            total += 1;
            if keys.len() < max_keys {
                k.comment = k.comment.map(|c| shorten(&c, MAX_COMMENT_BYTES));
                k.options = k.options.map(|o| shorten(&o, MAX_FIELD_BYTES));
                let last = logins.last_login(&u.record.name, &k.fingerprint);
                let mut v = json!(k);
                if let Some(last) = last {
                    v["last_login"] = last;
                }
                keys.push(v);
            }
        });
        if let Err(e) = listed {
            keys.clear();
            total = 0;
            entry["keys_error"] = json!(shorten(&e.to_string(), MAX_FIELD_BYTES));
        }
    }
    entry["keys"] = Value::Array(keys);
    entry["keys_total"] = json!(total);
    entry["sessions"] = logins.sessions(u.record.uid);
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_keeps_short_strings_and_says_how_long_a_long_one_was() {
        assert_eq!(shorten("laptop", 128), "laptop");
        let long = "é".repeat(1000);
        let s = shorten(&long, 128);
        assert!(s.len() <= 128, "{}", s.len());
        assert!(s.ends_with("...[2000 bytes]"), "{s}");
        assert!(s.starts_with("éé"));
    }

    use crate::sessions::by_key::{ProcInfo, SshdInfo};
    use crate::ssh::logins::{Login, Source};
    use std::net::SocketAddr;
    use std::time::Duration;

    const FP_A: &str = "SHA256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const FP_B: &str = "SHA256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn rec(pid: i32, user: &str, method: &str, fp: Option<&str>, addr: &str, at: u64) -> Login {
        Login {
            pid,
            user: user.into(),
            addr: addr.parse().unwrap(),
            port: 40000 + pid as u16,
            method: method.into(),
            key_type: fp.map(|_| "ED25519".into()),
            fingerprint: fp.map(Into::into),
            at: t(at),
            source: Source::Journal,
        }
    }

    fn records(logins: Vec<Login>) -> Result<Option<Records>> {
        Ok(Some(Records {
            logins,
            source: Source::Journal,
            cut: None,
        }))
    }

    /// Two live sessions of alice (uid 1001: monitors 100 and 200, each
    /// with its privilege-separated sshd child running as her), one of
    /// root (monitor 300, no such child), and sshd's listener (1, no
    /// connection).
    fn snap() -> Snapshot {
        let mut s = Snapshot::default();
        let sshd = |peer: bool| SshdInfo {
            root_sshd: true,
            here: true,
            started: t(5000),
            peers: if peer {
                vec![SocketAddr::new([192, 0, 2, 9].into(), 40000)]
            } else {
                Vec::new()
            },
        };
        for (pid, ppid, uid, peer) in [
            (1, 0, 0, false),
            (100, 1, 0, true),
            (101, 100, 1001, false),
            (200, 1, 0, true),
            (201, 200, 1001, false),
            (300, 1, 0, true),
        ] {
            s.procs.insert(
                pid,
                ProcInfo {
                    ppid,
                    uids: [uid; 3],
                    start_ticks: 1,
                },
            );
            s.sshd.insert(pid, sshd(peer));
        }
        s
    }

    #[test]
    fn last_login_is_the_newest_publickey_record_of_that_user_and_key() {
        // Newest first, as logins::accepted returns them.
        let records = records(vec![
            rec(100, "alice", "password", None, "192.0.2.9", 6000),
            rec(
                200,
                "alice",
                "publickey",
                Some(FP_A),
                "::ffff:192.0.2.1",
                5500,
            ),
            rec(300, "alice", "publickey", Some(FP_A), "192.0.2.2", 3000),
            rec(400, "bob", "publickey", Some(FP_B), "2001:db8::1", 2000),
            rec(500, "alice", "hostbased", Some(FP_B), "192.0.2.3", 1000),
        ]);
        let l = Logins::from_parts(records, Ok(Snapshot::default()));
        assert_eq!(
            l.last_login("alice", FP_A),
            Some(json!({"at": "1970-01-01T01:31:40Z", "from": "192.0.2.1"}))
        );
        assert_eq!(
            l.last_login("bob", FP_B),
            Some(json!({"at": "1970-01-01T00:33:20Z", "from": "2001:db8::1"}))
        );
        // Not the host key of a hostbased login, not another user's key.
        assert_eq!(l.last_login("alice", FP_B), None);
        assert_eq!(l.last_login("bob", FP_A), None);
        assert_eq!((l.error, l.incomplete), (None, None));
    }

    #[test]
    fn inventory_sessions_counts_a_live_session_with_no_record() {
        // No record at all (rotated away, a volatile journal since cut):
        // the sessions are /proc's, whichever key they used.
        let l = Logins::from_parts(records(Vec::new()), Ok(snap()));
        assert_eq!(l.sessions(1001), json!(2));
        assert_eq!(l.sessions(0), json!(1));
        assert_eq!(l.sessions(1002), json!(0));
        // Nor does a missing log change them: it is told, and last_login
        // is what is unknown.
        let l = Logins::from_parts(Err(Error::Program("no sshd log".into())), Ok(snap()));
        assert_eq!(l.sessions(1001), json!(2));
        assert!(l.error.as_deref().unwrap().contains("no sshd log"));
    }

    #[test]
    fn a_cut_log_is_told_and_without_the_process_table_sessions_are_null() {
        let mut r = records(vec![rec(
            100,
            "alice",
            "publickey",
            Some(FP_A),
            "192.0.2.9",
            6000,
        )]);
        if let Ok(Some(r)) = &mut r {
            r.cut = Some("only the newest 50000 records were read".into());
        }
        let l = Logins::from_parts(r, Err(Error::Internal("no /proc".into())));
        assert_eq!(l.sessions(1001), Value::Null);
        assert!(l.error.as_deref().unwrap().contains("no /proc"));
        assert!(l.incomplete.as_deref().unwrap().contains("50000"));
        assert!(l.last_login("alice", FP_A).is_some());
    }

    #[test]
    fn an_image_has_no_logins_and_no_sessions() {
        let t = tempfile::tempdir().unwrap();
        let l = Logins::read(&System::new(t.path(), t.path().join("state")));
        assert_eq!((l.sessions(0), l.error), (json!(0), None));
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let c = Cursor::after(1001, "alice");
        assert_eq!(Cursor::parse(&c.encode()).unwrap(), c);
        for bad in [
            "",
            "alice",
            "c1.",
            "c1.!!!",
            &format!("c1.{}", B64URL.encode("x:alice")),
            &format!("c1.{}", B64URL.encode("1:")),
            &format!("c1.{}", B64URL.encode("1:a\nb")),
            &format!("c1.{}", "A".repeat(600)),
        ] {
            assert!(Cursor::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
