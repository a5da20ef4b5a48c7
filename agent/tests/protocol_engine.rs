//! The command path end to end on a throwaway root: every op applied, every
//! hostile envelope rejected with its code and nothing on disk changed,
//! replay remembered across a restart, next-boot staging.

mod protocol_support;

use std::time::Duration;

use accessd::engine::Status;
use accessd::error::Code;
use accessd::protocol::client::{self, CommandSpec};
use accessd::protocol::dsse::{self, encode_b64};
use accessd::protocol::COMMAND_TYPE;
use ed25519_dalek::SigningKey;
use protocol_support::*;
use serde_json::{json, Value};

const PW: &str = "Corr3ct-Horse-Battery";

fn rig() -> Option<Rig> {
    require(
        is_root(),
        "root (it creates users and chowns homes in a temp root)",
    )
    .then(Rig::new)
}

/// A raw envelope from parts, for the hostile cases.
fn envelope(payload_type: &str, payload: &[u8], sigs: Value) -> Vec<u8> {
    json!({"payloadType": payload_type, "payload": encode_b64(payload), "signatures": sigs})
        .to_string()
        .into_bytes()
}

fn sig_of(key: &SigningKey, payload_type: &str, body: &[u8]) -> String {
    use ed25519_dalek::Signer;
    encode_b64(&key.sign(&dsse::pae(payload_type, body)).to_bytes())
}

#[test]
fn every_op_applies_and_results_are_signed() {
    let Some(rig) = rig() else { return };
    let mut e = rig.engine();
    let agent = agent_key(&e);
    let before = rig.shadow_hash("root").unwrap();

    let mut run = |id: &str, op: &str, args: Value| {
        let h = e.handle(&rig.signed(id, op, args));
        let p = payload(&agent, &h);
        assert_eq!(
            (p.status, p.code),
            (Status::Ok, Code::Ok),
            "{op}: {}",
            p.message
        );
        assert_eq!(p.id.as_deref(), Some(id));
        assert_eq!(p.op.as_deref(), Some(op));
        assert_eq!(p.instance_id, INSTANCE);
        p
    };

    run(
        "c-1",
        "set_password",
        json!({"user": "root", "password": client::sealed_password(&agent, PW.as_bytes())}),
    );
    let after = rig.shadow_hash("root").unwrap();
    assert_ne!(before, after);
    assert!(after.starts_with("$6$"));

    let p = run(
        "c-2",
        "create_user",
        json!({"user": "alice", "sudo": true, "keys": [KEY1],
        "password": {"crypt": "$6$saltsaltsaltsalt$WrpdWeQZW5Xh5vP.tJ5Kb.q.quJCX1FsXGt5OLkwq.4BJeRDLzoJz2qZ/95dwj2zAQ3.ccUmPs5KURh5BShoD/"}}),
    );
    assert!(p.data["uid"].as_u64().unwrap() >= 1000);
    let ak = rig.root.join("home/alice/.ssh/authorized_keys");
    assert!(std::fs::read_to_string(&ak).unwrap().contains("t1"));

    run(
        "c-3",
        "add_keys",
        json!({"user": "alice", "keys": [KEY2, KEY3]}),
    );
    run(
        "c-4",
        "remove_keys",
        json!({"user": "alice", "keys": [KEY2_FP]}),
    );
    let text = std::fs::read_to_string(&ak).unwrap();
    assert!(text.contains("t3") && !text.contains("t2"), "{text}");
    run(
        "c-5",
        "replace_keys",
        json!({"user": "alice", "keys": [KEY2]}),
    );

    let p = run("c-6", "inventory", Value::Null);
    let users = p.data["users"].as_array().unwrap();
    let alice = users.iter().find(|u| u["name"] == "alice").unwrap();
    assert_eq!(alice["sudo"], true);
    assert!(
        !p.data.to_string().contains("$6$"),
        "inventory never shows a hash"
    );

    run(
        "c-7",
        "set_sshd",
        json!({"password_authentication": false, "permit_root_login": "prohibit-password"}),
    );
    let sshd = std::fs::read_to_string(rig.root.join("etc/ssh/sshd_config")).unwrap()
        + &std::fs::read_dir(rig.root.join("etc/ssh/sshd_config.d"))
            .unwrap()
            .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap_or_default())
            .collect::<String>();
    assert!(
        sshd.to_lowercase().contains("passwordauthentication no"),
        "{sshd}"
    );
    run("c-8", "restart_sshd", Value::Null);

    run(
        "c-9",
        "delete_user",
        json!({"user": "alice", "remove_home": true}),
    );
    assert!(!rig.root.join("home/alice").exists());
    assert!(!std::fs::read_to_string(rig.root.join("etc/passwd"))
        .unwrap()
        .contains("alice:"));
}

