//! Who logged in over SSH, when, from where and with which key: sshd's own
//! "Accepted METHOD for USER from ADDR port PORT ssh2[: TYPE FP ...]"
//! records (`auth_log()` in OpenSSH's auth.c; the same format from 8.4 to
//! 10.0), each a [`Login`].
//!
//! Two sources, in this order:
//!
//! 1. **The systemd journal**, when there is one (`/run/log/journal` or
//!    `/var/log/journal` exists): `journalctl -o json`, with matches for
//!    entries that arrived over syslog from a root process named `sshd` or
//!    `sshd-session`. Only the journal's trusted fields, which journald
//!    sets from the sender's kernel credentials, are believed: the pid is
//!    `_PID` (never `SYSLOG_PID`), the time `__REALTIME_TIMESTAMP`, and
//!    `_UID` and `_COMM` are checked again on every entry
//!    ([`parse_journal_line`]). A user's `logger -t sshd` carries the
//!    user's `_UID` and is never taken.
//! 2. **Otherwise `/var/log/auth.log`, else `/var/log/secure`**: its last
//!    [`MAX_LOG_TAIL`] bytes, read through one descriptor (no symlink, a
//!    regular file owned by root and writable by no one else). A classic
//!    syslog file cannot say who wrote a line: **any local user can forge
//!    one** (`logger -t sshd 'Accepted publickey for ...'`, which
//!    rsyslog writes as `sshd[PID]:`). That is why the journal comes first,
//!    and why `sessions::by_key` checks every record against /proc before
//!    it ends anything. Rotated files (`auth.log.1`, ...) are not read.
//!
//! Either way only as much is read as the bounds allow (the journal
//! through [`run_bounded`] with [`Bounds::LOG`], newest first): a record
//! older than what the journal or the file still holds, or than what the
//! bounds reach, is simply not there. In image mode (a root other than
//! `/`) there are no records: the image's log is not this machine's, and
//! no program of the image is run.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::fsx::Dir;
use crate::sys::{find_program, run_bounded, Bounds, Cmd, Cut, System};

/// Where a record was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The systemd journal (trusted fields).
    Journal,
    /// A classic syslog file (`/var/log/auth.log`, `/var/log/secure`):
    /// forgeable by any local user.
    AuthLog,
}

/// One "Accepted ..." record of sshd, with the pid of the process that
/// wrote it (the connection's privileged sshd process, which sshd's
/// monitor is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub pid: i32,
    pub user: String,
    pub addr: IpAddr,
    pub port: u16,
    /// `publickey`, `password`, `keyboard-interactive/pam`, ...
    pub method: String,
    /// sshd's name of the key type (`ED25519`, `RSA-CERT`, ...), for
    /// `publickey` and `hostbased`.
    pub key_type: Option<String>,
    /// `SHA256:...` as sshd logs it, for `publickey` (the user's key; for
    /// a certificate, the certified key's) and `hostbased` (the host's
    /// key). `None` when sshd logs another hash (`FingerprintHash md5`).
    pub fingerprint: Option<String>,
    /// When the record was written.
    pub at: SystemTime,
    pub source: Source,
}

/// The most of a syslog file read: its end, where the newest records are.
pub const MAX_LOG_TAIL: usize = 8 << 20;
/// A journal entry longer than this (JSON bytes) is not sshd's record
/// (sshd's lines are under 1 KiB; a `MESSAGE` of bytes is spelled as a
/// JSON array of numbers, four bytes or so each) and is skipped unparsed.
const MAX_JOURNAL_LINE: usize = 64 << 10;
/// sshd truncates the user name at 100 bytes (`%.100s`).
const MAX_USER: usize = 100;

/// The parts of an "Accepted" message: user, method, address, port, key
/// type and fingerprint.
pub type Accepted = (String, String, IpAddr, u16, Option<String>, Option<String>);

/// What a read of sshd's log found, and whether it is all there was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Records {
    pub logins: Vec<Login>,
    /// Where they were read.
    pub source: Source,
    /// `None` when every record the source holds for the query was read;
    /// otherwise which bound stopped the read (the journal's output cut
    /// at [`Bounds::LOG`], only the newest `max` records taken, only the
    /// end of the file read): a record that is not in `logins` may then
    /// still be in the log.
    pub cut: Option<String>,
}

impl Records {
    fn none() -> Records {
        Records {
            logins: Vec::new(),
            source: Source::Journal,
            cut: None,
        }
    }

    pub fn complete(&self) -> bool {
        self.cut.is_none()
    }
}

/// The records, newest first, at most `max` of them, written at `since` or
/// later when it is given. A live system where sshd logs nowhere accessd
/// reads (no journal, no auth.log or secure) is an error: "no records"
/// would read as "nobody logged in".
pub fn accepted(sys: &System, since: Option<SystemTime>, max: usize) -> Result<Records> {
    if !sys.is_live() || max == 0 {
        return Ok(Records::none());
    }
    let mut out = if has_journal(sys) {
        let program = journalctl()?;
        read_journal(&journal_cmd(&program, since), max, &mut |_| false)?
    } else {
        from_syslog_file(sys, since, max)?.ok_or_else(no_log)?
    };
    out.logins.sort_by_key(|l| std::cmp::Reverse(l.at));
    out.logins.truncate(max);
    Ok(out)
}

/// The records sshd's processes `pids` wrote (each started at the time
/// given; the time bounds the search), for finding which login a live
/// session is: the journal asked for those pids only, else the syslog
/// file's tail. Records of other pids are not returned; `cut` says when
/// a bound stopped the read. An error when sshd logs nowhere accessd
/// reads.
pub fn for_pids(sys: &System, pids: &BTreeMap<i32, SystemTime>) -> Result<Records> {
    if !sys.is_live() || pids.is_empty() {
        return Ok(Records::none());
    }
    read_for_pids(sys, pids)
}

/// [`for_pids`] from the log sources under `sys`'s root.
fn read_for_pids(sys: &System, pids: &BTreeMap<i32, SystemTime>) -> Result<Records> {
    if has_journal(sys) {
        return journal_for_pids(&journalctl()?, pids, &Bounds::LOG);
    }
    let since = pids.values().min().map(|t| before(*t));
    let mut r = from_syslog_file(sys, since, usize::MAX)?.ok_or_else(no_log)?;
    r.logins.retain(|l| pids.contains_key(&l.pid));
    Ok(r)
}

/// How far before a process's start its record is looked for (clocks that
/// round, a journal timestamp taken before the start was read).
const PID_SINCE_SLACK: Duration = Duration::from_secs(60);

/// [`PID_SINCE_SLACK`] before `t` (the epoch at the earliest).
fn before(t: SystemTime) -> SystemTime {
    t.checked_sub(PID_SINCE_SLACK)
        .unwrap_or(UNIX_EPOCH)
        .max(UNIX_EPOCH)
}
/// Pids per `journalctl` call: a few hundred arguments, far under
/// ARG_MAX, and one run per 200 live sessions.
pub const PIDS_PER_CALL: usize = 200;

fn no_log() -> Error {
    Error::Program(
        "sshd's log cannot be read: there is no systemd journal (/run/log/journal, \
         /var/log/journal) and no /var/log/auth.log or /var/log/secure"
            .into(),
    )
}

fn journalctl() -> Result<std::path::PathBuf> {
    find_program("journalctl")
        .ok_or_else(|| Error::Program("the journal exists but journalctl is not installed".into()))
}

