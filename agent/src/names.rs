//! Validated user names. A [`UserName`] cannot hold anything but
//! `^[a-z_][a-z0-9_-]*[$]?$` of 1..=32 bytes (PROTOCOL.md §3), so a value of
//! this type is safe to put in a path component, a passwd line or a log field.
//! This is stricter than Debian's useradd on purpose (ground-truth §3.5).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::Error;

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserName(String);

impl UserName {
    pub const MAX_LEN: usize = 32;

    pub fn parse(s: &str) -> Result<Self, Error> {
        if valid(s) {
            Ok(UserName(s.to_owned()))
        } else {
            Err(Error::invalid(format!(
                "user name {:?} is not valid: use 1 to 32 characters of a-z, 0-9, '_' and '-', \
                 starting with a letter or '_' (a final '$' is allowed)",
                truncate_for_message(s)
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn valid(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > UserName::MAX_LEN {
        return false;
    }
    let body = b.strip_suffix(b"$").unwrap_or(b);
    let Some((&first, rest)) = body.split_first() else {
        return false;
    };
    (first.is_ascii_lowercase() || first == b'_')
        && rest
            .iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// Hostile input can be long or contain control characters; keep messages
/// short and printable.
pub(crate) fn truncate_for_message(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<'de> Deserialize<'de> for UserName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        UserName::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in [
            "root",
            "ecs-user",
            "_svc",
            "a",
            "user$",
            "a1_b-c",
            &"a".repeat(32),
        ] {
            assert!(UserName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_hostile_names() {
        for bad in [
            "",
            "Root",
            "1abc",
            "-abc",
            "a:b",
            "a\nb",
            "a/b",
            "..",
            ".",
            "a b",
            "a$b",
            "$",
            "é",
            "a,b",
            &"a".repeat(33),
        ] {
            let e = UserName::parse(bad).unwrap_err();
            assert_eq!(e.code(), crate::error::Code::InvalidCommand, "{bad:?}");
        }
    }
}
