//! Granting sudo the way the distribution expects it.
//!
//! - Where /etc/sudoers enables an admin group (`%sudo` on Debian/Ubuntu,
//!   `%wheel` on RHEL-likes) and the user has a password, membership of that
//!   group is the grant — what `usermod -aG sudo` does.
//! - Otherwise a drop-in `/etc/sudoers.d/NAME`, 0440 root:root, checked with
//!   `visudo -cf` before it is installed. A user without a password (the
//!   key-only `ecs-user` of the console, who is told to run `sudo su`) could
//!   never answer sudo's password prompt, so that drop-in says NOPASSWD.
//!
//! Our drop-ins start with [`MARKER`], so that `delete_user` and the
//! inventory only ever treat files accessd wrote as accessd's.

use std::path::{Path, PathBuf};

use nix::sys::stat::SFlag;

use crate::error::{Error, IoContext, Result};
use crate::fsx::{Dir, Meta};
use crate::names::UserName;
use crate::sys::{find_program, Cmd, System};

use super::db::{self, Table};

pub const MARKER: &str = "# Written by accessd: sudo for ";

#[derive(Debug, Clone)]
pub struct AdminGroup {
    pub name: String,
    pub gid: u32,
    pub members: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    Group(String),
    Dropin,
}

/// Active (uncommented) sudoers lines.
pub fn sudoers_lines(etc: &Dir) -> Result<Option<Vec<String>>> {
    Ok(etc.read("sudoers")?.map(|d| {
        String::from_utf8_lossy(&d.bytes)
            .lines()
            .map(|l| l.trim().to_owned())
            .collect()
    }))
}

/// Admin groups that /etc/sudoers enables and that exist in /etc/group.
pub fn enabled_admin_groups(etc: &Dir, group: Option<&Table>) -> Result<Vec<AdminGroup>> {
    let (Some(lines), Some(group)) = (sudoers_lines(etc)?, group) else {
        return Ok(Vec::new());
    };
    Ok(enabled_admin_groups_in(&lines, group))
}

/// [`enabled_admin_groups`] over sudoers lines already read.
pub fn enabled_admin_groups_in(lines: &[String], group: &Table) -> Vec<AdminGroup> {
    let mut out = Vec::new();
    for name in ["sudo", "wheel"] {
        let rule = format!("%{name}");
        let enabled = lines.iter().any(|l| {
            l.strip_prefix(&rule)
                .is_some_and(|rest| rest.starts_with([' ', '\t']))
        });
        if !enabled {
            continue;
        }
        if let Some(i) = group.find(name) {
            let f = group.fields(i);
            if let (Some(gid), Some(members)) = (f.get(2).and_then(|g| db::parse_num(g)), f.get(3))
            {
                out.push(AdminGroup {
                    name: name.to_owned(),
                    gid: gid as u32,
                    members: members.clone(),
                });
            }
        }
    }
    out
}

/// Why sudo cannot be granted on this system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoGrant {
    /// There is no /etc/sudoers.
    NoSudoers,
    /// /etc/sudoers neither enables an admin group we can use nor reads
    /// /etc/sudoers.d.
    NoWay,
}

impl NoGrant {
    /// The protocol error, naming the sudoers file under `etc`.
    pub fn into_error(self, etc: &Dir) -> Error {
        let path = etc.display("sudoers");
        Error::invalid(match self {
            NoGrant::NoSudoers => format!(
                "cannot grant sudo: {} does not exist (is sudo installed?)",
                path.display()
            ),
            NoGrant::NoWay => format!(
                "cannot grant sudo: {} neither enables %sudo or %wheel nor includes /etc/sudoers.d",
                path.display()
            ),
        })
    }
}

/// How to grant sudo to a new user.
pub fn choose(etc: &Dir, group: &Table, has_password: bool) -> Result<Grant> {
    choose_in(sudoers_lines(etc)?.as_deref(), group, has_password).map_err(|e| e.into_error(etc))
}

