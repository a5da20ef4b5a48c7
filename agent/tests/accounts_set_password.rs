//! set_password against chpasswd, openssl and libxcrypt as oracles.

mod accounts_common;

use std::ffi::{CStr, CString};
use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use accessd::accounts::{self, AccountsConfig, CryptHash, Password};
use accessd::error::Code;
use accessd::secret::Secret;
use accounts_common::*;

#[link(name = "crypt")]
extern "C" {
    fn crypt(key: *const libc::c_char, salt: *const libc::c_char) -> *mut libc::c_char;
}

/// The system's crypt(3) (libxcrypt): what PAM uses to check a login.
fn system_crypt(pw: &str, setting: &str) -> String {
    let k = CString::new(pw).unwrap();
    let s = CString::new(setting).unwrap();
    // SAFETY: both are valid C strings; crypt returns a static buffer that
    // is copied before the next call, and tests here call it from one thread.
    unsafe { CStr::from_ptr(crypt(k.as_ptr(), s.as_ptr())) }
        .to_string_lossy()
        .into_owned()
}

/// `chpasswd -e` under `root`: the oracle, setting `user`'s hash the way
/// shadow-utils does.
fn chpasswd_e(root: &Path, user: &str, hash: &str) {
    run(
        "chpasswd",
        &["-e", "-R", &root_arg(root)],
        Some(format!("{user}:{hash}\n").as_bytes()),
    );
}

#[test]
fn plaintext_hash_is_reproduced_by_openssl_and_libxcrypt() {
    if !prerequisites(&["openssl"]) {
        return;
    }
    let cfg = AccountsConfig::default();
    let pw = "Tr0ub4dor&3x";
    let h = accounts::hash_password(&cfg, &Secret::new(pw.as_bytes().to_vec())).unwrap();
    let s = h.as_str().to_owned();
    let salt = s.split('$').nth(2).unwrap();
    assert_eq!(salt.len(), 16, "{s}");
    assert!(!s.contains("rounds="), "rounds 5000 is not written: {s}");
    let out = run(
        "openssl",
        &["passwd", "-6", "-salt", salt, "-stdin"],
        Some(format!("{pw}\n").as_bytes()),
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), s);
    assert_eq!(system_crypt(pw, &s), s);

    let cfg = AccountsConfig {
        rounds: 65536,
        ..AccountsConfig::default()
    };
    let h = accounts::hash_password(&cfg, &Secret::new(pw.as_bytes().to_vec())).unwrap();
    assert!(h.as_str().starts_with("$6$rounds=65536$"));
    assert_eq!(system_crypt(pw, h.as_str()), h.as_str());
    assert_ne!(system_crypt("wrong-Password1", h.as_str()), h.as_str());
}

#[test]
fn same_result_as_chpasswd_e() {
    if !prerequisites(&["chpasswd", "useradd", "pwck", "grpck", "openssl"]) {
        return;
    }
    let a = fixture();
    useradd(a.path(), &["-m", "alice"]);
    useradd(a.path(), &["-m", "bob"]);
    let b = clone_tree(a.path());
    let baseline = check_report(a.path());
    let hash = known_hash();

    chpasswd_e(a.path(), "alice", &hash);
    accounts::set_password(
        &sys(b.path()),
        &AccountsConfig::default(),
        &user("alice"),
        &Password::Crypt(CryptHash::parse(&hash).unwrap()),
    )
    .unwrap();

    // Same files, same backups, same owners and modes.
    assert_eq!(snapshot(a.path(), true), snapshot(b.path(), true));
    let line = entry(b.path(), "shadow", "alice").unwrap();
    assert_eq!(line, format!("alice:{hash}:{}:0:99999:7:::", today()));
    assert_no_new_complaints(b.path(), &baseline);
    // No lock or temp file left behind (.pwd.lock stays, as glibc leaves it).
    let leftovers: Vec<_> = fs::read_dir(b.path().join("etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| (n.ends_with(".lock") && n != ".pwd.lock") || n.contains(".accessd-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn chpasswd_accepts_our_plaintext_hash() {
    if !prerequisites(&["chpasswd", "useradd"]) {
        return;
    }
    let a = fixture();
    useradd(a.path(), &["-m", "carol"]);
    let b = clone_tree(a.path());
    let cfg = AccountsConfig::default();
    accounts::set_password(
        &sys(b.path()),
        &cfg,
        &user("carol"),
        &Password::Plain(Secret::new(b"Very-Secret-42".to_vec())),
    )
    .unwrap();
    let ours = entry(b.path(), "shadow", "carol").unwrap();
    let hash = ours.split(':').nth(1).unwrap().to_owned();
    assert_eq!(system_crypt("Very-Secret-42", &hash), hash);
    chpasswd_e(a.path(), "carol", &hash);
    assert_eq!(entry(a.path(), "shadow", "carol").unwrap(), ours);
}

#[test]
fn lastchg_comes_from_the_clock() {
    if !prerequisites(&["useradd"]) {
        return;
    }
    let a = fixture();
    useradd(a.path(), &["dave"]);
    let s = sys(a.path()).with_clock(std::sync::Arc::new(accessd::sys::FixedClock::at_unix(
        20000 * 86400 + 5,
    )));
    accounts::set_password(
        &s,
        &AccountsConfig::default(),
        &user("dave"),
        &Password::Crypt(CryptHash::parse(&known_hash()).unwrap()),
    )
    .unwrap();
    assert_eq!(
        entry(a.path(), "shadow", "dave").unwrap().split(':').nth(2),
        Some("20000")
    );
}

fn hold_ofd(path: &std::path::Path) -> fs::File {
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    let fl = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    // SAFETY: valid fd and flock.
    assert_eq!(
        unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &fl) },
        0
    );
    f
}

#[test]
fn lock_timeout_when_pwd_lock_or_a_live_file_lock_is_held() {
    if !prerequisites(&["useradd"]) {
        return;
    }
    let a = fixture();
    useradd(a.path(), &["erin"]);
    let before = whole_tree(a.path());
    let pw = Password::Crypt(CryptHash::parse(&known_hash()).unwrap());
    let cfg = AccountsConfig::default();
    let set_erin_password = |timeout| {
        accounts::set_password_with_timeout(&sys(a.path()), &cfg, &user("erin"), &pw, timeout)
    };

    let held = hold_ofd(&a.path().join("etc/.pwd.lock"));
    let e = set_erin_password(Duration::from_millis(300)).unwrap_err();
    assert_eq!(e.code(), Code::LockTimeout, "{e}");
    assert!(e.to_string().contains(".pwd.lock"));
    drop(held);

    // A commonio lock held by a live process (as `useradd -P` would hold it).
    let mut live = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    fs::write(a.path().join("etc/shadow.lock"), format!("{}\0", live.id())).unwrap();
    let e = set_erin_password(Duration::from_millis(300)).unwrap_err();
    assert_eq!(e.code(), Code::LockTimeout, "{e}");
    fs::remove_file(a.path().join("etc/shadow.lock")).unwrap();
    assert_tree_unchanged(
        a.path(),
        &before,
        "a timed-out change must leave every file as it was",
    );

    // The same lock left by a dead process is taken over, then removed.
    live.kill().unwrap();
    let dead = live.id();
    live.wait().unwrap();
    fs::write(a.path().join("etc/shadow.lock"), format!("{dead}\0")).unwrap();
    set_erin_password(Duration::from_secs(5)).unwrap();
    assert!(!a.path().join("etc/shadow.lock").exists());
    assert!(!a.path().join("etc/passwd.lock").exists());
}
