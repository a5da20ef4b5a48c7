//! Shared by the `mqtt_*` tests: a real mosquitto on 127.0.0.1 and a free
//! port (generated config, the repository's ACL example, password file,
//! persistence), a control plane client, and a stand-in apply loop.
#![allow(dead_code)]

// A test binary that uses two support modules gets two copies of this
// small file; both are the same rule.
#[allow(clippy::duplicate_mod)]
#[path = "../gate/mod.rs"]
pub mod gate;

// The one wait loop of every suite (see ../wait/mod.rs), shared by path.
#[allow(clippy::duplicate_mod)]
#[path = "../wait/mod.rs"]
pub mod wait;
pub use wait::wait_until;

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use accessd::config::MqttConfig;
use accessd::mqtt::{self, Handle, MqttCommand, Status, TransportOptions};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

pub const CONTROL_USER: &str = "accessd-control";
pub const CONTROL_PASSWORD: &str = "control-pw";
/// Every instance's broker password in these tests (the ACL keys on the
/// username, which is the instance id).
pub const AGENT_PASSWORD: &str = "agent-pw";

/// A guard against a hung test, not a speed assertion.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// A required tool: missing means fail in CI, skip (with the reason) elsewhere.
pub fn require(tool: &str) -> Option<PathBuf> {
    match accessd::sys::find_program(tool) {
        Some(p) => Some(p),
        None => {
            gate::require(false, &format!("{tool} is not installed"));
            None
        }
    }
}

pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Files for a TLS listener, made with openssl in the test's directory.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA named `name`, a server certificate for IP 127.0.0.1 and a client
/// certificate, all signed by it.
pub fn make_ca(dir: &Path, name: &str) -> TlsFiles {
    std::fs::create_dir_all(dir).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let ca_key = format!("{name}-ca.key");
    let ca = format!("{name}-ca.pem");
    let subject = format!("/CN=accessd test CA {name}");
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-keyout",
        &ca_key,
        "-out",
        &ca,
        "-days",
        "2",
        "-subj",
        &subject,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &a);
    for (leaf, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let key = format!("{name}-{leaf}.key");
        let csr = format!("{name}-{leaf}.csr");
        let pem = format!("{name}-{leaf}.pem");
        let extf = format!("{name}-{leaf}.ext");
        std::fs::write(dir.join(&extf), ext).unwrap();
        let mut a = vec!["req"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
        openssl(dir, &a);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &extf,
            ],
        );
    }
    TlsFiles {
        ca: dir.join(&ca),
        server_cert: dir.join(format!("{name}-server.pem")),
        server_key: dir.join(format!("{name}-server.key")),
        client_cert: dir.join(format!("{name}-client.pem")),
        client_key: dir.join(format!("{name}-client.key")),
    }
}

/// mosquitto on 127.0.0.1, in its own directory. Killed on drop.
pub struct Broker {
    pub port: u16,
    pub dir: PathBuf,
    conf: PathBuf,
    child: Option<Child>,
    program: PathBuf,
}

impl Broker {
    /// `None` when mosquitto is missing outside CI (the test then returns).
    pub fn start(dir: &Path, tls: Option<&TlsFiles>) -> Option<Broker> {
        Self::start_with(dir, tls, true)
    }

    /// `secure: false` is for the benchmark only: anonymous, no ACL, so that
    /// any number of simulated instances can connect.
    pub fn start_with(dir: &Path, tls: Option<&TlsFiles>, secure: bool) -> Option<Broker> {
        Self::start_configured(dir, tls, secure, "")
    }

    /// Like [`Broker::start`], with `extra` appended to mosquitto.conf
    /// (e.g. `message_size_limit 65536\n`).
    pub fn start_extra(dir: &Path, extra: &str) -> Option<Broker> {
        Self::start_configured(dir, None, true, extra)
    }

