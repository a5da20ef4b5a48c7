//! The live SSH sessions of a user, which key each authenticated with, and
//! ending those of given keys (`remove_keys`/`replace_keys` with
//! `terminate_sessions`, inventory's `sessions`, PROTOCOL §3 "Sessions").
//!
//! Sessions are found in /proc first, so none is missed whatever the log
//! holds ([`candidates`]): a session is the connection's privileged sshd
//! process (the monitor, whose pid sshd logs), that is a process
//!
//! - whose executable is `sshd` or `sshd-session`, owned by root, running
//!   as root, on this system (its root and `/etc` are ours: a container's
//!   sshd is not this machine's);
//! - holding an established TCP socket (the listener holds none);
//! - whose user is the uid of its unprivileged sshd child (the privilege
//!   separated session process sshd forks after authentication, an sshd
//!   executable running as the user). A monitor without such a child is
//!   root's: sshd skips privilege separation after authenticating root,
//!   and the session is the root-run process itself. A connection still
//!   authenticating has a child running as sshd's own system account (the
//!   `[net]`/`sshd-auth` process), which no command names.
//!
//! Which key a session used is then looked up by its pid
//! ([`attribute`]): sshd's "Accepted" record of that pid
//! ([`crate::ssh::logins::for_pids`]), taken only when
//!
//! - it names the user;
//! - it was written no earlier than the process started (a record of an
//!   earlier process with that pid is older than this one);
//! - its address and port are the peer of the process's TCP socket;
//!
//! and when the records of that pid that pass agree on the method and key
//! (a forged auth.log line that contradicts the real one leaves the
//! session unattributed, not attributed to the forger's choice). A
//! session with no such record is *unattributed*: live, the user's, of an
//! unknown key. Callers report those (`sessions_error`), they never read
//! as "no session".
//!
//! Nothing the user can write (environment, files, process titles) is
//! read. The decisions are pure functions of the records and a
//! [`Snapshot`] of /proc; [`Snapshot::read`] is the I/O behind them. A
//! session's processes (the sshd process and its descendants) are then
//! held by pidfds, checked to be the processes the snapshot saw (same
//! start time), and ended through them as [`super::end`] does.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{Ended, Process};
use crate::error::{Error, IoContext, Result};
use crate::ssh::logins::Login;

/// What /proc says about one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub ppid: i32,
    /// Real, effective and saved uid.
    pub uids: [u32; 3],
    /// Start time in clock ticks since boot (/proc/PID/stat field 22):
    /// with the pid, it names one process.
    pub start_ticks: u64,
}

/// Details read only for the processes named `sshd`, `sshd-session` or
/// `sshd-auth` (the name is only a filter; the executable decides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshdInfo {
    /// The executable is `sshd`, `sshd-session` or `sshd-auth` and owned
    /// by root.
    pub root_sshd: bool,
    /// Its root and `/etc` are the system's (not a container's).
    pub here: bool,
    /// When it started (boot time plus its start ticks).
    pub started: SystemTime,
    /// Peers of its established TCP sockets (read for root's only).
    pub peers: Vec<SocketAddr>,
}

/// The process table as the decisions here need it.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub procs: BTreeMap<i32, ProcInfo>,
    pub sshd: BTreeMap<i32, SshdInfo>,
}

/// A live session found in /proc: its monitor's pid and whose it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub pid: i32,
    pub uid: u32,
    pub started: SystemTime,
}

/// A session to end: its sshd process first, then its descendants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub login: Login,
    pub pids: Vec<i32>,
}

/// One user's live sessions: those whose record was found, and the pids
/// of those whose record was not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserSessions {
    pub attributed: Vec<Target>,
    pub unattributed: Vec<i32>,
}

/// Start times are whole seconds of boot time plus ticks, a record's time
/// may be rounded down to the second: this much slack keeps a session
/// from failing the check by rounding alone.
const CLOCK_SLACK: Duration = Duration::from_secs(1);

/// Every live SSH session in `snap`, in pid order, as the module doc says.
pub fn candidates(snap: &Snapshot) -> Vec<Candidate> {
    candidates_in(snap, &children(&snap.procs))
}

