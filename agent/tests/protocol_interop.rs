//! Interop with an implementation nobody here wrote: a PyNaCl control plane
//! (tests/interop/pynacl_control_plane.py) signs every op and seals the
//! passwords; accessd verifies and applies them on a temp root; PyNaCl then
//! verifies every signed result. Logs are captured at TRACE level and, with
//! the results and every file written, searched for the plaintexts.

mod protocol_support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use accessd::engine::{Handled, Status};
use accessd::error::Code;
use accessd::protocol::dsse::encode_b64;
use protocol_support::*;
use serde_json::{json, Value};

const PW_ROOT: &str = "Interop-Root-Pa55";
const PW_USER: &str = "Interop-User-Pa55";
const PW_BOOT: &str = "Interop-Boot-Pa55";

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/pynacl_control_plane.py")
}

/// A python3 that has PyNaCl (Debian's python3-nacl is for /usr/bin/python3,
/// which a pyenv shim earlier in PATH may hide). ACCESSD_PYTHON overrides.
fn python() -> Option<String> {
    let candidates: Vec<String> = std::env::var("ACCESSD_PYTHON")
        .into_iter()
        .chain(["/usr/bin/python3".to_string(), "python3".to_string()])
        .collect();
    candidates.into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import nacl.signing, nacl.public"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn run_py(py: &str, mode: &str, input: &Value) -> String {
    let mut child = Command::new(py)
        .arg(script())
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "pynacl {mode} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn payload_json(rig: &Rig, id: &str, op: &str, args: Value) -> Value {
    serde_json::from_slice(&rig.spec(id, op, args).payload()).unwrap()
}

#[test]
fn pynacl_control_plane_drives_every_op_and_verifies_every_result() {
    if !require(is_root(), "root (it creates users in a temp root)") {
        return;
    }
    let Some(py) = python() else {
        require(false, "python3 with PyNaCl (Debian package python3-nacl)");
        return;
    };
    let rig = Rig::new();
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut engine = rig.engine();
    let agent_pub = engine.public_key();
    let seal = |pw: &str| json!({"$seal": pw});
    let ops: Vec<(&str, &str, Value)> = vec![
        (
            "set_password",
            "root",
            json!({"user": "root", "password": seal(PW_ROOT)}),
        ),
        (
            "create_user",
            "carol",
            json!({"user": "carol", "sudo": true, "shell": "/bin/bash",
            "password": seal(PW_USER), "keys": [KEY1]}),
        ),
        (
            "add_keys",
            "carol",
            json!({"user": "carol", "keys": [KEY2, KEY3]}),
        ),
        (
            "remove_keys",
            "carol",
            json!({"user": "carol", "keys": [KEY2_FP]}),
        ),
        (
            "replace_keys",
            "carol",
            json!({"user": "carol", "keys": [KEY2]}),
        ),
        (
            "set_sshd",
            "",
            json!({"pubkey_authentication": true, "password_authentication": false,
            "permit_root_login": "no", "restart": false}),
        ),
        ("restart_sshd", "", Value::Null),
        ("inventory", "", Value::Null),
        (
            "set_password",
            "carol",
            json!({"user": "carol", "apply_at": "next_boot", "password": seal(PW_BOOT)}),
        ),
        ("delete_user", "root", json!({"user": "root"})),
    ];
    let commands: Vec<Value> = ops
        .iter()
        .enumerate()
        .map(|(i, (op, _, args))| payload_json(&rig, &format!("py-{i}"), op, args.clone()))
        .collect();
    let envelopes = run_py(
        &py,
        "sign",
        &json!({"seed": encode_b64(&[42u8; 32]), "keyid": KEY_ID, "agent_pub": agent_pub,
                "commands": commands}),
    );
    let envelopes: Vec<&str> = envelopes.lines().collect();
    assert_eq!(envelopes.len(), ops.len());
    assert!(
        envelopes[1].contains('_') || envelopes[1].contains('-') || !envelopes[1].contains('='),
        "odd envelopes use the URL-safe alphabet"
    );

    let mut handled: Vec<Handled> = envelopes
        .iter()
        .map(|e| engine.handle(e.as_bytes()))
        .collect();
    let expect = |i: usize, code: Code| {
        assert_eq!(
            handled[i].code, code,
            "{}: {}",
            ops[i].0, handled[i].message
        );
    };
    for i in 0..9 {
        expect(i, Code::Ok);
    }
    // delete_user refuses uid 0 (a system account): failed, nothing changed.
    assert_ne!(handled[9].status, Status::Ok, "{}", handled[9].message);

    // At the next boot (another boot id), the staged password is applied.
    drop(engine);
    let mut engine = rig.engine_after_reboot();
    handled.extend(engine.apply_staged().unwrap());
    assert_eq!(handled.len(), ops.len() + 1);
    assert_eq!(handled[10].code, Code::Ok, "{}", handled[10].message);

    // PyNaCl verifies every result and reads the same payloads we signed.
    let envs: Vec<String> = handled
        .iter()
        .map(|h| String::from_utf8(h.envelope.clone()).unwrap())
        .collect();
    let verified: Vec<Value> = serde_json::from_str(&run_py(
        &py,
        "verify",
        &json!({"agent_pub": agent_pub, "envelopes": envs}),
    ))
    .unwrap();
    let agent = agent_key(&engine);
    for (h, v) in handled.iter().zip(&verified) {
        assert_eq!(serde_json::to_value(payload(&agent, h)).unwrap(), *v);
    }
    assert_eq!(verified[0]["id"], "py-0");
    assert_eq!(verified[10]["id"], "py-8");

    // The hashes the agent made from PyNaCl-sealed passwords are right.
    let check = |user: &str, pw: &str| {
        let hash = rig.shadow_hash(user).unwrap();
        run_py(&py, "crypt", &json!({"hash": hash, "password": pw})).trim() == "true"
    };
    assert!(check("root", PW_ROOT));
    assert!(
        check("carol", PW_BOOT),
        "the staged password was applied last"
    );
    assert!(!check("carol", PW_USER));

    // No plaintext anywhere: logs, results, messages, files.
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    // The engine traces every step; the capture must have seen them.
    assert!(logs.contains("py-0") && logs.contains("result"), "{logs}");
    let mut haystacks = vec![logs];
    haystacks.extend(envs);
    haystacks.extend(verified.iter().map(Value::to_string));
    haystacks.extend(handled.iter().map(|h| h.message.clone()));
    for pw in [PW_ROOT, PW_USER, PW_BOOT] {
        for h in &haystacks {
            assert!(!h.contains(pw), "plaintext found in {h}");
        }
        for dir in [&rig.root, &rig.state] {
            assert!(
                !tree_contains(dir, pw.as_bytes()),
                "plaintext found under {}",
                dir.display()
            );
        }
    }
}

fn tree_contains(p: &Path, needle: &[u8]) -> bool {
    let Ok(md) = std::fs::symlink_metadata(p) else {
        return false;
    };
    if md.is_dir() {
        std::fs::read_dir(p)
            .unwrap()
            .any(|e| tree_contains(&e.unwrap().path(), needle))
    } else if md.is_file() {
        std::fs::read(p)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
    } else {
        false
    }
}