    fn start_configured(
        dir: &Path,
        tls: Option<&TlsFiles>,
        secure: bool,
        extra: &str,
    ) -> Option<Broker> {
        let program = require("mosquitto")?;
        require("mosquitto_passwd")?;
        std::fs::create_dir_all(dir).unwrap();
        let passwd = dir.join("passwd");
        let _ = std::fs::remove_file(&passwd);
        for (user, pw) in [
            (CONTROL_USER, CONTROL_PASSWORD),
            ("i-test", AGENT_PASSWORD),
            ("i-other", AGENT_PASSWORD),
            ("i-daemon-test", AGENT_PASSWORD),
        ] {
            let mut c = Command::new("mosquitto_passwd");
            c.arg("-b");
            if !passwd.exists() {
                c.arg("-c");
            }
            let st = c
                .arg(&passwd)
                .arg(user)
                .arg(pw)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "mosquitto_passwd failed");
        }
        let port = free_port();
        let auth = if secure {
            format!(
                "allow_anonymous false\npassword_file {}\nacl_file {}\n",
                passwd.display(),
                repo_file("config/mosquitto-acl.example").display()
            )
        } else {
            "allow_anonymous true\n".to_owned()
        };
        let mut conf = format!(
            "# generated by the accessd tests\n\
             user root\n\
             listener {port} 127.0.0.1\n\
             {auth}\
             persistence true\n\
             persistence_location {dir}/\n\
             autosave_interval 1\n\
             autosave_on_changes true\n\
             max_queued_messages 10000\n\
             log_dest file {dir}/mosquitto.log\n\
             log_type all\n",
            dir = dir.display(),
        );
        if !secure {
            // Benchmark: no save after every change, no per-packet log.
            conf = conf
                .replace("autosave_interval 1\n", "")
                .replace("autosave_on_changes true\n", "")
                .replace(
                    "log_type all\n",
                    "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n",
                );
        }
        if let Some(t) = tls {
            conf.push_str(&format!(
                "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
                t.ca.display(),
                t.server_cert.display(),
                t.server_key.display()
            ));
        }
        conf.push_str(extra);
        let conf_path = dir.join("mosquitto.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut b = Broker {
            port,
            dir: dir.to_path_buf(),
            conf: conf_path,
            child: None,
            program,
        };
        // The free port may be taken by another test's broker before ours
        // binds it: then take another one.
        for _ in 0..5 {
            if b.try_start() {
                return Some(b);
            }
            let old = format!("listener {} ", b.port);
            b.port = free_port();
            let text = std::fs::read_to_string(&b.conf).unwrap();
            std::fs::write(
                &b.conf,
                text.replace(&old, &format!("listener {} ", b.port)),
            )
            .unwrap();
        }
        panic!(
            "mosquitto could not listen; see {}",
            b.dir.join("mosquitto.log").display()
        );
    }

    pub fn url(&self, tls: bool) -> String {
        format!(
            "{}://127.0.0.1:{}",
            if tls { "mqtts" } else { "mqtt" },
            self.port
        )
    }

    /// (Re)start on the same port, with the same persistence file.
    pub fn restart(&mut self) {
        assert!(
            self.try_start(),
            "mosquitto did not come back on port {}; see {}",
            self.port,
            self.dir.join("mosquitto.log").display()
        );
    }

    /// Start mosquitto and wait until it says it runs. A connect alone
    /// would not do: another broker may hold the port. False if it exited
    /// (the port was taken).
    fn try_start(&mut self) -> bool {
        assert!(self.child.is_none());
        let running = |b: &Broker| b.log().matches(" running").count();
        let before = running(self);
        let child = Command::new(&self.program)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mosquitto");
        self.child = Some(child);
        let mut exited = false;
        wait_until("mosquitto to start", Duration::from_secs(20), || {
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                exited = true;
                return true;
            }
            running(self) > before && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
        if exited {
            self.child = None;
        }
        !exited
    }

    /// SIGKILL: no goodbye to clients, persistence as of the last autosave.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `[mqtt]` section an agent uses in these tests.
pub fn agent_config(dir: &Path, url: &str, instance: &str) -> MqttConfig {
    let pw = dir.join(format!("{instance}.password"));
    std::fs::write(&pw, format!("{AGENT_PASSWORD}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    toml::from_str(&format!(
        "url = {url:?}\nusername = {instance:?}\npassword_file = {:?}\nkeep_alive_secs = 5\n",
        pw.display().to_string()
    ))
    .unwrap()
}

/// What the stand-in apply loop did, shared across agent restarts the way
/// the engine's replay store is kept on disk.
#[derive(Default, Debug)]
pub struct Applied {
    /// Command ids in the order they were applied (first time only).
    pub order: Vec<String>,
    /// How often each id was applied (must never exceed 1).
    pub count: HashMap<String, u32>,
    /// Every envelope handed over, including duplicates.
    pub deliveries: u32,
}

/// The stand-in for the engine + daemon: `{"id": ...}` in; writes the result
/// to `outbox/NAME.json`, then answers. A repeated id is `replayed`; input
/// that is not such JSON is `rejected` with a null id.
pub async fn apply_loop(
    mut rx: mpsc::UnboundedReceiver<MqttCommand>,
    state_dir: PathBuf,
    applied: Arc<Mutex<Applied>>,
) {
    let outbox = state_dir.join("outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    while let Some(cmd) = rx.recv().await {
        let id = serde_json::from_slice::<serde_json::Value>(&cmd.envelope)
            .ok()
            .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned));
        let status = {
            let mut a = applied.lock().unwrap();
            a.deliveries += 1;
            match &id {
                None => "rejected",
                Some(id) => {
                    let n = a.count.entry(id.clone()).or_insert(0);
                    if *n > 0 {
                        "replayed"
                    } else {
                        *n += 1;
                        a.order.push(id.clone());
                        "ok"
                    }
                }
            }
        };
        let result = serde_json::json!({"id": id, "status": status, "name": cmd.name,
            "bytes": cmd.envelope.len()});
        let bytes = serde_json::to_vec(&result).unwrap();
        // Durable before answering, as the daemon does.
        let path = outbox.join(format!("{}.json", cmd.name));
        let tmp = outbox.join(format!(".{}.tmp", cmd.name));
        std::fs::write(&tmp, &bytes).unwrap();
        std::fs::File::open(&tmp).unwrap().sync_all().unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        cmd.answered(bytes);
    }
}

