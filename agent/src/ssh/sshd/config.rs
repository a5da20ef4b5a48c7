//! sshd_config as sshd reads it, in one model that is both read and edited.
//!
//! sshd semantics modelled (sshd_config(5), servconf.c):
//! - the first value obtained for a keyword wins; keywords are
//!   case-insensitive; `Keyword=value` is allowed;
//! - `Include` takes glob patterns, relative ones under /etc/ssh, expanded
//!   in lexical order, files read in place (depth limit 16, as sshd);
//!   glob(3) does not match names starting with `.` with a wildcard;
//! - a `Match` line opens a block that lasts until the next `Match` or the
//!   end of *that file*: a block opened in an included file does not leak
//!   into the file that included it, and an `Include` inside a block puts the
//!   whole included file inside the block.
//!
//! Every file is kept as its raw lines, so rendering a file that was not
//! edited reproduces it byte for byte, and an edit changes only its line.
//! Wildcards are supported in the last path component of an Include pattern
//! only (every layout seen in the wild, `sshd_config.d/*.conf`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsx::{Dir, Meta};

/// sshd's `SERVCONF_MAX_DEPTH`.
const MAX_DEPTH: usize = 16;
/// Where relative Include patterns point (`SSHDIR`).
const SSHDIR: &str = "/etc/ssh";

/// One directive: lower-cased keyword and its arguments (quotes removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub keyword: String,
    pub args: Vec<String>,
}

/// Split a line as sshd does (`strdelim` for the keyword, then arguments
/// with double quotes). `None` for blank and comment lines.
pub fn directive(line: &[u8]) -> Option<Directive> {
    let text = String::from_utf8_lossy(line);
    let s = text.trim_start_matches([' ', '\t', '\r', '\n', '\x0c']);
    if s.is_empty() || s.starts_with('#') {
        return None;
    }
    let s = s.trim_end_matches([' ', '\t', '\r', '\n', '\x0c']);
    let kw_end = s.find([' ', '\t', '=']).unwrap_or(s.len());
    let keyword = s[..kw_end].to_ascii_lowercase();
    let mut rest = s[kw_end..].trim_start_matches([' ', '\t']);
    // strdelim allows one '=' between keyword and value.
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start_matches([' ', '\t']);
    }
    Some(Directive {
        keyword,
        args: split_args(rest),
    })
}

fn split_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            ' ' | '\t' if !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// One config file, kept as raw lines (each with its `\n`, the last maybe not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfFile {
    /// System path (e.g. `/etc/ssh/sshd_config`), not prefixed by the root.
    pub path: PathBuf,
    pub lines: Vec<Vec<u8>>,
    /// The bytes and metadata read from disk; `None` for a file accessd adds.
    pub original: Option<(Vec<u8>, Meta)>,
}

impl ConfFile {
    pub fn parse(path: PathBuf, bytes: &[u8], meta: Option<Meta>) -> ConfFile {
        ConfFile {
            path,
            lines: bytes
                .split_inclusive(|&b| b == b'\n')
                .map(<[u8]>::to_vec)
                .collect(),
            original: meta.map(|m| (bytes.to_vec(), m)),
        }
    }

    pub fn render(&self) -> Vec<u8> {
        self.lines.concat()
    }

    pub fn changed(&self) -> bool {
        match &self.original {
            Some((bytes, _)) => *bytes != self.render(),
            None => true,
        }
    }
}

/// A directive in the order sshd reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub file: usize,
    pub line: usize,
    pub directive: Directive,
    /// The `Match` lines (file, line) whose block this directive is in,
    /// outermost first: a block opened in a file that an Include inside
    /// another block read is in both, and applies only when both match
    /// (servconf.c gives such an Include `SSHCFG_NEVERMATCH` when the outer
    /// block is inactive). Empty outside every block. A `Match` line itself
    /// is listed in its own context.
    pub context: Vec<(usize, usize)>,
    /// Read at startup as a global setting: outside every block, or only
    /// inside `Match all` blocks, which match even while sshd reads the
    /// global section (`match_cfg_line` returns 1 for `all` without a
    /// connection).
    pub global: bool,
}

