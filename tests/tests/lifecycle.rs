//! Account lifecycle against a real sshd: a locked account is refused by
//! every method and comes back with both after unlock; a forced password
//! change is what PAM asks for at the next login.

use accessd_e2e::{sandbox, KeyKind};

#[test]
fn a_locked_user_is_refused_with_a_key_and_a_password_and_logs_in_after_unlock() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    let key = sb.client_key("alice", KeyKind::Ed25519);
    let password = "L0cked-0ut-Pass!";
    sb.cmd("create_user")
        .user("alice")
        .password(password)
        .keys(&[&key])
        .send()
        .assert_ok();
    sb.assert_key_login("alice", &key);
    sb.assert_password_login("alice", password);
    let before = sb.shadow_entry("alice").unwrap();

    let r = sb.cmd("lock_user").user("alice").send();
    r.assert_ok();
    assert_eq!(r.payload["data"]["changed"], true, "{}", r.payload);
    sb.assert_no_key_login("alice", &key);
    sb.assert_no_password_login("alice", password);
    let locked = sb.shadow_entry("alice").unwrap();
    assert_eq!(locked[1], format!("!{}", before[1]), "hash behind a '!'");
    assert_eq!(locked[7], "1", "account expired, as usermod -e 1");

    // Again: ok, and nothing is written.
    let shadow = sb.read("/etc/shadow");
    let r = sb.cmd("lock_user").user("alice").send();
    r.assert_ok();
    assert_eq!(r.payload["data"]["changed"], false, "{}", r.payload);
    assert_eq!(sb.read("/etc/shadow"), shadow);

    let inv = sb.cmd("inventory").send();
    inv.assert_ok();
    let alice = inv.payload["data"]["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "alice")
        .cloned()
        .unwrap();
    assert_eq!(alice["locked"], true, "{alice}");

    sb.cmd("unlock_user").user("alice").send().assert_ok();
    assert_eq!(
        sb.shadow_entry("alice").unwrap(),
        before,
        "as before the lock"
    );
    sb.assert_key_login("alice", &key);
    sb.assert_password_login("alice", password);
    let r = sb.cmd("unlock_user").user("alice").send();
    r.assert_ok();
    assert_eq!(r.payload["data"]["changed"], false, "{}", r.payload);
}

#[test]
fn lock_user_refuses_root() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    let shadow = sb.read("/etc/shadow");
    sb.cmd("lock_user")
        .user("root")
        .send()
        .assert_rejected("invalid_command");
    assert_eq!(sb.read("/etc/shadow"), shadow);
    // System accounts are nobody's to lock, unlock or give sudo.
    let group = sb.read("/etc/group");
    for (op, extra) in [
        ("lock_user", vec![]),
        ("unlock_user", vec![]),
        ("set_sudo", vec!["--grant-sudo", "yes"]),
    ] {
        for account in ["nobody", "daemon"] {
            let r = sb.cmd(op).user(account).args(extra.clone()).send();
            assert_eq!(
                (r.status(), r.code()),
                ("rejected", "invalid_command"),
                "{op} {account}: {}",
                r.payload
            );
        }
    }
    assert_eq!(sb.read("/etc/shadow"), shadow);
    assert_eq!(sb.read("/etc/group"), group);
}

#[test]
fn a_must_change_password_is_asked_to_be_changed_at_the_next_login() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    sb.cmd("create_user").user("bob").send().assert_ok();
    let password = "Ch4nge-Me-Soon!";
    let r = sb
        .cmd("set_password")
        .user("bob")
        .password(password)
        .args(["--must-change"])
        .send();
    r.assert_ok();
    assert_eq!(r.payload["data"]["must_change"], true, "{}", r.payload);
    assert_eq!(sb.shadow_entry("bob").unwrap()[2], "0", "lastchg 0");
    let chage = sb.run_ok(&["chage", "-l", "bob"]);
    assert!(
        chage.contains("password must be changed"),
        "chage -l agrees: {chage}"
    );
    let tty = sb.password_login_on_a_tty("bob", password);
    let shown = format!("{}{}", tty.stdout, tty.stderr);
    // keyboard-interactive: PAM's "You are required to change your password
    // immediately"; the password method: sshd's "Your password has expired"
    // followed by passwd. Either way the login asks for a new password.
    assert!(
        shown.contains("You are required to change your password immediately")
            || shown.contains("Your password has expired"),
        "a new password is asked for: {shown}"
    );
    assert!(shown.contains("Changing password for bob"), "{shown}");
}