/// [`choose`] over the active sudoers lines (`None`: no /etc/sudoers).
pub fn choose_in(
    sudoers: Option<&[String]>,
    group: &Table,
    has_password: bool,
) -> Result<Grant, NoGrant> {
    let Some(lines) = sudoers else {
        return Err(NoGrant::NoSudoers);
    };
    if has_password {
        if let Some(g) = enabled_admin_groups_in(lines, group).into_iter().next() {
            return Ok(Grant::Group(g.name));
        }
    }
    let includes = lines.iter().any(|l| {
        let mut w = l.split_whitespace();
        matches!(w.next(), Some("@includedir" | "#includedir"))
            && w.next() == Some("/etc/sudoers.d")
    });
    if !includes {
        return Err(NoGrant::NoWay);
    }
    Ok(Grant::Dropin)
}

/// sudo skips drop-ins whose name contains `.` or ends in `~`.
pub fn dropin_name(user: &UserName) -> String {
    user.as_str().replace('.', "")
}

pub fn dropin_content(user: &UserName, has_password: bool) -> Vec<u8> {
    let rule = if has_password { "ALL" } else { "NOPASSWD:ALL" };
    format!("{MARKER}{user}\n{user} ALL=(ALL:ALL) {rule}\n").into_bytes()
}

pub fn dropin_meta() -> Meta {
    Meta::new(0, 0, 0o440)
}

/// The sudoers.d directory, created 0755 root:root as the sudo package has it.
pub fn open_dropin_dir(etc: &Dir) -> Result<Dir> {
    match etc.try_open_dir("sudoers.d")? {
        Some(d) => Ok(d),
        None => etc.create_dir("sudoers.d", &Meta::new(0, 0, 0o755)),
    }
}

/// Our drop-in for `user`, if the file there is one accessd wrote.
pub fn read_ours(d: &Dir, user: &UserName) -> Result<Option<crate::fsx::FileData>> {
    let marker = format!("{MARKER}{user}\n");
    Ok(d.read(&dropin_name(user))?
        .filter(|f| f.bytes.starts_with(marker.as_bytes())))
}