/// As [`candidates`], with the table's [`children`] index.
fn candidates_in(snap: &Snapshot, kids: &Children) -> Vec<Candidate> {
    let mut out = Vec::new();
    for (&pid, d) in &snap.sshd {
        let Some(p) = snap.procs.get(&pid) else {
            continue;
        };
        if !d.root_sshd || !d.here || p.uids != [0, 0, 0] || d.peers.is_empty() {
            continue;
        }
        let child_uid = kids.get(&pid).into_iter().flatten().find_map(|c| {
            let info = &snap.procs[c];
            let sshd_child = snap.sshd.get(c).is_some_and(|s| s.root_sshd);
            let u = info.uids[0];
            (sshd_child && u != 0 && info.uids == [u; 3]).then_some(u)
        });
        out.push(Candidate {
            pid,
            uid: child_uid.unwrap_or(0),
            started: d.started,
        });
    }
    out
}

/// The live sessions of uid `uid`.
pub fn candidates_of(snap: &Snapshot, uid: u32) -> Vec<Candidate> {
    candidates(snap)
        .into_iter()
        .filter(|c| c.uid == uid)
        .collect()
}

/// `user`'s (uid `uid`) live sessions, each matched to its record among
/// `records` as the module doc says.
pub fn attribute(records: &[Login], user: &str, uid: u32, snap: &Snapshot) -> UserSessions {
    let mut out = UserSessions::default();
    let kids = children(&snap.procs);
    let live = candidates_in(snap, &kids)
        .into_iter()
        .filter(|c| c.uid == uid);
    for c in live {
        let d = &snap.sshd[&c.pid];
        let mut found: Vec<&Login> = records
            .iter()
            .filter(|l| l.pid == c.pid && l.user == user && d.started <= l.at + CLOCK_SLACK)
            .filter(|l| {
                d.peers
                    .contains(&SocketAddr::new(super::canonical(l.addr), l.port))
            })
            .collect();
        found.sort_by_key(|l| std::cmp::Reverse(l.at));
        let agree = found
            .windows(2)
            .all(|w| (&w[0].method, &w[0].fingerprint) == (&w[1].method, &w[1].fingerprint));
        match found.first() {
            Some(l) if agree => {
                let mut pids = vec![c.pid];
                pids.extend(descendants_of(c.pid, &kids));
                out.attributed.push(Target {
                    login: (*l).clone(),
                    pids,
                });
            }
            _ => out.unattributed.push(c.pid),
        }
    }
    out
}

/// The attributed sessions of `sessions` that authenticated with one of
/// `fingerprints` (`publickey` records only: a hostbased record names the
/// host's key).
pub fn of_keys(sessions: &UserSessions, fingerprints: &BTreeSet<String>) -> Vec<Target> {
    sessions
        .attributed
        .iter()
        .filter(|t| {
            t.login.method == "publickey"
                && t.login
                    .fingerprint
                    .as_ref()
                    .is_some_and(|f| fingerprints.contains(f))
        })
        .cloned()
        .collect()
}

/// Each process's children, by parent pid, in pid order.
type Children = BTreeMap<i32, Vec<i32>>;

/// The [`Children`] index of a process table, built once per decision so
/// that finding a monitor's children or a session's descendants does not
/// scan the whole table each time (a host with tens of thousands of
/// processes would otherwise cost their square).
fn children(procs: &BTreeMap<i32, ProcInfo>) -> Children {
    let mut kids = Children::new();
    for (&pid, info) in procs {
        kids.entry(info.ppid).or_default().push(pid);
    }
    kids
}

