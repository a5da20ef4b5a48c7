//! create_user / delete_user through the engine (signed commands on a
//! throwaway root): what a `failed` result promises, which accounts a
//! command may name, and what a deleted user leaves behind for the next
//! user of the same name.

mod protocol_support;

use std::fs;
use std::os::unix::fs::symlink;
use std::process::Command;

use accessd::engine::Status;
use accessd::error::Code;
use protocol_support::*;
use serde_json::json;

fn rig() -> Option<Rig> {
    if !require(is_root(), "root (files are chowned to new users)") {
        return None;
    }
    if !require(
        accessd::sys::find_program("useradd").is_some(),
        "useradd (the oracle and fixture maker)",
    ) {
        return None;
    }
    Some(Rig::new())
}

fn run(prog: &str, args: &[&str]) {
    let out = Command::new(prog).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn root_str(rig: &Rig) -> String {
    rig.root.to_str().unwrap().to_owned()
}

fn authorized_keys(rig: &Rig, user: &str) -> String {
    fs::read_to_string(rig.root.join(format!("home/{user}/.ssh/authorized_keys"))).unwrap()
}

#[test]
fn failed_create_user_keeps_an_existing_home() {
    let Some(rig) = rig() else { return };
    // alice was deleted without -r: her home and files stay behind.
    let r = root_str(&rig);
    run("useradd", &["-R", &r, "-m", "alice"]);
    run("userdel", &["-R", &r, "alice"]);
    let home = rig.root.join("home/alice");
    fs::write(home.join("thesis.tex"), b"years of work\n").unwrap();
    fs::create_dir_all(home.join("dotfiles/ssh")).unwrap();
    // A dotfile manager made ~/.ssh a symlink: the key step must refuse it.
    symlink("dotfiles/ssh", home.join(".ssh")).unwrap();
    let mut e = rig.engine();
    let before = rig.snapshot();

    let h = e.handle(&rig.signed(
        "c-home",
        "create_user",
        json!({"user": "alice", "keys": [KEY1]}),
    ));
    assert_eq!(h.status, Status::Failed, "{:?} {}", h.code, h.message);
    assert!(home.join("thesis.tex").exists(), "the old home was removed");
    // `failed`: every file as before, the old home and the FILE- backups
    // included.
    assert_unchanged(&before, &rig.snapshot(), "failed create_user");
}

#[test]
fn a_create_user_that_succeeds_on_an_existing_home_keeps_its_files() {
    let Some(rig) = rig() else { return };
    let r = root_str(&rig);
    run("useradd", &["-R", &r, "-m", "alice"]);
    run("userdel", &["-R", &r, "alice"]);
    fs::write(rig.root.join("home/alice/notes"), b"mine\n").unwrap();
    let mut e = rig.engine();
    let h = e.handle(&rig.signed(
        "c-home2",
        "create_user",
        json!({"user": "alice", "keys": [KEY1]}),
    ));
    assert_eq!(h.code, Code::Ok, "{}", h.message);
    assert_eq!(
        fs::read(rig.root.join("home/alice/notes")).unwrap(),
        b"mine\n"
    );
    assert!(authorized_keys(&rig, "alice").contains(KEY1));
}

/// A passwd entry with this uid (and a matching group), as a package's
/// postinst would add it.
fn add_account(rig: &Rig, name: &str, uid: u32) {
    let r = root_str(rig);
    run(
        "useradd",
        &[
            "-R",
            &r,
            "-u",
            &uid.to_string(),
            "-K",
            "UID_MIN=1",
            "-K",
            "UID_MAX=4000000000",
            "-m",
            name,
        ],
    );
}

#[test]
fn commands_name_only_root_and_regular_users() {
    let Some(rig) = rig() else { return };
    // Above UID_MAX (60000 in Debian's login.defs): nobody-like accounts.
    add_account(&rig, "highsvc", 61000);
    // Below UID_MIN: a system account (daemon, www-data, sshd...).
    add_account(&rig, "lowsvc", 500);
    let mut e = rig.engine();
    let before = rig.snapshot();
    let crypt = "$6$saltsaltsaltsalt$WrpdWeQZW5Xh5vP.tJ5Kb.q.quJCX1FsXGt5OLkwq.4BJeRDLzoJz2qZ/95dwj2zAQ3.ccUmPs5KURh5BShoD/";
    let mut n = 0;
    for user in ["highsvc", "lowsvc", "nobody", "daemon"] {
        if !rig.root.join("etc/passwd").exists()
            || !fs::read_to_string(rig.root.join("etc/passwd"))
                .unwrap()
                .lines()
                .any(|l| l.starts_with(&format!("{user}:")))
        {
            continue;
        }
        for (op, args) in [
            ("delete_user", json!({"user": user})),
            ("delete_user", json!({"user": user, "remove_home": true})),
            ("add_keys", json!({"user": user, "keys": [KEY1]})),
            ("replace_keys", json!({"user": user, "keys": [KEY1]})),
            ("remove_keys", json!({"user": user, "keys": [KEY2_FP]})),
            (
                "set_password",
                json!({"user": user, "password": {"crypt": crypt}}),
            ),
            (
                "set_password",
                json!({"user": user, "password": {"crypt": crypt}, "apply_at": "next_boot"}),
            ),
        ] {
            n += 1;
            let h = e.handle(&rig.signed(&format!("c-sys-{n}"), op, args));
            assert_eq!(
                (h.code, h.status),
                (Code::InvalidCommand, Status::Rejected),
                "{op} for {user}: {}",
                h.message
            );
            assert!(h.message.contains(user), "{}", h.message);
        }
    }
    assert!(n >= 14, "the system accounts were not there to name");
    assert_unchanged(&before, &rig.snapshot(), "commands naming system accounts");

    // root (uid 0) may be named, and the inventory lists only root and
    // UID_MIN..UID_MAX.
    let h = e.handle(&rig.signed(
        "c-root",
        "add_keys",
        json!({"user": "root", "keys": [KEY1]}),
    ));
    assert_eq!(h.code, Code::Ok, "{}", h.message);
    let h = e.handle(&rig.signed("c-inv", "inventory", json!({})));
    let p = payload(&agent_key(&e), &h);
    let names: Vec<&str> = p.data["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"root"), "{names:?}");
    for sys in ["highsvc", "lowsvc", "nobody", "daemon"] {
        assert!(!names.contains(&sys), "inventory lists {sys}: {names:?}");
    }
}

#[test]
fn replace_keys_on_a_recreated_user_ignores_the_old_users_record() {
    let Some(rig) = rig() else { return };
    let mut e = rig.engine();
    let ok = |e: &mut accessd::engine::Engine, id: &str, op: &str, args: serde_json::Value| {
        let h = e.handle(&rig.signed(id, op, args));
        assert_eq!(h.code, Code::Ok, "{op}: {}", h.message);
    };
    ok(
        &mut e,
        "c-1",
        "create_user",
        json!({"user": "alice", "keys": [KEY1]}),
    );
    ok(
        &mut e,
        "c-2",
        "delete_user",
        json!({"user": "alice", "remove_home": true}),
    );
    assert!(
        !rig.state.join("keys/alice.json").exists(),
        "the managed-key record outlived the user"
    );
    // A new alice puts KEY1 there herself: it is not accessd's.
    ok(&mut e, "c-3", "create_user", json!({"user": "alice"}));
    let ssh = rig.root.join("home/alice/.ssh");
    fs::create_dir_all(&ssh).unwrap();
    fs::write(ssh.join("authorized_keys"), format!("{KEY1}\n")).unwrap();
    let (uid, gid) = {
        use std::os::unix::fs::MetadataExt;
        let md = fs::metadata(rig.root.join("home/alice")).unwrap();
        (md.uid(), md.gid())
    };
    for p in [&ssh, &ssh.join("authorized_keys")] {
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    }
    ok(
        &mut e,
        "c-4",
        "replace_keys",
        json!({"user": "alice", "keys": [KEY2]}),
    );
    let text = authorized_keys(&rig, "alice");
    assert!(
        text.contains(KEY1),
        "the new alice's own key was removed: {text}"
    );
    assert!(text.contains(KEY2), "{text}");
}

#[test]
fn a_user_created_again_after_plain_userdel_does_not_inherit_the_key_record() {
    let Some(rig) = rig() else { return };
    let mut e = rig.engine();
    let h = e.handle(&rig.signed("c-1", "create_user", json!({"user": "bob", "keys": [KEY1]})));
    assert_eq!(h.code, Code::Ok, "{}", h.message);
    // Removed behind accessd's back: the record stays in the state dir.
    run("userdel", &["-R", &root_str(&rig), "-r", "bob"]);
    assert!(rig.state.join("keys/bob.json").exists());
    let h = e.handle(&rig.signed("c-2", "create_user", json!({"user": "bob"})));
    assert_eq!(h.code, Code::Ok, "{}", h.message);
    assert!(
        !rig.state.join("keys/bob.json").exists(),
        "the old bob's record is the new bob's"
    );
}

#[test]
fn a_staged_password_of_a_deleted_user_never_reaches_a_new_user_of_the_name() {
    let Some(rig) = rig() else { return };
    let mut e = rig.engine();
    let crypt = "$6$saltsaltsaltsalt$WrpdWeQZW5Xh5vP.tJ5Kb.q.quJCX1FsXGt5OLkwq.4BJeRDLzoJz2qZ/95dwj2zAQ3.ccUmPs5KURh5BShoD/";
    let ok = |e: &mut accessd::engine::Engine, id: &str, op: &str, args: serde_json::Value| {
        let h = e.handle(&rig.signed(id, op, args));
        assert_eq!(h.code, Code::Ok, "{op}: {}", h.message);
        payload(&agent_key(e), &h)
    };
    ok(&mut e, "c-1", "create_user", json!({"user": "ivan"}));
    ok(
        &mut e,
        "c-2",
        "set_password",
        json!({"user": "ivan", "password": {"crypt": crypt}, "apply_at": "next_boot"}),
    );
    let p = ok(&mut e, "c-3", "delete_user", json!({"user": "ivan"}));
    assert_eq!(p.data["staged_dropped"], json!(["c-2"]), "{}", p.data);
    ok(&mut e, "c-4", "create_user", json!({"user": "ivan"}));
    drop(e);
    let mut e = rig.engine_after_reboot();
    let results = e.apply_staged().unwrap();
    assert!(
        results.is_empty(),
        "the old ivan's staged password was applied at boot: {:?}",
        results.iter().map(|h| &h.message).collect::<Vec<_>>()
    );
    assert_eq!(rig.shadow_hash("ivan").as_deref(), Some("!"));
}

#[test]
fn a_password_staged_before_a_plain_userdel_is_not_the_new_users() {
    let Some(rig) = rig() else { return };
    let mut e = rig.engine();
    let crypt = "$6$saltsaltsaltsalt$WrpdWeQZW5Xh5vP.tJ5Kb.q.quJCX1FsXGt5OLkwq.4BJeRDLzoJz2qZ/95dwj2zAQ3.ccUmPs5KURh5BShoD/";
    for (id, op, args) in [
        ("c-1", "create_user", json!({"user": "jane"})),
        (
            "c-2",
            "set_password",
            json!({"user": "jane", "password": {"crypt": crypt}, "apply_at": "next_boot"}),
        ),
    ] {
        let h = e.handle(&rig.signed(id, op, args));
        assert_eq!(h.code, Code::Ok, "{op}: {}", h.message);
    }
    run("userdel", &["-R", &root_str(&rig), "-r", "jane"]);
    let h = e.handle(&rig.signed("c-3", "create_user", json!({"user": "jane"})));
    assert_eq!(h.code, Code::Ok, "{}", h.message);
    assert_eq!(
        payload(&agent_key(&e), &h).data["staged_dropped"],
        json!(["c-2"])
    );
    drop(e);
    let mut e = rig.engine_after_reboot();
    assert!(e.apply_staged().unwrap().is_empty());
    assert_eq!(rig.shadow_hash("jane").as_deref(), Some("!"));
}

#[test]
fn a_home_that_cannot_be_removed_after_the_delete_is_ok_with_a_warning_not_failed() {
    let Some(rig) = rig() else { return };
    let mut e = rig.engine();
    let h = e.handle(&rig.signed("c-1", "create_user", json!({"user": "olga"})));
    assert_eq!(h.code, Code::Ok, "{}", h.message);
    // The home is not a directory by delete time (a file put in its
    // place): home removal refuses it, after the account files are written.
    let home = rig.root.join("home/olga");
    fs::remove_dir_all(&home).unwrap();
    fs::write(&home, b"not a directory\n").unwrap();
    let h = e.handle(&rig.signed(
        "c-2",
        "delete_user",
        json!({"user": "olga", "remove_home": true}),
    ));
    assert_eq!(
        (h.status, h.code),
        (Status::Ok, Code::Ok),
        "the user is gone, yet: {}",
        h.message
    );
    assert!(!fs::read_to_string(rig.root.join("etc/passwd"))
        .unwrap()
        .contains("olga:"));
    assert!(
        h.message.contains("its home /home/olga was not removed"),
        "{}",
        h.message
    );
    let p = payload(&agent_key(&e), &h);
    assert_eq!(p.data["home_removed"], json!(false), "{}", p.data);
    let warnings = p.data["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{}", p.data);
    assert!(
        warnings[0].as_str().unwrap().contains("not a directory"),
        "{}",
        p.data
    );
    // The file is still there: nothing was removed that was not the home.
    assert!(home.is_file());
}
