//! Results within bounds over a real mosquitto and the real daemon (issue
//! 12, items 1 and 2): a user's huge key comment cannot wedge the fleet
//! channel, and with the broker limit docs/fleet.md recommends
//! (`message_size_limit 65536`) every result arrives, none dropped silently.

mod daemon_support;
mod mqtt_support;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use accessd::protocol::client::verify_result;
use accessd::protocol::result::ResultPayload;
use daemon_support::{
    add_users, fake_key, require_root, uid_of, write_keys, Daemon, Machine, INSTANCE, USER,
};
use mqtt_support::{Broker, ControlPlane, AGENT_PASSWORD};
use serde_json::{json, Value};

/// PROTOCOL §4.
const RESULT_LIMIT: usize = 60 * 1024;
/// How long to wait for one result before calling the channel wedged: a
/// guard against a hung test, not a speed assertion.
const WEDGED: Duration = Duration::from_secs(60);

fn private_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The daemon on machine `m`, with `[mqtt]` for `broker`, subscribed.
fn start_daemon(m: &Machine, broker: &Broker) -> Daemon {
    let pw = m.tmp.path().join("mqtt.password");
    private_file(&pw, &format!("{AGENT_PASSWORD}\n"));
    let cp = daemon_support::b64(&m.cp);
    let text = format!(
        "{}\n[mqtt]\nurl = {:?}\nusername = {INSTANCE:?}\npassword_file = {:?}\nkeep_alive_secs = 5\n",
        m.config_text(&[("cp", &cp)]),
        broker.url(false),
        pw.display().to_string()
    );
    m.write_raw_config(&text);
    let d = m.start();
    m.wait_log("subscribed to the command topic", 1);
    d
}

struct Fleet {
    rt: tokio::runtime::Runtime,
    cp: ControlPlane,
}

impl Fleet {
    fn new(broker: &Broker, id: &str) -> Fleet {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let cp = rt.block_on(ControlPlane::connect(broker.port, id));
        Fleet { rt, cp }
    }

    fn send(&self, env: Vec<u8>) {
        self.rt.block_on(self.cp.send(INSTANCE, env));
    }

    /// The verified result for `id` (others are skipped), with its size.
    fn result_for(&mut self, m: &Machine, id: &str) -> (usize, ResultPayload) {
        let agent = m.agent_key();
        loop {
            let got = self
                .rt
                .block_on(async { tokio::time::timeout(WEDGED, self.cp.results.recv()).await });
            let (_, bytes) = got
                .unwrap_or_else(|_| {
                    panic!(
                        "no result for {id}: the channel is wedged\nagent log:\n{}",
                        m.log_text()
                    )
                })
                .expect("control plane stopped");
            let r = verify_result(&agent, &bytes).expect("a result that verifies");
            if r.id.as_deref() == Some(id) {
                return (bytes.len(), r);
            }
        }
    }
}

/// Issue 12.1, as found: alice writes one valid key with a 1.5 MiB comment
/// into her own authorized_keys; the next inventory over MQTT made a ~2 MB
/// result, over rumqttc's 1 MiB packet limit, the agent reconnected and
/// published it first again, forever, and a later restart_sshd's result
/// never arrived.
#[test]
fn an_oversized_inventory_is_paged_and_never_wedges_the_mqtt_channel() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(&dir.path().join("broker"), None) else {
        return;
    };
    let m = Machine::new();
    let uid = uid_of(&m.root, USER);
    let line = fake_key(1, &"C".repeat(1536 * 1024));
    write_keys(&m.root, USER, uid, format!("{line}\n").as_bytes());
    let d = start_daemon(&m, &broker);
    let mut fleet = Fleet::new(&broker, "cp-bounds-wedge");
    fleet.send(m.sign("wedge-inventory", "inventory", json!({})));
    fleet.send(m.sign("wedge-restart", "restart_sshd", json!({})));
    let (size, inv) = fleet.result_for(&m, "wedge-inventory");
    assert_eq!(inv.code.as_str(), "ok", "{}", inv.message);
    assert!(size <= RESULT_LIMIT, "a {size}-byte result");
    let alice = inv.data["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == USER)
        .expect("alice listed");
    let comment = alice["keys"][0]["comment"].as_str().unwrap();
    assert!(comment.ends_with("...[1572864 bytes]"), "{comment}");
    let (_, restart) = fleet.result_for(&m, "wedge-restart");
    assert_eq!(restart.op.as_deref(), Some("restart_sshd"));
    // One connection all along: nothing made the transport reconnect.
    assert_eq!(
        m.log_text().matches("connected to the MQTT broker").count(),
        1,
        "{}",
        m.log_text()
    );
    assert_eq!(d.stop().code(), Some(0));
}

/// Issue 12.2, as found: mosquitto with `message_size_limit 65536` (what
/// docs/fleet.md recommends) dropped a 135 KB result ("Dropped too large
/// PUBLISH") yet acknowledged it; the agent cleared its marker and the
/// result vanished. Every page of a large inventory must arrive.
#[test]
fn every_result_arrives_through_a_broker_with_message_size_limit_65536() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) =
        Broker::start_extra(&dir.path().join("broker"), "message_size_limit 65536\n")
    else {
        return;
    };
    let m = Machine::new();
    let added = add_users(&m.root, 400, 5);
    let d = start_daemon(&m, &broker);
    let mut fleet = Fleet::new(&broker, "cp-bounds-limit");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..100 {
        let id = format!("limit-page-{page}");
        let mut args = json!({});
        if let Some(c) = &cursor {
            args["cursor"] = json!(c);
        }
        fleet.send(m.sign(&id, "inventory", args));
        let (size, r) = fleet.result_for(&m, &id);
        assert_eq!(r.code.as_str(), "ok", "{}", r.message);
        assert!(size <= RESULT_LIMIT, "page {page}: {size} bytes");
        for u in r.data["users"].as_array().unwrap() {
            seen.push(u["name"].as_str().unwrap().to_owned());
        }
        match r.data.get("next").and_then(Value::as_str) {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a user listed twice");
    for name in &added {
        assert!(unique.contains(name), "{name} missing");
    }
    assert!(
        !broker.log().contains("too large"),
        "the broker dropped something:\n{}",
        broker.log()
    );
    assert_eq!(d.stop().code(), Some(0));
}
