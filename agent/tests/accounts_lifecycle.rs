//! lock, unlock and the forced password change against shadow-utils
//! (`usermod -L -e 1`, `usermod -U -e`, `passwd -e`) on identical trees.

mod accounts_common;

use std::path::Path;
use std::time::Duration;

use accessd::accounts::{self, lifecycle, AccountsConfig, CryptHash, Password, PasswordOptions};
use accounts_common::*;

const TIMEOUT: Duration = Duration::from_secs(15);

/// Two identical trees with `alice` (a password, an expiry date) and `bob`
/// (key-only: no password, hash `!`), made by the real useradd.
fn twin_trees() -> (tempfile::TempDir, tempfile::TempDir) {
    let a = fixture();
    useradd(
        a.path(),
        &["-m", "-e", "2031-02-03", "-p", &known_hash(), "alice"],
    );
    useradd(a.path(), &["-m", "bob"]);
    let b = clone_tree(a.path());
    (a, b)
}

fn usermod(root: &Path, args: &[&str]) {
    let mut a = vec!["-R", root.to_str().unwrap()];
    a.extend_from_slice(args);
    run("usermod", &a, None);
}

fn shadow_and_backup(root: &Path) -> (Vec<u8>, Vec<u8>) {
    let s = snapshot(root, true);
    (s["shadow"].0.clone(), s["shadow-"].0.clone())
}

#[test]
fn lock_user_writes_what_usermod_lock_and_expire_1_writes() {
    if !prerequisites(&["useradd", "usermod", "pwck", "grpck", "openssl"]) {
        return;
    }
    let (a, b) = twin_trees();
    let baseline = check_report(a.path());
    for name in ["alice", "bob"] {
        usermod(a.path(), &["-L", "-e", "1", name]);
        let locked = lifecycle::lock(&sys(b.path()), &user(name), TIMEOUT).unwrap();
        assert!(locked.changed, "{name}");
        assert_eq!(
            shadow_and_backup(a.path()),
            shadow_and_backup(b.path()),
            "{name}"
        );
    }
    // The same owners and modes, and the other databases untouched.
    let (sa, sb) = (snapshot(a.path(), false), snapshot(b.path(), false));
    assert_eq!(sa, sb);
    assert_no_new_complaints(b.path(), &baseline);
    let alice = entry(b.path(), "shadow", "alice").unwrap();
    assert!(
        alice.split(':').nth(1).unwrap().starts_with("!$6$"),
        "{alice}"
    );
    assert_eq!(alice.split(':').nth(7), Some("1"), "{alice}");
}

#[test]
fn lock_user_remembers_the_expiry_it_replaced() {
    if !prerequisites(&["useradd", "openssl"]) {
        return;
    }
    let (_a, b) = twin_trees();
    let before = entry(b.path(), "shadow", "alice").unwrap();
    let expire = before.split(':').nth(7).unwrap().to_owned();
    assert!(!expire.is_empty(), "useradd -e set a date: {before}");
    let locked = lifecycle::lock(&sys(b.path()), &user("alice"), TIMEOUT).unwrap();
    assert_eq!(locked.previous_expire.as_deref(), Some(expire.as_str()));
    let unlocked = lifecycle::unlock(
        &sys(b.path()),
        &user("alice"),
        locked.previous_expire.as_deref(),
        TIMEOUT,
    )
    .unwrap();
    assert!(unlocked.changed);
    assert_eq!(unlocked.expire, expire);
    assert_eq!(entry(b.path(), "shadow", "alice").unwrap(), before);
}

#[test]
fn unlock_user_writes_what_usermod_unlock_writes() {
    if !prerequisites(&["useradd", "usermod", "pwck", "grpck", "openssl"]) {
        return;
    }
    let (a, b) = twin_trees();
    let baseline = check_report(a.path());
    // alice's old date restored (usermod -U -e DATE), bob's cleared (-e '').
    let alice_expire = entry(a.path(), "shadow", "alice")
        .unwrap()
        .split(':')
        .nth(7)
        .unwrap()
        .to_owned();
    for (name, restore, date) in [
        ("alice", Some(alice_expire.as_str()), "2031-02-03"),
        ("bob", None, ""),
    ] {
        usermod(a.path(), &["-L", "-e", "1", name]);
        lifecycle::lock(&sys(b.path()), &user(name), TIMEOUT).unwrap();
        usermod(a.path(), &["-U", "-e", date, name]);
        let u = lifecycle::unlock(&sys(b.path()), &user(name), restore, TIMEOUT).unwrap();
        assert!(u.changed, "{name}");
        assert_eq!(
            shadow_and_backup(a.path()),
            shadow_and_backup(b.path()),
            "{name}"
        );
    }
    assert_no_new_complaints(b.path(), &baseline);
    // bob never had a password: unlocking must not leave him an empty one.
    let bob = entry(b.path(), "shadow", "bob").unwrap();
    assert_eq!(bob.split(':').nth(1), Some("!"), "{bob}");
}

#[test]
fn locking_a_locked_user_and_unlocking_an_unlocked_one_change_nothing() {
    if !prerequisites(&["useradd", "openssl"]) {
        return;
    }
    let (_a, b) = twin_trees();
    let s = sys(b.path());
    let u = lifecycle::unlock(&s, &user("alice"), None, TIMEOUT).unwrap();
    assert!(!u.changed);
    lifecycle::lock(&s, &user("alice"), TIMEOUT).unwrap();
    let before = whole_tree(b.path());
    let again = lifecycle::lock(&s, &user("alice"), TIMEOUT).unwrap();
    assert!(!again.changed);
    assert_eq!(again.previous_expire, None);
    assert_tree_unchanged(b.path(), &before, "a second lock writes nothing");
}