#[test]
fn lock_user_with_terminate_sessions_ends_the_live_session_and_no_new_one_starts() {
    let Some(mut sb) = sandbox() else { return };
    sb.private_uid_range();
    sb.start_agent();
    let key = sb.client_key("lockme", KeyKind::Ed25519);
    sb.cmd("create_user")
        .user("lockme")
        .keys(&[&key])
        .send()
        .assert_ok();
    sb.start_live_session("lockme", &key);

    let r = sb
        .cmd("lock_user")
        .user("lockme")
        .args(["--terminate-sessions"])
        .send();
    r.assert_ok();
    let ended = r.payload["data"]["sessions_ended"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!ended.is_empty(), "{}", r.payload);
    assert_eq!(r.payload["data"]["sessions_open"], 0, "{}", r.payload);
    sb.wait_for("the session to end", || {
        !sb.run(&["pgrep", "-u", "lockme", "-x", "sleep"]).ok()
    });
    sb.assert_no_key_login("lockme", &key);
}

/// `sudo -n true` run as `user` (no password can be typed).
fn sudo_n_works(sb: &accessd_e2e::Sandbox, user: &str) -> bool {
    sb.run(&["runuser", "-u", user, "--", "sudo", "-n", "true"])
        .ok()
}

#[test]
fn set_sudo_grants_and_revokes_as_sudo_itself_reports_it() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    // Key-only: a NOPASSWD drop-in, so `sudo -n` works.
    sb.cmd("create_user").user("keyonly").send().assert_ok();
    // With a password: the admin group (sudo -n asks for the password).
    sb.cmd("create_user")
        .user("withpw")
        .password("Sud0-Passw0rd!")
        .send()
        .assert_ok();
    for u in ["keyonly", "withpw"] {
        assert!(!sb.sudo_grants(u), "{u} starts without sudo");
        let r = sb
            .cmd("set_sudo")
            .user(u)
            .args(["--grant-sudo", "yes"])
            .send();
        r.assert_ok();
        assert_eq!(r.payload["data"]["changed"], true, "{}", r.payload);
        assert!(sb.sudo_grants(u), "{u}: sudo -l -U agrees with the grant");
        let again = sb
            .cmd("set_sudo")
            .user(u)
            .args(["--grant-sudo", "yes"])
            .send();
        again.assert_ok();
        assert_eq!(again.payload["data"]["changed"], false, "{}", again.payload);
    }
    assert!(
        sudo_n_works(&sb, "keyonly"),
        "NOPASSWD drop-in: sudo -n true works"
    );
    assert!(
        sb.group_entry("sudo").unwrap()[3]
            .split(',')
            .any(|m| m == "withpw"),
        "a user with a password joins the sudo group"
    );
    for u in ["keyonly", "withpw"] {
        let r = sb
            .cmd("set_sudo")
            .user(u)
            .args(["--grant-sudo", "no"])
            .send();
        r.assert_ok();
        assert!(!sb.sudo_grants(u), "{u}: sudo -l -U agrees with the revoke");
    }
    assert!(!sudo_n_works(&sb, "keyonly"));
    assert!(
        !sb.path("/etc/sudoers.d/keyonly").exists(),
        "our drop-in is gone"
    );
}

#[test]
fn a_sudo_rule_accessd_did_not_write_survives_a_revoke_and_is_named() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    sb.cmd("create_user").user("handmade").send().assert_ok();
    sb.write(
        "/etc/sudoers.d/90-handmade",
        "handmade ALL=(ALL) NOPASSWD: /usr/bin/true\n",
        0o440,
    );
    assert!(sb.sudo_grants("handmade"));
    let group = sb.read("/etc/group");
    let r = sb
        .cmd("set_sudo")
        .user("handmade")
        .args(["--grant-sudo", "no"])
        .send();
    r.assert_failed("foreign_grant");
    assert!(r.message().contains("90-handmade"), "{}", r.message());
    assert_eq!(sb.read("/etc/group"), group, "nothing changed");
    assert!(sb.path("/etc/sudoers.d/90-handmade").exists());
    assert!(
        sb.sudo_grants("handmade"),
        "the hand-written rule still works"
    );
}