/// `journalctl` for the records of `pids` (one group: terms on the same
/// field are alternatives, journalctl(1)), newest first, since `since`.
pub fn journal_pids_cmd(program: &Path, since: SystemTime, pids: &[i32]) -> Cmd {
    let secs = since
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    Cmd::new(program)
        .args([
            "-o",
            "json",
            "--no-pager",
            "-q",
            "-r",
            "--output-fields=MESSAGE,_PID,_UID,_COMM,_TRANSPORT",
        ])
        .arg(format!("--since=@{secs}"))
        .args([
            "_UID=0",
            "_TRANSPORT=syslog",
            "_COMM=sshd",
            "_COMM=sshd-session",
        ])
        .args(pids.iter().map(|p| format!("_PID={p}")))
}

/// [`for_pids`] from the journal, [`PIDS_PER_CALL`] pids per run. A run
/// stops as soon as each of its pids has a record written after that
/// process started (newest first: that is its own).
fn journal_for_pids(
    program: &Path,
    pids: &BTreeMap<i32, SystemTime>,
    bounds: &Bounds,
) -> Result<Records> {
    let all: Vec<(i32, SystemTime)> = pids.iter().map(|(p, t)| (*p, *t)).collect();
    let mut out = Records::none();
    for chunk in all.chunks(PIDS_PER_CALL) {
        let since = chunk
            .iter()
            .map(|(_, t)| *t)
            .min()
            .expect("a chunk is not empty");
        let only: Vec<i32> = chunk.iter().map(|(p, _)| *p).collect();
        let cmd = journal_pids_cmd(program, before(since), &only);
        let mut waiting: BTreeMap<i32, SystemTime> = chunk.iter().copied().collect();
        let r = read_bounded(&cmd, bounds, usize::MAX, &mut |l: &Login| {
            if waiting
                .get(&l.pid)
                .is_some_and(|start| before(*start) <= l.at)
            {
                waiting.remove(&l.pid);
            }
            waiting.is_empty()
        })?;
        out.logins
            .extend(r.logins.into_iter().filter(|l| pids.contains_key(&l.pid)));
        if out.cut.is_none() {
            out.cut = r.cut;
        }
    }
    Ok(out)
}

fn has_journal(sys: &System) -> bool {
    ["/run/log/journal", "/var/log/journal"]
        .iter()
        .any(|p| std::fs::symlink_metadata(sys.path(p)).is_ok_and(|m| m.is_dir()))
}

/// `journalctl` with the arguments [`from_journal`] runs it with.
pub fn journal_cmd(program: &Path, since: Option<SystemTime>) -> Cmd {
    let mut cmd = Cmd::new(program).args([
        "-o",
        "json",
        "--no-pager",
        "-q",
        "-r",
        // Fewer bytes per entry: more of them within the output bound.
        "--output-fields=MESSAGE,_PID,_UID,_COMM,_TRANSPORT",
    ]);
    if let Some(t) = since {
        let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        cmd = cmd.arg(format!("--since=@{secs}"));
    }
    // Terms of one group are ANDed; `+` ORs the groups (journalctl(1)).
    cmd.args([
        "_UID=0",
        "_TRANSPORT=syslog",
        "_COMM=sshd",
        "+",
        "_UID=0",
        "_TRANSPORT=syslog",
        "_COMM=sshd-session",
    ])
}

/// The records `cmd` (journalctl) prints, at most `max`.
fn read_journal(cmd: &Cmd, max: usize, enough: &mut dyn FnMut(&Login) -> bool) -> Result<Records> {
    read_bounded(cmd, &Bounds::LOG, max, enough)
}

/// The records `cmd` (journalctl) prints, through [`run_bounded`] within
/// `bounds`, until `max` are read or `enough` says so. A bound hit is
/// told in `cut`.
fn read_bounded(
    cmd: &Cmd,
    bounds: &Bounds,
    max: usize,
    enough: &mut dyn FnMut(&Login) -> bool,
) -> Result<Records> {
    let mut logins = Vec::new();
    let mut full = false;
    let ran = run_bounded(cmd, bounds, |line| {
        if let Some(l) = parse_journal_line(line) {
            let done = enough(&l);
            logins.push(l);
            full = logins.len() >= max;
            return !(done || full);
        }
        true
    })?;
    let cut = match (ran.status, ran.cut) {
        (_, Some(Cut::Done)) if full => Some(format!("only the newest {max} records were read")),
        (_, Some(Cut::Done)) => None,
        (_, Some(Cut::Bytes)) => Some(format!(
            "journalctl's output was cut at {} MiB",
            bounds.max_bytes >> 20
        )),
        (_, Some(Cut::Lines)) => Some(format!(
            "journalctl's output was cut at {} lines",
            bounds.max_lines
        )),
        (Some(st), None) if st.success() => None,
        (status, None) => {
            let first = String::from_utf8_lossy(&ran.stderr);
            let first = first.lines().next().unwrap_or("").trim();
            return Err(Error::Program(format!(
                "{} failed ({}){}{}",
                cmd.display(),
                status.map_or("killed".to_string(), |s| s.to_string()),
                if first.is_empty() { "" } else { ": " },
                first.chars().take(200).collect::<String>()
            )));
        }
    };
    Ok(Records {
        logins,
        source: Source::Journal,
        cut,
    })
}

/// One line of `journalctl -o json`: a [`Login`] when it is an "Accepted"
/// record that a root process named `sshd` or `sshd-session` sent over
/// syslog, by the journal's trusted fields. Anything else (another
/// process, another uid, a field missing, set twice or malformed, a line
/// over [`MAX_JOURNAL_LINE`]) is `None`.
pub fn parse_journal_line(line: &[u8]) -> Option<Login> {
    if line.len() > MAX_JOURNAL_LINE {
        return None;
    }
    let v: Value = serde_json::from_slice(line).ok()?;
    let obj = v.as_object()?;
    let text = |k: &str| -> Option<String> { String::from_utf8(field(obj.get(k)?)?).ok() };
    if text("_UID")? != "0" || text("_TRANSPORT")? != "syslog" {
        return None;
    }
    if !matches!(text("_COMM")?.as_str(), "sshd" | "sshd-session") {
        return None;
    }
    let pid = parse_decimal(&text("_PID")?)?;
    let pid = i32::try_from(pid).ok().filter(|&p| p > 1)?;
    let usec = parse_decimal(&text("__REALTIME_TIMESTAMP")?)?;
    let at = UNIX_EPOCH.checked_add(Duration::from_micros(usec))?;
    let msg = text("MESSAGE")?;
    let (user, method, addr, port, key_type, fingerprint) = parse_accepted(&msg)?;
    Some(Login {
        pid,
        user,
        addr,
        port,
        method,
        key_type,
        fingerprint,
        at,
        source: Source::Journal,
    })
}

/// A journal field's bytes: a JSON string, or an array of byte values (how
/// journalctl writes a value that is not printable UTF-8). A field set
/// more than once (an array of strings) or too large to print (`null`) is
/// `None`.
fn field(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Array(a) => a
            .iter()
            .map(|b| b.as_u64().and_then(|n| u8::try_from(n).ok()))
            .collect(),
        _ => None,
    }
}

/// ASCII digits only (no sign, no space), as C's `%d`/`%u` print them.
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

