//! `accessctl` as an operator runs it: keygen → trust → sign → send, with a
//! stand-in agent loop (an Engine serving the inbox) on the other side.

mod protocol_support;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use accessd::config::Config;
use accessd::engine::Engine;
use protocol_support::*;

fn accessctl(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_accessctl"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        pipe.write_all(s.as_bytes()).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Serve `n` envelopes from `<state>/inbox` into `<state>/outbox` the way
/// the daemon does (the daemon itself is tested elsewhere).
fn serve(mut engine: Engine, state: &Path, n: usize) -> std::thread::JoinHandle<()> {
    let inbox = state.join("inbox");
    let outbox = state.join("outbox");
    std::thread::spawn(move || {
        let mut served = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while served < n && std::time::Instant::now() < deadline {
            let mut names: Vec<_> = std::fs::read_dir(&inbox)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| !n.starts_with('.'))
                .collect();
            names.sort();
            for name in names {
                let bytes = std::fs::read(inbox.join(&name)).unwrap();
                let h = engine.handle(&bytes);
                let tmp = outbox.join(format!(".{name}"));
                std::fs::write(&tmp, &h.envelope).unwrap();
                std::fs::rename(&tmp, outbox.join(&name)).unwrap();
                std::fs::remove_file(inbox.join(&name)).unwrap();
                served += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

#[test]
fn keygen_sign_send_round_trip_with_exit_codes() {
    if !require(is_root(), "root (it changes users in a temp root)") {
        return;
    }
    let rig = Rig::new();
    let dir = rig.tmp.path();
    let prefix = dir.join("console");
    let out = accessctl(&["keygen", "--out", prefix.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = text(&out);
    let key = dir.join("console.key");
    assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::read_to_string(dir.join("console.pub"))
            .unwrap()
            .trim(),
        public
    );
    assert_eq!(
        text(&accessctl(
            &["pubkey", "--key", key.to_str().unwrap()],
            None
        )),
        public
    );
    // keygen never overwrites.
    assert!(
        !accessctl(&["keygen", "--out", prefix.to_str().unwrap()], None)
            .status
            .success()
    );

    // The agent trusts the new key; clock is the real one (accessctl uses now).
    let cfg = Config::parse_str(
        &format!(
            "instance_id = \"{INSTANCE}\"\nstate_dir = \"{}\"\nroot = \"{}\"\n[trust]\nconsole = \"{public}\"\n",
            rig.state.display(),
            rig.root.display()
        ),
        Path::new("test.toml"),
    )
    .unwrap();
    let engine = Engine::new(cfg, accessd::sys::System::new(&rig.root, &rig.state)).unwrap();
    let agent_pub = engine.public_key();
    for d in ["inbox", "outbox"] {
        std::fs::create_dir_all(rig.state.join(d)).unwrap();
    }

    let sign = |op: &str, extra: &[&str], stdin: Option<&str>| {
        let mut args = vec![
            "sign",
            op,
            "--key",
            key.to_str().unwrap(),
            "--key-id",
            "console",
            "--instance",
            INSTANCE,
        ];
        args.extend_from_slice(extra);
        let o = accessctl(&args, stdin);
        assert!(
            o.status.success(),
            "sign {op} {extra:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        text(&o)
    };
    // The same command under a fixed id, signed afresh each time: the second
    // is a replay of the first.
    let add_key_as_c_fixed = || {
        sign(
            "add-keys",
            &["--user", "root", "--key-line", KEY1, "--id", "c-fixed"],
            None,
        )
    };
    let pw = "Accessctl-Pa55word";
    let envs = [
        sign(
            "set-password",
            &[
                "--user",
                "root",
                "--password-stdin",
                "--agent-key",
                &agent_pub,
            ],
            Some(&format!("{pw}\n")),
        ),
        add_key_as_c_fixed(),
        add_key_as_c_fixed(),
        sign("delete-user", &["--user", "no-such-user"], None),
    ];
    assert!(!envs[0].contains(pw));
    let agent = serve(engine, &rig.state, envs.len());
    let inbox = rig.state.join("inbox");
    let mut codes = Vec::new();
    for env in &envs {
        let o = accessctl(
            &[
                "send",
                "--inbox",
                inbox.to_str().unwrap(),
                "--agent-key",
                &agent_pub,
                "--timeout",
                "30s",
                "-",
            ],
            Some(env),
        );
        let payload: serde_json::Value = serde_json::from_str(&text(&o))
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&o.stderr)));
        codes.push((
            o.status.code(),
            payload["code"].as_str().unwrap().to_string(),
        ));
    }
    agent.join().unwrap();
    assert_eq!(
        codes,
        vec![
            (Some(0), "ok".into()),
            (Some(0), "ok".into()),
            (Some(2), "replayed".into()),
            (Some(3), "user_not_found".into()),
        ]
    );
    assert!(rig.shadow_hash("root").unwrap().starts_with("$6$"));

    // verify-result accepts the agent's results and refuses another key's.
    let outbox = rig.state.join("outbox");
    let first = std::fs::read_dir(&outbox)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let ok = accessctl(
        &[
            "verify-result",
            "--agent-key",
            &agent_pub,
            first.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok.status.success());
    assert!(!text(&ok).contains(pw));
    let wrong = accessctl(
        &[
            "verify-result",
            "--agent-key",
            &public,
            first.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(wrong.status.code(), Some(1));
}

#[test]
fn send_times_out_with_exit_1_when_no_agent_answers() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("inbox")).unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let pub_b64 = accessd::protocol::dsse::encode_b64(key.verifying_key().as_bytes());
    let o = accessctl(
        &[
            "send",
            "--inbox",
            tmp.path().join("inbox").to_str().unwrap(),
            "--agent-key",
            &pub_b64,
            "--timeout",
            "200ms",
            "-",
        ],
        Some("{}"),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no result"));
    // The envelope was dropped under a final (non-dot) name.
    let names: Vec<_> = std::fs::read_dir(tmp.path().join("inbox"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1);
    assert!(!names[0].to_string_lossy().starts_with('.'));
}

#[test]
fn sign_refuses_flags_that_do_not_fit_the_op_and_usage_errors_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("k");
    assert!(
        accessctl(&["keygen", "--out", prefix.to_str().unwrap()], None)
            .status
            .success()
    );
    let key = tmp.path().join("k.key");
    let o = accessctl(
        &[
            "sign",
            "inventory",
            "--key",
            key.to_str().unwrap(),
            "--key-id",
            "c",
            "--instance",
            "i",
            "--user",
            "root",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--user"));
    assert_eq!(accessctl(&["sign", "--bogus"], None).status.code(), Some(1));
    for sub in ["keygen", "pubkey", "sign", "send", "verify-result"] {
        let h = accessctl(&[sub, "--help"], None);
        assert!(h.status.success());
        assert!(text(&h).contains("Example"), "{sub} --help has an example");
    }
}