/// The main file and everything it includes.
#[derive(Debug, Clone)]
pub struct Config {
    /// `files[0]` is the main file.
    pub files: Vec<ConfFile>,
    /// Names in each directory an Include pattern looks into (as on disk at
    /// load time, plus files accessd adds).
    /// `None`: the directory does not exist.
    listings: BTreeMap<PathBuf, Option<Vec<String>>>,
}

fn parent_and_name(p: &Path) -> Option<(&Path, String)> {
    Some((p.parent()?, p.file_name()?.to_str()?.to_owned()))
}

/// Absolute pattern for an Include argument.
fn absolute_pattern(arg: &str) -> PathBuf {
    if arg.starts_with('/') {
        PathBuf::from(arg)
    } else {
        Path::new(SSHDIR).join(arg)
    }
}

impl Config {
    /// Read `main` (a system path) and every file it includes, from under `root`.
    pub fn load(root: &Dir, main: &Path) -> Result<Config> {
        let mut cfg = Config {
            files: Vec::new(),
            listings: BTreeMap::new(),
        };
        if !cfg.read_file(root, main)? {
            return Err(Error::Io {
                context: format!(
                    "reading {}",
                    root.path()
                        .join(main.strip_prefix("/").unwrap_or(main))
                        .display()
                ),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        cfg.load_includes(root, 0, 0)?;
        Ok(cfg)
    }

    /// Build from text (the fuzz target and unit tests): no includes are read.
    pub fn from_text(path: &Path, bytes: &[u8]) -> Config {
        Config {
            files: vec![ConfFile::parse(
                path.to_path_buf(),
                bytes,
                Some(Meta::new(0, 0, 0o644)),
            )],
            listings: BTreeMap::new(),
        }
    }

    fn index_of(&self, path: &Path) -> Option<usize> {
        self.files.iter().position(|f| f.path == path)
    }

    /// Read one file into the model; false when it does not exist.
    fn read_file(&mut self, root: &Dir, path: &Path) -> Result<bool> {
        if self.index_of(path).is_some() {
            return Ok(true);
        }
        let Some((dir, name)) = parent_and_name(path) else {
            return Ok(false);
        };
        let Some(d) = root.try_open_dir(dir)? else {
            return Ok(false);
        };
        let Some(data) = d.read(&name)? else {
            return Ok(false);
        };
        self.files.push(ConfFile::parse(
            path.to_path_buf(),
            &data.bytes,
            Some(data.meta),
        ));
        Ok(true)
    }

    fn load_includes(&mut self, root: &Dir, file: usize, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::SshdInvalid(format!(
                "Include nested deeper than {MAX_DEPTH} levels in {}",
                self.files[file].path.display()
            )));
        }
        let patterns: Vec<String> = self.files[file]
            .lines
            .iter()
            .filter_map(|l| directive(l))
            .filter(|d| d.keyword == "include")
            .flat_map(|d| d.args)
            .collect();
        for arg in patterns {
            let pattern = absolute_pattern(&arg);
            let Some((dir, _)) = parent_and_name(&pattern) else {
                continue;
            };
            // sshd would read files this model cannot find, so nothing it
            // says about the configuration could be trusted: refuse.
            if dir.to_string_lossy().contains(['*', '?', '[']) {
                return Err(Error::SshdInvalid(format!(
                    "{} has Include {arg}: accessd reads Include wildcards in the last path component only, so it cannot see every file sshd reads; nothing was changed",
                    self.files[file].path.display()
                )));
            }
            if !self.listings.contains_key(dir) {
                let names = match root.try_open_dir(dir)? {
                    Some(d) => Some(d.list()?),
                    None => None,
                };
                self.listings.insert(dir.to_path_buf(), names);
            }
            for path in self.expand(&arg) {
                let known = self.index_of(&path).is_some();
                if self.read_file(root, &path)? && !known {
                    let idx = self.files.len() - 1;
                    self.load_includes(root, idx, depth + 1)?;
                }
            }
        }
        Ok(())
    }

    /// The files an Include argument names, in the order sshd reads them.
    pub fn expand(&self, arg: &str) -> Vec<PathBuf> {
        let pattern = absolute_pattern(arg);
        let Some((dir, name_pat)) = parent_and_name(&pattern) else {
            return Vec::new();
        };
        let mut names: Vec<&String> = self
            .listings
            .get(dir)
            .and_then(Option::as_ref)
            .map(|v| v.iter().filter(|n| glob_match(&name_pat, n)).collect())
            .unwrap_or_default();
        names.sort();
        names.dedup();
        names.into_iter().map(|n| dir.join(n)).collect()
    }

    /// Would any Include in the configuration read `path`?
    pub fn is_included(&self, path: &Path) -> bool {
        let Some((dir, name)) = parent_and_name(path) else {
            return false;
        };
        self.files
            .iter()
            .flat_map(|f| f.lines.iter().filter_map(|l| directive(l)))
            .filter(|d| d.keyword == "include")
            .flat_map(|d| d.args)
            .any(|arg| {
                let pattern = absolute_pattern(&arg);
                parent_and_name(&pattern)
                    .is_some_and(|(pd, pat)| pd == dir && glob_match(&pat, &name))
            })
    }

    /// Every directive in sshd's reading order.
    pub fn events(&self) -> Vec<Event> {
        let mut out = Vec::new();
        if !self.files.is_empty() {
            self.walk(0, &[], 0, &mut out);
        }
        out
    }

    fn walk(&self, file: usize, outer: &[(usize, usize)], depth: usize, out: &mut Vec<Event>) {
        if depth > MAX_DEPTH {
            return;
        }
        // A block opened in this file lasts to its next Match or its end.
        let mut context = outer.to_vec();
        for (i, raw) in self.files[file].lines.iter().enumerate() {
            let Some(d) = directive(raw) else { continue };
            if d.keyword == "match" {
                context.truncate(outer.len());
                context.push((file, i));
            }
            let include_args = (d.keyword == "include").then(|| d.args.clone());
            let global = context.iter().all(|&(f, l)| self.is_match_all(f, l));
            out.push(Event {
                file,
                line: i,
                directive: d,
                context: context.clone(),
                global,
            });
            for arg in include_args.into_iter().flatten() {
                for path in self.expand(&arg) {
                    if let Some(idx) = self.index_of(&path) {
                        self.walk(idx, &context, depth + 1, out);
                    }
                }
            }
        }
    }

    /// Is the line `Match all` (alone, or followed by a comment)?
    fn is_match_all(&self, file: usize, line: usize) -> bool {
        directive(&self.files[file].lines[line]).is_some_and(|d| {
            d.keyword == "match"
                && d.args
                    .first()
                    .is_some_and(|a| a.eq_ignore_ascii_case("all"))
                && d.args.get(1).is_none_or(|a| a.starts_with('#'))
        })
    }

    /// Every `Match` line in reading order with the blocks around it
    /// (outermost first, the line itself last), deduplicated by that chain.
    pub fn match_blocks(&self) -> Vec<Vec<(usize, usize)>> {
        let mut out: Vec<Vec<(usize, usize)>> = Vec::new();
        for e in self.events() {
            if e.directive.keyword == "match" && !out.contains(&e.context) {
                out.push(e.context);
            }
        }
        out
    }

    /// The arguments of a `Match` line (what follows the keyword).
    pub fn match_args(&self, file: usize, line: usize) -> Vec<String> {
        directive(&self.files[file].lines[line]).map_or_else(Vec::new, |d| d.args)
    }

    /// The first global directive with one of `keywords` (lower case).
    pub fn first_global(&self, keywords: &[&str]) -> Option<Event> {
        self.events()
            .into_iter()
            .find(|e| e.global && keywords.contains(&e.directive.keyword.as_str()))
    }

    /// The value sshd would take from the files (its first argument).
    pub fn value(&self, keywords: &[&str]) -> Option<String> {
        self.first_global(keywords)
            .and_then(|e| e.directive.args.first().cloned())
    }

    /// Add a new (empty) file to the model, visible to Include expansion.
    fn add_file(&mut self, path: &Path) -> usize {
        if let Some(i) = self.index_of(path) {
            return i;
        }
        if let Some((dir, name)) = parent_and_name(path) {
            if let Some(Some(names)) = self.listings.get_mut(dir) {
                names.push(name);
            }
        }
        self.files.push(ConfFile {
            path: path.to_path_buf(),
            lines: Vec::new(),
            original: None,
        });
        self.files.len() - 1
    }

    /// The drop-in accessd writes: `00-accessd.conf` in the directory of the
    /// first global Include in the main file whose pattern matches that name
    /// and whose directory exists. Whether it really comes first is decided
    /// by evaluating the model afterwards, not assumed.
    pub fn dropin_path(&self, name: &str) -> Option<PathBuf> {
        self.events()
            .into_iter()
            .filter(|e| e.global && e.file == 0 && e.directive.keyword == "include")
            .flat_map(|e| e.directive.args)
            .find_map(|arg| {
                let pattern = absolute_pattern(&arg);
                let (dir, pat) = parent_and_name(&pattern)?;
                let exists = matches!(self.listings.get(dir), Some(Some(_)));
                (exists && glob_match(&pat, name)).then(|| dir.join(name))
            })
    }

    /// Make the effective global value of `keyword` (canonical spelling, e.g.
    /// `PasswordAuthentication`) be `value`. `aliases` are other keywords sshd
    /// treats as the same option. Tries, in order, and keeps the first that
    /// the model says works:
    /// 1. a drop-in that sorts first (`dropin`), when one is reachable;
    /// 2. replacing the line that currently decides the value;
    /// 3. inserting before the main file's first Match (or at its end).
    pub fn set(
        &mut self,
        keyword: &str,
        aliases: &[&str],
        value: &str,
        dropin: Option<&str>,
    ) -> Result<()> {
        let lower = keyword.to_ascii_lowercase();
        let mut keys: Vec<&str> = vec![lower.as_str()];
        keys.extend(aliases);
        let works = |c: &Config| c.value(&keys).is_some_and(|v| same_value(&v, value));
        if works(self) {
            return Ok(());
        }
        let new_line = format!("{keyword} {value}\n").into_bytes();

        if let Some(path) = dropin.and_then(|n| self.dropin_path(n)) {
            let mut trial = self.clone();
            let idx = trial.add_file(&path);
            let f = &mut trial.files[idx];
            let existing = f
                .lines
                .iter()
                .position(|l| directive(l).is_some_and(|d| keys.contains(&d.keyword.as_str())));
            match existing {
                Some(i) => f.lines[i] = new_line.clone(),
                None => {
                    if f.lines.is_empty() {
                        f.lines.push(
                            b"# Written by accessd: sorts first, so these values win over later files.\n"
                                .to_vec(),
                        );
                    }
                    ensure_newline(&mut f.lines);
                    f.lines.push(new_line.clone());
                }
            }
            if works(&trial) {
                *self = trial;
                return Ok(());
            }
        }

        if let Some(e) = self.first_global(&keys) {
            let mut trial = self.clone();
            trial.rewrite_value(e.file, e.line, keyword, value);
            if works(&trial) {
                *self = trial;
                return Ok(());
            }
        }

        let mut trial = self.clone();
        let main = &mut trial.files[0];
        let first_match = main
            .lines
            .iter()
            .position(|l| directive(l).is_some_and(|d| d.keyword == "match"));
        match first_match {
            Some(i) => main.lines.insert(i, new_line),
            None => {
                ensure_newline(&mut main.lines);
                main.lines.push(new_line);
            }
        }
        if works(&trial) {
            *self = trial;
            return Ok(());
        }
        Err(Error::SshdInvalid(format!(
            "found no place in the configuration where {keyword} {value} would take effect"
        )))
    }
}

impl Config {
    /// Give the directive on `line` of `file` the value `value`, keeping
    /// its indentation and its keyword as written: before OpenSSH 8.7 an
    /// alias such as ChallengeResponseAuthentication was a separate option,
    /// so renaming the line could change what it means.
    fn rewrite_value(&mut self, file: usize, line: usize, keyword: &str, value: &str) {
        let old = &self.files[file].lines[line];
        let eol = if old.ends_with(b"\n") { "\n" } else { "" };
        let text = String::from_utf8_lossy(old);
        let body = text.trim_start_matches([' ', '\t']);
        let indent = &text[..text.len() - body.len()];
        let written = body
            .split([' ', '\t', '=', '\r', '\n'])
            .next()
            .filter(|w| !w.is_empty())
            .unwrap_or(keyword)
            .to_owned();
        self.files[file].lines[line] = format!("{indent}{written} {value}{eol}").into_bytes();
    }

