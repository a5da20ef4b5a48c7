//! delete_user against `userdel [-r] -R ROOT` on an identical tree.

mod accounts_common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use accessd::accounts::{self, AccountsConfig, NewUser};
use accessd::error::Code;
use accounts_common::*;

/// Two identical trees holding users made by the real useradd.
fn pair(setup: impl Fn(&Path)) -> (tempfile::TempDir, tempfile::TempDir, Vec<String>) {
    let a = fixture();
    setup(a.path());
    let baseline = check_report(a.path());
    let b = clone_tree(a.path());
    (a, b, baseline)
}

#[test]
fn same_result_as_userdel_r() {
    if !prerequisites(&["useradd", "userdel", "usermod", "pwck", "grpck"]) {
        return;
    }
    let (a, b, baseline) = pair(|r| {
        useradd(r, &["-m", "alice"]);
        useradd(r, &["-m", "bob"]);
        useradd(r, &["-m", "carol"]);
        // bob is a supplementary member of alice's and carol's groups, and an
        // admin of carol's group in gshadow.
        run(
            "usermod",
            &["-R", r.to_str().unwrap(), "-aG", "alice,carol", "bob"],
            None,
        );
        run(
            "gpasswd",
            &["-Q", r.to_str().unwrap(), "-A", "bob", "carol"],
            None,
        );
        fs::write(r.join("home/bob/notes.txt"), b"mine").unwrap();
        fs::create_dir_all(r.join("home/bob/deep/er")).unwrap();
    });
    run("userdel", &["-r", "-R", &root_arg(a.path()), "bob"], None);
    accounts::delete_user(&sys(b.path()), &user("bob"), true).unwrap();

    assert_eq!(snapshot(a.path(), true), snapshot(b.path(), true));
    assert!(!b.path().join("home/bob").exists());
    assert_eq!(whole_tree(a.path()).len(), whole_tree(b.path()).len());
    assert!(entry(b.path(), "group", "bob").is_none());
    assert!(entry(b.path(), "subuid", "bob").is_none());
    assert_no_new_complaints(b.path(), &baseline);
}

#[test]
fn same_result_as_userdel_without_r_keeps_home() {
    if !prerequisites(&["useradd", "userdel"]) {
        return;
    }
    let (a, b, _) = pair(|r| useradd(r, &["-m", "dave"]));
    run("userdel", &["-R", &root_arg(a.path()), "dave"], None);
    accounts::delete_user(&sys(b.path()), &user("dave"), false).unwrap();
    assert_eq!(snapshot(a.path(), true), snapshot(b.path(), true));
    assert_eq!(home_tree(a.path(), "dave"), home_tree(b.path(), "dave"));
    assert!(b.path().join("home/dave/.bashrc").exists());
}

#[test]
fn remove_home_never_follows_symlinks_out_of_it() {
    if !prerequisites(&["useradd"]) {
        return;
    }
    let a = fixture();
    useradd(a.path(), &["-m", "mallory"]);
    let outside = a.path().join("precious");
    fs::create_dir_all(outside.join("sub")).unwrap();
    fs::write(outside.join("sub/file"), b"keep").unwrap();
    fs::write(a.path().join("etc/keepme"), b"keep").unwrap();
    let home = a.path().join("home/mallory");
    symlink(&outside, home.join("dirlink")).unwrap();
    symlink(a.path().join("etc/keepme"), home.join("filelink")).unwrap();
    symlink("/", home.join("rootlink")).unwrap();
    fs::create_dir_all(home.join("d")).unwrap();
    symlink(&outside, home.join("d/inner")).unwrap();

    accounts::delete_user(&sys(a.path()), &user("mallory"), true).unwrap();
    assert!(!home.exists());
    assert_eq!(fs::read(outside.join("sub/file")).unwrap(), b"keep");
    assert_eq!(fs::read(a.path().join("etc/keepme")).unwrap(), b"keep");
}

#[test]
fn refuses_root_and_system_accounts() {
    if !prerequisites(&[]) {
        return;
    }
    let a = fixture();
    let before = whole_tree(a.path());
    for name in ["root", "daemon"] {
        let e = accounts::delete_user(&sys(a.path()), &user(name), true).unwrap_err();
        assert_eq!(e.code(), Code::InvalidCommand, "{name}: {e}");
        assert!(e.to_string().contains("refusing"), "{e}");
    }
    let e = accounts::delete_user(&sys(a.path()), &user("nobody-here"), true).unwrap_err();
    assert_eq!(e.code(), Code::UserNotFound);
    let mut after = whole_tree(a.path());
    after.remove(Path::new("etc/.pwd.lock"));
    assert_eq!(before, after);
}

#[test]
fn removes_accessds_sudoers_dropin_but_not_a_foreign_one() {
    if !prerequisites(&[]) {
        return;
    }
    let a = fixture();
    let s = sys(a.path());
    for name in ["kim", "lee"] {
        accounts::create_user(
            &s,
            &AccountsConfig::default(),
            &NewUser {
                name: user(name),
                sudo: true,
                shell: None,
                password: None,
            },
        )
        .unwrap();
    }
    // lee's file is replaced by one accessd did not write: it stays.
    fs::write(a.path().join("etc/sudoers.d/lee"), b"lee ALL=(ALL) ALL\n").unwrap();
    accounts::delete_user(&s, &user("kim"), true).unwrap();
    accounts::delete_user(&s, &user("lee"), true).unwrap();
    assert!(!a.path().join("etc/sudoers.d/kim").exists());
    assert!(a.path().join("etc/sudoers.d/lee").exists());
    assert!(
        !a.path().join("etc/sudoers.d/kim-").exists(),
        "no backup where sudo would read it"
    );
}