/// Every descendant of `pid` in the table `kids` indexes, parents before
/// children.
fn descendants_of(pid: i32, kids: &Children) -> Vec<i32> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::from([pid]);
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &child in kids.get(&parent).into_iter().flatten() {
            if seen.insert(child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

impl Snapshot {
    /// The process table now, with sshd details for every process named
    /// like one of sshd's.
    pub fn read() -> Result<Snapshot> {
        let boot = boot_time()?;
        let tick = clock_tick();
        let here = super::Here::of(Path::new("/"))?;
        let mut snap = Snapshot::default();
        let mut tables = super::TcpTables::default();
        for e in fs::read_dir("/proc").ctx(|| "listing /proc".to_string())? {
            let Some(pid) = e
                .ok()
                .and_then(|e| e.file_name().to_str()?.parse::<i32>().ok())
            else {
                continue;
            };
            let Some((info, name)) = proc_info(pid) else {
                continue;
            };
            if matches!(name.as_str(), "sshd" | "sshd-session" | "sshd-auth") {
                let started = boot + Duration::from_secs_f64(info.start_ticks as f64 / tick);
                let root = info.uids == [0, 0, 0];
                snap.sshd.insert(
                    pid,
                    SshdInfo {
                        root_sshd: is_root_sshd(pid),
                        here: root && super::on_this_system(pid, &here),
                        started,
                        peers: if root {
                            super::tcp_peers_cached(pid, &mut tables)
                        } else {
                            Vec::new()
                        },
                    },
                );
            }
            snap.procs.insert(pid, info);
        }
        Ok(snap)
    }
}

/// ppid, uids and start time of a process, and its name (`Name:` of
/// status, the kernel's `comm`); None once it is gone.
pub(super) fn proc_info(pid: i32) -> Option<(ProcInfo, String)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (ppid, start_ticks) = parse_stat(&stat)?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let name = status
        .lines()
        .find_map(|l| l.strip_prefix("Name:"))
        .unwrap_or("")
        .trim()
        .to_owned();
    Some((
        ProcInfo {
            ppid,
            uids: parse_uids(&status)?,
            start_ticks,
        },
        name,
    ))
}

/// ppid (field 4) and starttime (field 22) of /proc/PID/stat. The command
/// name (field 2) is the process's own choice and may hold spaces and
/// parentheses: fields are counted after its last `)`.
fn parse_stat(stat: &str) -> Option<(i32, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state).
    Some((f.get(1)?.parse().ok()?, f.get(19)?.parse().ok()?))
}