    /// Make every directive for `keyword` (or one of `aliases`) inside a
    /// Match block say `value`, so that no block a connection satisfies
    /// brings the old value back (sshd_config(5): a block's keywords
    /// override the global ones). Returns the lines changed, each with the
    /// innermost Match line (file, line) it belongs to.
    pub fn set_in_matches(
        &mut self,
        keyword: &str,
        aliases: &[&str],
        value: &str,
    ) -> Vec<MatchEdit> {
        let lower = keyword.to_ascii_lowercase();
        let mut keys: Vec<&str> = vec![lower.as_str()];
        keys.extend(aliases);
        let mut edits: Vec<MatchEdit> = Vec::new();
        for e in self.events() {
            let Some(&block) = e.context.last() else {
                continue;
            };
            if !keys.contains(&e.directive.keyword.as_str())
                || e.directive
                    .args
                    .first()
                    .is_some_and(|v| same_value(v, value))
            {
                continue;
            }
            // A file included twice is edited once.
            if edits.iter().any(|m| (m.file, m.line) == (e.file, e.line)) {
                continue;
            }
            self.rewrite_value(e.file, e.line, keyword, value);
            edits.push(MatchEdit {
                file: e.file,
                line: e.line,
                context: e.context.clone(),
                block,
            });
        }
        edits
    }
}

/// A directive inside a Match block that [`Config::set_in_matches`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchEdit {
    pub file: usize,
    pub line: usize,
    /// Every Match line around it, outermost first.
    pub context: Vec<(usize, usize)>,
    /// The innermost one (the block the line is in).
    pub block: (usize, usize),
}