/// Check `content` with `visudo -cf` before it is installed, when visudo is
/// available. The candidate is written under a name with a `.`, which sudo's
/// `@includedir` never reads, and removed afterwards.
pub fn validate(sys: &System, d: &Dir, user: &UserName, content: &[u8]) -> Result<()> {
    let Some(visudo) = find_program("visudo") else {
        return Ok(());
    };
    let check = format!("{}.accessd-check", dropin_name(user));
    d.write_atomic(&check, content, &dropin_meta())?;
    let path = d.display(&check);
    let cmd = Cmd::new(visudo).arg("-c").arg("-q").arg("-f").arg(&path);
    let out = sys
        .runner
        .run(&cmd)
        .ctx(|| format!("running {}", cmd.display()));
    let _ = d.remove_file(&check);
    let out = out?;
    if !out.status.success() {
        return Err(Error::Program(format!(
            "checking the sudoers drop-in for {user} with visudo: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Who sudoers rules are matched against: the user's name, uid and every
/// group they are in (primary and supplementary), as sudo resolves them.
#[derive(Debug, Clone)]
pub struct Who {
    pub name: String,
    pub uid: u32,
    /// (name, gid) of each group.
    pub groups: Vec<(String, u32)>,
}

impl Who {
    /// `name` with uid and primary gid, and the groups of `group` that have
    /// that gid or list `name` as a member.
    pub fn new(name: &str, uid: u32, gid: u32, group: Option<&Table>) -> Who {
        let mut groups = Vec::new();
        if let Some(t) = group {
            for (_, f) in t.entries() {
                let Some(g) = f.get(2).and_then(|g| db::parse_num(g)) else {
                    continue;
                };
                let member = f.get(3).is_some_and(|m| db::is_member(m, name));
                if g == u64::from(gid) || member {
                    groups.push((String::from_utf8_lossy(&f[0]).into_owned(), g as u32));
                }
            }
        }
        Who {
            name: name.to_owned(),
            uid,
            groups,
        }
    }
}

/// /etc/group read once, for asking [`Who`] of many users: each user's
/// groups are then found by lookups, not by walking every group line
/// (10,000 users x 10,000 groups was minutes of a blocked daemon).
#[derive(Debug, Default)]
pub struct GroupIndex {
    /// (name, gid) of every group line with a gid.
    groups: Vec<(String, u32)>,
    by_gid: std::collections::HashMap<u32, Vec<usize>>,
    by_member: std::collections::HashMap<String, Vec<usize>>,
}

impl GroupIndex {
    pub fn new(group: Option<&Table>) -> GroupIndex {
        let mut ix = GroupIndex::default();
        let Some(t) = group else { return ix };
        for (_, f) in t.entries() {
            let Some(g) = f.get(2).and_then(|g| db::parse_num(g)) else {
                continue;
            };
            let i = ix.groups.len();
            ix.groups
                .push((String::from_utf8_lossy(&f[0]).into_owned(), g as u32));
            ix.by_gid.entry(g as u32).or_default().push(i);
            if let Some(members) = f.get(3) {
                for m in members.split(|&b| b == b',').filter(|m| !m.is_empty()) {
                    let m = String::from_utf8_lossy(m).into_owned();
                    let list = ix.by_member.entry(m).or_default();
                    if list.last() != Some(&i) {
                        list.push(i);
                    }
                }
            }
        }
        ix
    }

    /// The same as [`Who::new`] over the table this index was made from.
    pub fn who(&self, name: &str, uid: u32, gid: u32) -> Who {
        let mut idx: Vec<usize> = self
            .by_gid
            .get(&gid)
            .into_iter()
            .chain(self.by_member.get(name))
            .flatten()
            .copied()
            .collect();
        idx.sort_unstable();
        idx.dedup();
        Who {
            name: name.to_owned(),
            uid,
            groups: idx.into_iter().map(|i| self.groups[i].clone()).collect(),
        }
    }
}

/// A sudoers user specification that applies to a user: where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The file as the system names it (`/etc/sudoers.d/NAME`).
    pub file: PathBuf,
    pub line: usize,
    /// In a drop-in that accessd wrote (it starts with [`MARKER`]).
    pub ours: bool,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} line {}", self.file.display(), self.line)
    }
}

/// The user specifications of /etc/sudoers and every file it includes,
/// read under the root as sudo reads them, so that "does this user have
/// sudo" is answered as `sudo -l -U USER` answers it.
///
/// What is matched: user names, `#uid`, `%group`, `%#gid`, `ALL`,
/// `User_Alias`es and `!` negation (the last matching item of a list
/// decides, as in sudo). What is not: host lists (taken as matching this
/// host) and netgroups (`+ng`, taken as not matching) — so a rule limited
/// to other hosts is reported as a grant, never a grant as none.
#[derive(Debug, Default, Clone)]
pub struct Sudoers {
    aliases: std::collections::HashMap<String, String>,
    specs: Vec<(Rule, String)>,
}

/// sudo gives up on deeper nesting; so do we (include loops).
const MAX_INCLUDE_DEPTH: usize = 16;

impl Sudoers {
    /// Parse /etc/sudoers under `root`; absent means no rules at all.
    pub fn load(root: &Dir) -> Result<Sudoers> {
        let mut s = Sudoers::default();
        s.read_file(root, Path::new("/etc/sudoers"), 0)?;
        Ok(s)
    }

    /// Every rule that applies to `who`, in file order.
    pub fn rules_for(&self, who: &Who) -> Vec<Rule> {
        self.specs
            .iter()
            .filter(|(_, users)| self.list_matches(users, who, 0) == Some(true))
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// Take in the statements of sudoers `text`, read from `path`; returns
    /// the files and directories it includes (resolved against `path`'s
    /// directory when relative), for the caller to read next.
    pub fn parse_text(&mut self, path: &Path, text: &str) -> Vec<(PathBuf, bool)> {
        let ours = text.starts_with(MARKER);
        let base = path.parent().unwrap_or(Path::new("/etc"));
        let mut includes = Vec::new();
        for (line_no, line) in logical_lines(text) {
            match include_directive(&line) {
                Some((target, is_dir)) => includes.push((base.join(target), is_dir)),
                None => self.statement(path, line_no, &line, ours),
            }
        }
        includes
    }

    fn read_file(&mut self, root: &Dir, path: &Path, depth: usize) -> Result<()> {
        if depth > MAX_INCLUDE_DEPTH {
            return Ok(());
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        else {
            return Ok(());
        };
        let Some(dir) = root.try_open_dir(parent)? else {
            return Ok(());
        };
        // sudo follows a symlink here; so do we, but resolved under the
        // root like every other system path (an image's link to
        // /etc/x means the image's /etc/x).
        if let Some(st) = dir.stat_at(name)? {
            if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFLNK.bits() {
                let target = nix::fcntl::readlinkat(dir.as_fd(), name)
                    .ctx(|| format!("reading link {}", dir.display(name).display()))?;
                let target = lexical(&parent.join(Path::new(&target)));
                return self.read_file(root, &target, depth + 1);
            }
            // sudo reads only regular files (a directory or FIFO here is
            // not a sudoers file).
            if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFREG.bits() {
                return Ok(());
            }
        }
        let Some(data) = dir.read(name)? else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(&data.bytes).into_owned();
        for (inc, is_dir) in self.parse_text(path, &text) {
            if is_dir {
                self.read_dir(root, &inc, depth + 1)?;
            } else {
                self.read_file(root, &inc, depth + 1)?;
            }
        }
        Ok(())
    }

    /// Files of an `@includedir`, as sudo picks them: regular files whose
    /// name has no `.` and does not end in `~`, in lexical order.
    fn read_dir(&mut self, root: &Dir, path: &Path, depth: usize) -> Result<()> {
        let Some(dir) = root.try_open_dir(path)? else {
            return Ok(());
        };
        for name in dir.list()? {
            if name.contains('.') || name.ends_with('~') {
                continue;
            }
            // Regular files, and links (read_file resolves them; a link to
            // something that is not a regular file then fails the read).
            let regular = dir.stat_at(&name)?.is_some_and(|st| {
                let t = st.st_mode & SFlag::S_IFMT.bits();
                t == SFlag::S_IFREG.bits() || t == SFlag::S_IFLNK.bits()
            });
            if regular {
                self.read_file(root, &path.join(&name), depth)?;
            }
        }
        Ok(())
    }

    /// One logical line that is not an include directive.
    fn statement(&mut self, path: &Path, line_no: usize, line: &str, ours: bool) {
        let line = strip_comment(line);
        let line = line.trim();
        let Some(first) = line.split_whitespace().next() else {
            return;
        };
        if first == "Defaults"
            || first.starts_with("Defaults") && first[8..].starts_with(['@', ':', '>', '!'])
        {
            return;
        }
        match first {
            "User_Alias" => {
                for def in line["User_Alias".len()..].split(':') {
                    if let Some((name, members)) = def.split_once('=') {
                        self.aliases
                            .insert(name.trim().to_owned(), members.trim().to_owned());
                    }
                }
                return;
            }
            "Runas_Alias" | "Host_Alias" | "Cmnd_Alias" | "Cmd_Alias" => return,
            _ => {}
        }
        // USER_LIST HOST_LIST = ...: commas may have spaces around them.
        let Some((head, _)) = line.split_once('=') else {
            return;
        };
        let mut compact = String::new();
        for part in head.split(',') {
            if !compact.is_empty() {
                compact.push(',');
            }
            compact.push_str(part.trim());
        }
        let mut words = compact.split_whitespace();
        let (Some(users), Some(_hosts)) = (words.next(), words.next()) else {
            return;
        };
        self.specs.push((
            Rule {
                file: path.to_path_buf(),
                line: line_no,
                ours,
            },
            users.to_owned(),
        ));
    }

    /// sudo's userlist_matches: from the last item back, the first item
    /// that matches (or is denied) decides.
    fn list_matches(&self, list: &str, who: &Who, depth: usize) -> Option<bool> {
        if depth > MAX_INCLUDE_DEPTH {
            return None;
        }
        for item in list.split(',').map(str::trim).rev() {
            let negated = item.chars().take_while(|&c| c == '!').count() % 2 == 1;
            let item = item.trim_start_matches('!').trim();
            if let Some(m) = self.item_matches(item, who, depth) {
                return Some(m != negated);
            }
        }
        None
    }

    fn item_matches(&self, item: &str, who: &Who, depth: usize) -> Option<bool> {
        let item = unquote(item);
        if item.is_empty() {
            return None;
        }
        if item == "ALL" {
            return Some(true);
        }
        if let Some(members) = self.aliases.get(&item) {
            return self.list_matches(members, who, depth + 1);
        }
        let hit = if let Some(g) = item.strip_prefix('%') {
            let g = g.strip_prefix(':').unwrap_or(g);
            match g.strip_prefix('#').map(str::parse::<u32>) {
                Some(Ok(gid)) => who.groups.iter().any(|(_, id)| *id == gid),
                Some(Err(_)) => false,
                None => who.groups.iter().any(|(n, _)| *n == g),
            }
        } else if let Some(uid) = item.strip_prefix('#') {
            uid.parse::<u32>().is_ok_and(|u| u == who.uid)
        } else if item.starts_with('+') {
            false
        } else {
            item == who.name
        };
        hit.then_some(true)
    }
}

/// `path` with `.` and `..` resolved as text (never above `/`): link targets
/// are resolved under the root, and walking refuses `..`.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Lines joined at a trailing backslash, with the number of their first line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut logical = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        if logical.is_empty() {
            start = i + 1;
        }
        if let Some(s) = raw.strip_suffix('\\') {
            logical.push_str(s);
            logical.push(' ');
            continue;
        }
        logical.push_str(raw);
        out.push((start, std::mem::take(&mut logical)));
    }
    if !logical.is_empty() {
        out.push((start, logical));
    }
    out
}

/// `@include FILE`, `#include FILE`, `@includedir DIR`, `#includedir DIR`.
fn include_directive(line: &str) -> Option<(String, bool)> {
    let l = line.trim_start();
    for (kw, is_dir) in [
        ("@includedir", true),
        ("#includedir", true),
        ("@include", false),
        ("#include", false),
    ] {
        if let Some(rest) = l.strip_prefix(kw) {
            if rest.starts_with([' ', '\t']) {
                let target = unquote(rest.trim());
                if !target.is_empty() {
                    return Some((target, is_dir));
                }
            }
        }
    }
    None
}

/// Everything from a `#` that does not start a uid (`#1001`, `%#27`).
fn strip_comment(line: &str) -> &str {
    let b = line.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'#' && !b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            return &line[..i];
        }
    }
    line
}

