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

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::accounts;
use crate::error::{Error, Result};
use crate::names::UserName;
use crate::ssh::{authkeys, sshd};
use crate::sys::System;

/// Keys listed per user; `keys_total` says how many the file has.
pub const MAX_KEYS_PER_USER: usize = 100;
/// A key comment longer than this (bytes) is shortened.
pub const MAX_COMMENT_BYTES: usize = 128;
/// Key options, home, shell, user names and error texts longer than this
/// (bytes) are shortened.
pub const MAX_FIELD_BYTES: usize = 256;
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

    let mut data = json!({ "users": [], "truncated": false });
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
        let mut entry = user_entry(sys, &u, MAX_KEYS_PER_USER);
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
                entry = user_entry(sys, &u, keys);
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

/// One user's entry, with at most `max_keys` keys.
fn user_entry(sys: &System, u: &accounts::UserSummary, max_keys: usize) -> Value {
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
                keys.push(k);
            }
        });
        if let Err(e) = listed {
            keys.clear();
            total = 0;
            entry["keys_error"] = json!(shorten(&e.to_string(), MAX_FIELD_BYTES));
        }
    }
    entry["keys"] = json!(keys);
    entry["keys_total"] = json!(total);
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