fn ensure_newline(lines: &mut [Vec<u8>]) {
    if let Some(last) = lines.last_mut() {
        if !last.ends_with(b"\n") {
            last.push(b'\n');
        }
    }
}

/// Values as sshd compares them: case-insensitive, and `without-password`
/// is the old name of `prohibit-password` (sshd -T on 9.2 prints the old one).
pub fn same_value(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        let s = s.to_ascii_lowercase();
        if s == "without-password" {
            "prohibit-password".to_owned()
        } else {
            s
        }
    };
    norm(a) == norm(b)
}

/// glob(7) matching of one path component: `*`, `?`, `[...]` (with `!`
/// negation and ranges); a leading `.` is matched only literally.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    glob_at(&p, &n)
}

/// With one remembered `*` (O(len(p) * len(n)) at worst): a recursive
/// matcher is exponential on `*a*a*a*...b`, which a hostile image's
/// Include line could hold.
fn glob_at(p: &[char], n: &[char]) -> bool {
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < n.len() {
        if j < p.len() && p[j] == '*' {
            star = Some((j, i));
            j += 1;
            continue;
        }
        if let Some(used) = (j < p.len()).then(|| one_char(&p[j..], n[i])).flatten() {
            i += 1;
            j += used;
            continue;
        }
        match star {
            Some((sj, si)) => {
                star = Some((sj, si + 1));
                i = si + 1;
                j = sj + 1;
            }
            None => return false,
        }
    }
    p[j..].iter().all(|&c| c == '*')
}

