//! accessd and shadow-utils writing the same tree at the same time.
//!
//! `usermod -R ROOT` / `chage -R ROOT` chroot into ROOT before locking, so
//! their lckpwdf() takes ROOT/etc/.pwd.lock and their commonio locks are
//! ROOT/etc/passwd.lock and ROOT/etc/shadow.lock — the very files accessd
//! locks for this root. (`-P`/`--prefix` would skip lckpwdf and rely on the
//! commonio locks alone; that path is covered by the live-lock test in
//! accounts_set_password.) If either side read a file, lost the lock, and
//! wrote back a stale copy, the other side's last update would be missing.

mod accounts_common;

use std::collections::HashMap;
use std::thread;

use accessd::accounts::{self, AccountsConfig, Password};
use accessd::secret::Secret;
use accounts_common::*;

const USERS: usize = 6;
const ROUNDS: usize = 30;

#[test]
fn no_update_is_lost_between_accessd_usermod_and_chage() {
    if !prerequisites(&["useradd", "usermod", "chage"]) {
        return;
    }
    let a = fixture();
    for i in 0..USERS {
        for prefix in ["u", "w", "p"] {
            useradd(a.path(), &[&format!("{prefix}{i}")]);
        }
    }
    let root = a.path().to_path_buf();
    let cfg = AccountsConfig::default();
    // Hashes made up front, so that our loop is as tight as the tools'.
    let hashes: Vec<_> = (0..ROUNDS)
        .map(|i| {
            accounts::hash_password(&cfg, &Secret::new(format!("Pass-word{i}").into_bytes()))
                .unwrap()
        })
        .collect();

    let r1 = root.clone();
    let usermod = thread::spawn(move || {
        for i in 0..ROUNDS {
            run(
                "usermod",
                &[
                    "-R",
                    r1.to_str().unwrap(),
                    "-c",
                    &format!("c{i}"),
                    &format!("u{}", i % USERS),
                ],
                None,
            );
        }
    });
    let r2 = root.clone();
    let chage = thread::spawn(move || {
        for i in 0..ROUNDS {
            run(
                "chage",
                &[
                    "-R",
                    r2.to_str().unwrap(),
                    "-W",
                    &(10 + i).to_string(),
                    &format!("w{}", i % USERS),
                ],
                None,
            );
        }
    });
    let s = sys(&root);
    let mut ours = HashMap::new();
    for (i, h) in hashes.iter().enumerate() {
        let name = format!("p{}", i % USERS);
        accounts::set_password(&s, &cfg, &user(&name), &Password::Crypt(h.clone())).unwrap();
        ours.insert(name, h.as_str().to_owned());
    }
    usermod.join().unwrap();
    chage.join().unwrap();

    for i in 0..USERS {
        // The last round that touched user i.
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
        let name = format!("p{i}");
        let p = entry(&root, "shadow", &name).unwrap();
        assert_eq!(
            p.split(':').nth(1),
            Some(ours[&name].as_str()),
            "accessd lost: {p}"
        );
    }
    for f in ["passwd.lock", "shadow.lock", "group.lock", "gshadow.lock"] {
        assert!(!root.join("etc").join(f).exists(), "{f} left behind");
    }
}
