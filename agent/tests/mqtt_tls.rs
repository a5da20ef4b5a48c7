//! `mqtts://` against a real mosquitto with a CA made here by openssl:
//! a round trip with a client certificate, and a wrong CA refused with an
//! error that names the broker and the CA file.

mod mqtt_support;

use std::sync::{Arc, Mutex};

use mqtt_support::*;

const I: &str = "i-test";

fn tls_agent_config(
    dir: &std::path::Path,
    url: &str,
    ca: &std::path::Path,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> accessd::config::MqttConfig {
    let mut cfg = agent_config(dir, url, I);
    cfg.ca_file = Some(ca.to_path_buf());
    if let Some((cert, key)) = client {
        cfg.client_cert = Some(cert.to_path_buf());
        cfg.client_key = Some(key.to_path_buf());
    }
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_round_trip_with_client_certificate() {
    if require("openssl").is_none() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let pki = make_ca(&t.path().join("pki"), "good");
    let Some(broker) = Broker::start(&t.path().join("broker"), Some(&pki)) else {
        return;
    };
    let state = t.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let applied = Arc::new(Mutex::new(Applied::default()));
    // A client key others can read is refused before any connection.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pki.client_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let loose = tls_agent_config(
        t.path(),
        &broker.url(true),
        &pki.ca,
        Some((&pki.client_cert, &pki.client_key)),
    );
    let e = accessd::mqtt::options::tls_config(&loose).unwrap_err();
    assert!(e.to_string().contains("0644"), "{e}");
    std::fs::set_permissions(&pki.client_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = tls_agent_config(
        t.path(),
        &broker.url(true),
        &pki.ca,
        Some((&pki.client_cert, &pki.client_key)),
    );
    let mut agent = Agent::start(&cfg, I, &state, applied.clone());
    agent.wait_subscribed().await;

    // The control plane over TLS too (rumqttc, the same rustls stack).
    let mut o = rumqttc::MqttOptions::new("cp-tls", "127.0.0.1", broker.port);
    o.set_credentials(CONTROL_USER, CONTROL_PASSWORD);
    let mut cfg_cp = cfg.clone();
    cfg_cp.url = broker.url(true);
    let tls = accessd::mqtt::options::tls_config(&cfg_cp).unwrap();
    o.set_transport(rumqttc::Transport::tls_with_config(tls.into()));
    let (cp, mut ev) = rumqttc::AsyncClient::new(o, 10);
    cp.subscribe(format!("accessd/{I}/results"), rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    cp.publish(
        format!("accessd/{I}/commands"),
        rumqttc::QoS::AtLeastOnce,
        false,
        command("over-tls"),
    )
    .await
    .unwrap();
    let result = tokio::time::timeout(PATIENCE, async {
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = ev.poll().await.unwrap()
            {
                break p;
            }
        }
    })
    .await
    .expect("a result over TLS");
    let r: serde_json::Value = serde_json::from_slice(&result.payload).unwrap();
    assert_eq!(r["id"], "over-tls");
    assert_eq!(r["status"], "ok");
    assert!(broker.log().contains("as i-test"), "the agent connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_is_refused_with_an_error_naming_broker_and_ca_file() {
    if require("openssl").is_none() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let pki = make_ca(&t.path().join("pki"), "good");
    let other = make_ca(&t.path().join("pki-other"), "other");
    let Some(broker) = Broker::start(&t.path().join("broker"), Some(&pki)) else {
        return;
    };
    let state = t.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let applied = Arc::new(Mutex::new(Applied::default()));
    // A CA that did not issue the broker's certificate.
    let cfg = tls_agent_config(
        t.path(),
        &broker.url(true),
        &other.ca,
        Some((&pki.client_cert, &pki.client_key)),
    );
    let mut agent = Agent::start(&cfg, I, &state, applied.clone());
    let h = agent.handle.as_mut().unwrap();
    let s = tokio::time::timeout(PATIENCE, h.wait_for(|s| s.last_error.is_some()))
        .await
        .expect("the failure is reported");
    let err = s.last_error.unwrap();
    eprintln!("wrong CA error: {err}");
    assert!(!s.connected);
    assert!(err.contains(&broker.url(true)), "names the broker: {err}");
    assert!(
        err.contains(&other.ca.display().to_string()),
        "names the CA file: {err}"
    );
    assert!(err.contains("not trusted"), "{err}");
    assert!(
        !broker.log().contains("as i-test"),
        "the agent must not have completed an MQTT connection"
    );
    assert_eq!(applied.lock().unwrap().deliveries, 0);
}

#[test]
fn mqtts_config_errors_name_the_file() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("absent-ca.pem");
    let cfg: accessd::config::MqttConfig = toml::from_str(&format!(
        "url = \"mqtts://127.0.0.1:8883\"\nca_file = {:?}\n",
        missing.display().to_string()
    ))
    .unwrap();
    let e = accessd::mqtt::options::tls_config(&cfg).unwrap_err();
    assert!(e.to_string().contains("absent-ca.pem"), "{e}");
    let junk = t.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let cfg = accessd::config::MqttConfig {
        ca_file: Some(junk),
        ..cfg
    };
    let e = accessd::mqtt::options::tls_config(&cfg).unwrap_err();
    assert!(e.to_string().contains("junk.pem"), "{e}");
}
