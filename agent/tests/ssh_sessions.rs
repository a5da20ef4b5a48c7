//! Ending the SSH sessions of one key (`sessions::by_key`, and through it
//! `remove_keys` with `terminate_sessions`) against a real sshd on
//! 127.0.0.1 and real `ssh -N` sessions.
//!
//! sshd runs in a private mount namespace (a tmpfs on /run for its
//! privilege separation directory) with its own host key and an
//! authorized_keys file in a temporary directory, and logs to a file
//! (`-E`). Those log lines carry no pid, so the test pairs every
//! "Accepted publickey" record with every session process of the listener:
//! the pairings that are wrong stand for forged records, and must not end
//! anything. The login is root's (this machine's /etc is not touched to
//! make a user), which sshd does not privilege-separate.

mod protocol_support;

use std::collections::BTreeSet;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use accessd::engine::Status;
use accessd::error::Result;
use accessd::sessions::by_key::{self, Outcome, Snapshot};
use accessd::sessions::revoked::KeySessions;
use accessd::ssh::logins::{self, Login, Source};
use accessd::sys::System;
use protocol_support::wait::wait_until;
use protocol_support::{agent_key, gate, payload, Rig};
use serde_json::json;

const SSHD: &str = "/usr/sbin/sshd";

fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ssh-keygen {}", path.display());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(what: &str, f: impl FnMut() -> bool) {
    wait_until(what, Duration::from_secs(20), f);
}

fn session(key: &Path, port: u16) -> Child {
    session_as(key, port, "root")
}

fn session_as(key: &Path, port: u16, user: &str) -> Child {
    Command::new("ssh")
        .args([
            "-N",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
        ])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
        .arg("-i")
        .arg(key)
        .args(["-p", &port.to_string(), &format!("{user}@127.0.0.1")])
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// (port, fingerprint) of each "Accepted publickey" line.
/// The "Accepted" records of the real sshd's log, read with the agent's
/// own parser (`-E` prefixes each message with a time and the pid).
fn accepted(log: &Path) -> Vec<(u16, String)> {
    accepted_by(log, "root")
}

/// As [`accepted`], for logins of `user`.
fn accepted_by(log: &Path, want: &str) -> Vec<(u16, String)> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let msg = &l[l.find("Accepted ")?..];
            let (user, method, addr, port, kt, fp) = logins::parse_accepted(msg)
                .unwrap_or_else(|| panic!("sshd's own line does not parse: {l}"));
            assert_eq!(
                (user.as_str(), method.as_str(), addr, kt.as_deref()),
                (
                    want,
                    "publickey",
                    IpAddr::from([127, 0, 0, 1]),
                    Some("ED25519")
                )
            );
            Some((port, fp?))
        })
        .collect()
}

fn children_of(ppid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        if rest.split_whitespace().nth(1) == Some(&ppid.to_string()) {
            out.push(pid);
        }
    }
    out
}

/// Start sshd on a free port of 127.0.0.1 with its files in `d` and the
/// keys of `authorized_keys`: the listener, its port and its log file.
fn start_sshd(d: &Path, authorized_keys: &Path) -> (Sshd, u16, PathBuf) {
    start_sshd_after(d, authorized_keys, "")
}

/// As [`start_sshd`], running the shell commands `pre` first in sshd's
/// private mount namespace.
fn start_sshd_after(d: &Path, authorized_keys: &Path, pre: &str) -> (Sshd, u16, PathBuf) {
    keygen(&d.join("host"));
    let port = free_port();
    fs::write(
        d.join("cfg"),
        format!(
            "ListenAddress 127.0.0.1:{port}\nHostKey {0}/host\nAuthorizedKeysFile {1}\n\
             PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPidFile {0}/pid\n",
            d.display(),
            authorized_keys.display()
        ),
    )
    .unwrap();
    let log = d.join("log");
    let ok = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "{pre}mount -t tmpfs tmpfs /run && mkdir /run/sshd && {SSHD} -f {0}/cfg -E {0}/log",
            d.display()
        ))
        .status()
        .unwrap()
        .success();
    assert!(
        ok,
        "sshd did not start: {}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    // sshd creates the pid file, then writes it: wait for a whole pid.
    let pid = || {
        fs::read_to_string(d.join("pid"))
            .ok()?
            .strip_suffix('\n')?
            .parse::<u32>()
            .ok()
    };
    wait_for("sshd's pid file", || pid().is_some());
    let sshd = Sshd {
        pid: pid().unwrap(),
    };
    (sshd, port, log)
}

