//! create_user against `useradd -m -R ROOT` on an identical tree.

mod accounts_common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use accessd::accounts::{self, AccountsConfig, CryptHash, NewUser, Password, PasswordState};
use accessd::error::Code;
use accounts_common::*;

fn spec(name: &str) -> NewUser {
    NewUser {
        name: user(name),
        sudo: false,
        shell: None,
        password: None,
    }
}

/// `spec(name)` asking for sudo.
fn sudo_spec(name: &str) -> NewUser {
    NewUser {
        sudo: true,
        ..spec(name)
    }
}

#[test]
fn same_result_as_useradd_m() {
    if !prerequisites(&["useradd", "pwck", "grpck"]) {
        return;
    }
    let a = fixture();
    // A second user first, so that uid/gid/subid allocation is exercised
    // past the first free values.
    useradd(a.path(), &["-m", "first"]);
    let b = clone_tree(a.path());
    let baseline = check_report(a.path());

    useradd(a.path(), &["-m", "bob"]);
    let created =
        accounts::create_user(&sys(b.path()), &AccountsConfig::default(), &spec("bob")).unwrap();

    assert_eq!(snapshot(a.path(), true), snapshot(b.path(), true));
    assert_eq!(home_tree(a.path(), "bob"), home_tree(b.path(), "bob"));
    assert!(
        home_tree(b.path(), "bob").len() > 1,
        "skeleton files were copied"
    );
    let line = entry(b.path(), "passwd", "bob").unwrap();
    assert_eq!(
        line,
        format!(
            "bob:x:{}:{}::/home/bob:{}",
            created.uid, created.gid, created.shell
        )
    );
    assert_eq!(created.sudo, None);
    assert_no_new_complaints(b.path(), &baseline);

    let rec = accounts::lookup(&sys(b.path()), &user("bob")).unwrap();
    assert_eq!(
        (rec.uid, rec.gid, rec.home.as_path()),
        (created.uid, created.gid, std::path::Path::new("/home/bob"))
    );
    let e = accounts::lookup(&sys(b.path()), &user("nobody-such")).unwrap_err();
    assert_eq!(e.code(), Code::UserNotFound);

    let listed = accounts::list_users(&sys(b.path())).unwrap();
    let bob = listed.iter().find(|u| u.record.name == "bob").unwrap();
    assert_eq!(bob.password, PasswordState::Locked);
    assert!(!bob.sudo);
}

#[test]
fn with_password_and_sudo_same_as_useradd_then_usermod_a_g_sudo() {
    if !prerequisites(&["useradd", "usermod", "openssl", "pwck", "grpck"]) {
        return;
    }
    let a = fixture();
    let sudoers = fs::read_to_string(a.path().join("etc/sudoers")).unwrap_or_default();
    let group = fs::read_to_string(a.path().join("etc/group")).unwrap();
    if !sudoers.lines().any(|l| l.starts_with("%sudo"))
        || !group.lines().any(|l| l.starts_with("sudo:"))
    {
        eprintln!("SKIPPED: this host's sudoers does not enable %sudo");
        return;
    }
    let b = clone_tree(a.path());
    let baseline = check_report(a.path());
    let hash = known_hash();

    useradd(a.path(), &["-m", "-p", &hash, "carol"]);
    run(
        "usermod",
        &["-R", &root_arg(a.path()), "-aG", "sudo", "carol"],
        None,
    );
    let created = accounts::create_user(
        &sys(b.path()),
        &AccountsConfig::default(),
        &NewUser {
            password: Some(Password::Crypt(CryptHash::parse(&hash).unwrap())),
            ..sudo_spec("carol")
        },
    )
    .unwrap();
    assert_eq!(created.sudo.as_deref(), Some("group:sudo"));
    assert_eq!(snapshot(a.path(), false), snapshot(b.path(), false));
    assert_eq!(home_tree(a.path(), "carol"), home_tree(b.path(), "carol"));
    assert_no_new_complaints(b.path(), &baseline);
    let listed = accounts::list_users(&sys(b.path())).unwrap();
    let carol = listed.iter().find(|u| u.record.name == "carol").unwrap();
    assert!(carol.sudo);
    assert_eq!(carol.password, PasswordState::Set);
}