/// sshd's "Accepted METHOD for USER from ADDR port PORT ssh2[: EXTRA]",
/// strictly as `auth_log()` writes it (OpenSSH 8.4 to 10.0). EXTRA is, for
/// `publickey` and `hostbased`, "TYPE FP[, INFO]" or, for a certificate,
/// "TYPE-CERT FP ID KEYID (serial N) CA TYPE FP[, INFO]"; for
/// `gssapi-with-mic`, a principal; other methods have none.
///
/// The user name is what sshd logs (it is not checked against PROTOCOL's
/// grammar: local accounts may have others). A name that itself contains
/// " from " is taken when exactly one way of reading the line is valid; a
/// line that can be read as two different records is `None`, as is
/// anything sshd does not write (text after the record, a port that is not
/// a plain decimal u16, an address that is not an IP address).
pub fn parse_accepted(msg: &str) -> Option<Accepted> {
    let rest = msg.strip_prefix("Accepted ")?;
    let (method, rest) = rest.split_once(" for ")?;
    if !valid_method(method) {
        return None;
    }
    let mut found = None;
    for (i, _) in rest.match_indices(" from ") {
        // At a match of " from ": both are character boundaries.
        let (Some(user), Some(tail)) = (rest.get(..i), rest.get(i + " from ".len()..)) else {
            continue;
        };
        let Some(parsed) = parse_tail(method, tail) else {
            continue;
        };
        if user.is_empty()
            || user.len() > MAX_USER
            || user.chars().any(char::is_control)
            || user.starts_with("invalid user ")
        {
            continue;
        }
        if found.is_some() {
            return None;
        }
        found = Some((user, parsed));
    }
    let (user, (addr, port, key_type, fingerprint)) = found?;
    Some((
        user.to_owned(),
        method.to_owned(),
        addr,
        port,
        key_type,
        fingerprint,
    ))
}

/// `method` or `method/submethod` (`keyboard-interactive/pam`).
fn valid_method(m: &str) -> bool {
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes().all(|b| {
                b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'@' || b == b'.'
            })
    };
    match m.split_once('/') {
        Some((a, b)) => ok(a) && ok(b),
        None => ok(m),
    }
}

type Tail = (IpAddr, u16, Option<String>, Option<String>);

/// "ADDR port PORT ssh2[: EXTRA]" after " from ".
fn parse_tail(method: &str, s: &str) -> Option<Tail> {
    let (addr, rest) = s.split_once(" port ")?;
    let addr = parse_addr(addr)?;
    let (port, rest) = rest.split_once(' ')?;
    let port = u16::try_from(parse_decimal(port)?).ok()?;
    let extra = match rest {
        "ssh2" => None,
        _ => Some(rest.strip_prefix("ssh2: ")?),
    };
    let base = method.split('/').next().unwrap_or(method);
    let (key_type, fingerprint) = match (base, extra) {
        ("publickey" | "hostbased", Some(e)) => {
            let (t, fp) = parse_key_extra(base, e)?;
            (Some(t), fp)
        }
        // A key method always names its key.
        ("publickey" | "hostbased", None) => return None,
        // A principal name; sshd's own text, taken as it is.
        ("gssapi-with-mic", _) => (None, None),
        (_, Some(_)) => return None,
        (_, None) => (None, None),
    };
    Some((addr, port, key_type, fingerprint))
}

/// An IP address as `ssh_remote_ipaddr()` prints it: IPv4 dotted, IPv6
/// without brackets, a link-local one with its `%interface` (dropped).
fn parse_addr(s: &str) -> Option<IpAddr> {
    let ip = match s.split_once('%') {
        Some((a, scope)) if !scope.is_empty() && !scope.contains(' ') => {
            match a.parse::<IpAddr>().ok()? {
                IpAddr::V6(v6) => IpAddr::V6(v6),
                IpAddr::V4(_) => return None,
            }
        }
        Some(_) => return None,
        None => s.parse().ok()?,
    };
    Some(ip)
}

/// "TYPE FP[, INFO]" or "TYPE-CERT FP ID ... CA TYPE FP[, INFO]": the key
/// type and its SHA256 fingerprint (`None` for another hash).
fn parse_key_extra(method: &str, e: &str) -> Option<(String, Option<String>)> {
    let (ktype, rest) = e.split_once(' ')?;
    if ktype.is_empty()
        || !ktype
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
    {
        return None;
    }
    let (fp, rest) = match rest.split_once(' ') {
        Some((fp, rest)) => (fp, Some(rest)),
        None => (rest, None),
    };
    let fp = if ktype.ends_with("-CERT") {
        // The key id (chosen by the CA) is free text: only the start is
        // checked, and the first fingerprint is the certified key's.
        let rest = rest?;
        if !rest.starts_with("ID ") || !rest.contains(" (serial ") || !rest.contains(") CA ") {
            return None;
        }
        fp
    } else {
        match (fp.strip_suffix(','), rest) {
            (None, None) => fp,
            // ", INFO" after the fingerprint: only what sshd records.
            (Some(f), Some(info)) => {
                let ok = match method {
                    "publickey" => info
                        .strip_prefix("signature count = ")
                        .and_then(parse_decimal)
                        .is_some(),
                    _ => info.starts_with("client user \"") && info.ends_with('"'),
                };
                if !ok {
                    return None;
                }
                f
            }
            _ => return None,
        }
    };
    let sha = if let Some(b64) = fp.strip_prefix("SHA256:") {
        if b64.len() != 43
            || !b64
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        {
            return None;
        }
        Some(fp.to_owned())
    } else if let Some(hex) = fp.strip_prefix("MD5:") {
        if hex.len() != 47 || !hex.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return None;
        }
        None
    } else {
        return None;
    };
    Some((ktype.to_owned(), sha))
}

/// The newest records of `/var/log/auth.log`, else `/var/log/secure`;
/// `None` when neither file is there.
fn from_syslog_file(
    sys: &System,
    since: Option<SystemTime>,
    max: usize,
) -> Result<Option<Records>> {
    let Some(dir) = Dir::open(sys.path("/"))?.try_open_dir("var/log")? else {
        return Ok(None);
    };
    let mut data = None;
    for name in ["auth.log", "secure"] {
        if let Some(d) = dir.read_tail(name, MAX_LOG_TAIL)? {
            data = Some((name, d));
            break;
        }
    }
    let Some((name, data)) = data else {
        return Ok(None);
    };
    if data.meta.uid != 0 || data.meta.mode & 0o022 != 0 {
        return Err(Error::unsafe_path(
            dir.display(name),
            "is not owned by root, or others may write it: its records are not sshd's",
        ));
    }
    let now = SystemTime::now();
    let mut bytes = data.bytes.as_slice();
    let mut cut = None;
    if data.size > MAX_LOG_TAIL as u64 {
        cut = Some(format!(
            "only the last {} MiB of {} were read",
            MAX_LOG_TAIL >> 20,
            dir.display(name).display()
        ));
        // The tail starts mid-line: that line is not whole.
        let nl = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        bytes = &bytes[nl..];
    }
    let mut all = bytes
        .split(|&b| b == b'\n')
        .rev()
        .filter_map(|l| std::str::from_utf8(l).ok())
        .filter_map(|l| parse_syslog_line(l, now, &local_time))
        .filter(|l| since.is_none_or(|s| l.at >= s));
    let mut out: Vec<Login> = all.by_ref().take(max).collect();
    if cut.is_none() && all.next().is_some() {
        cut = Some(format!("only the newest {max} records were read"));
    }
    out.sort_by_key(|l| std::cmp::Reverse(l.at));
    Ok(Some(Records {
        logins: out,
        source: Source::AuthLog,
        cut,
    }))
}

/// A date and time of day without a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub min: u32,
    pub sec: u32,
}