#[test]
fn hostile_envelopes_are_rejected_and_change_nothing() {
    let Some(rig) = rig() else { return };
    let mut e = rig.engine();
    let agent = agent_key(&e);
    let other = SigningKey::from_bytes(&[7; 32]);
    let other_agent = SigningKey::from_bytes(&[9; 32]).verifying_key();

    let good_body = rig
        .spec(
            "c-good",
            "add_keys",
            json!({"user": "root", "keys": [KEY1]}),
        )
        .payload();
    let good_sig = sig_of(&rig.cp, COMMAND_TYPE, &good_body);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v: Value = serde_json::from_slice(&good_body).unwrap();
        f(&mut v);
        let body = serde_json::to_vec(&v).unwrap();
        envelope(
            COMMAND_TYPE,
            &body,
            json!([{"keyid": KEY_ID, "sig": sig_of(&rig.cp, COMMAND_TYPE, &body)}]),
        )
    };
    let spec_at = |id: &str, issued: i64, expires: i64| {
        let at = |d: i64| {
            if d >= 0 {
                rig.now + Duration::from_secs(d as u64)
            } else {
                rig.now - Duration::from_secs((-d) as u64)
            }
        };
        CommandSpec {
            issued_at: at(issued),
            expires_at: at(expires),
            ..rig.spec(id, "inventory", Value::Null)
        }
        .sign(&rig.cp, KEY_ID)
        .into_bytes()
    };
    let pw_cmd = |id: &str, pw: Value| {
        rig.signed(id, "set_password", json!({"user": "root", "password": pw}))
    };
    let sealed_other = client::sealed_password(&other_agent, PW.as_bytes());
    let sealed_ok = client::sealed_password(&agent, PW.as_bytes());
    let truncated = {
        let b = dsse::decode_b64(sealed_ok["sealed"].as_str().unwrap()).unwrap();
        json!({"sealed": encode_b64(&b[..b.len() - 5])})
    };

    let mut long_sig = dsse::decode_b64(&good_sig).unwrap();
    long_sig.push(0);
    let cases: Vec<(&str, Vec<u8>, Code, bool)> = vec![
        (
            "bad signature",
            envelope(
                COMMAND_TYPE,
                &good_body,
                json!([{"keyid": KEY_ID, "sig": sig_of(&rig.cp, COMMAND_TYPE, b"other")}]),
            ),
            Code::BadSignature,
            false,
        ),
        (
            "short signature",
            envelope(
                COMMAND_TYPE,
                &good_body,
                json!([{"keyid": KEY_ID, "sig": encode_b64(&[1u8; 32])}]),
            ),
            Code::BadSignature,
            false,
        ),
        (
            "long signature",
            envelope(
                COMMAND_TYPE,
                &good_body,
                json!([{"keyid": KEY_ID, "sig": encode_b64(&long_sig)}]),
            ),
            Code::BadSignature,
            false,
        ),
        (
            "signature not base64",
            envelope(
                COMMAND_TYPE,
                &good_body,
                json!([{"keyid": KEY_ID, "sig": "%%%"}]),
            ),
            Code::BadSignature,
            false,
        ),
        (
            "untrusted key",
            envelope(
                COMMAND_TYPE,
                &good_body,
                json!([{"keyid": "stranger", "sig": sig_of(&other, COMMAND_TYPE, &good_body)}]),
            ),
            Code::UnknownKey,
            false,
        ),
        (
            "untrusted key, no keyid",
            envelope(
                COMMAND_TYPE,
                &good_body,
                json!([{"sig": sig_of(&other, COMMAND_TYPE, &good_body)}]),
            ),
            Code::BadSignature,
            false,
        ),
        (
            "trusted keyid, other key's signature",
            envelope(
                COMMAND_TYPE,
                &good_body,
                json!([{"keyid": KEY_ID, "sig": sig_of(&other, COMMAND_TYPE, &good_body)}]),
            ),
            Code::BadSignature,
            false,
        ),
        (
            "payload swapped after signing",
            envelope(
                COMMAND_TYPE,
                &rig.spec("c-good", "delete_user", json!({"user": "root"}))
                    .payload(),
                json!([{"keyid": KEY_ID, "sig": good_sig}]),
            ),
            Code::BadSignature,
            false,
        ),
        (
            "payloadType changed",
            envelope(
                "application/json",
                &good_body,
                json!([{"keyid": KEY_ID, "sig": sig_of(&rig.cp, "application/json", &good_body)}]),
            ),
            Code::BadEnvelope,
            false,
        ),
        (
            "result type",
            envelope(
                accessd::protocol::RESULT_TYPE,
                &good_body,
                json!([{"keyid": KEY_ID, "sig": sig_of(&rig.cp, accessd::protocol::RESULT_TYPE, &good_body)}]),
            ),
            Code::BadEnvelope,
            false,
        ),
        (
            "no signatures",
            envelope(COMMAND_TYPE, &good_body, json!([])),
            Code::BadEnvelope,
            false,
        ),
        (
            "envelope not JSON",
            b"{not json".to_vec(),
            Code::BadEnvelope,
            false,
        ),
        ("empty input", Vec::new(), Code::BadEnvelope, false),
        (
            "70 KiB",
            {
                let mut v = with(&|_| {});
                v.resize(70 * 1024, b' ');
                v
            },
            Code::BadEnvelope,
            false,
        ),
        (
            "signed payload not JSON",
            envelope(
                COMMAND_TYPE,
                b"hello",
                json!([{"keyid": KEY_ID, "sig": sig_of(&rig.cp, COMMAND_TYPE, b"hello")}]),
            ),
            Code::InvalidCommand,
            false,
        ),
        (
            "unknown op",
            with(&|v| v["op"] = "format_disk".into()),
            Code::InvalidCommand,
            true,
        ),
        (
            "unknown top-level field",
            with(&|v| v["sudo"] = true.into()),
            Code::InvalidCommand,
            true,
        ),
        (
            "unknown args field",
            with(&|v| v["args"]["force"] = true.into()),
            Code::InvalidCommand,
            true,
        ),
        (
            "unknown password field",
            pw_cmd("c-pwx", json!({"crypt": "$6$a$b", "rounds": 1})),
            Code::InvalidCommand,
            true,
        ),
        (
            "version 2",
            with(&|v| v["v"] = 2.into()),
            Code::InvalidCommand,
            true,
        ),
        (
            "bad user name",
            with(&|v| v["args"]["user"] = "../root".into()),
            Code::InvalidCommand,
            true,
        ),
        (
            "bad key line",
            with(&|v| v["args"]["keys"] = json!(["ssh-ed25519 AAAA"])),
            Code::InvalidCommand,
            true,
        ),
        (
            "bad id",
            with(&|v| v["id"] = "../../etc".into()),
            Code::InvalidCommand,
            false,
        ),
        (
            "wrong instance",
            with(&|v| v["instance_id"] = "i-other".into()),
            Code::WrongInstance,
            true,
        ),
        (
            "expired",
            spec_at("c-exp", -1000, -400),
            Code::Expired,
            true,
        ),
        (
            "issued in the future",
            spec_at("c-fut", 400, 900),
            Code::NotYetValid,
            true,
        ),
        (
            "TTL over the max",
            spec_at("c-ttl", -60, 3600),
            Code::InvalidCommand,
            true,
        ),
        (
            "expires before issued",
            spec_at("c-neg", -60, -120),
            Code::InvalidCommand,
            true,
        ),
        (
            "sealed for another agent",
            pw_cmd("c-oth", sealed_other),
            Code::InvalidCommand,
            true,
        ),
        (
            "truncated sealed box",
            pw_cmd("c-trunc", truncated),
            Code::InvalidCommand,
            true,
        ),
        (
            "plaintext in sealed",
            pw_cmd("c-plain", json!({"sealed": PW})),
            Code::InvalidCommand,
            true,
        ),
        (
            "plaintext password string",
            pw_cmd("c-plain2", json!(PW)),
            Code::InvalidCommand,
            true,
        ),
        (
            "weak password",
            pw_cmd("c-weak", client::sealed_password(&agent, b"password")),
            Code::WeakPassword,
            true,
        ),
        (
            "bad crypt",
            pw_cmd("c-crypt", json!({"crypt": "$1$abc$def"})),
            Code::InvalidCommand,
            true,
        ),
    ];

    for (name, bytes, code, id_readable) in cases {
        let before = rig.snapshot();
        let h = e.handle(&bytes);
        let p = payload(&agent, &h);
        assert_eq!(p.code, code, "{name}: {}", p.message);
        assert_eq!(p.status, Status::Rejected, "{name}");
        assert_eq!(p.id.is_some(), id_readable, "{name}: id {:?}", p.id);
        assert_unchanged(&before, &rig.snapshot(), name);
        assert!(
            !p.message.contains(PW) && !String::from_utf8_lossy(&h.envelope).contains(PW),
            "{name}"
        );
    }

    // A rejected command did not consume its id: the good one still applies.
    let h = e.handle(&envelope(
        COMMAND_TYPE,
        &good_body,
        json!([{"keyid": KEY_ID, "sig": good_sig}]),
    ));
    assert_eq!(h.code, Code::Ok, "{}", h.message);
}