#[test]
fn key_only_user_gets_a_validated_nopasswd_dropin() {
    if !prerequisites(&["visudo"]) {
        return;
    }
    let a = fixture();
    let created = accounts::create_user(
        &sys(a.path()),
        &AccountsConfig::default(),
        &sudo_spec("ecs-user"),
    )
    .unwrap();
    assert_eq!(
        created.sudo.as_deref(),
        Some("dropin:/etc/sudoers.d/ecs-user")
    );
    let p = a.path().join("etc/sudoers.d/ecs-user");
    let md = fs::metadata(&p).unwrap();
    assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o440, 0, 0));
    let text = fs::read_to_string(&p).unwrap();
    assert!(
        text.contains("ecs-user ALL=(ALL:ALL) NOPASSWD:ALL\n"),
        "{text}"
    );
    run("visudo", &["-c", "-f", p.to_str().unwrap()], None);
    // The check copy is gone: only the drop-in is in sudoers.d.
    let names: Vec<_> = fs::read_dir(a.path().join("etc/sudoers.d"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("ecs-user")]);
    let listed = accounts::list_users(&sys(a.path())).unwrap();
    assert!(
        listed
            .iter()
            .find(|u| u.record.name == "ecs-user")
            .unwrap()
            .sudo
    );
}

#[test]
fn shell_must_be_listed_in_etc_shells() {
    if !prerequisites(&[]) {
        return;
    }
    let a = fixture();
    let before = whole_tree(a.path());
    let e = accounts::create_user(
        &sys(a.path()),
        &AccountsConfig::default(),
        &NewUser {
            shell: Some("/tmp/evil".into()),
            ..spec("dan")
        },
    )
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidCommand);
    assert!(e.to_string().contains("shells"), "{e}");
    assert_eq!(before, whole_tree(a.path()));

    let shells = fs::read_to_string(a.path().join("etc/shells")).unwrap();
    let listed = shells
        .lines()
        .find(|l| l.starts_with('/'))
        .unwrap()
        .to_owned();
    let c = accounts::create_user(
        &sys(a.path()),
        &AccountsConfig::default(),
        &NewUser {
            shell: Some(listed.clone()),
            ..spec("dan")
        },
    )
    .unwrap();
    assert_eq!(c.shell, listed);
    assert!(entry(a.path(), "passwd", "dan")
        .unwrap()
        .ends_with(&format!(":{listed}")));
}

#[test]
fn existing_user_is_user_exists_and_nothing_changes() {
    if !prerequisites(&["useradd"]) {
        return;
    }
    let a = fixture();
    useradd(a.path(), &["-m", "erin"]);
    let before = whole_tree(a.path());
    let e = accounts::create_user(&sys(a.path()), &AccountsConfig::default(), &spec("erin"))
        .unwrap_err();
    assert_eq!(e.code(), Code::UserExists);
    let e = accounts::create_user(&sys(a.path()), &AccountsConfig::default(), &spec("root"))
        .unwrap_err();
    assert_eq!(e.code(), Code::UserExists);
    assert_tree_unchanged(a.path(), &before, "files changed");
}

#[test]
fn a_foreign_sudoers_file_of_the_same_name_is_not_overwritten() {
    if !prerequisites(&[]) {
        return;
    }
    let a = fixture();
    fs::write(
        a.path().join("etc/sudoers.d/frank"),
        b"frank ALL=(ALL) /usr/bin/true\n",
    )
    .unwrap();
    let before = whole_tree(a.path());
    let e = accounts::create_user(
        &sys(a.path()),
        &AccountsConfig::default(),
        &sudo_spec("frank"),
    )
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidCommand, "{e}");
    assert_tree_unchanged(a.path(), &before, "files changed");
}

