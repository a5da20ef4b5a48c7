//! Hostile input: every case is refused with the protocol's code and leaves
//! every file under the root byte for byte as it was.

mod accounts_common;

use std::fs;
use std::os::unix::fs::symlink;

use accessd::accounts::{self, AccountsConfig, CryptHash, NewUser, Password};
use accessd::error::{Code, Error};
use accessd::names::UserName;
use accessd::secret::Secret;
use accounts_common::*;

#[test]
fn hostile_inputs_are_refused_and_change_nothing() {
    if !prerequisites(&["useradd"]) {
        return;
    }
    let a = fixture();
    useradd(a.path(), &["-m", "victim"]);
    let before = whole_tree(a.path());
    let s = sys(a.path());
    let cfg = AccountsConfig::default();
    let long = "a".repeat(33);

    // Names are refused before anything is read.
    for bad in [
        "a:b",
        "a\nb",
        "a/b",
        "..",
        "../etc",
        "Root",
        "VICTIM",
        long.as_str(),
        "",
        "-x",
        "a b",
    ] {
        let e = UserName::parse(bad).unwrap_err();
        assert_eq!(e.code(), Code::InvalidCommand, "{bad:?}");
    }
    // Crypt strings that could break a shadow line.
    let good = known_hash();
    for bad in [
        format!("{good}:0:0"),
        format!("{good}\nroot::0:0:99999:7:::"),
        format!("{good} "),
        "$1$abcdefgh$0123456789abcdef012345".to_string(),
        "!".to_string(),
        "".to_string(),
        good.replacen("$6$", "$6$x\t", 1),
    ] {
        let e = CryptHash::parse(&bad).unwrap_err();
        assert_eq!(e.code(), Code::InvalidCommand, "{bad:?}");
        assert!(
            !e.to_string().contains(&good),
            "the message must not echo the hash"
        );
    }

    let cases: Vec<(&str, Code, Error)> = vec![
        (
            "weak password",
            Code::WeakPassword,
            accounts::set_password(
                &s,
                &cfg,
                &user("victim"),
                &Password::Plain(Secret::new(b"password".to_vec())),
            )
            .unwrap_err(),
        ),
        (
            "too long password",
            Code::WeakPassword,
            accounts::set_password(
                &s,
                &cfg,
                &user("victim"),
                &Password::Plain(Secret::new([b'A', b'a', b'1'].repeat(30))),
            )
            .unwrap_err(),
        ),
        (
            "password with a newline",
            Code::WeakPassword,
            accounts::set_password(
                &s,
                &cfg,
                &user("victim"),
                &Password::Plain(Secret::new(b"Abcdef-1\nroot::".to_vec())),
            )
            .unwrap_err(),
        ),
        (
            "unknown user",
            Code::UserNotFound,
            accounts::set_password(
                &s,
                &cfg,
                &user("ghost"),
                &Password::Crypt(CryptHash::parse(&good).unwrap()),
            )
            .unwrap_err(),
        ),
        (
            "create with weak password",
            Code::WeakPassword,
            accounts::create_user(
                &s,
                &cfg,
                &NewUser {
                    name: user("newbie"),
                    sudo: false,
                    shell: None,
                    password: Some(Password::Plain(Secret::new(b"short".to_vec()))),
                },
            )
            .unwrap_err(),
        ),
        (
            "shell with a colon",
            Code::InvalidCommand,
            accounts::create_user(
                &s,
                &cfg,
                &NewUser {
                    name: user("newbie"),
                    sudo: false,
                    shell: Some("/bin/sh:0:0".into()),
                    password: None,
                },
            )
            .unwrap_err(),
        ),
        (
            "delete root",
            Code::InvalidCommand,
            accounts::delete_user(&s, &user("root"), true).unwrap_err(),
        ),
    ];
    for (what, code, e) in cases {
        assert_eq!(e.code(), code, "{what}: {e}");
        assert!(!e.to_string().contains("password\""), "{what}: {e}");
        assert_tree_unchanged(a.path(), &before, "files changed");
    }
}

#[test]
fn symlinked_shadow_is_unsafe_path_and_its_target_untouched() {
    if !prerequisites(&["useradd"]) {
        return;
    }
    let a = fixture();
    useradd(a.path(), &["victim"]);
    let target = a.path().join("elsewhere");
    fs::rename(a.path().join("etc/shadow"), &target).unwrap();
    symlink(&target, a.path().join("etc/shadow")).unwrap();
    let before = fs::read(&target).unwrap();
    let e = accounts::set_password(
        &sys(a.path()),
        &AccountsConfig::default(),
        &user("victim"),
        &Password::Crypt(CryptHash::parse(&known_hash()).unwrap()),
    )
    .unwrap_err();
    assert_eq!(e.code(), Code::UnsafePath, "{e}");
    assert_eq!(fs::read(&target).unwrap(), before);
    assert!(fs::symlink_metadata(a.path().join("etc/shadow"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(
        !a.path().join("etc/shadow.lock").exists() && !a.path().join("etc/passwd.lock").exists()
    );
}

#[test]
fn symlinked_home_parent_is_refused_on_create() {
    if !prerequisites(&[]) {
        return;
    }
    let a = fixture();
    fs::remove_dir(a.path().join("home")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path(), a.path().join("home")).unwrap();
    let before = whole_tree(a.path());
    let e = accounts::create_user(
        &sys(a.path()),
        &AccountsConfig::default(),
        &NewUser {
            name: user("newbie"),
            sudo: false,
            shell: None,
            password: None,
        },
    )
    .unwrap_err();
    assert_eq!(e.code(), Code::UnsafePath, "{e}");
    assert_tree_unchanged(a.path(), &before, "files changed");
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
}