/// Every "Accepted publickey" record of the log paired with every session
/// process of the listener (the log lines carry no pid): one true pairing
/// per record, the others forgeries naming another key's connection.
fn paired_logins(log: &Path, listener: u32) -> Vec<Login> {
    paired_logins_of(log, listener, "root")
}

/// As [`paired_logins`], for logins of `user`.
fn paired_logins_of(log: &Path, listener: u32, user: &str) -> Vec<Login> {
    let records = accepted_by(log, user);
    let at = SystemTime::now();
    children_of(listener)
        .into_iter()
        .flat_map(|pid| {
            records.iter().map(move |(port, fp)| Login {
                pid,
                user: user.into(),
                addr: IpAddr::from([127, 0, 0, 1]),
                port: *port,
                method: "publickey".into(),
                key_type: Some("ED25519".into()),
                fingerprint: Some(fp.clone()),
                at,
                source: Source::AuthLog,
            })
        })
        .collect()
}

/// The process table, with only this test's sessions (the listener's
/// children, and theirs: a session's privilege-separated child) as
/// sshd's: other sshd sessions on this machine (other tests') are not
/// this test's to count.
fn snapshot(listener: u32) -> Snapshot {
    let mut snap = Snapshot::read().unwrap();
    let monitors = children_of(listener);
    let mut mine = monitors.clone();
    for m in monitors {
        mine.extend(children_of(m as u32));
    }
    snap.sshd.retain(|pid, _| mine.contains(pid));
    snap
}

/// An ssh client killed when the test ends, passed or not: a session
/// left open would outlive the test's sshd listener.
struct Client(Child);

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The sessions of `fingerprints` among the listener's, as the agent's
/// `SshdLog` counts them: found in /proc, then matched to `logins`.
fn count(
    logins: &[Login],
    fingerprints: &BTreeSet<String>,
    user: &str,
    uid: u32,
    listener: u32,
) -> Outcome {
    let snap = snapshot(listener);
    by_key::count(&by_key::attribute(logins, user, uid, &snap), fingerprints)
}

/// As [`count`], ending them.
fn end(
    logins: &[Login],
    fingerprints: &BTreeSet<String>,
    user: &str,
    uid: u32,
    listener: u32,
) -> Outcome {
    let snap = snapshot(listener);
    let sessions = by_key::attribute(logins, user, uid, &snap);
    by_key::end_keys(&sessions, fingerprints, user, &snap).unwrap()
}

fn prerequisites() -> bool {
    // SAFETY: geteuid takes nothing and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    gate::require(root, "needs root (sshd, pidfds of root's sessions)")
        && gate::require(Path::new(SSHD).exists(), "needs /usr/sbin/sshd")
        && gate::require(
            Command::new("unshare").arg("--help").output().is_ok(),
            "needs unshare",
        )
}

struct Sshd {
    pid: u32,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // SAFETY: signals the listener this test started, by its pid.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
    }
}

#[test]
fn ending_one_keys_sessions_ends_only_that_keys_session_of_a_real_sshd() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for k in ["ka", "kb"] {
        keygen(&d.join(k));
    }
    let ak = format!(
        "{}{}",
        fs::read_to_string(d.join("ka.pub")).unwrap(),
        fs::read_to_string(d.join("kb.pub")).unwrap()
    );
    fs::write(d.join("ak"), ak).unwrap();
    let (sshd, port, log) = start_sshd(d, &d.join("ak"));

    let mut a = session(&d.join("ka"), port);
    wait_for("the first login", || accepted(&log).len() == 1);
    let mut b = session(&d.join("kb"), port);
    wait_for("the second login", || accepted(&log).len() == 2);
    let records = accepted(&log);
    let (fp_a, fp_b) = (records[0].1.clone(), records[1].1.clone());
    assert_ne!(fp_a, fp_b);
    wait_for("both session processes", || {
        children_of(sshd.pid).len() == 2
    });
    let logins = paired_logins(&log, sshd.pid);
    let only_a = BTreeSet::from([fp_a.clone()]);
    let o = count(&logins, &only_a, "root", 0, sshd.pid);
    assert_eq!((o.open, o.unmatched), (1, 0));
    // Root's sessions, whose records name root and not another user: for
    // that name, both are live sessions of an unknown key.
    let o = count(&logins, &only_a, "alice", 0, sshd.pid);
    assert_eq!((o.open, o.unmatched), (0, 2));
    // Without a record, the session is still seen, never "none".
    let o = count(&[], &only_a, "root", 0, sshd.pid);
    assert_eq!((o.open, o.unmatched), (0, 2));

    let started = Instant::now();
    let out = end(&logins, &only_a, "root", 0, sshd.pid);
    assert_eq!((out.open, out.unmatched), (0, 0));
    assert_eq!(out.ended.len(), 1, "{:?}", out.ended);
    assert_eq!(out.ended[0].fingerprint.as_deref(), Some(fp_a.as_str()));
    assert_eq!(out.ended[0].from.as_deref(), Some("127.0.0.1"));
    wait_for("the first key's client to go", || {
        a.try_wait().unwrap().is_some()
    });
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    // The other key's session is untouched.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        b.try_wait().unwrap().is_none(),
        "the second key's session ended too"
    );
    let o = count(&logins, &BTreeSet::from([fp_b]), "root", 0, sshd.pid);
    assert_eq!((o.open, o.unmatched), (1, 0));
    b.kill().unwrap();
    b.wait().unwrap();
    drop(sshd);
}

