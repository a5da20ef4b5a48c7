//! The real `accessd` daemon and engine with `[mqtt]`, through a real
//! mosquitto (ACL example, password file): every op round-trips via
//! `accessctl send --mqtt`; a Python paho-mqtt + PyNaCl control plane
//! (not our code) sends and verifies; the daemon SIGKILLed while commands
//! queue on the broker applies them all, in order, when it returns.

mod daemon_support;
mod mqtt_support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use daemon_support::{key_line, require_root, Machine, INSTANCE, USER};
use mqtt_support::{Broker, ControlPlane, AGENT_PASSWORD, CONTROL_PASSWORD, CONTROL_USER};
use serde_json::{json, Value};

fn private_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A mosquitto in a temp dir of its own (dropped after the broker); `None`
/// where none can be started, and the test skips.
fn start_broker() -> Option<(tempfile::TempDir, Broker)> {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"), None)?;
    Some((dir, broker))
}

/// A machine whose accessd.toml has `[mqtt]` for `broker`, and the daemon
/// started and subscribed.
fn machine_with_mqtt(broker: &Broker) -> (Machine, daemon_support::Daemon) {
    let m = Machine::new();
    write_mqtt_config(&m, &broker.url(false), 0o600);
    let d = m.start();
    m.wait_log("subscribed to the command topic", 1);
    (m, d)
}

/// accessd.toml with `[mqtt]` for `url`; the password file gets `mode`.
fn write_mqtt_config(m: &Machine, url: &str, mode: u32) -> PathBuf {
    let pw = m.tmp.path().join("mqtt.password");
    private_file(&pw, &format!("{AGENT_PASSWORD}\n"));
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(mode)).unwrap();
    let cp = daemon_support::b64(&m.cp);
    let text = format!(
        "{}\n[mqtt]\nurl = {url:?}\nusername = {INSTANCE:?}\npassword_file = {:?}\nkeep_alive_secs = 5\n",
        m.config_text(&[("cp", &cp)]),
        pw.display().to_string()
    );
    m.write_raw_config(&text);
    pw
}

fn control_options(dir: &Path) -> PathBuf {
    let pw = dir.join("control.password");
    private_file(&pw, CONTROL_PASSWORD);
    let opts = dir.join("control-mqtt.toml");
    std::fs::write(
        &opts,
        format!(
            "username = {CONTROL_USER:?}\npassword_file = {:?}\n",
            pw.display().to_string()
        ),
    )
    .unwrap();
    opts
}

/// `accessctl send --mqtt`: (exit code, verified result payload).
fn accessctl_send(m: &Machine, broker: &Broker, opts: &Path, envelope: &[u8]) -> (i32, Value) {
    let f = m.tmp.path().join(format!("env-{}.json", rand_name()));
    std::fs::write(&f, envelope).unwrap();
    let agent = base64::engine::general_purpose::STANDARD.encode(m.agent_key().as_bytes());
    let out = Command::new(env!("CARGO_BIN_EXE_accessctl"))
        .args(["send", "--mqtt", &broker.url(false), "--instance", INSTANCE])
        .arg("--mqtt-config")
        .arg(opts)
        .args(["--agent-key", &agent, "--timeout", "120s"])
        .arg(&f)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "accessctl printed no result ({e}): {stdout}\n{}\nagent log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            m.log_text()
        )
    });
    (out.status.code().unwrap_or(-1), r)
}

fn rand_name() -> String {
    accessd::protocol::client::random_id()
}

fn read_root(m: &Machine, rel: &str) -> String {
    std::fs::read_to_string(m.root.join(rel)).unwrap_or_default()
}