fn parse_uids(status: &str) -> Option<[u32; 3]> {
    let ids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let v: Vec<u32> = ids
        .split_whitespace()
        .take(3)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

/// The executable is a root-owned file named `sshd`, `sshd-session` or
/// `sshd-auth`
/// (" (deleted)" when the package was upgraded under a running session).
pub(super) fn is_root_sshd(pid: i32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let exe = format!("/proc/{pid}/exe");
    let Ok(target) = fs::read_link(&exe) else {
        return false;
    };
    let name = target.to_string_lossy();
    let name = name.strip_suffix(" (deleted)").unwrap_or(&name);
    let base = Path::new(name).file_name().and_then(|n| n.to_str());
    matches!(base, Some("sshd" | "sshd-session" | "sshd-auth"))
        && fs::metadata(&exe).is_ok_and(|m| m.uid() == 0)
}

/// When the system booted (/proc/stat `btime`): no live session is older.
pub fn boot_time() -> Result<SystemTime> {
    let text = fs::read_to_string("/proc/stat").ctx(|| "reading /proc/stat".to_string())?;
    let secs = text
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| Error::Internal("/proc/stat has no btime line".into()))?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

fn clock_tick() -> f64 {
    // SAFETY: sysconf reads a constant of the system; no memory is passed.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// What ending (or counting) the sessions of some keys did: one entry per
/// session ended (its sshd pid), how many matching sessions are still
/// open, and how many live sessions of the user could not be matched to
/// a key at all (neither ended nor in `open`), with why.
#[derive(Debug, Default)]
pub struct Outcome {
    pub ended: Vec<Ended>,
    pub open: usize,
    pub unmatched: usize,
    /// Set when `unmatched` > 0: where the records were looked for, and
    /// what bounded that.
    pub unmatched_why: Option<String>,
}

impl Outcome {
    /// The result's `sessions_error` text, when some sessions of `user`
    /// could not be matched to a key.
    pub fn unmatched_error(&self, user: &str) -> Option<String> {
        (self.unmatched > 0).then(|| {
            format!(
                "{} live session(s) of {user} could not be matched to a key: {}",
                self.unmatched,
                self.unmatched_why
                    .as_deref()
                    .unwrap_or("their login records were not found")
            )
        })
    }
}

/// What `user`'s sessions `sessions` mean for the keys `fingerprints`,
/// touching none: `open` is how many of the attributed ones used one of
/// them, `unmatched` how many could not be attributed.
pub fn count(sessions: &UserSessions, fingerprints: &BTreeSet<String>) -> Outcome {
    Outcome {
        open: of_keys(sessions, fingerprints).len(),
        unmatched: sessions.unattributed.len(),
        ..Outcome::default()
    }
}

/// End the sessions of `sessions` (found in `snap`) that used one of
/// `fingerprints`; the unattributed ones are left alone and counted.
pub fn end_keys(
    sessions: &UserSessions,
    fingerprints: &BTreeSet<String>,
    user: &str,
    snap: &Snapshot,
) -> Result<Outcome> {
    let mut o = end(of_keys(sessions, fingerprints), user, snap)?;
    o.unmatched = sessions.unattributed.len();
    Ok(o)
}

/// End `targets` (planned from `snap`): SIGTERM to each session's
/// processes, SIGKILL after [`super::GRACE`], all through pidfds.
pub fn end(targets: Vec<Target>, user: &str, snap: &Snapshot) -> Result<Outcome> {
    end_with(targets, user, snap, &super::pidfd_open)
}

/// As [`end`], opening pidfds with `open`. Every process is held before
/// any is signalled: when one cannot be held (not because it is gone),
/// nothing has been ended and the error is the answer.
fn end_with(
    targets: Vec<Target>,
    user: &str,
    snap: &Snapshot,
    open: &super::OpenPidfd,
) -> Result<Outcome> {
    let mut held = Vec::new();
    let mut sessions = Vec::new();
    for t in targets {
        let Some(first) = hold(t.pids[0], snap, open)? else {
            // Gone (or replaced) since the snapshot: nothing to end.
            continue;
        };
        held.push(first);
        // Descendants that are gone or replaced are skipped; the others
        // are ended with the session.
        for &p in &t.pids[1..] {
            held.extend(hold(p, snap, open)?);
        }
        sessions.push(t.login);
    }
    let (_gone, left) = super::end(held, user);
    let still: BTreeSet<i32> = left.iter().map(|p| p.pid).collect();
    let mut out = Outcome::default();
    for l in sessions {
        if still.contains(&l.pid) {
            out.open += 1;
        } else {
            out.ended.push(Ended {
                pid: l.pid,
                user: user.to_owned(),
                fingerprint: l.fingerprint,
                from: Some(super::canonical(l.addr).to_string()),
            });
        }
    }
    Ok(out)
}

/// A pidfd for `pid`, when the process it names is the one the snapshot
/// saw: opened first, then its start time and parent read again, so a pid
/// reused in between is never held.
fn hold(pid: i32, snap: &Snapshot, open: &super::OpenPidfd) -> Result<Option<Process>> {
    let Some(pidfd) = super::held(pid, open)? else {
        return Ok(None);
    };
    let Some((now, _)) = proc_info(pid) else {
        return Ok(None);
    };
    let Some(then) = snap.procs.get(&pid) else {
        return Ok(None);
    };
    if now.start_ticks != then.start_ticks || now.ppid != then.ppid || !super::alive(&pidfd) {
        return Ok(None);
    }
    Ok(Some(Process {
        pid,
        from: None,
        pidfd,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    const UID: u32 = 1001;
    const FP_A: &str = "SHA256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const FP_B: &str = "SHA256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn login(pid: i32, user: &str, port: u16, fp: &str, at: u64) -> Login {
        Login {
            pid,
            user: user.into(),
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
            method: "publickey".into(),
            key_type: Some("ED25519".into()),
            fingerprint: Some(fp.into()),
            at: t(at),
            source: crate::ssh::logins::Source::Journal,
        }
    }

    fn sshd_info(port: Option<u16>) -> SshdInfo {
        SshdInfo {
            root_sshd: true,
            here: true,
            started: t(1000),
            peers: port
                .map(|p| SocketAddr::new(Ipv4Addr::LOCALHOST.into(), p))
                .into_iter()
                .collect(),
        }
    }

    /// A process table with two sessions of `alice` (uid 1001): sshd 100
    /// from port 40000 (its sshd child 101 as alice, grandchild 102),
    /// sshd 200 from port 40001 (sshd child 201); one of bob (uid 1002):
    /// sshd 300 from port 40002 (sshd child 301); and sshd's listener 10.
    fn table() -> Snapshot {
        let mut s = Snapshot::default();
        let mut proc_ = |pid, ppid, uid| {
            s.procs.insert(
                pid,
                ProcInfo {
                    ppid,
                    uids: [uid; 3],
                    start_ticks: pid as u64,
                },
            );
        };
        proc_(1, 0, 0);
        proc_(10, 1, 0);
        proc_(100, 10, 0);
        proc_(101, 100, UID);
        proc_(102, 101, UID);
        proc_(200, 10, 0);
        proc_(201, 200, UID);
        proc_(300, 10, 0);
        proc_(301, 300, 1002);
        s.sshd.insert(10, sshd_info(None));
        for (pid, port) in [(100, 40000), (200, 40001), (300, 40002)] {
            s.sshd.insert(pid, sshd_info(Some(port)));
        }
        for pid in [101, 201, 301] {
            s.sshd.insert(pid, sshd_info(None));
        }
        s
    }

    fn fps(f: &[&str]) -> BTreeSet<String> {
        f.iter().map(|s| s.to_string()).collect()
    }

    fn plan(
        logins: &[Login],
        keys: &[&str],
        user: &str,
        uid: u32,
        snap: &Snapshot,
    ) -> Vec<Vec<i32>> {
        of_keys(&attribute(logins, user, uid, snap), &fps(keys))
            .iter()
            .map(|t| t.pids.clone())
            .collect()
    }

    #[test]
    fn sessions_are_found_in_proc_and_grouped_by_their_sshd_childs_uid() {
        let got: Vec<(i32, u32)> = candidates(&table())
            .iter()
            .map(|c| (c.pid, c.uid))
            .collect();
        // Not the listener (no connection), not the unprivileged children.
        assert_eq!(got, [(100, UID), (200, UID), (300, 1002)]);
        // A child running as the user that is not sshd's (a program the
        // session ran) does not make a root session the user's.
        let mut s = table();
        s.sshd.remove(&301);
        assert_eq!(
            candidates_of(&s, 0)
                .iter()
                .map(|c| c.pid)
                .collect::<Vec<_>>(),
            [300]
        );
        // A container's sshd (another root or /etc) is not this system's.
        let mut s = table();
        s.sshd.get_mut(&100).unwrap().here = false;
        assert_eq!(candidates_of(&s, UID).len(), 1);
    }

    #[test]
    fn only_the_sessions_of_the_removed_key_are_planned() {
        let logins = [
            login(100, "alice", 40000, FP_A, 1001),
            login(200, "alice", 40001, FP_B, 1002),
        ];
        assert_eq!(
            plan(&logins, &[FP_A], "alice", UID, &table()),
            [vec![100, 101, 102]]
        );
        let s = attribute(&logins, "alice", UID, &table());
        assert_eq!((s.attributed.len(), s.unattributed.len()), (2, 0));
    }

    #[test]
    fn a_live_session_older_than_the_newest_records_is_still_found() {
        // Its record is older than 10,000 others (the old reader took the
        // newest 10,000 of the log and never saw it): looked up by pid, it
        // is found among the records of that pid alone.
        let mut logins: Vec<Login> = (0..10_000)
            .map(|i| login(5000 + i, "bob", 1, FP_B, 90_000 - i as u64))
            .collect();
        logins.push(login(100, "alice", 40000, FP_A, 1001));
        assert_eq!(
            plan(&logins, &[FP_A], "alice", UID, &table()),
            [vec![100, 101, 102]]
        );
    }

    #[test]
    fn a_session_whose_record_rotated_away_is_reported_unmatched_not_closed() {
        // 200's record is gone: it is alice's live session of an unknown
        // key, never "no session".
        let logins = [login(100, "alice", 40000, FP_A, 1001)];
        let s = attribute(&logins, "alice", UID, &table());
        assert_eq!(s.unattributed, [200]);
        let o = count(&s, &fps(&[FP_B]));
        assert_eq!((o.open, o.unmatched), (0, 1));
        let e = Outcome {
            unmatched_why: Some("not in the journal".into()),
            ..o
        }
        .unmatched_error("alice")
        .unwrap();
        assert_eq!(
            e,
            "1 live session(s) of alice could not be matched to a key: not in the journal"
        );
        // Ending the key's sessions leaves it alone and still counts it.
        let o = end_keys(&s, &fps(&[FP_B]), "alice", &table()).unwrap();
        assert_eq!((o.ended.len(), o.open, o.unmatched), (0, 0, 1));
    }

    #[test]
    fn only_publickey_records_name_a_key() {
        // A hostbased record logs the host's key fingerprint: it is not the
        // user's key, even when the fingerprints are equal.
        let mut l = login(100, "alice", 40000, FP_A, 1001);
        l.method = "hostbased".into();
        assert!(plan(&[l.clone()], &[FP_A], "alice", UID, &table()).is_empty());
        let mut p = login(200, "alice", 40001, FP_B, 1002);
        (p.method, p.key_type, p.fingerprint) = ("password".into(), None, None);
        let s = attribute(&[l, p], "alice", UID, &table());
        assert_eq!(s.attributed.len(), 2);
    }

    #[test]
    fn a_forged_record_cannot_end_another_users_session() {
        // Records naming bob's sshd process as alice's, or alice's key
        // with bob's connection: neither matches what /proc shows.
        let logins = [
            login(300, "alice", 40002, FP_A, 1001),
            login(100, "alice", 40002, FP_A, 1001),
        ];
        assert!(plan(&logins, &[FP_A], "alice", UID, &table()).is_empty());
        // bob's session read for alice is not hers at all.
        assert!(attribute(&logins, "alice", UID, &table())
            .unattributed
            .iter()
            .all(|p| *p != 300));
        // Named as bob's own with alice's key: bob's session, of that key;
        // alice's sessions are untouched.
        let s = attribute(
            &[login(300, "bob", 40002, FP_A, 1001)],
            "bob",
            1002,
            &table(),
        );
        assert_eq!(of_keys(&s, &fps(&[FP_A]))[0].pids, [300, 301]);
    }

    #[test]
    fn records_of_one_session_that_disagree_attribute_it_to_no_key() {
        // A forged auth.log line for the same pid and port with another
        // key: which one is true is unknown.
        let logins = [
            login(100, "alice", 40000, FP_A, 1001),
            login(100, "alice", 40000, FP_B, 1001),
        ];
        let s = attribute(&logins, "alice", UID, &table());
        assert_eq!(s.unattributed, [100, 200]);
        // The same record twice is one session.
        let logins = [
            login(100, "alice", 40000, FP_A, 1001),
            login(100, "alice", 40000, FP_A, 1001),
        ];
        assert_eq!(plan(&logins, &[FP_A], "alice", UID, &table()).len(), 1);
    }

    #[test]
    fn a_record_whose_port_is_not_the_connections_is_not_matched() {
        let logins = [login(200, "alice", 40000, FP_A, 1001)];
        assert!(plan(&logins, &[FP_A], "alice", UID, &table()).is_empty());
    }

    #[test]
    fn a_pid_reused_after_the_record_is_not_matched() {
        let mut snap = table();
        // The process with pid 100 started after the record was written:
        // the record was about an earlier process of that pid.
        snap.sshd.get_mut(&100).unwrap().started = t(5000);
        let logins = [login(100, "alice", 40000, FP_A, 1001)];
        assert!(plan(&logins, &[FP_A], "alice", UID, &snap).is_empty());
        assert_eq!(
            attribute(&logins, "alice", UID, &snap).unattributed,
            [100, 200]
        );
    }

    #[test]
    fn a_process_that_is_not_roots_sshd_is_not_a_session() {
        let mut snap = table();
        snap.sshd.get_mut(&100).unwrap().root_sshd = false;
        let logins = [login(100, "alice", 40000, FP_A, 1001)];
        assert!(plan(&logins, &[FP_A], "alice", UID, &snap).is_empty());
        // Nor an sshd running as a third uid.
        let mut snap = table();
        snap.procs.get_mut(&100).unwrap().uids = [7, 7, 7];
        assert!(plan(&logins, &[FP_A], "alice", UID, &snap).is_empty());
        assert_eq!(candidates_of(&snap, UID).len(), 1);
    }

    #[test]
    fn a_root_session_is_its_own_sshd_process() {
        let mut snap = table();
        snap.procs.remove(&101);
        snap.procs.remove(&102);
        let logins = [login(100, "root", 40000, FP_A, 1001)];
        assert_eq!(plan(&logins, &[FP_A], "root", 0, &snap), [vec![100]]);
        // alice's sessions are not root's.
        assert_eq!(
            attribute(&logins, "root", 0, &snap).unattributed,
            Vec::<i32>::new()
        );
    }

    #[test]
    fn an_ipv4_mapped_record_address_matches_the_ipv4_peer() {
        let mut l = login(100, "alice", 40000, FP_A, 1001);
        l.addr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(plan(&[l], &[FP_A], "alice", UID, &table()).len(), 1);
    }

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let stat = "4242 (a) b) (c) S 17 4242 4242 0 -1 4194560 100 0 0 0 \
                    1 2 0 0 20 0 1 0 987654 1000 100";
        assert_eq!(parse_stat(stat), Some((17, 987654)));
        assert_eq!(parse_stat("12 (x) S"), None);
    }

    #[test]
    fn uids_are_read_from_status() {
        assert_eq!(
            parse_uids("Name:\tx\nUid:\t1001\t0\t0\t0\nGid:\t1\n"),
            Some([1001, 0, 0])
        );
        assert_eq!(parse_uids("Name:\tx\n"), None);
    }

    #[test]
    fn our_own_process_reads_as_it_is() {
        let me = std::process::id() as i32;
        let (info, _) = proc_info(me).unwrap();
        // SAFETY: getppid and getuid take nothing and cannot fail.
        let (ppid, uid) = unsafe { (libc::getppid(), libc::getuid()) };
        assert_eq!(info.ppid, ppid);
        assert_eq!(info.uids[0], uid);
        // The test binary is not sshd, whoever owns it.
        assert!(!is_root_sshd(me));
        let snap = Snapshot::read().unwrap();
        assert_eq!(snap.procs[&me], info);
        assert!(!snap.sshd.contains_key(&me));
    }

    fn failing_open(errno: i32) -> impl Fn(i32) -> std::io::Result<std::os::fd::OwnedFd> {
        move |_| Err(std::io::Error::from_raw_os_error(errno))
    }

    #[test]
    fn a_session_that_cannot_be_held_is_an_error_never_ended() {
        // A kernel without pidfd_open (ENOSYS, before 5.3), a full
        // descriptor table (EMFILE), a seccomp filter (EPERM): the session
        // is live, it must not read as ended nor as gone.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let (info, _) = proc_info(pid).unwrap();
        let snap = Snapshot {
            procs: BTreeMap::from([(pid, info)]),
            sshd: BTreeMap::new(),
        };
        let target = || Target {
            login: login(pid, "alice", 40000, FP_A, 1001),
            pids: vec![pid],
        };
        for errno in [libc::ENOSYS, libc::EMFILE, libc::EPERM] {
            let e = end_with(vec![target()], "alice", &snap, &failing_open(errno)).unwrap_err();
            assert!(e.to_string().contains("pidfd"), "{e}");
            assert!(child.try_wait().unwrap().is_none(), "signalled on {errno}");
        }
        // ESRCH is the one answer that means the process is gone.
        let o = end_with(vec![target()], "alice", &snap, &failing_open(libc::ESRCH)).unwrap();
        assert_eq!((o.ended.len(), o.open), (0, 0));
        // Held for real, it is ended.
        let o = end(vec![target()], "alice", &snap).unwrap();
        assert_eq!(o.ended.iter().map(|e| e.pid).collect::<Vec<_>>(), [pid]);
        child.wait().unwrap();
    }

    #[test]
    fn a_large_process_table_is_planned_in_linear_time() {
        // 2,000 sessions of other users on a table of 40,000 processes,
        // and one session of alice with 20,000 processes under it: each
        // monitor's children and each session's descendants are looked up
        // in one index, not found by scanning the table each time.
        let mut s = table();
        for i in 0..2_000 {
            let pid = 1_000_000 + 2 * i;
            let info = |ppid, uid| ProcInfo {
                ppid,
                uids: [uid; 3],
                start_ticks: 1,
            };
            s.procs.insert(pid, info(10, 0));
            s.procs.insert(pid + 1, info(pid, 5000 + i as u32));
            s.sshd.insert(pid, sshd_info(Some(20_000 + i as u16)));
            s.sshd.insert(pid + 1, sshd_info(None));
        }
        for i in 0..20_000 {
            // A chain and a fan under 102: parent 102 or the previous one.
            let pid = 2_000_000 + i;
            let ppid = if i % 2 == 0 { 102 } else { pid - 1 };
            s.procs.insert(
                pid,
                ProcInfo {
                    ppid,
                    uids: [UID; 3],
                    start_ticks: 1,
                },
            );
        }
        let started = std::time::Instant::now();
        let found = candidates(&s);
        let a = attribute(&[login(100, "alice", 40000, FP_A, 1001)], "alice", UID, &s);
        let took = started.elapsed();
        assert_eq!(found.len(), 2_003);
        assert_eq!(a.attributed.len(), 1);
        // 100 itself, 101, 102 and the 20,000 under them.
        assert_eq!(a.attributed[0].pids.len(), 20_003);
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }
}