/// An agent (transport + stand-in apply loop) on its own runtime, so that
/// [`Agent::kill`] can drop it mid-flight like a crash: no DISCONNECT, no
/// cleanup, only what is on disk survives.
pub struct Agent {
    rt: Option<tokio::runtime::Runtime>,
    pub handle: Option<Handle>,
}

impl Agent {
    pub fn start(
        cfg: &MqttConfig,
        instance: &str,
        state_dir: &Path,
        applied: Arc<Mutex<Applied>>,
    ) -> Agent {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (rx, handle) = {
            let _g = rt.enter();
            mqtt::spawn(
                cfg,
                instance,
                &accessd::state_dir::StateDir::open(state_dir).unwrap(),
                64 * 1024,
                fast_backoff(),
            )
            .unwrap()
        };
        rt.spawn(apply_loop(rx, state_dir.to_path_buf(), applied));
        Agent {
            rt: Some(rt),
            handle: Some(handle),
        }
    }

    /// The agent's status once `pred` holds; panics with `what` after
    /// [`PATIENCE`].
    pub async fn wait_for(&mut self, what: &str, pred: impl FnMut(&Status) -> bool) -> Status {
        let h = self.handle.as_mut().unwrap();
        tokio::time::timeout(PATIENCE, h.wait_for(pred))
            .await
            .expect(what)
    }

    pub async fn wait_subscribed(&mut self) {
        let h = self.handle.as_mut().unwrap();
        tokio::time::timeout(PATIENCE, h.wait_for(|s| s.subscribed))
            .await
            .expect("agent never subscribed");
    }

    /// Like a crash: every task is dropped at its next await point (no
    /// DISCONNECT is sent, the socket just closes), and this returns only
    /// once nothing of the old agent runs any more, as after a real kill.
    pub async fn kill(mut self) {
        if let Some(rt) = self.rt.take() {
            tokio::task::spawn_blocking(move || rt.shutdown_timeout(Duration::from_secs(30)))
                .await
                .unwrap();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

pub fn fast_backoff() -> TransportOptions {
    TransportOptions {
        min_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        ..TransportOptions::default()
    }
}

/// The control plane: publishes commands, collects results. Persistent
/// session and its own reconnect loop, so it rides out broker restarts too.
pub struct ControlPlane {
    pub client: AsyncClient,
    pub results: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    task: tokio::task::JoinHandle<()>,
}

impl ControlPlane {
    pub async fn connect(port: u16, client_id: &str) -> ControlPlane {
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_credentials(CONTROL_USER, CONTROL_PASSWORD);
        o.set_clean_session(false);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(4 << 20, 4 << 20);
        let (client, mut ev) = AsyncClient::new(o, 1000);
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
        let sub = client.clone();
        let task = tokio::spawn(async move {
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = sub.try_subscribe("accessd/+/results", QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(PATIENCE, ready_rx.recv())
            .await
            .expect("control plane never subscribed");
        ControlPlane {
            client,
            results: rx,
            task,
        }
    }

    pub async fn send(&self, instance: &str, body: impl Into<Vec<u8>>) {
        self.client
            .publish(
                format!("accessd/{instance}/commands"),
                QoS::AtLeastOnce,
                false,
                body,
            )
            .await
            .unwrap();
    }

    /// The next result, as JSON, with its topic.
    pub async fn next_result(&mut self) -> (String, serde_json::Value) {
        let (topic, bytes) = tokio::time::timeout(PATIENCE, self.results.recv())
            .await
            .expect("no result in time")
            .expect("control plane stopped");
        (
            topic,
            serde_json::from_slice(&bytes).expect("result is JSON"),
        )
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn command(id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"id": id})).unwrap()
}

pub fn pending_markers(state_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(state_dir.join("mqtt-pending"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
