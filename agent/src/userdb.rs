//! The colon-separated account databases (passwd, shadow, group, gshadow,
//! subuid, subgid) as lines of bytes, and the one read of a passwd entry
//! ([`lookup`]). Only the lines an operation is about are parsed and
//! rebuilt; every other line — comments, NIS `+`/`-` entries, lines we do
//! not understand — is written back byte for byte.
//!
//! Below `accounts` (which changes these files, and re-exports this module
//! as `accounts::db`) and `ssh` (which needs a user's uid, gid and home):
//! `ssh` reading passwd through `accounts` made the two import each other.

use std::path::PathBuf;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::fsx::{Dir, FileData};
use crate::names::UserName;
use crate::sys::System;

/// One database file's lines, without their `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    lines: Vec<Vec<u8>>,
}

impl Table {
    pub fn parse(bytes: &[u8]) -> Table {
        let mut lines: Vec<Vec<u8>> = bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
        // "a\nb\n" splits into ["a", "b", ""]: the last piece is not a line.
        if lines.last().is_some_and(Vec::is_empty) {
            lines.pop();
        }
        Table { lines }
    }

    /// Every line ends in `\n`, as shadow-utils writes them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.lines.iter().map(|l| l.len() + 1).sum());
        for l in &self.lines {
            out.extend_from_slice(l);
            out.push(b'\n');
        }
        out
    }

    /// Index of the entry named `name`. Comments and NIS lines never match,
    /// since a valid name cannot start with `#`, `+` or `-`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.lines
            .iter()
            .position(|l| entry_name(l) == Some(name.as_bytes()))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    pub fn fields(&self, i: usize) -> Vec<Vec<u8>> {
        split(&self.lines[i])
    }

    pub fn set_fields(&mut self, i: usize, fields: &[Vec<u8>]) {
        self.lines[i] = join(fields);
    }

    pub fn push(&mut self, fields: &[Vec<u8>]) {
        self.lines.push(join(fields));
    }

    pub fn remove(&mut self, i: usize) {
        self.lines.remove(i);
    }

    /// Entries (lines that have a name and at least one `:`), with index.
    pub fn entries(&self) -> impl Iterator<Item = (usize, Vec<Vec<u8>>)> + '_ {
        self.lines
            .iter()
            .enumerate()
            .filter(|(_, l)| entry_name(l).is_some())
            .map(|(i, l)| (i, split(l)))
    }

    /// Numeric field `idx` of every entry (ids, subordinate ranges).
    pub fn numbers(&self, idx: usize) -> impl Iterator<Item = u64> + '_ {
        self.entries()
            .filter_map(move |(_, f)| f.get(idx).and_then(|v| parse_num(v)))
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

fn entry_name(line: &[u8]) -> Option<&[u8]> {
    let (name, _) = line.split_at(line.iter().position(|&b| b == b':')?);
    match name.first() {
        None | Some(b'#' | b'+' | b'-') => None,
        Some(_) => Some(name),
    }
}

pub fn split(line: &[u8]) -> Vec<Vec<u8>> {
    line.split(|&b| b == b':').map(<[u8]>::to_vec).collect()
}

fn join(fields: &[Vec<u8>]) -> Vec<u8> {
    fields.join(&b':')
}

pub fn parse_num(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A comma-separated member list (group field 4, gshadow fields 3 and 4)
/// without `name`; `None` if `name` was not in it.
pub fn without_member(list: &[u8], name: &str) -> Option<Vec<u8>> {
    if list.is_empty() {
        return None;
    }
    let members: Vec<&[u8]> = list.split(|&b| b == b',').collect();
    if !members.contains(&name.as_bytes()) {
        return None;
    }
    let kept: Vec<&[u8]> = members
        .into_iter()
        .filter(|m| *m != name.as_bytes())
        .collect();
    Some(kept.join(&b','))
}

/// `list` with `name` appended (unchanged if already there).
pub fn with_member(list: &[u8], name: &str) -> Vec<u8> {
    if list.split(|&b| b == b',').any(|m| m == name.as_bytes()) {
        return list.to_vec();
    }
    let mut out = list.to_vec();
    if !out.is_empty() {
        out.push(b',');
    }
    out.extend_from_slice(name.as_bytes());
    out
}

pub fn is_member(list: &[u8], name: &str) -> bool {
    !list.is_empty() && list.split(|&b| b == b',').any(|m| m == name.as_bytes())
}

/// One /etc/passwd entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRecord {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: String,
}

