//! Sudo and create_user (PROTOCOL "Sudo"): `sudo: false` means no sudo,
//! whatever an earlier user of the name left behind, and the sudo state the
//! inventory reports follows every rule sudo reads. (The real `sudo -l -U`
//! is the oracle in the e2e suite, tests/tests/users.rs, where sudo sees the
//! sandbox's /etc; here the root is a temp dir sudo cannot be pointed at.)

mod accounts_common;

use std::fs;

use accessd::accounts::{self, AccountsConfig, NewUser};
use accounts_common::*;

fn spec(name: &str, sudo: bool) -> NewUser {
    NewUser {
        name: user(name),
        sudo,
        shell: None,
        password: None,
    }
}

fn has_sudo(root: &std::path::Path, name: &str) -> bool {
    accounts::list_users(&sys(root))
        .unwrap()
        .iter()
        .find(|u| u.record.name == name)
        .unwrap_or_else(|| panic!("{name} is not listed"))
        .sudo
}

fn members(root: &std::path::Path, file: &str, group: &str, idx: usize) -> Vec<String> {
    entry(root, file, group)
        .map(|l| {
            l.split(':')
                .nth(idx)
                .unwrap_or("")
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn create_user_without_sudo_removes_a_stale_accessd_dropin() {
    if !prerequisites(&["userdel"]) {
        return;
    }
    let a = fixture();
    let s = sys(a.path());
    accounts::create_user(&s, &AccountsConfig::default(), &spec("carol", true)).unwrap();
    assert!(a.path().join("etc/sudoers.d/carol").exists());
    // Plain userdel leaves accessd's drop-in behind.
    run("userdel", &["-R", &root_arg(a.path()), "carol"], None);
    assert!(a.path().join("etc/sudoers.d/carol").exists());

    let c = accounts::create_user(&s, &AccountsConfig::default(), &spec("carol", false)).unwrap();
    assert_eq!(c.sudo, None);
    assert!(
        !a.path().join("etc/sudoers.d/carol").exists(),
        "the new carol inherits the old carol's NOPASSWD drop-in"
    );
    assert!(!has_sudo(a.path(), "carol"));
}

#[test]
fn create_user_without_sudo_drops_a_stale_admin_group_membership() {
    if !prerequisites(&[]) {
        return;
    }
    let a = fixture();
    if entry(a.path(), "group", "sudo").is_none() {
        eprintln!("SKIPPED: this host has no sudo group");
        return;
    }
    // A member entry left by another tool (or a hand edit) for a user that
    // no longer exists.
    for (file, idx) in [("group", 3), ("gshadow", 3), ("gshadow", 2)] {
        let p = a.path().join("etc").join(file);
        let Ok(text) = fs::read_to_string(&p) else {
            continue;
        };
        let out: String = text
            .lines()
            .map(|l| {
                let mut f: Vec<String> = l.split(':').map(str::to_owned).collect();
                if f[0] == "sudo" && f.len() > idx {
                    f[idx] = if f[idx].is_empty() {
                        "carol".into()
                    } else {
                        format!("{},carol", f[idx])
                    };
                }
                f.join(":") + "\n"
            })
            .collect();
        fs::write(&p, out).unwrap();
    }
    assert!(members(a.path(), "group", "sudo", 3).contains(&"carol".to_string()));

    accounts::create_user(
        &sys(a.path()),
        &AccountsConfig::default(),
        &spec("carol", false),
    )
    .unwrap();
    assert!(
        !members(a.path(), "group", "sudo", 3).contains(&"carol".to_string()),
        "the new carol is in the sudo group"
    );
    if a.path().join("etc/gshadow").exists() {
        assert!(!members(a.path(), "gshadow", "sudo", 3).contains(&"carol".to_string()));
        assert!(!members(a.path(), "gshadow", "sudo", 2).contains(&"carol".to_string()));
    }
    assert!(!has_sudo(a.path(), "carol"));
}

#[test]
fn create_user_without_sudo_fails_on_a_foreign_grant() {
    if !prerequisites(&[]) {
        return;
    }
    let a = fixture();
    // cloud-init's file, for a carol of an earlier life of this image.
    fs::write(
        a.path().join("etc/sudoers.d/90-cloud-init-users"),
        "# Created by cloud-init\ncarol ALL=(ALL) NOPASSWD:ALL\n",
    )
    .unwrap();
    let before = whole_tree(a.path());
    let e = accounts::create_user(
        &sys(a.path()),
        &AccountsConfig::default(),
        &spec("carol", false),
    )
    .unwrap_err();
    assert_eq!(e.code().as_str(), "foreign_grant", "{e}");
    assert!(e.to_string().contains("90-cloud-init-users"), "{e}");
    assert_tree_unchanged(a.path(), &before, "a refused create_user changed files");
}

#[test]
fn inventory_sudo_follows_every_rule_sudo_reads() {
    if !prerequisites(&["useradd"]) {
        return;
    }
    let a = fixture();
    let sudoers = fs::read_to_string(a.path().join("etc/sudoers")).unwrap_or_default();
    if !sudoers.contains("@includedir /etc/sudoers.d")
        && !sudoers.contains("#includedir /etc/sudoers.d")
    {
        eprintln!("SKIPPED: this host's sudoers does not include /etc/sudoers.d");
        return;
    }
    for u in ["dave", "erin", "fred"] {
        useradd(a.path(), &["-m", u]);
    }
    let d = a.path().join("etc/sudoers.d");
    fs::write(d.join("ops"), "User_Alias OPS = dave\nOPS ALL=(ALL) ALL\n").unwrap();
    // sudo never reads a drop-in whose name has a dot.
    fs::write(d.join("erin.disabled"), "erin ALL=(ALL) ALL\n").unwrap();
    assert!(has_sudo(a.path(), "dave"), "a rule through a User_Alias");
    assert!(!has_sudo(a.path(), "erin"), "a file sudo skips");
    assert!(!has_sudo(a.path(), "fred"));
    if sudoers.lines().any(|l| l.starts_with("root")) {
        assert!(has_sudo(a.path(), "root"), "root's rule in /etc/sudoers");
    }
}

#[test]
fn a_failed_create_puts_back_the_stale_dropin_it_removed() {
    if !prerequisites(&["userdel"]) {
        return;
    }
    let a = fixture();
    let s = sys(a.path());
    accounts::create_user(&s, &AccountsConfig::default(), &spec("gail", true)).unwrap();
    run("userdel", &["-R", &root_arg(a.path()), "-r", "gail"], None);
    let before = whole_tree(a.path());
    let e =
        accounts::create_user_then(&s, &AccountsConfig::default(), &spec("gail", false), |_| {
            Err::<(), _>(accessd::error::Error::invalid("the key step failed"))
        })
        .unwrap_err();
    assert!(e.to_string().contains("key step"), "{e}");
    assert_tree_unchanged(a.path(), &before, "a failed create_user changed files");
}