#[test]
fn every_op_round_trips_through_the_broker_with_accessctl() {
    if !require_root() {
        return;
    }
    let Some((_dir, broker)) = start_broker() else {
        return;
    };
    let (m, d) = machine_with_mqtt(&broker);
    let opts = control_options(m.tmp.path());
    let agent = m.agent_key();
    let sealed = accessd::protocol::client::sealed_password(&agent, b"Fleet-Passw0rd!");
    let steps: Vec<(&str, Value)> = vec![
        (
            "create_user",
            json!({"user": "bob", "sudo": true, "keys": [key_line(1)]}),
        ),
        ("add_keys", json!({"user": "bob", "keys": [key_line(2)]})),
        ("remove_keys", json!({"user": "bob", "keys": [key_line(1)]})),
        (
            "replace_keys",
            json!({"user": "bob", "keys": [key_line(3)]}),
        ),
        ("set_password", json!({"user": "bob", "password": sealed})),
        (
            "set_sshd",
            json!({"password_authentication": false, "restart": false}),
        ),
        ("restart_sshd", json!({})),
        ("inventory", json!({})),
        ("delete_user", json!({"user": "bob", "remove_home": true})),
    ];
    let mut envs = Vec::new();
    for (n, (op, args)) in steps.into_iter().enumerate() {
        let id = format!("mqtt-{n}-{op}");
        let env = m.sign(&id, op, args);
        let (code, r) = accessctl_send(&m, &broker, &opts, &env);
        assert_eq!(r["id"], id.as_str());
        assert_eq!(r["op"], op);
        assert_eq!(
            (code, r["code"].as_str()),
            (0, Some("ok")),
            "{op}: {r}\n{}",
            m.log_text()
        );
        match op {
            "replace_keys" => {
                let ak = read_root(&m, "home/bob/.ssh/authorized_keys");
                assert!(ak.contains(&key_line(3)), "{ak}");
                assert!(
                    !ak.contains(&key_line(1)) && !ak.contains(&key_line(2)),
                    "{ak}"
                );
            }
            "set_password" => {
                let shadow = read_root(&m, "etc/shadow");
                let bob = shadow.lines().find(|l| l.starts_with("bob:")).unwrap();
                assert!(bob.split(':').nth(1).unwrap().starts_with("$6$"), "{bob}");
            }
            "inventory" => {
                assert!(r["data"].to_string().contains("bob"), "{r}");
            }
            "delete_user" => {
                assert!(!read_root(&m, "etc/passwd").contains("bob:"));
            }
            _ => {}
        }
        envs.push(env);
    }
    // The same envelope again (a duplicate delivery): answered, not applied.
    let (code, r) = accessctl_send(&m, &broker, &opts, &envs[1]);
    assert_eq!((code, r["code"].as_str()), (2, Some("replayed")), "{r}");
    // A command that does not verify gets a signed rejection through the broker.
    let forged = m.sign_with(
        &daemon_support::key(9),
        "cp",
        "forged",
        "inventory",
        json!({}),
    );
    let (code, r) = accessctl_send(&m, &broker, &opts, &forged);
    assert_eq!(code, 2, "{r}");
    assert_eq!(r["status"], "rejected");
    assert!(r["id"].is_null(), "an unverified id is not echoed: {r}");
    // Every MQTT command's result is in the outbox under its transport name,
    // and every result was acknowledged by the broker (no pending marker).
    let outbox = Machine::names(&m.outbox());
    assert!(outbox.iter().filter(|n| n.starts_with("mqtt-")).count() >= 11);
    daemon_support::wait_until("all results acknowledged", daemon_support::PATIENCE, || {
        Machine::names(&m.state.join("mqtt-pending")).is_empty()
    });
    assert_eq!(d.stop().code(), Some(0));
}