/// The user's passwd entry (`user_not_found` if absent).
pub fn lookup(sys: &System, user: &UserName) -> Result<UserRecord> {
    let etc = open_etc(sys)?;
    let (_, passwd) = load_required(&etc, "passwd")?;
    let i = passwd
        .find(user.as_str())
        .ok_or_else(|| Error::UserNotFound(user.to_string()))?;
    record(&passwd.fields(i)).ok_or_else(|| malformed(&etc, "passwd", user.as_str()))
}

/// A passwd line as a record; `None` if it is not one.
pub(crate) fn record(f: &[Vec<u8>]) -> Option<UserRecord> {
    if f.len() < 7 {
        return None;
    }
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
    Some(UserRecord {
        name: text(&f[0])?,
        uid: parse_num(&f[2])?.try_into().ok()?,
        gid: parse_num(&f[3])?.try_into().ok()?,
        home: PathBuf::from(text(&f[5])?),
        shell: text(&f[6])?,
    })
}

pub(crate) fn malformed(etc: &Dir, file: &str, name: &str) -> Error {
    Error::BadFile {
        path: etc.display(file),
        message: format!("the entry of {name} is a malformed line"),
    }
}

pub(crate) fn open_etc(sys: &System) -> Result<Dir> {
    Dir::open(&sys.root)?.open_dir("etc")
}

/// A database file and its parsed lines; `None` if absent.
pub(crate) fn load(dir: &Dir, name: &str) -> Result<Option<(FileData, Table)>> {
    Ok(dir.read(name)?.map(|d| {
        let t = Table::parse(&d.bytes);
        (d, t)
    }))
}

pub(crate) fn load_required(dir: &Dir, name: &str) -> Result<(FileData, Table)> {
    load(dir, name)?.ok_or_else(|| Error::Io {
        context: format!("reading {}", dir.display(name).display()),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untouched_lines_survive_byte_for_byte() {
        let src = b"# comment: keep\nroot:x:0:0::/root:/bin/sh\n+@nis::::::\nodd line\nbob:x:1000:1000:B, ob:/home/bob:/bin/sh\n";
        let mut t = Table::parse(src);
        assert_eq!(t.to_bytes(), src);
        let i = t.find("bob").unwrap();
        let mut f = t.fields(i);
        f[4] = b"Bob".to_vec();
        t.set_fields(i, &f);
        assert_eq!(
            t.to_bytes(),
            b"# comment: keep\nroot:x:0:0::/root:/bin/sh\n+@nis::::::\nodd line\nbob:x:1000:1000:Bob:/home/bob:/bin/sh\n"
        );
        assert!(t.find("+@nis").is_none());
        assert!(t.find("# comment").is_none());
    }

    #[test]
    fn member_lists() {
        assert_eq!(without_member(b"a,bob,c", "bob").unwrap(), b"a,c");
        assert_eq!(without_member(b"bob", "bob").unwrap(), b"");
        assert!(without_member(b"bobby", "bob").is_none());
        assert_eq!(with_member(b"", "bob"), b"bob");
        assert_eq!(with_member(b"a", "bob"), b"a,bob");
        assert_eq!(with_member(b"a,bob", "bob"), b"a,bob");
    }

    #[test]
    fn missing_final_newline_is_added_like_shadow_utils() {
        let t = Table::parse(b"a:x\nb:y");
        assert_eq!(t.to_bytes(), b"a:x\nb:y\n");
        assert_eq!(t.len(), 2);
    }
}