#[test]
fn must_change_writes_what_passwd_expire_writes() {
    if !prerequisites(&["useradd", "chpasswd", "passwd", "chage", "openssl"]) {
        return;
    }
    let (a, b) = twin_trees();
    let hash = known_hash();
    // shadow-utils: set the hash, then expire it.
    run(
        "chpasswd",
        &["-e", "-R", &root_arg(a.path())],
        Some(format!("bob:{hash}\n").as_bytes()),
    );
    run("passwd", &["-R", &root_arg(a.path()), "-e", "bob"], None);
    let set = accounts::set_password_with(
        &sys(b.path()),
        &AccountsConfig::default(),
        &user("bob"),
        &Password::Crypt(CryptHash::parse(&hash).unwrap()),
        PasswordOptions { must_change: true },
        TIMEOUT,
    )
    .unwrap();
    assert!(set.must_change && !set.kept_locked);
    assert_eq!(
        entry(a.path(), "shadow", "bob"),
        entry(b.path(), "shadow", "bob")
    );
    // chage agrees that the password must be changed.
    let out = run("chage", &["-R", &root_arg(b.path()), "-l", "bob"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(
            |l| l.starts_with("Last password change") && l.contains("password must be changed")
        ),
        "{text}"
    );
}

#[test]
fn a_password_reset_keeps_a_locked_user_locked() {
    if !prerequisites(&["useradd", "openssl"]) {
        return;
    }
    let (_a, b) = twin_trees();
    let s = sys(b.path());
    let locked = lifecycle::lock(&s, &user("bob"), TIMEOUT).unwrap();
    let hash = known_hash();
    let set = accounts::set_password_with(
        &s,
        &AccountsConfig::default(),
        &user("bob"),
        &Password::Crypt(CryptHash::parse(&hash).unwrap()),
        PasswordOptions::default(),
        TIMEOUT,
    )
    .unwrap();
    assert!(set.kept_locked);
    let line = entry(b.path(), "shadow", "bob").unwrap();
    assert_eq!(line.split(':').nth(1), Some(format!("!{hash}").as_str()));
    assert_eq!(line.split(':').nth(7), Some("1"), "{line}");
    // After the unlock, the new password is the one in force.
    lifecycle::unlock(&s, &user("bob"), locked.previous_expire.as_deref(), TIMEOUT).unwrap();
    let line = entry(b.path(), "shadow", "bob").unwrap();
    assert_eq!(line.split(':').nth(1), Some(hash.as_str()));
}

#[test]
fn lock_of_an_unknown_user_is_user_not_found_and_changes_nothing() {
    if !prerequisites(&["useradd", "openssl"]) {
        return;
    }
    let (_a, b) = twin_trees();
    let before = whole_tree(b.path());
    let e = lifecycle::lock(&sys(b.path()), &user("nosuchuser"), TIMEOUT).unwrap_err();
    assert_eq!(e.code(), accessd::error::Code::UserNotFound, "{e}");
    assert_tree_unchanged(b.path(), &before, "nothing written");
}

#[test]
fn lock_and_unlock_lose_no_update_against_concurrent_usermod_and_chage() {
    if !prerequisites(&["useradd", "usermod", "chage"]) {
        return;
    }
    const USERS: usize = 4;
    const ROUNDS: usize = 24;
    let a = fixture();
    for i in 0..USERS {
        for prefix in ["u", "w", "l"] {
            useradd(a.path(), &[&format!("{prefix}{i}")]);
        }
    }
    let root = a.path().to_path_buf();
    let tool_loop = |tool: &'static str, flag: &'static str, prefix: &'static str| {
        let r = root.clone();
        std::thread::spawn(move || {
            for i in 0..ROUNDS {
                let value = match tool {
                    "usermod" => format!("c{i}"),
                    _ => (10 + i).to_string(),
                };
                let name = format!("{prefix}{}", i % USERS);
                run(
                    tool,
                    &["-R", r.to_str().unwrap(), flag, &value, &name],
                    None,
                );
            }
        })
    };
    let usermod = tool_loop("usermod", "-c", "u");
    let chage = tool_loop("chage", "-W", "w");
    let s = sys(&root);
    // Round r locks l{r % USERS} when r / USERS is even, unlocks it otherwise.
    for r in 0..ROUNDS {
        let name = user(&format!("l{}", r % USERS));
        if (r / USERS) % 2 == 0 {
            lifecycle::lock(&s, &name, TIMEOUT).unwrap();
        } else {
            lifecycle::unlock(&s, &name, None, TIMEOUT).unwrap();
        }
    }
    usermod.join().unwrap();
    chage.join().unwrap();
    for i in 0..USERS {
        let last = (0..ROUNDS).filter(|r| r % USERS == i).max().unwrap();
        let u = entry(&root, "passwd", &format!("u{i}")).unwrap();
        assert_eq!(
            u.split(':').nth(4),
            Some(format!("c{last}").as_str()),
            "usermod lost: {u}"
        );
        let w = entry(&root, "shadow", &format!("w{i}")).unwrap();
        assert_eq!(
            w.split(':').nth(5),
            Some((10 + last).to_string().as_str()),
            "chage lost: {w}"
        );
        let l = entry(&root, "shadow", &format!("l{i}")).unwrap();
        let want_locked = (last / USERS) % 2 == 0;
        assert_eq!(
            l.split(':').nth(7) == Some("1"),
            want_locked,
            "accessd lost: {l}"
        );
    }
}
