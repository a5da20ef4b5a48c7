//! Scenario 10: commands the agent must refuse — forged, expired, not yet
//! valid, replayed (also across a daemon restart), for another instance —
//! and proof that the key each one carried opens nothing.

use accessd_e2e::{rfc3339_from_now, sandbox, KeyKind, CONTROL_KEY_ID};

#[test]
fn a_forged_command_is_rejected_and_its_key_opens_nothing() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    let key = sb.client_key("intruder", KeyKind::Ed25519);
    // A key pair the agent has never heard of.
    let rogue = sb.dir().join("keys/rogue");
    let out = std::process::Command::new(accessd_e2e::accessctl_bin())
        .arg("keygen")
        .arg("--out")
        .arg(&rogue)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rogue_key = rogue.with_extension("key");

    // Claiming the trusted key's id: the signature does not verify.
    let r = sb
        .cmd("add_keys")
        .user("root")
        .keys(&[&key])
        .signed_by(&rogue_key, CONTROL_KEY_ID)
        .send();
    r.assert_rejected("bad_signature");
    // Under an id the agent does not trust.
    let r = sb
        .cmd("add_keys")
        .user("root")
        .keys(&[&key])
        .signed_by(&rogue_key, "rogue")
        .send();
    r.assert_rejected("unknown_key");
    // A genuine envelope whose payload was swapped afterwards.
    let genuine = sb.cmd("inventory").sign();
    let forged = sb
        .cmd("add_keys")
        .user("root")
        .keys(&[&key])
        .signed_by(&rogue_key, CONTROL_KEY_ID)
        .sign();
    let mut env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&genuine).unwrap()).unwrap();
    let forged_env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&forged).unwrap()).unwrap();
    env["payload"] = forged_env["payload"].clone();
    std::fs::write(&genuine, env.to_string()).unwrap();
    sb.deliver(&genuine).assert_rejected("bad_signature");

    assert!(
        sb.lstat("/root/.ssh/authorized_keys").is_none(),
        "root got an authorized_keys file"
    );
    sb.assert_no_key_login("root", &key);
}

#[test]
fn expired_and_not_yet_valid_commands_are_rejected() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    let key = sb.client_key("late", KeyKind::Ed25519);
    let r = sb
        .cmd("add_keys")
        .user("root")
        .keys(&[&key])
        .args([
            "--issued-at",
            &rfc3339_from_now(-7200),
            "--expires-at",
            &rfc3339_from_now(-3600),
        ])
        .send();
    r.assert_rejected("expired");
    let r = sb
        .cmd("add_keys")
        .user("root")
        .keys(&[&key])
        .args([
            "--issued-at",
            &rfc3339_from_now(3600),
            "--expires-at",
            &rfc3339_from_now(3900),
        ])
        .send();
    r.assert_rejected("not_yet_valid");

    assert!(sb.lstat("/root/.ssh/authorized_keys").is_none());
    sb.assert_no_key_login("root", &key);
}

#[test]
fn a_replayed_command_is_rejected_even_after_a_daemon_restart() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    sb.cmd("create_user").user("exampleuser").send().assert_ok();
    let key = sb.client_key("once", KeyKind::Ed25519);
    // The key is bound once, then unbound; replaying the binding must not
    // bring it back.
    let bind = sb.cmd("add_keys").user("exampleuser").keys(&[&key]).sign();
    sb.deliver(&bind).assert_ok();
    sb.assert_key_login("exampleuser", &key);
    sb.cmd("remove_keys")
        .user("exampleuser")
        .args(["--fingerprint", &key.fingerprint])
        .send()
        .assert_ok();
    sb.assert_no_key_login("exampleuser", &key);

    sb.deliver(&bind).assert_rejected("replayed");
    sb.assert_no_key_login("exampleuser", &key);

    sb.restart_agent();
    sb.deliver(&bind).assert_rejected("replayed");
    sb.assert_no_key_login("exampleuser", &key);
}

#[test]
fn a_command_for_another_instance_is_rejected() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    let key = sb.client_key("elsewhere", KeyKind::Ed25519);
    let other = format!("{}-other", sb.instance_id());
    let r = sb
        .cmd("add_keys")
        .user("root")
        .keys(&[&key])
        .instance(&other)
        .send();
    r.assert_rejected("wrong_instance");
    assert!(sb.lstat("/root/.ssh/authorized_keys").is_none());
    sb.assert_no_key_login("root", &key);
}
