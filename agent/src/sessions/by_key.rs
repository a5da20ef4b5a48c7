//! The SSH sessions that authenticated with given keys, and ending them
//! (`remove_keys`/`replace_keys` with `terminate_sessions`, PROTOCOL §3
//! "Sessions").
//!
//! Which session used which key comes from sshd's own "Accepted publickey"
//! records (a [`Login`] each, read by the caller with
//! [`crate::ssh::logins::accepted`]). A record names the pid of the connection's sshd process; that
//! pid is signalled only once /proc shows it still is that very connection:
//!
//! - its executable is `sshd` or `sshd-session`, owned by root, and it runs
//!   as root (the monitor, whose pid sshd logs) or as the user;
//! - it started no later than the record was written (a pid reused since
//!   started after it);
//! - it holds an established TCP socket whose peer is the record's address
//!   and port;
//! - a descendant of it runs as the user (the session itself; for root,
//!   whom sshd does not separate, the process itself).
//!
//! Nothing the user can write (environment, files, process titles) is read.
//! The decision is [`plan`], a pure function of the records and a
//! [`Snapshot`] of /proc; [`Snapshot::read`] is the I/O behind it. The
//! session's processes (the sshd process and its descendants) are then held
//! by pidfds, checked to be the processes the snapshot saw (same start
//! time), and ended through them as [`super::end`] does.

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

/// Details read only for the processes that records name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshdInfo {
    /// The executable is `sshd` or `sshd-session` and owned by root.
    pub root_sshd: bool,
    /// When it started (boot time plus its start ticks).
    pub started: SystemTime,
    /// Peers of its established TCP sockets.
    pub peers: Vec<SocketAddr>,
}

/// The process table as far as [`plan`] needs it.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub procs: BTreeMap<i32, ProcInfo>,
    pub sshd: BTreeMap<i32, SshdInfo>,
}

/// A session to end: its sshd process first, then its descendants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub login: Login,
    pub pids: Vec<i32>,
}

/// Start times are whole seconds of boot time plus ticks, a record's time
/// may be rounded down to the second: this much slack keeps a session
/// from failing the check by rounding alone.
const CLOCK_SLACK: Duration = Duration::from_secs(1);

/// The live sessions of `user` (uid `uid`) that authenticated with one of
/// `fingerprints` (`publickey` records), each verified against `snap` as
/// the module doc says. One target per sshd process, whatever the number
/// of records naming it.
pub fn plan(
    logins: &[Login],
    fingerprints: &BTreeSet<String>,
    user: &str,
    uid: u32,
    snap: &Snapshot,
) -> Vec<Target> {
    verified(logins, Some(fingerprints), user, uid, snap)
}

/// As [`plan`], with `keys: None` for the live sessions of every method
/// (inventory's `sessions`).
pub fn verified(
    logins: &[Login],
    keys: Option<&BTreeSet<String>>,
    user: &str,
    uid: u32,
    snap: &Snapshot,
) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    for l in logins {
        if l.user != user {
            continue;
        }
        if let Some(keys) = keys {
            let by_key =
                l.method == "publickey" && l.fingerprint.as_ref().is_some_and(|f| keys.contains(f));
            if !by_key {
                continue;
            }
        }
        if out.iter().any(|t| t.login.pid == l.pid) {
            continue;
        }
        let (Some(p), Some(d)) = (snap.procs.get(&l.pid), snap.sshd.get(&l.pid)) else {
            continue;
        };
        let as_root = p.uids == [0, 0, 0];
        let as_user = p.uids == [uid, uid, uid];
        if !d.root_sshd || !(as_root || as_user) {
            continue;
        }
        if d.started > l.at + CLOCK_SLACK {
            continue;
        }
        let want = SocketAddr::new(super::canonical(l.addr), l.port);
        if !d.peers.contains(&want) {
            continue;
        }
        let descendants = descendants_of(l.pid, &snap.procs);
        // A root login has no unprivileged child: sshd skips privilege
        // separation after authenticating root, and the session is the
        // root-run sshd process itself.
        let has_user = (uid == 0 && as_root)
            || descendants
                .iter()
                .any(|c| snap.procs[c].uids.contains(&uid));
        if !has_user {
            continue;
        }
        let mut pids = vec![l.pid];
        pids.extend(descendants);
        out.push(Target {
            login: l.clone(),
            pids,
        });
    }
    out
}