/// A user that exists only in sshd's mount namespace: copies of
/// /etc/passwd, shadow and group with one more line each, bind-mounted
/// over the real ones there (this machine's files are not written).
const USER: &str = "sfirst";
const USER_UID: u32 = 4_242_424;

fn private_user(d: &Path) -> String {
    let home = d.join("home");
    fs::create_dir_all(&home).unwrap();
    let mut pre = String::new();
    for (file, line) in [
        (
            "passwd",
            format!("{USER}:x:{USER_UID}:{USER_UID}::{}:/bin/sh", home.display()),
        ),
        ("shadow", format!("{USER}:*:20000:0:99999:7:::")),
        ("group", format!("{USER}:x:{USER_UID}:")),
    ] {
        let mut text = fs::read_to_string(format!("/etc/{file}")).unwrap();
        text.push_str(&line);
        text.push('\n');
        let copy = d.join(file);
        fs::write(&copy, text).unwrap();
        pre.push_str(&format!("mount --bind {} /etc/{file} && ", copy.display()));
    }
    pre
}

/// A login of a user other than root, whom sshd privilege-separates: the
/// session is found in /proc by its monitor, whose unprivileged sshd child
/// runs as the user; it is that user's (not root's), matched to its key,
/// and ending it ends the monitor and the child.
#[test]
fn a_users_session_is_found_by_its_privilege_separated_child_and_ended() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keygen(&d.join("ka"));
    fs::write(d.join("ak"), fs::read_to_string(d.join("ka.pub")).unwrap()).unwrap();
    let pre = private_user(d);
    let (sshd, port, log) = start_sshd_after(d, &d.join("ak"), &pre);

    let mut a = Client(session_as(&d.join("ka"), port, USER));
    wait_for("the login", || accepted_by(&log, USER).len() == 1);
    let monitors = || children_of(sshd.pid);
    // Its child running as the user (not the pre-authentication child,
    // which runs as sshd's account and exits once the user is in).
    let real_uid = |pid: i32| {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok())
    };
    wait_for("the session's unprivileged child", || {
        monitors().iter().any(|m| {
            children_of(*m as u32)
                .into_iter()
                .any(|c| real_uid(c) == Some(USER_UID))
        })
    });
    let fp = accepted_by(&log, USER)[0].1.clone();
    let keys = BTreeSet::from([fp.clone()]);
    let logins = paired_logins_of(&log, sshd.pid, USER);

    let snap = snapshot(sshd.pid);
    let found = by_key::candidates(&snap);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].uid, USER_UID, "{found:?}");
    // Not root's, though its monitor runs as root.
    assert_eq!(count(&logins, &keys, "root", 0, sshd.pid).unmatched, 0);
    let o = count(&logins, &keys, USER, USER_UID, sshd.pid);
    assert_eq!((o.open, o.unmatched), (1, 0));
    // Its record gone, it is still the user's live session.
    let o = count(&[], &keys, USER, USER_UID, sshd.pid);
    assert_eq!((o.open, o.unmatched), (0, 1));

    // The user's processes (delete_user's and lock_user's view): the
    // unprivileged child is given its monitor's peer, nothing else is.
    let procs = accessd::sessions::processes_of(Path::new("/"), USER_UID).unwrap();
    let froms: Vec<_> = procs.iter().filter_map(|p| p.from.as_deref()).collect();
    assert_eq!(froms, ["127.0.0.1"], "{procs:?}");
    drop(procs);

    let out = end(&logins, &keys, USER, USER_UID, sshd.pid);
    assert_eq!(
        (out.ended.len(), out.open, out.unmatched),
        (1, 0, 0),
        "{:?}",
        out.ended
    );
    assert_eq!(out.ended[0].fingerprint.as_deref(), Some(fp.as_str()));
    wait_for("the client to go", || a.0.try_wait().unwrap().is_some());
    wait_for("the session's processes to go", || monitors().is_empty());
    drop(sshd);
}