#[test]
fn url_safe_base64_and_anonymous_signatures_are_accepted() {
    let Some(rig) = rig() else { return };
    let mut e = rig.engine();
    use base64::Engine as _;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let body = rig.spec("c-url", "inventory", Value::Null).payload();
    use ed25519_dalek::Signer;
    let sig = rig.cp.sign(&dsse::pae(COMMAND_TYPE, &body)).to_bytes();
    let env = json!({"payloadType": COMMAND_TYPE, "payload": url.encode(&body),
        "signatures": [{"sig": url.encode(sig), "extra": 1}], "unknown": "ignored"});
    let h = e.handle(env.to_string().as_bytes());
    assert_eq!(h.code, Code::Ok, "{}", h.message);
}

#[test]
fn replay_is_refused_also_after_a_restart() {
    let Some(rig) = rig() else { return };
    let env = rig.signed(
        "c-once.1:x",
        "add_keys",
        json!({"user": "root", "keys": [KEY1]}),
    );
    let mut e = rig.engine();
    let h = e.handle(&env);
    assert_eq!(h.code, Code::Ok, "{}", h.message);
    let before = rig.snapshot();
    assert_eq!(e.handle(&env).code, Code::Replayed);
    drop(e);
    let mut e = rig.engine();
    let h = e.handle(&env);
    assert_eq!((h.code, h.status), (Code::Replayed, Status::Rejected));
    assert_eq!(h.id.as_deref(), Some("c-once.1:x"));
    assert_unchanged(&before, &rig.snapshot(), "rejected");
}