impl Civil {
    fn valid(&self) -> bool {
        let leap = (self.year % 4 == 0 && self.year % 100 != 0) || self.year % 400 == 0;
        let days = match self.month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return false,
        };
        (1..=days).contains(&self.day) && self.hour < 24 && self.min < 60 && self.sec < 61
    }

    /// Seconds since the epoch of this time in UTC.
    fn utc_secs(&self) -> i64 {
        // Days from civil (H. Hinnant's algorithm).
        let y = if self.month <= 2 {
            self.year - 1
        } else {
            self.year
        };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = self.month as i64;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + self.day as i64 - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        days * 86_400 + (self.hour * 3600 + self.min * 60 + self.sec) as i64
    }
}

fn from_secs(secs: i64, nanos: u32) -> Option<SystemTime> {
    let s = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(s, nanos))
}

/// `c` in the machine's local time zone (`mktime`, which reads `TZ` and
/// /etc/localtime), for the classic syslog format.
pub fn local_time(c: Civil) -> Option<SystemTime> {
    if !c.valid() {
        return None;
    }
    // SAFETY: a zeroed tm is a valid value; mktime reads and normalises
    // the struct we own and returns a time_t.
    let t = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        tm.tm_year = (c.year - 1900) as libc::c_int;
        tm.tm_mon = c.month as libc::c_int - 1;
        tm.tm_mday = c.day as libc::c_int;
        tm.tm_hour = c.hour as libc::c_int;
        tm.tm_min = c.min as libc::c_int;
        tm.tm_sec = c.sec as libc::c_int;
        tm.tm_isdst = -1;
        libc::mktime(&mut tm)
    };
    if t == -1 {
        return None;
    }
    from_secs(t, 0)
}

/// One line of a syslog file: a [`Login`] when it is sshd's "Accepted"
/// record, "TIME HOST sshd[PID]: MESSAGE" (or `sshd-session[PID]`), TIME
/// being either
///
/// - RFC 3339 with a zone (rsyslog's `RSYSLOG_FileFormat`, the default of
///   newer distributions): `2026-12-03T06:10:43.123456+01:00`, or
/// - the classic `Dec  3 06:10:43`, local time without a year. The year is
///   inferred: the latest of next year, this year and last year (by
///   `now`) that puts the line no more than a day after `now` (so
///   December's lines read in January are last year's). `local` turns the
///   date into a time ([`local_time`] on the machine).
pub fn parse_syslog_line(
    line: &str,
    now: SystemTime,
    local: &dyn Fn(Civil) -> Option<SystemTime>,
) -> Option<Login> {
    let (at, rest) = if line.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        let (ts, rest) = line.split_once(' ')?;
        (parse_rfc3339(ts)?, rest)
    } else {
        // "Mmm dd HH:MM:SS " is 16 bytes, the day padded with a space.
        let head = line.get(..16)?;
        let rest = line.get(16..)?;
        (classic_time(head, now, local)?, rest)
    };
    let (_host, rest) = rest.split_once(' ')?;
    let (tag, msg) = rest.split_once(": ")?;
    let (name, pid) = tag.strip_suffix(']')?.split_once('[')?;
    if !matches!(name, "sshd" | "sshd-session") {
        return None;
    }
    let pid = i32::try_from(parse_decimal(pid)?).ok().filter(|&p| p > 1)?;
    let (user, method, addr, port, key_type, fingerprint) = parse_accepted(msg)?;
    Some(Login {
        pid,
        user,
        addr,
        port,
        method,
        key_type,
        fingerprint,
        at,
        source: Source::AuthLog,
    })
}

