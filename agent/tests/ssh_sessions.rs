//! Ending the SSH sessions of one key (`sessions::by_key`) against a real
//! sshd on 127.0.0.1 and real `ssh -N` sessions.
//!
//! sshd runs in a private mount namespace (a tmpfs on /run for its
//! privilege separation directory) with its own host key and an
//! authorized_keys file in a temporary directory, and logs to a file
//! (`-E`). Those log lines carry no pid, so the test pairs every
//! "Accepted publickey" record with every session process of the listener:
//! the pairings that are wrong stand for forged records, and must not end
//! anything. The login is root's (this machine's /etc is not touched to
//! make a user), which sshd does not privilege-separate.

#[path = "gate/mod.rs"]
mod gate;

use std::collections::BTreeSet;
use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use accessd::sessions::by_key;
use accessd::ssh::logins::{self, Login, Source};

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

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn session(key: &Path, port: u16) -> Child {
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
        .args(["-p", &port.to_string(), "root@127.0.0.1"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// (port, fingerprint) of each "Accepted publickey" line.
/// The "Accepted" records of the real sshd's log, read with the agent's
/// own parser (`-E` prefixes each message with a time and the pid).
fn accepted(log: &Path) -> Vec<(u16, String)> {
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
                    "root",
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
    // SAFETY: geteuid takes nothing and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !gate::require(root, "needs root (sshd, pidfds of root's sessions)")
        || !gate::require(Path::new(SSHD).exists(), "needs /usr/sbin/sshd")
        || !gate::require(
            Command::new("unshare").arg("--help").output().is_ok(),
            "needs unshare",
        )
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for k in ["host", "ka", "kb"] {
        keygen(&d.join(k));
    }
    let ak = format!(
        "{}{}",
        fs::read_to_string(d.join("ka.pub")).unwrap(),
        fs::read_to_string(d.join("kb.pub")).unwrap()
    );
    fs::write(d.join("ak"), ak).unwrap();
    let port = free_port();
    fs::write(
        d.join("cfg"),
        format!(
            "ListenAddress 127.0.0.1:{port}\nHostKey {0}/host\nAuthorizedKeysFile {0}/ak\n\
             PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPidFile {0}/pid\n",
            d.display()
        ),
    )
    .unwrap();
    let log = d.join("log");
    let ok = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs tmpfs /run && mkdir /run/sshd && {SSHD} -f {0}/cfg -E {0}/log",
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
    wait_for("sshd's pid file", || d.join("pid").exists());
    let sshd = Sshd {
        pid: fs::read_to_string(d.join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap(),
    };

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
    let at = SystemTime::now();

    // Every record paired with every session process: one true pairing per
    // record, the other a forgery that names the other key's connection.
    let logins: Vec<Login> = children_of(sshd.pid)
        .into_iter()
        .flat_map(|pid| {
            records.iter().map(move |(port, fp)| Login {
                pid,
                user: "root".into(),
                addr: IpAddr::from([127, 0, 0, 1]),
                port: *port,
                method: "publickey".into(),
                key_type: Some("ED25519".into()),
                fingerprint: Some(fp.clone()),
                at,
                source: Source::AuthLog,
            })
        })
        .collect();
    let only_a = BTreeSet::from([fp_a.clone()]);
    assert_eq!(by_key::count(&logins, &only_a, "root", 0).unwrap(), 1);
    // Not root's records for another user name.
    assert_eq!(by_key::count(&logins, &only_a, "alice", 0).unwrap(), 0);

    let started = Instant::now();
    let out = by_key::end(&logins, &only_a, "root", 0).unwrap();
    assert_eq!(out.open, 0);
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
    assert_eq!(
        by_key::count(&logins, &BTreeSet::from([fp_b]), "root", 0).unwrap(),
        1
    );
    b.kill().unwrap();
    b.wait().unwrap();
    drop(sshd);
}