/// A name as sudoers may quote it: `"a b"`, or with `\` escapes.
fn unquote(s: &str) -> String {
    let s = s.trim();
    let s = s
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(s);
    let mut out = String::new();
    let mut esc = false;
    for c in s.chars() {
        if esc || c != '\\' {
            out.push(c);
            esc = false;
        } else {
            esc = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_index_finds_the_groups_a_walk_of_group_finds() {
        let t = Table::parse(
            b"root:x:0:\nsudo:x:27:alice,bob\nwheel:x:10:bob\nalice:x:1000:\nstaff:x:50:carol,alice\nodd:x:51:,alice,\nbad:x:zz:alice\n",
        );
        let ix = GroupIndex::new(Some(&t));
        for (name, uid, gid) in [
            ("alice", 1000, 1000),
            ("bob", 1001, 10),
            ("carol", 1002, 27),
            ("nobody", 1003, 9999),
        ] {
            let walked = Who::new(name, uid, gid, Some(&t));
            let indexed = ix.who(name, uid, gid);
            assert_eq!(walked.groups, indexed.groups, "{name}");
        }
    }

    fn who(name: &str, uid: u32, groups: &[(&str, u32)]) -> Who {
        Who {
            name: name.into(),
            uid,
            groups: groups.iter().map(|(n, g)| (n.to_string(), *g)).collect(),
        }
    }

    fn rules(text: &str, w: &Who) -> Vec<usize> {
        let mut s = Sudoers::default();
        s.parse_text(Path::new("/etc/sudoers"), text);
        s.rules_for(w).into_iter().map(|r| r.line).collect()
    }

    #[test]
    fn user_lists_match_as_sudo_matches_them() {
        let carol = who("carol", 1001, &[("carol", 1001), ("devs", 2000)]);
        let text = "\
Defaults env_reset
Defaults:carol !requiretty
# carol ALL=(ALL) ALL   (a comment)
root ALL=(ALL:ALL) ALL
%sudo ALL=(ALL:ALL) ALL
carol, bob ALL = (ALL) NOPASSWD: ALL
%devs ALL=(ALL) /usr/bin/apt
#1001 ALL=(ALL) ALL
%#2000 host1,host2 = ALL
User_Alias ADMINS = alice, carol : OTHERS = dave
ADMINS ALL=(ALL) ALL
OTHERS ALL=(ALL) ALL
ALL, !carol ALL=(ALL) ALL
!carol, ALL ALL=(ALL) ALL
alice \\
  ,carol ALL=(ALL) ALL
+netgroup ALL=(ALL) ALL
Cmnd_Alias CAROL = /bin/true
";
        assert_eq!(rules(text, &carol), vec![6, 7, 8, 9, 11, 14, 15]);
        let bob = who("bob", 1002, &[("bob", 1002), ("sudo", 27)]);
        assert_eq!(rules(text, &bob), vec![5, 6, 13, 14]);
        let nobody = who("eve", 1003, &[("eve", 1003)]);
        assert_eq!(rules(text, &nobody), vec![13, 14]);
    }

    #[test]
    fn symlinked_sudoers_files_are_read_under_the_root() {
        let t = tempfile::tempdir().unwrap();
        let etc = t.path().join("etc");
        std::fs::create_dir_all(etc.join("sudoers.d")).unwrap();
        std::fs::create_dir_all(t.path().join("opt")).unwrap();
        std::fs::write(etc.join("sudoers"), "@includedir /etc/sudoers.d\n").unwrap();
        std::fs::write(t.path().join("opt/rules"), "kim ALL=(ALL) ALL\n").unwrap();
        // An absolute target means the root's /opt, a relative one is
        // resolved from the link's directory.
        std::os::unix::fs::symlink("/opt/rules", etc.join("sudoers.d/abs")).unwrap();
        std::os::unix::fs::symlink("../../opt/rules", etc.join("sudoers.d/rel")).unwrap();
        std::os::unix::fs::symlink("/nowhere", etc.join("sudoers.d/dangling")).unwrap();
        std::fs::create_dir(etc.join("sudoers.d/adir")).unwrap();
        let s = Sudoers::load(&Dir::open(t.path()).unwrap()).unwrap();
        let rules = s.rules_for(&who("kim", 1000, &[]));
        let files: Vec<String> = rules.iter().map(|r| r.file.display().to_string()).collect();
        assert_eq!(files, vec!["/opt/rules", "/opt/rules"]);
    }

    #[test]
    fn includes_are_collected_relative_to_the_file() {
        let mut s = Sudoers::default();
        let inc = s.parse_text(
            Path::new("/etc/sudoers"),
            "@includedir /etc/sudoers.d\n#include extra\n#includedir\n",
        );
        assert_eq!(
            inc,
            vec![
                (PathBuf::from("/etc/sudoers.d"), true),
                (PathBuf::from("/etc/extra"), false)
            ]
        );
    }
}