#[test]
fn next_boot_stages_only_a_hash_and_applies_once() {
    let Some(rig) = rig() else { return };
    let mut e = rig.engine();
    let agent = agent_key(&e);
    let before = rig.shadow_hash("root");
    let h = e.handle(&rig.signed(
        "c-nb",
        "set_password",
        json!({"user": "root", "apply_at": "next_boot",
        "password": client::sealed_password(&agent, PW.as_bytes())}),
    ));
    assert_eq!(h.code, Code::Ok, "{}", h.message);
    assert_eq!(rig.shadow_hash("root"), before, "nothing applied yet");
    let staged: Vec<_> = std::fs::read_dir(rig.state.join("staged"))
        .unwrap()
        .map(|f| f.unwrap().path())
        .collect();
    assert_eq!(staged.len(), 1);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&staged[0]).unwrap().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&staged[0]).unwrap();
    assert!(text.contains("$6$") && !text.contains(PW));

    // The same boot (a restart of the units): it stays staged.
    drop(e);
    let mut e = rig.engine();
    assert!(e.apply_staged().unwrap().is_empty(), "not in the same boot");
    assert_eq!(rig.shadow_hash("root"), before);
    drop(e);
    let mut e = rig.engine_after_reboot();
    let results = e.apply_staged().unwrap();
    assert_eq!(results.len(), 1);
    let p = payload(&agent, &results[0]);
    assert_eq!(
        (p.code, p.id.as_deref(), p.op.as_deref()),
        (Code::Ok, Some("c-nb"), Some("set_password"))
    );
    assert_ne!(rig.shadow_hash("root"), before);
    assert!(e.apply_staged().unwrap().is_empty(), "applied once");
}

