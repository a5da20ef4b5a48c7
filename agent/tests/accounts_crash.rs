//! A writer killed with SIGKILL at random points: afterwards every file
//! parses and holds every user, with either the old or the new entry, and
//! the next writer takes over the dead writer's stale locks.
//!
//! The writer is this test binary re-executed (`crash_child`), so the kill
//! lands in the real library code, not in a simulation.

mod accounts_common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use accessd::accounts::{self, AccountsConfig, CryptHash, Password};
use accounts_common::*;

const ENV: &str = "ACCESSD_CRASH_CHILD_ROOT";
const USERS: usize = 4;

fn hashes() -> Vec<String> {
    (0..3u8)
        .map(|i| {
            accounts::hash::sha512_crypt(b"Crash-Test-1", &[i; 12], 5000)
                .unwrap()
                .as_str()
                .to_owned()
        })
        .collect()
}

/// The writer: set passwords in a loop until killed. A no-op when run as
/// an ordinary test.
#[test]
fn crash_child() {
    let Ok(root) = std::env::var(ENV) else { return };
    let s = sys(Path::new(&root));
    let cfg = AccountsConfig::default();
    let hs = hashes();
    // Tell the parent the loop starts now, so its random delay is spent
    // inside the writes rather than in process start-up.
    fs::write(Path::new(&root).join("child-started"), b"").unwrap();
    for i in 0.. {
        let pw = Password::Crypt(CryptHash::parse(&hs[i % hs.len()]).unwrap());
        accounts::set_password(&s, &cfg, &user(&format!("p{}", i % USERS)), &pw).unwrap();
    }
}

fn names_and_check(root: &Path, file: &str, fields: usize) -> BTreeSet<String> {
    let text = fs::read_to_string(root.join("etc").join(file)).unwrap();
    assert!(text.ends_with('\n'), "{file} is cut short");
    text.lines()
        .map(|l| {
            assert_eq!(l.split(':').count(), fields, "{file}: malformed line {l:?}");
            l.split(':').next().unwrap().to_owned()
        })
        .collect()
}

fn same_users(got: &BTreeSet<String>, want: &BTreeSet<String>, round: usize) {
    let missing: Vec<_> = want.difference(got).take(5).collect();
    let extra: Vec<_> = got.difference(want).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "round {round}: missing {missing:?}, extra {extra:?}"
    );
}

fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).unwrap();
    u64::from_le_bytes(b) % n
}

#[test]
fn sigkill_at_random_points_leaves_every_file_whole() {
    if !prerequisites(&["useradd"]) {
        return;
    }
    let a = fixture();
    let root = a.path();
    for i in 0..USERS {
        useradd(root, &[&format!("p{i}")]);
    }
    // Make the files big enough that a kill often lands mid-write.
    let mut pw = fs::read_to_string(root.join("etc/passwd")).unwrap();
    let mut sh = fs::read_to_string(root.join("etc/shadow")).unwrap();
    for i in 0..5_000 {
        pw.push_str(&format!(
            "filler{i}:x:{}:100::/nonexistent:/usr/sbin/nologin\n",
            100_000 + i
        ));
        sh.push_str(&format!("filler{i}:*:20000:0:99999:7:::\n"));
    }
    fs::write(root.join("etc/passwd"), pw).unwrap();
    fs::write(root.join("etc/shadow"), sh).unwrap();
    // The backups useradd left predate the filler; from here on every
    // backup is one accessd made.
    fs::remove_file(root.join("etc/shadow-")).unwrap();
    let passwd_before = fs::read(root.join("etc/passwd")).unwrap();
    let users = names_and_check(root, "shadow", 9);
    let allowed: BTreeSet<String> = hashes().into_iter().chain(["!".to_string()]).collect();

    let exe = std::env::current_exe().unwrap();
    let mut previous = fs::read(root.join("etc/shadow")).unwrap();
    let mut changed_rounds = 0;
    let mut torn = 0;
    for round in 0..25 {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(ENV, root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = root.join("child-started");
        for _ in 0..3000 {
            if started.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        fs::remove_file(&started).expect("the child never started");
        std::thread::sleep(Duration::from_millis(random_below(250)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap(); // reaped, so its pid is really dead

        same_users(&names_and_check(root, "shadow", 9), &users, round);
        assert_eq!(fs::read(root.join("etc/passwd")).unwrap(), passwd_before);
        if root.join("etc/shadow-").exists() {
            same_users(&names_and_check(root, "shadow-", 9), &users, round);
        }
        for i in 0..USERS {
            let e = entry(root, "shadow", &format!("p{i}")).unwrap();
            assert!(
                allowed.contains(e.split(':').nth(1).unwrap()),
                "round {round}: {e}"
            );
        }
        let now = fs::read(root.join("etc/shadow")).unwrap();
        if now != previous {
            changed_rounds += 1;
        }
        previous = now;
        torn += fs::read_dir(root.join("etc"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".accessd-")
            })
            .count();
    }
    // The children really wrote (so the kills hit a busy writer); temp
    // files left by kills mid-write show some landed inside a write.
    assert!(changed_rounds > 0, "no child ever committed a change");
    eprintln!("{changed_rounds}/25 rounds changed shadow; {torn} kills landed mid-write");
    // Whatever locks the last victim left, the next writer gets through.
    let last = hashes()[0].clone();
    accounts::set_password_with_timeout(
        &sys(root),
        &AccountsConfig::default(),
        &user("p0"),
        &Password::Crypt(CryptHash::parse(&last).unwrap()),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(
        entry(root, "shadow", "p0").unwrap().split(':').nth(1),
        Some(last.as_str())
    );
    assert!(!root.join("etc/shadow.lock").exists());
    let left: Vec<_> = fs::read_dir(root.join("etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".accessd-"))
        .collect();
    assert!(
        left.is_empty(),
        "temp files of killed writers are swept under the lock: {left:?}"
    );
}