fn two(s: &str) -> Option<u32> {
    (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `Dec  3 06:10:43 ` (with its trailing space).
fn classic_time(
    head: &str,
    now: SystemTime,
    local: &dyn Fn(Civil) -> Option<SystemTime>,
) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // Untrusted text (any user writes auth.log): every slice is taken
    // with `get`, which is `None` off a character boundary.
    let b = head.as_bytes();
    if b.len() != 16 || b[3] != b' ' || b[6] != b' ' || b[15] != b' ' {
        return None;
    }
    let month = MONTHS.iter().position(|m| Some(*m) == head.get(..3))? as u32 + 1;
    let day = head.get(4..6)?.trim_start_matches(' ');
    if day.is_empty() || !day.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let day: u32 = day.parse().ok()?;
    let hms = head.get(7..15)?;
    let (h, m, s) = (
        two(hms.get(0..2)?)?,
        two(hms.get(3..5)?)?,
        two(hms.get(6..8)?)?,
    );
    if hms.get(2..3) != Some(":") || hms.get(5..6) != Some(":") {
        return None;
    }
    let now_secs = now.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
    let this_year = year_of(now_secs);
    let latest = now + Duration::from_secs(86_400);
    for year in [this_year + 1, this_year, this_year - 1] {
        let c = Civil {
            year,
            month,
            day,
            hour: h,
            min: m,
            sec: s,
        };
        if let Some(t) = local(c) {
            if t <= latest {
                return Some(t);
            }
        }
    }
    None
}

/// The UTC year of a time.
fn year_of(secs: i64) -> i64 {
    let days = secs.div_euclid(86_400) + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    yoe + era * 400 + i64::from(month <= 2)
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)`.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = s.get(0..4)?;
    if !year.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let c = Civil {
        year: year.parse().ok()?,
        month: two(s.get(5..7)?)?,
        day: two(s.get(8..10)?)?,
        hour: two(s.get(11..13)?)?,
        min: two(s.get(14..16)?)?,
        sec: two(s.get(17..19)?)?,
    };
    if !c.valid() {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut nanos = 0u32;
    if let Some(f) = rest.strip_prefix('.') {
        let n = f.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 || n > 9 {
            return None;
        }
        nanos = f.get(..n)?.parse::<u32>().ok()? * 10u32.pow(9 - n as u32);
        rest = f.get(n..)?;
    }
    let offset: i64 = match rest {
        "Z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.get(3..4) != Some(":") {
                return None;
            }
            let (h, m) = (two(rest.get(1..3)?)?, two(rest.get(4..6)?)?);
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60) as i64
        }
    };
    from_secs(c.utc_secs() - offset, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const FP: &str = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
    const CA_FP: &str = "SHA256:8Ynge6O/XvhzWMNcCg3Uw6a5KHDmpVjT5mmFxcIqxgM";

    fn acc(
        user: &str,
        method: &str,
        addr: &str,
        port: u16,
        kt: Option<&str>,
        fp: Option<&str>,
    ) -> Option<Accepted> {
        Some((
            user.into(),
            method.into(),
            addr.parse().unwrap(),
            port,
            kt.map(Into::into),
            fp.map(Into::into),
        ))
    }

    #[test]
    fn sshds_accepted_lines_parse_as_auth_log_writes_them() {
        // auth.c auth_log(), identical in V_8_4_P1, V_9_2_P1 and V_10_0_P1:
        // "%s %s%s%s for %s%.100s from %.200s port %d ssh2%s%s", the extra
        // from format_method_key() ("%s %s" or the certificate form).
        let cases = [
            (
                format!("Accepted publickey for root from ::1 port 5 ssh2: ED25519 {FP}"),
                acc("root", "publickey", "::1", 5, Some("ED25519"), Some(FP)),
            ),
            (
                "Accepted password for alice from 192.0.2.7 port 51234 ssh2".to_string(),
                acc("alice", "password", "192.0.2.7", 51234, None, None),
            ),
            (
                "Accepted keyboard-interactive/pam for bob from 2001:db8::2 port 22 ssh2"
                    .to_string(),
                acc(
                    "bob",
                    "keyboard-interactive/pam",
                    "2001:db8::2",
                    22,
                    None,
                    None,
                ),
            ),
            (
                format!(
                    "Accepted publickey for alice from 10.0.0.1 port 40000 ssh2: \
                     ED25519-CERT {FP} ID alice@corp (serial 7) CA ED25519 {CA_FP}"
                ),
                acc(
                    "alice",
                    "publickey",
                    "10.0.0.1",
                    40000,
                    Some("ED25519-CERT"),
                    Some(FP),
                ),
            ),
            (
                // A security key: auth2-pubkey.c records the counter.
                format!(
                    "Accepted publickey for alice from 10.0.0.1 port 1 ssh2: \
                     ED25519-SK {FP}, signature count = 12"
                ),
                acc(
                    "alice",
                    "publickey",
                    "10.0.0.1",
                    1,
                    Some("ED25519-SK"),
                    Some(FP),
                ),
            ),
            (
                format!("Accepted publickey for u from ::ffff:127.0.0.1 port 65535 ssh2: RSA {FP}"),
                acc(
                    "u",
                    "publickey",
                    "::ffff:127.0.0.1",
                    65535,
                    Some("RSA"),
                    Some(FP),
                ),
            ),
            (
                "Accepted publickey for u from fe80::1%eth0 port 2 ssh2: ECDSA \
                 MD5:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff"
                    .to_string(),
                acc("u", "publickey", "fe80::1", 2, Some("ECDSA"), None),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse_accepted(&line), want, "{line}");
        }
    }

    #[test]
    fn lines_sshd_does_not_write_are_refused() {
        for bad in [
            format!("Accepted publickey for root from ::1 port 5 ssh2: ED25519 {FP} and more"),
            format!("Accepted publickey for root from ::1 port 5 ssh2: ED25519 {FP}, extra"),
            "Accepted password for alice from 192.0.2.7 port 51234 ssh2 trailing".into(),
            "Accepted password for alice from 192.0.2.7 port 51234 ssh2: injected".into(),
            "Accepted password for alice from 192.0.2.7 port 65536 ssh2".into(),
            "Accepted password for alice from 192.0.2.7 port +22 ssh2".into(),
            "Accepted password for alice from 192.0.2.7 port 022 ssh2".into(),
            "Accepted password for alice from 192.0.2.7 port  22 ssh2".into(),
            "Accepted password for alice from host.example port 22 ssh2".into(),
            "Accepted password for alice from [::1] port 22 ssh2".into(),
            "Accepted password for alice from 1.2.3.4%eth0 port 22 ssh2".into(),
            "Accepted password for  from 1.2.3.4 port 22 ssh2".into(),
            "Accepted password for invalid user x from 1.2.3.4 port 22 ssh2".into(),
            "Accepted publickey for root from ::1 port 5 ssh2".into(),
            "Accepted publickey for root from ::1 port 5 ssh2: ED25519 SHA256:short".into(),
            "Failed password for alice from 192.0.2.7 port 51234 ssh2".into(),
            " Accepted password for alice from 192.0.2.7 port 51234 ssh2".into(),
            "Accepted pass word for alice from 192.0.2.7 port 51234 ssh2".into(),
            format!("Accepted publickey for a\tb from ::1 port 5 ssh2: ED25519 {FP}"),
            format!(
                "Accepted publickey for {} from ::1 port 5 ssh2: ED25519 {FP}",
                "u".repeat(101)
            ),
        ] {
            assert_eq!(parse_accepted(&bad), None, "{bad}");
        }
    }

    #[test]
    fn a_user_name_with_from_in_it_is_read_only_when_unambiguous() {
        // Only one split of the line is a valid record: the name has " from ".
        assert_eq!(
            parse_accepted("Accepted password for x from y from 192.0.2.1 port 22 ssh2"),
            acc("x from y", "password", "192.0.2.1", 22, None, None)
        );
        // A name made to look like a whole record: the password method has
        // no extra, so only the real split is valid.
        assert_eq!(
            parse_accepted(
                "Accepted password for a from 10.9.9.9 port 1 ssh2 from 192.0.2.1 port 22 ssh2"
            ),
            acc(
                "a from 10.9.9.9 port 1 ssh2",
                "password",
                "192.0.2.1",
                22,
                None,
                None
            )
        );
        // Two valid readings (a certificate's key id is free text): none.
        let two = format!(
            "Accepted publickey for a from 10.0.0.1 port 1 ssh2: ED25519-CERT {FP} ID \
             x from 10.0.0.2 port 2 ssh2: ED25519-CERT {FP} ID y (serial 1) CA ED25519 {CA_FP}"
        );
        assert_eq!(parse_accepted(&two), None);
    }

    fn journal(fields: &[(&str, Value)]) -> Vec<u8> {
        let mut m = serde_json::Map::new();
        for (k, v) in fields {
            m.insert((*k).into(), v.clone());
        }
        serde_json::to_vec(&Value::Object(m)).unwrap()
    }

    fn entry(uid: &str, comm: &str, msg: Value) -> Vec<u8> {
        journal(&[
            ("__CURSOR", "s=1;i=2".into()),
            ("__REALTIME_TIMESTAMP", "1764742243123456".into()),
            ("_UID", uid.into()),
            ("_COMM", comm.into()),
            ("_TRANSPORT", "syslog".into()),
            ("_PID", "4242".into()),
            ("SYSLOG_PID", "1".into()),
            ("MESSAGE", msg),
        ])
    }

    #[test]
    fn a_journal_record_is_taken_from_its_trusted_fields() {
        let msg =
            format!("Accepted publickey for alice from 192.0.2.7 port 40000 ssh2: ED25519 {FP}");
        let l = parse_journal_line(&entry("0", "sshd-session", msg.clone().into())).unwrap();
        assert_eq!(l.pid, 4242, "_PID, not SYSLOG_PID");
        assert_eq!(
            l.at,
            UNIX_EPOCH + Duration::from_micros(1_764_742_243_123_456)
        );
        assert_eq!(
            (
                l.user.as_str(),
                l.method.as_str(),
                l.port,
                l.fingerprint.as_deref()
            ),
            ("alice", "publickey", 40000, Some(FP))
        );
        assert_eq!(l.source, Source::Journal);
        assert!(parse_journal_line(&entry("0", "sshd", msg.clone().into())).is_some());

        // MESSAGE as bytes (how journalctl writes a non-UTF-8 or
        // non-printable value).
        let bytes: Vec<Value> = msg.bytes().map(|b| Value::from(b as u64)).collect();
        let l2 = parse_journal_line(&entry("0", "sshd", Value::Array(bytes))).unwrap();
        assert_eq!(l2.fingerprint.as_deref(), Some(FP));
    }

    #[test]
    fn forged_or_incomplete_journal_entries_are_ignored() {
        let msg: Value =
            format!("Accepted publickey for root from ::1 port 5 ssh2: ED25519 {FP}").into();
        // A user's `logger -t sshd`: journald sets _UID to the user's.
        assert!(parse_journal_line(&entry("1000", "sshd", msg.clone())).is_none());
        // Root, but not sshd.
        assert!(parse_journal_line(&entry("0", "bash", msg.clone())).is_none());
        assert!(parse_journal_line(&entry("0", "logger", msg.clone())).is_none());
        // A MESSAGE that is not bytes, one set twice, one too large to print.
        for m in [
            Value::Array(vec![Value::from(300)]),
            Value::Array(vec![msg.clone(), msg.clone()]),
            Value::Null,
            Value::from(5),
        ] {
            assert!(parse_journal_line(&entry("0", "sshd", m)).is_none());
        }
        // Each trusted field missing in turn.
        let full = [
            ("__REALTIME_TIMESTAMP", Value::from("1764742243123456")),
            ("_UID", "0".into()),
            ("_COMM", "sshd".into()),
            ("_TRANSPORT", "syslog".into()),
            ("_PID", "4242".into()),
            ("MESSAGE", msg.clone()),
        ];
        assert!(parse_journal_line(&journal(&full)).is_some());
        for i in 0..full.len() {
            let mut f = full.to_vec();
            f.remove(i);
            assert!(parse_journal_line(&journal(&f)).is_none(), "{}", full[i].0);
        }
        // Not over syslog (sshd -e writes to stderr: _TRANSPORT=stdout).
        let mut f = full.to_vec();
        f[3].1 = "stdout".into();
        assert!(parse_journal_line(&journal(&f)).is_none());
        // Malformed trusted fields.
        for (i, v) in [(0, "-1"), (0, "12x"), (4, "+4242"), (4, "1"), (1, " 0")] {
            let mut f = full.to_vec();
            f[i].1 = v.into();
            assert!(parse_journal_line(&journal(&f)).is_none(), "{v}");
        }
        // Not JSON, not an object, too long.
        assert!(parse_journal_line(b"{").is_none());
        assert!(parse_journal_line(b"[]").is_none());
        let mut long = entry("0", "sshd", msg);
        long.truncate(long.len() - 1);
        long.extend_from_slice(
            format!(",\"PAD\":\"{}\"}}", "x".repeat(MAX_JOURNAL_LINE)).as_bytes(),
        );
        assert!(parse_journal_line(&long).is_none());
    }

    fn utc(c: Civil) -> Option<SystemTime> {
        c.valid().then(|| from_secs(c.utc_secs(), 0)).flatten()
    }

    fn at(s: &str) -> SystemTime {
        parse_rfc3339(s).unwrap()
    }

    #[test]
    fn auth_log_lines_parse_in_both_time_formats() {
        let now = at("2026-12-03T07:00:00Z");
        let msg =
            format!("Accepted publickey for alice from 192.0.2.7 port 40000 ssh2: ED25519 {FP}");
        let classic = format!("Dec  3 06:10:43 web-1 sshd[812]: {msg}");
        let l = parse_syslog_line(&classic, now, &utc).unwrap();
        assert_eq!((l.pid, l.at), (812, at("2026-12-03T06:10:43Z")));
        assert_eq!(l.source, Source::AuthLog);
        let padded = format!("Nov 23 23:59:59 web-1 sshd-session[9]: {msg}");
        assert_eq!(
            parse_syslog_line(&padded, now, &utc).unwrap().at,
            at("2026-11-23T23:59:59Z")
        );
        let rfc = format!("2026-12-03T06:10:43.123456+01:00 web-1 sshd-session[812]: {msg}");
        let l = parse_syslog_line(&rfc, now, &utc).unwrap();
        assert_eq!(l.at, at("2026-12-03T05:10:43.123456Z"));
        assert_eq!(
            parse_syslog_line(&format!("2026-12-03T06:10:43Z h sshd[2]: {msg}"), now, &utc)
                .unwrap()
                .at,
            at("2026-12-03T06:10:43Z")
        );
        for bad in [
            format!("Dec  3 06:10:43 web-1 logger[812]: {msg}"),
            format!("Dec  3 06:10:43 web-1 sshd: {msg}"),
            format!("Dec  3 06:10:43 web-1 sshd[x]: {msg}"),
            format!("Dec 32 06:10:43 web-1 sshd[2]: {msg}"),
            format!("Foo  3 06:10:43 web-1 sshd[2]: {msg}"),
            format!("Dec  3 6:10:43  web-1 sshd[2]: {msg}"),
            format!("2026-12-03T06:10:43 web-1 sshd[2]: {msg}"),
            format!("2026-02-30T06:10:43Z web-1 sshd[2]: {msg}"),
            format!("Dec  3 06:10:43 web-1 sshd[2]: {msg} extra"),
            "Dec  3 06:10:43 web-1 sshd[2]: Accepted".to_string(),
            "Dec  3".to_string(),
        ] {
            assert!(parse_syslog_line(&bad, now, &utc).is_none(), "{bad}");
        }
    }

    #[test]
    fn auth_log_lines_with_multibyte_text_anywhere_never_panic() {
        // Any user writes auth.log (`logger`): a non-ASCII character at any
        // place of a line, the time included, is at worst not a record.
        let now = at("2026-12-03T07:00:00Z");
        let msg =
            format!("Accepted publickey for alice from 192.0.2.7 port 40000 ssh2: ED25519 {FP}");
        let lines = [
            format!("Dec  3 06:10:43 web-1 sshd[812]: {msg}"),
            format!("2026-12-03T06:10:43.123456+01:00 web-1 sshd-session[812]: {msg}"),
            format!("2026-12-03T06:10:43-01:30 web-1 sshd[812]: {msg}"),
            format!("2026-12-03T06:10:43Z web-1 sshd[812]: {msg}"),
        ];
        let mut tried = 0;
        for line in &lines {
            assert!(parse_syslog_line(line, now, &utc).is_some(), "{line}");
            for at in (0..=line.len()).filter(|&i| line.is_char_boundary(i)) {
                for c in ["é", "€", "😀", "\u{85}"] {
                    // Inserted before byte `at` (n = 0), or in place of
                    // the n bytes there: with n = c's length, every other
                    // byte stays where the parser looks for it.
                    for n in (0..=4).filter(|&n| line.is_char_boundary(at + n)) {
                        let l = format!("{}{c}{}", &line[..at], &line[at + n..]);
                        let _ = parse_syslog_line(&l, now, &utc);
                        tried += 1;
                    }
                }
            }
        }
        assert!(tried > 1000, "{tried}");
        // Through the file reader: lines that are not UTF-8, or carry a
        // multibyte character in their time, are skipped; the real record
        // after them is still read.
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("var/log");
        std::fs::create_dir_all(&log).unwrap();
        let mut text = Vec::new();
        let mut bad = lines[0].clone().into_bytes();
        bad[9] = 0xff;
        text.extend_from_slice(&bad);
        text.extend_from_slice(b"\nDec  3 0\xc3\xa910:43 web-1 sshd[813]: x\n");
        text.extend_from_slice("2026-12-03T06:10:43+0é00 h sshd[814]: x\n".as_bytes());
        text.extend_from_slice(lines[1].as_bytes());
        text.push(b'\n');
        std::fs::write(log.join("auth.log"), &text).unwrap();
        let sys = System::new(t.path(), t.path().join("state"));
        let got = from_syslog_file(&sys, None, 10).unwrap().unwrap().logins;
        assert_eq!(got.iter().map(|l| l.pid).collect::<Vec<_>>(), [812]);
    }

    #[test]
    fn a_classic_line_without_a_year_is_never_in_the_future() {
        let msg = "Accepted password for a from 192.0.2.1 port 22 ssh2";
        // Read in January: December's lines are last year's.
        let now = at("2027-01-02T00:00:00Z");
        let l = parse_syslog_line(&format!("Dec 31 23:00:00 h sshd[5]: {msg}"), now, &utc);
        assert_eq!(l.unwrap().at, at("2026-12-31T23:00:00Z"));
        let l = parse_syslog_line(&format!("Jan  2 00:00:00 h sshd[5]: {msg}"), now, &utc);
        assert_eq!(l.unwrap().at, at("2027-01-02T00:00:00Z"));
        // A clock a little behind the log's (within a day) is this year.
        let l = parse_syslog_line(&format!("Jan  2 12:00:00 h sshd[5]: {msg}"), now, &utc);
        assert_eq!(l.unwrap().at, at("2027-01-02T12:00:00Z"));
        // Read on 31 December, a line of 1 January is the next year's
        // only when it is within a day (a clock behind the log's).
        let now = at("2026-12-31T23:30:00Z");
        let l = parse_syslog_line(&format!("Jan  1 00:10:00 h sshd[5]: {msg}"), now, &utc);
        assert_eq!(l.unwrap().at, at("2027-01-01T00:10:00Z"));
        // Feb 29 is taken from the latest leap year in reach.
        let now = at("2027-03-01T00:00:00Z");
        assert!(
            parse_syslog_line(&format!("Feb 29 10:00:00 h sshd[5]: {msg}"), now, &utc).is_none()
        );
        let now = at("2028-03-01T00:00:00Z");
        let l = parse_syslog_line(&format!("Feb 29 10:00:00 h sshd[5]: {msg}"), now, &utc);
        assert_eq!(l.unwrap().at, at("2028-02-29T10:00:00Z"));
    }

    #[test]
    fn civil_times_convert_both_ways() {
        assert_eq!(at("1970-01-01T00:00:00Z"), UNIX_EPOCH);
        assert_eq!(
            at("2026-11-29T00:00:00Z"),
            UNIX_EPOCH + Duration::from_secs(20786 * 86400)
        );
        for secs in [
            0i64,
            951_782_400,
            1_767_225_599,
            1_767_225_600,
            4_102_444_800,
        ] {
            let t = UNIX_EPOCH + Duration::from_secs(secs as u64);
            let y = year_of(secs);
            let start = Civil {
                year: y,
                month: 1,
                day: 1,
                hour: 0,
                min: 0,
                sec: 0,
            };
            let next = Civil {
                year: y + 1,
                ..start
            };
            assert!(utc(start).unwrap() <= t && t < utc(next).unwrap(), "{secs}");
        }
    }

    #[test]
    fn the_journal_is_asked_for_roots_sshd_over_syslog_newest_first() {
        let t = UNIX_EPOCH + Duration::from_secs(1_764_742_243);
        let cmd = journal_cmd(Path::new("/usr/bin/journalctl"), Some(t));
        assert_eq!(
            cmd.display(),
            "/usr/bin/journalctl -o json --no-pager -q -r \
             --output-fields=MESSAGE,_PID,_UID,_COMM,_TRANSPORT --since=@1764742243 \
             _UID=0 _TRANSPORT=syslog _COMM=sshd + _UID=0 _TRANSPORT=syslog _COMM=sshd-session"
        );
    }

    /// A stand-in journalctl: a shell script printing `body`.
    fn fake_journalctl(dir: &Path, body: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("journalctl");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn the_journal_reader_keeps_only_roots_sshd_records_and_stops_at_max() {
        let t = tempfile::tempdir().unwrap();
        let msg: Value =
            format!("Accepted publickey for alice from 192.0.2.7 port 40000 ssh2: ED25519 {FP}")
                .into();
        let mut lines = Vec::new();
        for e in [
            entry("0", "sshd-session", msg.clone()),
            entry("1000", "sshd", msg.clone()),
            entry("0", "bash", msg.clone()),
            entry("0", "sshd", "Received disconnect from 192.0.2.7".into()),
            b"not json".to_vec(),
            entry("0", "sshd", msg.clone()),
        ] {
            lines.push(String::from_utf8(e).unwrap());
        }
        let data = t.path().join("out.json");
        std::fs::write(&data, lines.join("\n")).unwrap();
        let prog = fake_journalctl(t.path(), &format!("cat {}", data.display()));
        let cmd = Cmd::new(&prog);
        let got = read_journal(&cmd, 10, &mut |_| false).unwrap();
        assert_eq!(got.logins.len(), 2, "{got:?}");
        assert!(got
            .logins
            .iter()
            .all(|l| l.user == "alice" && l.pid == 4242));
        assert_eq!(got.cut, None);
        let one = read_journal(&cmd, 1, &mut |_| false).unwrap();
        assert_eq!(one.logins.len(), 1);
        assert_eq!(
            one.cut.as_deref(),
            Some("only the newest 1 records were read")
        );

        // One that never ends stops once `max` records are read.
        let prog = fake_journalctl(
            t.path(),
            &format!("while :; do cat {}; echo; done", data.display()),
        );
        let started = std::time::Instant::now();
        let cmd = Cmd::new(&prog);
        assert_eq!(
            read_journal(&cmd, 50, &mut |_| false).unwrap().logins.len(),
            50
        );
        assert!(started.elapsed() < Duration::from_secs(5));

        // A failing journalctl is an error that says what it printed.
        let prog = fake_journalctl(t.path(), "echo 'Failed to open journal' >&2; exit 1");
        let e = read_journal(&Cmd::new(&prog), 10, &mut |_| false).unwrap_err();
        assert!(matches!(e, Error::Program(_)), "{e}");
        assert!(e.to_string().contains("Failed to open journal"), "{e}");
    }

    #[test]
    fn an_image_has_no_records() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("var/log")).unwrap();
        std::fs::write(
            t.path().join("var/log/auth.log"),
            "Dec  3 06:10:43 h sshd[812]: Accepted password for a from 192.0.2.1 port 22 ssh2\n",
        )
        .unwrap();
        let sys = System::new(t.path(), t.path().join("state"));
        assert_eq!(accepted(&sys, None, 10).unwrap().logins, Vec::new());
        let pids = BTreeMap::from([(812, UNIX_EPOCH)]);
        assert_eq!(for_pids(&sys, &pids).unwrap().logins, Vec::new());
    }

    #[test]
    fn an_auth_log_file_is_read_newest_first_from_its_tail() {
        // The file reader itself, on a temporary root (accepted() only
        // reads the live system's).
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("var/log");
        std::fs::create_dir_all(&log).unwrap();
        let line = |n: u32| {
            format!(
                "2026-12-03T06:{:02}:00Z h sshd[{}]: Accepted password for a from 192.0.2.1 port {} ssh2\n",
                n % 60,
                100 + n,
                n + 1
            )
        };
        let mut text = String::from("2026-12-03T05:00:00Z h logger[5]: noise\n");
        for n in 0..3 {
            text.push_str(&line(n));
        }
        std::fs::write(log.join("auth.log"), &text).unwrap();
        let sys = System::new(t.path(), t.path().join("state"));
        let got = from_syslog_file(&sys, None, 10).unwrap().unwrap().logins;
        assert_eq!(
            got.iter().map(|l| l.pid).collect::<Vec<_>>(),
            [102, 101, 100]
        );
        let got = from_syslog_file(&sys, None, 2).unwrap().unwrap().logins;
        assert_eq!(got.iter().map(|l| l.pid).collect::<Vec<_>>(), [102, 101]);
        let since = at("2026-12-03T06:01:00Z");
        let got = from_syslog_file(&sys, Some(since), 10)
            .unwrap()
            .unwrap()
            .logins;
        assert_eq!(got.iter().map(|l| l.pid).collect::<Vec<_>>(), [102, 101]);

        // A file others may write is not sshd's.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(log.join("auth.log"), std::fs::Permissions::from_mode(0o622))
            .unwrap();
        assert!(from_syslog_file(&sys, None, 10).is_err());
        // Nor is a symlink to it.
        std::fs::rename(log.join("auth.log"), log.join("real")).unwrap();
        std::os::unix::fs::symlink("real", log.join("auth.log")).unwrap();
        assert!(from_syslog_file(&sys, None, 10).is_err());
        // /var/log/secure when there is no auth.log.
        std::fs::remove_file(log.join("auth.log")).unwrap();
        std::fs::write(log.join("secure"), line(7)).unwrap();
        let got = from_syslog_file(&sys, None, 10).unwrap().unwrap().logins;
        assert_eq!(got.iter().map(|l| l.pid).collect::<Vec<_>>(), [107]);
    }

    #[test]
    fn with_no_sshd_log_the_sessions_are_not_reported_as_zero() {
        // Neither auth.log nor secure (and no journal): "no record" would
        // read as "no session"; it is an error that says why.
        let t = tempfile::tempdir().unwrap();
        let sys = System::new(t.path(), t.path().join("state"));
        assert_eq!(from_syslog_file(&sys, None, 10).unwrap(), None);
        std::fs::create_dir_all(t.path().join("var/log")).unwrap();
        assert_eq!(from_syslog_file(&sys, None, 10).unwrap(), None);
        let e = no_log().to_string();
        assert!(
            e.contains("no systemd journal") && e.contains("auth.log"),
            "{e}"
        );
        // Asked for a live session's record, that is an error, not "no
        // record" (which would leave the session out of every count).
        let pids = BTreeMap::from([(812, UNIX_EPOCH + Duration::from_secs(1_764_700_000))]);
        let e = read_for_pids(&sys, &pids).unwrap_err();
        assert!(e.to_string().contains("sshd's log cannot be read"), "{e}");
        // An empty file is a source that says nobody logged in.
        std::fs::write(t.path().join("var/log/auth.log"), "").unwrap();
        let r = from_syslog_file(&sys, None, 10).unwrap().unwrap();
        assert_eq!((r.logins.len(), r.cut), (0, None));
        // One with records: only the asked-for pid's are kept.
        std::fs::write(
            t.path().join("var/log/auth.log"),
            "2026-12-03T06:00:00Z h sshd[812]: Accepted password for a from 192.0.2.1 port 1 ssh2\n\
             2026-12-03T06:00:01Z h sshd[813]: Accepted password for b from 192.0.2.1 port 2 ssh2\n",
        )
        .unwrap();
        let r = read_for_pids(&sys, &pids).unwrap();
        assert_eq!(r.logins.iter().map(|l| l.pid).collect::<Vec<_>>(), [812]);
        assert_eq!((r.source, r.cut), (Source::AuthLog, None));
    }

    fn pid_entry(pid: i32, user: &str, port: u16, usec: u64) -> String {
        let msg =
            format!("Accepted publickey for {user} from 127.0.0.1 port {port} ssh2: ED25519 {FP}");
        String::from_utf8(journal(&[
            ("__REALTIME_TIMESTAMP", usec.to_string().into()),
            ("_UID", "0".into()),
            ("_COMM", "sshd-session".into()),
            ("_TRANSPORT", "syslog".into()),
            ("_PID", pid.to_string().into()),
            ("MESSAGE", msg.into()),
        ]))
        .unwrap()
    }

    #[test]
    fn the_journal_is_asked_for_the_live_sessions_pids_only() {
        let t = UNIX_EPOCH + Duration::from_secs(1_764_742_243);
        let cmd = journal_pids_cmd(Path::new("/usr/bin/journalctl"), t, &[812, 9000]);
        assert_eq!(
            cmd.display(),
            "/usr/bin/journalctl -o json --no-pager -q -r \
             --output-fields=MESSAGE,_PID,_UID,_COMM,_TRANSPORT --since=@1764742243 \
             _UID=0 _TRANSPORT=syslog _COMM=sshd _COMM=sshd-session _PID=812 _PID=9000"
        );
        // Many sessions: several calls of PIDS_PER_CALL pids, each a few
        // hundred arguments; every pid is asked for once.
        let dir = tempfile::tempdir().unwrap();
        let args = dir.path().join("args");
        let prog = fake_journalctl(
            dir.path(),
            &format!(
                "echo \"$#\" >> {}; for a; do echo \"$a\"; done >> {}.all",
                args.display(),
                args.display()
            ),
        );
        let pids: BTreeMap<i32, SystemTime> = (0..450).map(|i| (1000 + i, t)).collect();
        let r = journal_for_pids(&prog, &pids, &Bounds::LOG).unwrap();
        assert_eq!((r.logins.len(), r.cut), (0, None));
        let counts = std::fs::read_to_string(&args).unwrap();
        assert_eq!(counts.lines().collect::<Vec<_>>(), ["211", "211", "61"]);
        let all = std::fs::read_to_string(format!("{}.all", args.display())).unwrap();
        let asked: BTreeSet<&str> = all.lines().filter(|l| l.starts_with("_PID=")).collect();
        assert_eq!(asked.len(), 450);
    }

    #[test]
    fn a_live_sessions_record_behind_newer_ones_is_read_by_its_pid() {
        // Only the asked-for pid's records are kept, whatever else the
        // program prints; the read stops once each pid has its record.
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("out.json");
        let mut lines: Vec<String> = (0..20_000)
            .map(|i| pid_entry(5000 + i, "bob", 1, 1_764_742_243_000_000 - i as u64))
            .collect();
        lines.insert(
            10_000,
            pid_entry(812, "alice", 40000, 1_764_700_000_000_000),
        );
        std::fs::write(&data, lines.join("\n")).unwrap();
        let prog = fake_journalctl(dir.path(), &format!("cat {}", data.display()));
        let pids = BTreeMap::from([(812, UNIX_EPOCH + Duration::from_secs(1_764_699_000))]);
        let r = journal_for_pids(&prog, &pids, &Bounds::LOG).unwrap();
        assert_eq!(r.logins.iter().map(|l| l.pid).collect::<Vec<_>>(), [812]);
        assert_eq!(r.cut, None);
    }

    #[test]
    fn a_truncated_journal_output_is_reported_not_taken_as_complete() {
        let dir = tempfile::tempdir().unwrap();
        let rec = pid_entry(812, "alice", 40000, 1_764_700_000_000_000);
        let prog = fake_journalctl(
            dir.path(),
            &format!("yes '{{}}' | head -n 200001; echo '{rec}'"),
        );
        let pids = BTreeMap::from([(812, UNIX_EPOCH)]);
        let r = journal_for_pids(&prog, &pids, &Bounds::LOG).unwrap();
        assert!(r.logins.is_empty());
        assert_eq!(
            r.cut.as_deref(),
            Some("journalctl's output was cut at 200000 lines")
        );
        let small = Bounds {
            max_bytes: 1 << 20,
            max_lines: usize::MAX,
            ..Bounds::LOG
        };
        let prog = fake_journalctl(dir.path(), "yes '{}'");
        let r = journal_for_pids(&prog, &pids, &small).unwrap();
        assert_eq!(
            r.cut.as_deref(),
            Some("journalctl's output was cut at 1 MiB")
        );
        // accepted()'s reader says so too.
        let r = read_journal(&Cmd::new(&prog), 10, &mut |_| false).unwrap();
        assert!(r.cut.unwrap().contains("cut at 200000 lines"));
    }

    #[test]
    fn an_auth_log_longer_than_its_tail_is_reported_cut() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("var/log");
        std::fs::create_dir_all(&log).unwrap();
        let mut text = "x".repeat(MAX_LOG_TAIL);
        text.push_str("\n2026-12-03T06:00:00Z h sshd[812]: Accepted password for a from 192.0.2.1 port 1 ssh2\n");
        std::fs::write(log.join("auth.log"), &text).unwrap();
        let sys = System::new(t.path(), t.path().join("state"));
        let r = from_syslog_file(&sys, None, 10).unwrap().unwrap();
        assert_eq!(r.logins.len(), 1);
        assert!(r.cut.unwrap().contains("only the last 8 MiB"));
    }
}