#[test]
fn staging_for_a_missing_user_fails_and_stages_nothing() {
    let Some(rig) = rig() else { return };
    let mut e = rig.engine();
    let before = rig.snapshot();
    let h = e.handle(&rig.signed("c-nbx", "set_password", json!({"user": "nobody-here", "apply_at": "next_boot",
        "password": {"crypt": "$6$saltsaltsaltsalt$WrpdWeQZW5Xh5vP.tJ5Kb.q.quJCX1FsXGt5OLkwq.4BJeRDLzoJz2qZ/95dwj2zAQ3.ccUmPs5KURh5BShoD/"}})));
    assert_eq!((h.code, h.status), (Code::UserNotFound, Status::Failed));
    assert_unchanged(&before, &rig.snapshot(), "rejected");
}

#[test]
fn create_user_whose_keys_cannot_be_added_is_rolled_back() {
    let Some(rig) = rig() else { return };
    // /etc/skel/.ssh as a symlink: the new home's ~/.ssh is one too, and the
    // key layer refuses to follow it.
    std::os::unix::fs::symlink("/etc", rig.root.join("etc/skel/.ssh")).unwrap();
    let mut e = rig.engine();
    let before = rig.snapshot_without_backups();
    let h = e.handle(&rig.signed(
        "c-rb",
        "create_user",
        json!({"user": "bob", "keys": [KEY1]}),
    ));
    assert_eq!(h.status, Status::Failed, "{:?} {}", h.code, h.message);
    assert_unchanged(
        &before,
        &rig.snapshot_without_backups(),
        "rolled back create_user",
    );
}

#[test]
fn an_oversized_envelope_is_refused_before_parsing() {
    let Some(rig) = rig() else { return };
    let mut e = rig.engine();
    // Valid JSON would otherwise apply: only the size can refuse it.
    let mut env = rig.signed("c-big", "inventory", Value::Null);
    env.extend(std::iter::repeat_n(b' ', 65 * 1024));
    let h = e.handle(&env);
    assert_eq!((h.code, h.id), (Code::BadEnvelope, None));
}