/// Every descendant of `pid` in `procs`, parents before children.
fn descendants_of(pid: i32, procs: &BTreeMap<i32, ProcInfo>) -> Vec<i32> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::from([pid]);
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (&child, info) in procs {
            if info.ppid == parent && seen.insert(child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

impl Snapshot {
    /// The process table now, with sshd details for the pids `logins` name.
    pub fn read(logins: &[Login]) -> Result<Snapshot> {
        let boot = boot_time()?;
        let tick = clock_tick();
        let mut snap = Snapshot::default();
        for e in fs::read_dir("/proc").ctx(|| "listing /proc".to_string())? {
            let Some(pid) = e
                .ok()
                .and_then(|e| e.file_name().to_str()?.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some(info) = proc_info(pid) {
                snap.procs.insert(pid, info);
            }
        }
        for pid in logins.iter().map(|l| l.pid).collect::<BTreeSet<_>>() {
            let Some(info) = snap.procs.get(&pid) else {
                continue;
            };
            let started = boot + Duration::from_secs_f64(info.start_ticks as f64 / tick);
            snap.sshd.insert(
                pid,
                SshdInfo {
                    root_sshd: is_root_sshd(pid),
                    started,
                    peers: super::tcp_peers(pid),
                },
            );
        }
        Ok(snap)
    }
}

/// ppid, uids and start time of a process; None once it is gone.
fn proc_info(pid: i32) -> Option<ProcInfo> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (ppid, start_ticks) = parse_stat(&stat)?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(ProcInfo {
        ppid,
        uids: parse_uids(&status)?,
        start_ticks,
    })
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

/// The executable is a root-owned file named `sshd` or `sshd-session`
/// (" (deleted)" when the package was upgraded under a running session).
fn is_root_sshd(pid: i32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let exe = format!("/proc/{pid}/exe");
    let Ok(target) = fs::read_link(&exe) else {
        return false;
    };
    let name = target.to_string_lossy();
    let name = name.strip_suffix(" (deleted)").unwrap_or(&name);
    let base = Path::new(name).file_name().and_then(|n| n.to_str());
    matches!(base, Some("sshd" | "sshd-session")) && fs::metadata(&exe).is_ok_and(|m| m.uid() == 0)
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

/// What ending the sessions did: one entry per session ended (its sshd
/// pid), and how many matching sessions are still open.
#[derive(Debug, Default)]
pub struct Outcome {
    pub ended: Vec<Ended>,
    pub open: usize,
}

/// The live sessions of `user` that authenticated with one of
/// `fingerprints` (verified as [`plan`] does), without touching them.
pub fn count(
    logins: &[Login],
    fingerprints: &BTreeSet<String>,
    user: &str,
    uid: u32,
) -> Result<usize> {
    let snap = Snapshot::read(logins)?;
    Ok(plan(logins, fingerprints, user, uid, &snap).len())
}

/// End the live sessions of `user` that authenticated with one of
/// `fingerprints`: SIGTERM to each session's processes, SIGKILL after
/// [`super::GRACE`], all through pidfds.
pub fn end(
    logins: &[Login],
    fingerprints: &BTreeSet<String>,
    user: &str,
    uid: u32,
) -> Result<Outcome> {
    let snap = Snapshot::read(logins)?;
    let targets = plan(logins, fingerprints, user, uid, &snap);
    let mut held = Vec::new();
    let mut sessions = Vec::new();
    for t in targets {
        let Some(first) = hold(t.pids[0], &snap) else {
            // Gone (or replaced) since the snapshot: nothing to end.
            continue;
        };
        held.push(first);
        // Descendants that are gone or replaced are skipped; the others
        // are ended with the session.
        held.extend(t.pids[1..].iter().filter_map(|&p| hold(p, &snap)));
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
fn hold(pid: i32, snap: &Snapshot) -> Option<Process> {
    let pidfd = super::pidfd_open(pid)?;
    let now = proc_info(pid)?;
    let then = snap.procs.get(&pid)?;
    if now.start_ticks != then.start_ticks || now.ppid != then.ppid || !super::alive(&pidfd) {
        return None;
    }
    Some(Process {
        pid,
        from: None,
        pidfd,
    })
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

    /// A process table with two sessions of `alice` (uid 1001): sshd 100
    /// from port 40000 (child 101 as alice, grandchild 102), sshd 200 from
    /// port 40001 (child 201); and one of bob (uid 1002): sshd 300 from
    /// port 40002 (child 301).
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
        proc_(100, 1, 0);
        proc_(101, 100, UID);
        proc_(102, 101, UID);
        proc_(200, 1, 0);
        proc_(201, 200, UID);
        proc_(300, 1, 0);
        proc_(301, 300, 1002);
        for (pid, port) in [(100, 40000), (200, 40001), (300, 40002)] {
            s.sshd.insert(
                pid,
                SshdInfo {
                    root_sshd: true,
                    started: t(1000),
                    peers: vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)],
                },
            );
        }
        s
    }

    fn fps(f: &[&str]) -> BTreeSet<String> {
        f.iter().map(|s| s.to_string()).collect()
    }

    fn pids(targets: &[Target]) -> Vec<Vec<i32>> {
        targets.iter().map(|t| t.pids.clone()).collect()
    }

    #[test]
    fn only_the_sessions_of_the_removed_key_are_planned() {
        let logins = [
            login(100, "alice", 40000, FP_A, 1001),
            login(200, "alice", 40001, FP_B, 1002),
        ];
        let got = plan(&logins, &fps(&[FP_A]), "alice", UID, &table());
        assert_eq!(pids(&got), [vec![100, 101, 102]]);
        assert_eq!(got[0].login.fingerprint.as_deref(), Some(FP_A));
    }

    #[test]
    fn only_publickey_records_name_a_key() {
        // A hostbased record logs the host's key fingerprint: it is not the
        // user's key, even when the fingerprints are equal.
        let mut l = login(100, "alice", 40000, FP_A, 1001);
        l.method = "hostbased".into();
        assert!(plan(&[l.clone()], &fps(&[FP_A]), "alice", UID, &table()).is_empty());
        // Every method counts when no key is asked for.
        let mut p = login(200, "alice", 40001, FP_B, 1002);
        (p.method, p.key_type, p.fingerprint) = ("password".into(), None, None);
        let got = verified(&[l, p], None, "alice", UID, &table());
        assert_eq!(pids(&got), [vec![100, 101, 102], vec![200, 201]]);
        // The /proc checks hold without a key filter too: bob's connection
        // named as alice's is not hers.
        let forged = login(300, "alice", 40002, FP_A, 1001);
        assert!(verified(&[forged], None, "alice", UID, &table()).is_empty());
    }

    #[test]
    fn a_forged_record_cannot_end_another_users_session() {
        // Records naming bob's sshd process as alice's, or alice's key
        // with bob's connection: neither matches what /proc shows.
        let logins = [
            login(300, "alice", 40002, FP_A, 1001),
            login(300, "bob", 40002, FP_A, 1001),
        ];
        assert!(plan(&logins, &fps(&[FP_A]), "alice", UID, &table()).is_empty());
        // bob's session has no process running as alice's uid.
        assert!(plan(&logins[..1], &fps(&[FP_A]), "alice", UID, &table()).is_empty());
    }

    #[test]
    fn a_record_whose_port_is_not_the_connections_is_not_matched() {
        let logins = [login(200, "alice", 40000, FP_A, 1001)];
        assert!(plan(&logins, &fps(&[FP_A]), "alice", UID, &table()).is_empty());
    }

    #[test]
    fn a_pid_reused_after_the_record_is_not_matched() {
        let mut snap = table();
        // The process with pid 100 started after the record was written:
        // the record was about an earlier process of that pid.
        snap.sshd.get_mut(&100).unwrap().started = t(5000);
        let logins = [login(100, "alice", 40000, FP_A, 1001)];
        assert!(plan(&logins, &fps(&[FP_A]), "alice", UID, &snap).is_empty());
    }

    #[test]
    fn a_process_that_is_not_roots_sshd_is_not_matched() {
        let mut snap = table();
        snap.sshd.get_mut(&100).unwrap().root_sshd = false;
        let logins = [login(100, "alice", 40000, FP_A, 1001)];
        assert!(plan(&logins, &fps(&[FP_A]), "alice", UID, &snap).is_empty());
        // Nor an sshd running as a third uid.
        let mut snap = table();
        snap.procs.get_mut(&100).unwrap().uids = [7, 7, 7];
        assert!(plan(&logins, &fps(&[FP_A]), "alice", UID, &snap).is_empty());
    }

    #[test]
    fn a_session_without_a_process_of_the_user_is_not_matched() {
        let mut snap = table();
        snap.procs.remove(&101);
        snap.procs.remove(&102);
        let logins = [login(100, "alice", 40000, FP_A, 1001)];
        assert!(plan(&logins, &fps(&[FP_A]), "alice", UID, &snap).is_empty());
    }

    #[test]
    fn a_root_session_is_its_own_sshd_process() {
        let mut snap = table();
        snap.procs.remove(&101);
        snap.procs.remove(&102);
        let logins = [login(100, "root", 40000, FP_A, 1001)];
        assert_eq!(
            pids(&plan(&logins, &fps(&[FP_A]), "root", 0, &snap)),
            [vec![100]]
        );
    }

    #[test]
    fn a_pid_named_twice_is_one_session() {
        let logins = [
            login(100, "alice", 40000, FP_A, 1001),
            login(100, "alice", 40000, FP_A, 1001),
        ];
        assert_eq!(
            plan(&logins, &fps(&[FP_A]), "alice", UID, &table()).len(),
            1
        );
    }

    #[test]
    fn an_ipv4_mapped_record_address_matches_the_ipv4_peer() {
        let mut l = login(100, "alice", 40000, FP_A, 1001);
        l.addr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(plan(&[l], &fps(&[FP_A]), "alice", UID, &table()).len(), 1);
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
        let info = proc_info(me).unwrap();
        // SAFETY: getppid and getuid take nothing and cannot fail.
        let (ppid, uid) = unsafe { (libc::getppid(), libc::getuid()) };
        assert_eq!(info.ppid, ppid);
        assert_eq!(info.uids[0], uid);
        // The test binary is not sshd, whoever owns it.
        assert!(!is_root_sshd(me));
        let snap = Snapshot::read(&[login(me, "x", 1, FP_A, 0)]).unwrap();
        let started = snap.sshd[&me].started;
        assert!(started <= SystemTime::now() + CLOCK_SLACK);
        assert!(started > SystemTime::now() - Duration::from_secs(24 * 3600));
    }
}
