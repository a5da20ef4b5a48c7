//! Scenario 10: commands the agent must refuse — forged, expired, not yet
//! valid, replayed (also across a daemon restart), for another instance —
//! and proof that the key each one carried opens nothing.

use accessd_e2e::{rfc3339_from_now, sandbox, ClientKey, Cmd, KeyKind, Sandbox, CONTROL_KEY_ID};

/// The command every scenario here tries to smuggle in: bind `key` to root.
fn add_root_key<'a>(sb: &'a Sandbox, key: &ClientKey) -> Cmd<'a> {
    sb.cmd("add_keys").user("root").keys(&[key])
}

/// A validity window as `accessctl sign` flags, in seconds from now.
fn valid_between(issued: i64, expires: i64) -> [String; 4] {
    [
        "--issued-at".to_owned(),
        rfc3339_from_now(issued),
        "--expires-at".to_owned(),
        rfc3339_from_now(expires),
    ]
}

/// The key a refused command carried opens nothing: root has no
/// authorized_keys file and the key does not log in.
fn assert_root_key_opens_nothing(sb: &Sandbox, key: &ClientKey) {
    assert!(
        sb.lstat("/root/.ssh/authorized_keys").is_none(),
        "root got an authorized_keys file"
    );
    sb.assert_no_key_login("root", key);
}

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
    let r = add_root_key(&sb, &key)
        .signed_by(&rogue_key, CONTROL_KEY_ID)
        .send();
    r.assert_rejected("bad_signature");
    // Under an id the agent does not trust.
    let r = add_root_key(&sb, &key)
        .signed_by(&rogue_key, "rogue")
        .send();
    r.assert_rejected("unknown_key");
    // A genuine envelope whose payload was swapped afterwards.
    let genuine = sb.cmd("inventory").sign();
    let forged = add_root_key(&sb, &key)
        .signed_by(&rogue_key, CONTROL_KEY_ID)
        .sign();
    let mut env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&genuine).unwrap()).unwrap();
    let forged_env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&forged).unwrap()).unwrap();
    env["payload"] = forged_env["payload"].clone();
    std::fs::write(&genuine, env.to_string()).unwrap();
    sb.deliver(&genuine).assert_rejected("bad_signature");

    assert_root_key_opens_nothing(&sb, &key);
}

#[test]
fn expired_and_not_yet_valid_commands_are_rejected() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    let key = sb.client_key("late", KeyKind::Ed25519);
    let r = add_root_key(&sb, &key)
        .args(valid_between(-7200, -3600))
        .send();
    r.assert_rejected("expired");
    let r = add_root_key(&sb, &key)
        .args(valid_between(3600, 3900))
        .send();
    r.assert_rejected("not_yet_valid");

    assert_root_key_opens_nothing(&sb, &key);
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
    let r = add_root_key(&sb, &key).instance(&other).send();
    r.assert_rejected("wrong_instance");
    assert_root_key_opens_nothing(&sb, &key);
}

/// The result envelopes in the outbox verify under the key `accessd
/// identity` printed, checked by PyNaCl (libsodium) rather than by accessd's
/// own code, and carry the command's id.
#[test]
fn results_verify_with_libsodium_under_the_agents_identity() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    let ok = sb.cmd("inventory").send();
    ok.assert_ok();
    let rejected = sb.cmd("inventory").instance("i-elsewhere").send();
    rejected.assert_rejected("wrong_instance");

    let outbox = sb.state_dir().join("outbox");
    let script = r#"
import base64, json, sys
from nacl.signing import VerifyKey
key = VerifyKey(base64.b64decode(sys.argv[1]))
for path in sys.argv[2:]:
    env = json.load(open(path))
    body = base64.b64decode(env["payload"])
    t = env["payloadType"].encode()
    pae = b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)
    assert env["payloadType"] == "application/vnd.accessd.result.v1+json", path
    sig = [s for s in env["signatures"] if s["keyid"] == "agent"][0]
    key.verify(pae, base64.b64decode(sig["sig"]))
    print(json.loads(body)["id"])
"#;
    let files: Vec<String> = std::fs::read_dir(&outbox)
        .unwrap()
        .flatten()
        .map(|e| e.path().to_string_lossy().into_owned())
        .filter(|p| p.ends_with(".json"))
        .collect();
    assert_eq!(
        files.len(),
        2,
        "one result per command in {}",
        outbox.display()
    );
    let out = // Debian's python3, which python3-nacl installs into (a python3
    // earlier in PATH, e.g. pyenv's, would not see it).
    std::process::Command::new("/usr/bin/python3")
        .args(["-c", script, sb.agent_public_key()])
        .args(&files)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "PyNaCl refused a result: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: std::collections::BTreeSet<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let expected = [&ok, &rejected]
        .iter()
        .map(|r| r.payload["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, expected);
}