/// Does the pattern element at the start of `p` (not `*`) match `c`?
/// How many pattern chars it used, if so.
fn one_char(p: &[char], c: char) -> Option<usize> {
    match p[0] {
        '?' => Some(1),
        '[' => match class_match(&p[1..], c) {
            Some((matched, used)) => matched.then_some(1 + used),
            // An unclosed '[' is a literal character.
            None => (c == '[').then_some(1),
        },
        '\\' if p.len() > 1 => (p[1] == c).then_some(2),
        l => (l == c).then_some(1),
    }
}

/// Match `c` against a bracket expression starting after `[`; returns
/// whether it matched and how many pattern chars the class used (incl. `]`).
fn class_match(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 0;
    let negate = matches!(p.first(), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(files: &[(&str, &str)]) -> Config {
        let mut c = Config {
            files: Vec::new(),
            listings: BTreeMap::new(),
        };
        for (path, text) in files {
            let p = PathBuf::from(path);
            let (dir, name) = parent_and_name(&p).unwrap();
            c.listings
                .entry(dir.to_path_buf())
                .or_insert_with(|| Some(Vec::new()))
                .as_mut()
                .unwrap()
                .push(name);
            c.files.push(ConfFile::parse(
                p,
                text.as_bytes(),
                Some(Meta::new(0, 0, 0o644)),
            ));
        }
        c
    }

    const PA: &[&str] = &["passwordauthentication"];

    #[test]
    fn directives_split_like_sshd() {
        let d = directive(b"  passwordAuthentication=no # x\n").unwrap();
        assert_eq!(d.keyword, "passwordauthentication");
        assert_eq!(d.args, vec!["no", "#", "x"]);
        assert_eq!(directive(b"   # comment\n"), None);
        assert_eq!(directive(b"\n"), None);
        let d = directive(br#"Include "/etc/ssh/a b.conf" x"#).unwrap();
        assert_eq!(d.args, vec!["/etc/ssh/a b.conf", "x"]);
    }

    #[test]
    fn first_value_wins_and_dropins_come_first() {
        let c = cfg(&[
            (
                "/etc/ssh/sshd_config",
                "Include /etc/ssh/sshd_config.d/*.conf\nPasswordAuthentication no\n",
            ),
            (
                "/etc/ssh/sshd_config.d/50-cloud-init.conf",
                "PasswordAuthentication yes\n",
            ),
        ]);
        assert_eq!(c.value(PA).as_deref(), Some("yes"));
        let mut c2 = c.clone();
        c2.set("PasswordAuthentication", &[], "no", Some("00-accessd.conf"))
            .unwrap();
        assert_eq!(c2.value(PA).as_deref(), Some("no"));
        let added = c2.files.last().unwrap();
        assert_eq!(
            added.path,
            Path::new("/etc/ssh/sshd_config.d/00-accessd.conf")
        );
        assert!(added.original.is_none());
        // Nothing else changed.
        assert!(!c2.files[0].changed() && !c2.files[1].changed());
    }

    #[test]
    fn match_blocks_do_not_leak_out_of_includes() {
        let c = cfg(&[
            (
                "/etc/ssh/sshd_config",
                "Include d/*.conf\nPasswordAuthentication no\n",
            ),
            (
                "/etc/ssh/d/a.conf",
                "Match User alice\nPasswordAuthentication yes\n",
            ),
        ]);
        assert_eq!(c.value(PA).as_deref(), Some("no"));
    }

    #[test]
    fn setting_after_last_match_is_inserted_before_it() {
        let mut c = cfg(&[(
            "/etc/ssh/sshd_config",
            "Port 22\nMatch User bob\n  X11Forwarding no\nPasswordAuthentication no\n",
        )]);
        assert_eq!(c.value(PA), None);
        c.set("PasswordAuthentication", &[], "no", Some("00-accessd.conf"))
            .unwrap();
        assert_eq!(
            String::from_utf8(c.files[0].render()).unwrap(),
            "Port 22\nPasswordAuthentication no\nMatch User bob\n  X11Forwarding no\nPasswordAuthentication no\n"
        );
    }

    #[test]
    fn earlier_line_is_replaced_in_place() {
        let mut c = cfg(&[(
            "/etc/ssh/sshd_config",
            "passwordauthentication yes\r\nPasswordAuthentication no\n",
        )]);
        c.set("PasswordAuthentication", &[], "no", None).unwrap();
        assert_eq!(
            c.files[0].render(),
            b"passwordauthentication no\nPasswordAuthentication no\n"
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("*.conf", "00-a.conf"));
        assert!(!glob_match("*.conf", ".00-a.conf"));
        assert!(!glob_match("*.conf", "a.conf.bak"));
        assert!(glob_match("[0-4]?-*", "00-x"));
        assert!(!glob_match("[!0]*", "0x"));
        assert!(glob_match("a\\*b", "a*b") && !glob_match("a\\*b", "axb"));
        assert!(glob_match("x[", "x[") && glob_match("*.c*f", "a.conf"));
        // Linear, not exponential, on a hostile pattern.
        let hostile = format!("{}b", "*a".repeat(100));
        assert!(!glob_match(&hostile, &"a".repeat(250)));
    }
}