/// The engine's sessions of removed keys, found in the test sshd's log (as
/// [`paired_logins`] reads it) instead of the machine's journal: the rest
/// is the agent's own path, the `KeySessions` the engine calls included.
struct TestSshdLog {
    log: PathBuf,
    listener: u32,
}

impl KeySessions for TestSshdLog {
    fn end(
        &self,
        _sys: &System,
        user: &str,
        uid: u32,
        fingerprints: &BTreeSet<String>,
    ) -> Result<Outcome> {
        Ok(end(
            &paired_logins(&self.log, self.listener),
            fingerprints,
            user,
            uid,
            self.listener,
        ))
    }

    fn count(
        &self,
        _sys: &System,
        user: &str,
        uid: u32,
        fingerprints: &BTreeSet<String>,
    ) -> Result<Outcome> {
        Ok(count(
            &paired_logins(&self.log, self.listener),
            fingerprints,
            user,
            uid,
            self.listener,
        ))
    }
}

/// The test, through the engine: two keys of root, a live session
/// on each. `remove_keys` of the first without `terminate_sessions` ends
/// nothing and reports `sessions_open: 1`; sent again with it, it ends that
/// session within two seconds, keeps the other, and the key cannot log in
/// again.
#[test]
fn remove_keys_with_terminate_sessions_ends_only_the_removed_keys_session_of_a_real_sshd() {
    if !prerequisites() {
        return;
    }
    let rig = Rig::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for k in ["ka", "kb"] {
        keygen(&d.join(k));
    }
    let pubkey = |k: &str| fs::read_to_string(d.join(format!("{k}.pub"))).unwrap();
    let (ka, kb) = (pubkey("ka"), pubkey("kb"));
    let mut e = rig.engine();
    let h = e.handle(&rig.signed(
        "c-add",
        "add_keys",
        json!({"user": "root", "keys": [ka.trim(), kb.trim()]}),
    ));
    assert_eq!(h.status, Status::Ok, "{}", h.message);
    // The engine's root is a temporary directory: sshd reads root's keys
    // from there.
    let ak = rig.root.join("root/.ssh/authorized_keys");
    let (sshd, port, log) = start_sshd(d, &ak);
    let mut e = e.with_key_sessions(Arc::new(TestSshdLog {
        log: log.clone(),
        listener: sshd.pid,
    }));

    let mut a = session(&d.join("ka"), port);
    wait_for("the first login", || accepted(&log).len() == 1);
    let mut b = session(&d.join("kb"), port);
    wait_for("the second login", || accepted(&log).len() == 2);
    wait_for("both session processes", || {
        children_of(sshd.pid).len() == 2
    });
    let fp_a = accepted(&log)[0].1.clone();

    let h = e.handle(&rig.signed(
        "c-rm-1",
        "remove_keys",
        json!({"user": "root", "keys": [fp_a]}),
    ));
    assert_eq!(h.status, Status::Ok, "{}", h.message);
    let data = payload(&agent_key(&e), &h).data;
    assert_eq!(
        (data["removed"].clone(), data["sessions_open"].clone()),
        (json!(1), json!(1)),
        "{data}"
    );
    assert!(data.get("sessions_ended").is_none(), "{data}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        a.try_wait().unwrap().is_none(),
        "ended without terminate_sessions"
    );
    assert!(b.try_wait().unwrap().is_none());

    let started = Instant::now();
    let h = e.handle(&rig.signed(
        "c-rm-2",
        "remove_keys",
        json!({"user": "root", "keys": [fp_a], "terminate_sessions": true}),
    ));
    assert_eq!(h.status, Status::Ok, "{}", h.message);
    let data = payload(&agent_key(&e), &h).data;
    assert_eq!(data["sessions_open"], 0, "{data}");
    let ended = data["sessions_ended"].as_array().unwrap();
    assert_eq!(ended.len(), 1, "{data}");
    assert_eq!(
        (
            ended[0]["user"].clone(),
            ended[0]["fingerprint"].clone(),
            ended[0]["from"].clone()
        ),
        (json!("root"), json!(fp_a), json!("127.0.0.1"))
    );
    wait_for("the first key's client to go", || {
        a.try_wait().unwrap().is_some()
    });
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        b.try_wait().unwrap().is_none(),
        "the second key's session ended too"
    );
    // The key's line is gone: its session cannot come back.
    let mut again = session(&d.join("ka"), port);
    let mut status = None;
    wait_until(
        "the removed key's login to fail (it logged in again)",
        Duration::from_secs(10),
        || {
            status = again.try_wait().unwrap();
            status.is_some()
        },
    );
    assert!(!status.unwrap().success());
    b.kill().unwrap();
    b.wait().unwrap();
    drop(sshd);
}