#[test]
fn same_result_as_useradd_m_without_user_groups_and_with_home_mode() {
    if !prerequisites(&["useradd"]) {
        return;
    }
    let a = fixture();
    let defs = fs::read_to_string(a.path().join("etc/login.defs")).unwrap();
    let defs: String = defs
        .lines()
        .filter(|l| !l.starts_with("USERGROUPS_ENAB") && !l.starts_with("HOME_MODE"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + "USERGROUPS_ENAB no\nHOME_MODE 0750\n";
    fs::write(a.path().join("etc/login.defs"), defs).unwrap();
    let b = clone_tree(a.path());

    useradd(a.path(), &["-m", "gina"]);
    let c =
        accounts::create_user(&sys(b.path()), &AccountsConfig::default(), &spec("gina")).unwrap();
    assert_eq!(snapshot(a.path(), true), snapshot(b.path(), true));
    assert_eq!(home_tree(a.path(), "gina"), home_tree(b.path(), "gina"));
    assert_eq!(c.gid, 100);
    let md = fs::metadata(b.path().join("home/gina")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o750);
}

#[test]
fn an_existing_home_is_kept_as_useradd_m_keeps_it() {
    if !prerequisites(&["useradd", "userdel"]) {
        return;
    }
    let a = fixture();
    // Left by `userdel` without -r, with the user's own files.
    useradd(a.path(), &["-m", "hana"]);
    run("userdel", &["-R", &root_arg(a.path()), "hana"], None);
    fs::write(a.path().join("home/hana/notes.txt"), b"mine\n").unwrap();
    fs::remove_file(a.path().join("home/hana/.bashrc")).ok();
    let b = clone_tree(a.path());

    // useradd -m warns and copies nothing into an existing home.
    let out = std::process::Command::new("useradd")
        .args(["-R", &root_arg(a.path()), "-m", "hana"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    accounts::create_user(&sys(b.path()), &AccountsConfig::default(), &spec("hana")).unwrap();
    assert_eq!(snapshot(a.path(), true), snapshot(b.path(), true));
    assert_eq!(home_tree(a.path(), "hana"), home_tree(b.path(), "hana"));
    assert_eq!(
        fs::read(b.path().join("home/hana/notes.txt")).unwrap(),
        b"mine\n"
    );
}

/// The fixture's login.defs with `settings` replacing the keys they name.
fn set_login_defs(root: &std::path::Path, settings: &[(&str, &str)]) {
    let path = root.join("etc/login.defs");
    let defs = fs::read_to_string(&path).unwrap();
    let mut out: String = defs
        .lines()
        .filter(|l| {
            let key = l.split_whitespace().next().unwrap_or("");
            !settings.iter().any(|(k, _)| *k == key)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    for (k, v) in settings {
        out += &format!("{k} {v}\n");
    }
    fs::write(path, out).unwrap();
}

#[test]
fn the_private_group_gid_stays_inside_gid_min_max_as_useradd_keeps_it() {
    if !prerequisites(&["useradd"]) {
        return;
    }
    // The uid (from 1000) is free as a gid but outside GID_MIN..GID_MAX:
    // useradd does not take it for the private group.
    let a = fixture();
    set_login_defs(a.path(), &[("GID_MIN", "30000"), ("GID_MAX", "40000")]);
    let b = clone_tree(a.path());

    useradd(a.path(), &["-m", "ivan"]);
    let c =
        accounts::create_user(&sys(b.path()), &AccountsConfig::default(), &spec("ivan")).unwrap();
    assert_eq!(snapshot(a.path(), true), snapshot(b.path(), true));
    assert!((30000..=40000).contains(&c.gid), "gid {}", c.gid);
    assert_ne!(c.gid, c.uid);
}

#[test]
fn an_inverted_uid_range_is_refused_as_useradd_refuses_it() {
    if !prerequisites(&["useradd"]) {
        return;
    }
    let a = fixture();
    set_login_defs(a.path(), &[("UID_MIN", "50000"), ("UID_MAX", "40000")]);
    let before = whole_tree(a.path());
    let out = std::process::Command::new("useradd")
        .args(["-R", &root_arg(a.path()), "-m", "judy"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "useradd accepted UID_MIN > UID_MAX");
    assert_tree_unchanged(a.path(), &before, "useradd changed files");

    let e = accounts::create_user(&sys(a.path()), &AccountsConfig::default(), &spec("judy"))
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidCommand, "{e}");
    assert!(e.to_string().contains("UID_MIN (50000)"), "{e}");
    assert_tree_unchanged(a.path(), &before, "files changed");
}