/// One envelope handled by a separate process (this test binary re-run with
/// only `child_handles_one_envelope`), so that nothing but the state
/// directory connects two runs.
fn handle_in_child(rig: &Rig, envelope: &[u8]) -> accessd::protocol::result::ResultPayload {
    let env_path = rig.tmp.path().join("child-envelope.json");
    let out_path = rig.tmp.path().join("child-result.json");
    std::fs::write(&env_path, envelope).unwrap();
    let _ = std::fs::remove_file(&out_path);
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_handles_one_envelope",
            "--ignored",
            "--test-threads=1",
        ])
        .env("ACCESSD_CHILD_ROOT", &rig.root)
        .env("ACCESSD_CHILD_STATE", &rig.state)
        .env("ACCESSD_CHILD_ENVELOPE", &env_path)
        .env("ACCESSD_CHILD_OUT", &out_path)
        .status()
        .unwrap();
    assert!(status.success());
    let result = std::fs::read(&out_path).expect("the child wrote a result");
    let agent = accessd::protocol::parse_public_key(
        &std::fs::read_to_string(rig.tmp.path().join("child-agent.pub")).unwrap(),
    )
    .unwrap();
    client::verify_result(&agent, &result).unwrap()
}

#[test]
#[ignore = "the child half of replay_is_refused_across_process_restarts"]
fn child_handles_one_envelope() {
    let (Ok(root), Ok(state), Ok(env), Ok(out)) = (
        std::env::var("ACCESSD_CHILD_ROOT"),
        std::env::var("ACCESSD_CHILD_STATE"),
        std::env::var("ACCESSD_CHILD_ENVELOPE"),
        std::env::var("ACCESSD_CHILD_OUT"),
    ) else {
        return;
    };
    let mut rig = Rig::new();
    rig.root = root.into();
    rig.state = state.into();
    let mut e = rig.engine();
    let h = e.handle(&std::fs::read(env).unwrap());
    let out = std::path::PathBuf::from(out);
    std::fs::write(out.with_file_name("child-agent.pub"), e.public_key()).unwrap();
    std::fs::write(out, &h.envelope).unwrap();
}

#[test]
fn replay_is_refused_across_process_restarts() {
    let Some(rig) = rig() else { return };
    let env = rig.signed(
        "c-proc",
        "add_keys",
        json!({"user": "root", "keys": [KEY2]}),
    );
    let first = handle_in_child(&rig, &env);
    assert_eq!(first.code, Code::Ok, "{}", first.message);
    let before = rig.snapshot();
    let second = handle_in_child(&rig, &env);
    assert_eq!(
        (second.code, second.status),
        (Code::Replayed, Status::Rejected)
    );
    assert_eq!(second.id.as_deref(), Some("c-proc"));
    assert_unchanged(&before, &rig.snapshot(), "replayed in a new process");
}

#[test]
fn reconfigure_rotates_the_trusted_keys() {
    let Some(rig) = rig() else { return };
    let mut e = rig.engine();
    let new_key = SigningKey::from_bytes(&[8; 32]);
    let mut cfg = rig.config();
    cfg.trust.clear();
    cfg.trust.insert(
        "console-2027".into(),
        encode_b64(new_key.verifying_key().as_bytes()),
    );
    e.reconfigure(cfg.clone());
    let old = e.handle(&rig.signed("c-old", "inventory", Value::Null));
    assert_eq!(old.code, Code::UnknownKey);
    let new = e.handle(
        rig.spec("c-new", "inventory", Value::Null)
            .sign(&new_key, "console-2027")
            .as_bytes(),
    );
    assert_eq!(new.code, Code::Ok, "{}", new.message);
    // A configuration with an undecodable key is not taken.
    cfg.trust.insert("broken".into(), "AAAA".into());
    e.reconfigure(cfg);
    let still = e.handle(
        rig.spec("c-new2", "inventory", Value::Null)
            .sign(&new_key, "console-2027")
            .as_bytes(),
    );
    assert_eq!(still.code, Code::Ok, "{}", still.message);
}