/// An expiring key bound by `replace_keys` with `terminate_sessions`: its
/// session lives while the key does, and the engine's expiry sweep removes
/// the line and then ends that session; a permanent key's session stays.
/// The engine's clock starts at the real time (sshd checks the line's
/// `expiry-time` against it) and is moved past the expiry by the test.
#[test]
fn an_expiring_key_bound_with_terminate_sessions_ends_its_real_session_at_expiry() {
    if !prerequisites() {
        return;
    }
    let rig = Rig::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for k in ["ka", "kb"] {
        keygen(&d.join(k));
    }
    let pubkey = |k: &str| fs::read_to_string(d.join(format!("{k}.pub"))).unwrap();
    let (ka, kb) = (pubkey("ka"), pubkey("kb"));
    let now = SystemTime::now();
    let clock = Arc::new(accessd::sys::TestClock::at(now));
    let mut e = rig.engine_on(clock.clone());
    let send = |e: &mut accessd::engine::Engine, id: &str, op: &str, args: serde_json::Value| {
        let mut spec = rig.spec(id, op, args);
        spec.issued_at = now - Duration::from_secs(60);
        spec.expires_at = now + Duration::from_secs(540);
        let h = e.handle(spec.sign(&rig.cp, protocol_support::KEY_ID).as_bytes());
        assert_eq!(h.status, Status::Ok, "{op}: {}", h.message);
    };
    let until = now + Duration::from_secs(120);
    send(
        &mut e,
        "c-bind",
        "replace_keys",
        json!({
            "user": "root",
            "keys": [ka.trim()],
            "expires_at": accessd::protocol::format_time(until),
            "terminate_sessions": true,
        }),
    );
    send(
        &mut e,
        "c-keep",
        "add_keys",
        json!({"user": "root", "keys": [kb.trim()]}),
    );
    let ak = rig.root.join("root/.ssh/authorized_keys");
    assert!(fs::read_to_string(&ak).unwrap().contains("expiry-time="));
    let (sshd, port, log) = start_sshd(d, &ak);
    let mut e = e.with_key_sessions(Arc::new(TestSshdLog {
        log: log.clone(),
        listener: sshd.pid,
    }));

    let mut a = session(&d.join("ka"), port);
    wait_for("the expiring key's login", || accepted(&log).len() == 1);
    let mut b = session(&d.join("kb"), port);
    wait_for("the permanent key's login", || accepted(&log).len() == 2);
    wait_for("both session processes", || {
        children_of(sshd.pid).len() == 2
    });
    // Not due yet: nothing happens.
    assert!(e.expire_keys().is_some());
    std::thread::sleep(Duration::from_millis(300));
    assert!(a.try_wait().unwrap().is_none());

    clock.pass(Duration::from_secs(121));
    let started = Instant::now();
    assert_eq!(e.expire_keys(), None, "nothing else expires");
    wait_for("the expired key's client to go", || {
        a.try_wait().unwrap().is_some()
    });
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(!fs::read_to_string(&ak)
        .unwrap()
        .contains(ka.split(' ').nth(1).unwrap()));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        b.try_wait().unwrap().is_none(),
        "the permanent key's session ended too"
    );
    b.kill().unwrap();
    b.wait().unwrap();
    drop(sshd);
}