#[test]
fn daemon_killed_while_offline_commands_queue_applies_all_in_order() {
    if !require_root() {
        return;
    }
    let Some((_dir, broker)) = start_broker() else {
        return;
    };
    let (m, d) = machine_with_mqtt(&broker);
    // A crash, not a shutdown: no DISCONNECT, the broker keeps the session.
    d.signal(nix::sys::signal::Signal::SIGKILL);
    d.wait();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut cp = rt.block_on(ControlPlane::connect(broker.port, "cp-daemon-offline"));
    let n = 12u32;
    for i in 0..n {
        let env = m.sign(
            &format!("offline-{i:02}"),
            "add_keys",
            json!({"user": USER, "keys": [key_line(100 + i)]}),
        );
        rt.block_on(cp.send(INSTANCE, env));
    }
    let d = m.start();
    let agent = m.agent_key();
    let mut ids = Vec::new();
    while ids.len() < n as usize {
        let (_, bytes) = rt
            .block_on(async {
                tokio::time::timeout(mqtt_support::PATIENCE, cp.results.recv()).await
            })
            .expect("a result")
            .unwrap();
        let r = accessd::protocol::client::verify_result(&agent, &bytes).unwrap();
        assert_eq!(r.code.as_str(), "ok", "{}", r.message);
        ids.push(r.id.unwrap());
    }
    let want: Vec<String> = (0..n).map(|i| format!("offline-{i:02}")).collect();
    assert_eq!(ids, want, "results in publish order");
    // Applied in order: the keys sit in alice's file in publish order, once each.
    let ak = m.authorized_keys();
    let positions: Vec<usize> = (0..n)
        .map(|i| {
            let line = key_line(100 + i);
            assert_eq!(ak.matches(&line).count(), 1, "{ak}");
            ak.find(&line).unwrap()
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{ak}");
    assert_eq!(d.stop().code(), Some(0));
}

#[test]
fn python_paho_pynacl_control_plane_sends_and_verifies() {
    if !require_root() {
        return;
    }
    let python = Path::new("/usr/bin/python3");
    let has_modules = python.exists()
        && Command::new(python)
            .args(["-c", "import paho.mqtt.client, nacl.signing"])
            .status()
            .is_ok_and(|s| s.success());
    if !has_modules {
        mqtt_support::gate::require(
            false,
            "/usr/bin/python3 with python3-paho-mqtt and python3-nacl",
        );
        return;
    }
    let Some((_dir, broker)) = start_broker() else {
        return;
    };
    let (m, d) = machine_with_mqtt(&broker);
    let dir = m.tmp.path();
    let seed = dir.join("cp.seed");
    // The control-plane key the machine trusts (id "cp"): seed [1; 32].
    private_file(
        &seed,
        &base64::engine::general_purpose::STANDARD.encode([1u8; 32]),
    );
    let pw = dir.join("py-control.password");
    private_file(&pw, CONTROL_PASSWORD);
    let ops = dir.join("ops.json");
    std::fs::write(
        &ops,
        json!([
            {"id": "py-1", "op": "add_keys", "args": {"user": USER, "keys": [key_line(42)]}},
            {"id": "py-2", "op": "set_password", "args": {"user": USER, "password": {"seal": "Py-Passw0rd!x"}}},
            {"id": "py-3", "op": "inventory"},
            {"id": "py-1", "op": "add_keys", "args": {"user": USER, "keys": [key_line(42)]}},
        ])
        .to_string(),
    )
    .unwrap();
    let agent = base64::engine::general_purpose::STANDARD.encode(m.agent_key().as_bytes());
    let shadow_before = m.shadow_line(USER);
    let out = Command::new(python)
        .arg(mqtt_support::repo_file(
            "agent/tests/mqtt_interop/control_plane.py",
        ))
        .args([
            "--port",
            &broker.port.to_string(),
            "--username",
            CONTROL_USER,
        ])
        .arg("--password-file")
        .arg(&pw)
        .args([
            "--instance",
            INSTANCE,
            "--keyid",
            "cp",
            "--agent-key",
            &agent,
        ])
        .arg("--key-seed-file")
        .arg(&seed)
        .arg(&ops)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python control plane failed: {}\n{stdout}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        m.log_text()
    );
    let results: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let codes: Vec<(&str, &str)> = results
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        codes,
        [
            ("py-1", "ok"),
            ("py-2", "ok"),
            ("py-3", "ok"),
            ("py-1", "replayed")
        ]
    );
    assert!(m.authorized_keys().contains(&key_line(42)));
    let shadow_after = m.shadow_line(USER);
    assert_ne!(shadow_before, shadow_after);
    assert!(shadow_after.split(':').nth(1).unwrap().starts_with("$6$"));
    assert_eq!(d.stop().code(), Some(0));
}

#[test]
fn a_broker_that_is_down_never_blocks_the_inbox_and_is_joined_when_it_returns() {
    if !require_root() {
        return;
    }
    let Some((_dir, mut broker)) = start_broker() else {
        return;
    };
    // Its port, with nothing listening there.
    broker.kill();
    let m = Machine::new();
    write_mqtt_config(&m, &broker.url(false), 0o600);
    let d = m.start();
    m.wait_log("MQTT connection failed: cannot reach broker", 1);
    std::fs::create_dir_all(m.inbox()).unwrap();
    m.drop_cmd(
        "while-broker-down.json",
        &m.sign(
            "inbox-1",
            "add_keys",
            json!({"user": USER, "keys": [key_line(7)]}),
        ),
    );
    let r = m.result("while-broker-down.json");
    assert_eq!(r.code.as_str(), "ok", "{}", r.message);
    assert!(m.authorized_keys().contains(&key_line(7)));

    // The broker comes back on its port: the agent, retrying with backoff,
    // joins it, and MQTT commands flow.
    broker.restart();
    m.wait_log("subscribed to the command topic", 1);
    let opts = control_options(m.tmp.path());
    let env = m.sign("after-return", "inventory", json!({}));
    let (code, r) = accessctl_send(&m, &broker, &opts, &env);
    assert_eq!((code, r["code"].as_str()), (0, Some("ok")), "{r}");
    assert_eq!(d.stop().code(), Some(0));
}

#[test]
fn a_password_file_others_can_read_stops_the_daemon_with_a_clear_error() {
    if !require_root() {
        return;
    }
    let m = Machine::new();
    let pw = write_mqtt_config(&m, "mqtt://127.0.0.1:1", 0o644);
    let out = Command::new(Machine::bin())
        .arg("--config")
        .arg(&m.config)
        .env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "accessd started with a 0644 password file"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&pw.display().to_string()) && err.contains("0644"),
        "the error names the file and its mode: {err}"
    );
}
