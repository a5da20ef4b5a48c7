//! Fleet delivery over MQTT (PROTOCOL §5): commands arrive on
//! `<prefix>/<instance_id>/commands`, results leave on
//! `<prefix>/<instance_id>/results`, both QoS 1, through any MQTT 3.1.1 broker.
//!
//! The broker is trusted for delivery only: every command is verified by the
//! engine like an inbox file. What this module guarantees is delivery:
//!
//! - **At-least-once in, exactly-once applied.** The session is persistent
//!   (`clean_session=false`, stable client id) and acknowledgements are
//!   manual: a command's PUBACK is sent only after the apply loop has made its
//!   result durable in the outbox ([`MqttCommand::answered`]). A crash before
//!   that leaves the command unacknowledged, and the broker delivers it again;
//!   the engine's replay set then answers the duplicate `replayed`.
//! - **No result lost.** A marker in `<state_dir>/mqtt-pending/` (see
//!   [`pending`]) lives from the moment a command is received until the
//!   broker acknowledges its result; results still marked are published again
//!   after a reconnect or a restart.
//! - **Never in the way.** The transport runs in its own task and talks to the
//!   apply loop through channels: a broker that is down only means no MQTT
//!   commands, never a blocked inbox. Reconnects wait a capped, jittered,
//!   exponential delay ([`backoff`]); rumqttc's event loop is always awaited.
//!
//! - **Nothing oversized in the way.** A publish over the envelope limit is
//!   acknowledged and dropped with a warning, never read whole ([`relay`]).
//!   A result over `max_result_bytes` (the engine never makes one; an older
//!   agent may have left one in `mqtt-pending`) is set aside with an error,
//!   left in the outbox; and a result whose publish was in flight when the
//!   connection dropped twice goes behind the others, so that no result is
//!   ever retried ahead of the rest forever.
//!
//! Results are published one at a time (the next after the broker's PUBACK of
//! the previous), so that each broker acknowledgement maps to exactly one
//! marker without relying on rumqttc's internal packet-id bookkeeping.
//!
//! These rules are decided in one place without I/O, the [`delivery`] state
//! machine (events in, actions out, unit tested without a broker); `Task`
//! here is its shell: it turns rumqttc's events and the apply loop's answers
//! into [`delivery::Event`]s and carries out the [`delivery::Action`]s
//! (rumqttc calls, pending markers, the hand-over, the reconnect delay).

pub mod backoff;
pub mod client;
pub mod delivery;
pub mod options;
pub mod pending;
pub mod relay;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, Outgoing, Packet, QoS, Request};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::config::MqttConfig;
use crate::error::Result;
use crate::state_dir::StateDir;
use backoff::Backoff;
pub use delivery::Status;
use delivery::{Action, Delivery, Recovery, Settings};
use options::{Connection, Topics};
use pending::Pending;

/// One command received from the broker, for the apply loop.
///
/// The apply loop handles `envelope` like an inbox file named `name`: it
/// writes the result to `<state_dir>/outbox/<name>.json` (atomically and
/// durably), then calls [`MqttCommand::answered`]. Dropping the command
/// without answering leaves it unacknowledged, so the broker delivers it
/// again after the next reconnect.
#[derive(Debug)]
pub struct MqttCommand {
    /// Unique, and sorting in arrival order: `mqtt-<unix µs>-<seq>`.
    pub name: String,
    pub envelope: Vec<u8>,
    ticket: Ticket,
}

impl MqttCommand {
    /// The result for this command is durable in the outbox: acknowledge the
    /// command to the broker and publish `result_envelope`.
    pub fn answered(mut self, result_envelope: Vec<u8>) {
        self.ticket.send(Some(result_envelope));
    }
}

#[derive(Debug)]
struct Ticket {
    name: String,
    /// The connection the command arrived on: a PUBACK is only meaningful
    /// there (after a reconnect the broker sends the command again, and the
    /// packet id may already name another message).
    generation: u64,
    /// What is needed to acknowledge it (payload stripped).
    publish: rumqttc::Publish,
    answers: Option<mpsc::UnboundedSender<Answer>>,
}

impl Ticket {
    fn send(&mut self, result: Option<Vec<u8>>) {
        if let Some(tx) = self.answers.take() {
            // The transport may be gone (shutdown): the marker then stays and
            // the result is published at the next start.
            let _ = tx.send(Answer {
                name: std::mem::take(&mut self.name),
                generation: self.generation,
                publish: self.publish.clone(),
                result,
            });
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.send(None);
    }
}

#[derive(Debug)]
struct Answer {
    name: String,
    generation: u64,
    publish: rumqttc::Publish,
    /// `None`: the apply loop dropped the command without a result.
    result: Option<Vec<u8>>,
}

/// Start the transport for the daemon when `[mqtt]` is configured. Must be
/// called inside the runtime.
pub fn start_for(
    cfg: &crate::config::Config,
    state: &StateDir,
) -> Result<Option<(mpsc::UnboundedReceiver<MqttCommand>, Handle)>> {
    let Some(mqtt) = &cfg.mqtt else {
        return Ok(None);
    };
    let (rx, handle) = spawn(
        mqtt,
        &cfg.instance_id,
        state,
        cfg.max_envelope_bytes,
        TransportOptions {
            max_result_bytes: cfg.max_result_bytes,
            ..TransportOptions::default()
        },
    )?;
    Ok(Some((rx, handle)))
}

/// Tuning that is not part of accessd.toml.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Results larger than this are never published (config
    /// `max_result_bytes`).
    pub max_result_bytes: usize,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            max_result_bytes: 60 * 1024,
        }
    }
}

/// The running transport. Dropping it stops the task (gracefully, with an
/// MQTT DISCONNECT, when possible).
pub struct Handle {
    status: watch::Receiver<Status>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Handle {
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Wait until `pred` holds for the status.
    pub async fn wait_for(&mut self, pred: impl FnMut(&Status) -> bool) -> Status {
        if let Ok(s) = self.status.wait_for(pred).await {
            return s.clone();
        }
        self.status.borrow().clone()
    }

    /// Disconnect from the broker and wait for the task to end. Commands
    /// handed out and not yet answered are delivered again by the broker.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Start the transport on the current tokio runtime: recover unacknowledged
/// results from `state_dir`, connect, subscribe, and hand commands to the
/// returned receiver. Errors here are configuration errors (bad URL, CA or
/// password file, state directory); broker trouble is retried forever.
pub fn spawn(
    cfg: &MqttConfig,
    instance_id: &str,
    state: &StateDir,
    max_envelope_bytes: usize,
    opts: TransportOptions,
) -> Result<(mpsc::UnboundedReceiver<MqttCommand>, Handle)> {
    let conn = Connection::from_config(cfg, instance_id, max_envelope_bytes)?;
    let pending = Pending::open(state)?;
    let mut delivery = Delivery::new(Settings {
        broker: conn.url.to_string(),
        commands_topic: conn.topics.commands.clone(),
        max_envelope_bytes,
        max_result_bytes: opts.max_result_bytes,
        backoff: Backoff::new(opts.min_backoff, opts.max_backoff),
        had_session: pending.existed,
    });
    for name in pending.list()? {
        let result = pending.outbox_result(&name)?;
        match delivery.recover(name.clone(), result) {
            Recovery::Queued => {}
            Recovery::Unanswered => pending.clear(&name)?,
            Recovery::SetAside => clear_marker(&pending, &name),
        }
    }
    if delivery.queued() > 0 {
        info!(
            count = delivery.queued(),
            "results not yet acknowledged by the broker will be published again"
        );
    }
    let ca_file = cfg.ca_file.as_ref().map(|p| crate::fsx::show(p));
    let relay = relay::Relay::start(
        state,
        relay::Upstream {
            url: conn.url.clone(),
            tls: conn.tls.clone(),
            ca_file: ca_file.clone(),
        },
        max_envelope_bytes,
    )?;
    let (client, eventloop) = AsyncClient::new(conn.through_relay(&relay.socket), 256);
    // Unbounded, yet bounded in practice: a command is acknowledged only
    // once answered, and the broker stops sending after its inflight window
    // (mosquitto: max_inflight_messages, 20) of unacknowledged messages.
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let (answers_tx, answers_rx) = mpsc::unbounded_channel();
    let (status_tx, status_rx) = watch::channel(Status::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let task = Task {
        broker: conn.url.to_string(),
        ca_file,
        topics: conn.topics,
        client,
        eventloop,
        pending,
        commands: commands_tx,
        answers_tx,
        answers: answers_rx,
        status: status_tx,
        relay,
        delivery,
    };
    let join = tokio::spawn(task.run(shutdown_rx));
    Ok((
        commands_rx,
        Handle {
            status: status_rx,
            shutdown: shutdown_tx,
            task: Some(join),
        },
    ))
}

/// Remove a result's pending marker; failing is harmless (the result is
/// published once more at the next start).
fn clear_marker(pending: &Pending, name: &str) {
    if let Err(e) = pending.clear(name) {
        warn!(name = %name, error = %e, "cannot remove the pending marker");
    }
}

/// The I/O shell around [`Delivery`]: it turns what rumqttc and the apply
/// loop report into [`delivery::Event`]s and carries out the
/// [`delivery::Action`]s.
struct Task {
    broker: String,
    ca_file: Option<String>,
    topics: Topics,
    client: AsyncClient,
    eventloop: EventLoop,
    pending: Pending,
    commands: mpsc::UnboundedSender<MqttCommand>,
    answers_tx: mpsc::UnboundedSender<Answer>,
    answers: mpsc::UnboundedReceiver<Answer>,
    status: watch::Sender<Status>,
    relay: relay::Relay,
    delivery: Delivery,
}

type Message = rumqttc::Publish;

impl Task {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let wait = tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some(a) = self.answers.recv() => self.feed(delivery::Event::Answered {
                    name: a.name,
                    generation: a.generation,
                    message: a.publish,
                    result: a.result,
                }),
                event = self.eventloop.poll() => match event {
                    Ok(event) => match self.translate(event) {
                        Some(event) => self.feed(event),
                        None => None,
                    },
                    Err(e) => {
                        // The relay knows why the broker could not be reached
                        // (refused, TLS trust); rumqttc only sees its local
                        // socket close.
                        let reason = self
                            .relay
                            .take_error()
                            .unwrap_or_else(|| describe(&e, &self.broker, self.ca_file.as_deref()));
                        self.feed(delivery::Event::ConnectionLost { reason })
                    }
                },
            };
            if let Some(delay) = wait {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => break,
                }
            }
        }
        self.disconnect().await;
    }

    async fn disconnect(&mut self) {
        if !self.delivery.connected() {
            return;
        }
        if self.client.try_disconnect().is_ok() {
            // Let the event loop write the DISCONNECT; it then reports an error.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while self.eventloop.poll().await.is_ok() {}
            })
            .await;
        }
        info!(broker = %self.broker, "disconnected from the MQTT broker");
    }

    /// The events the delivery state machine takes; the rest (pings,
    /// outgoing acknowledgements...) are rumqttc's business.
    fn translate(&self, event: Event) -> Option<delivery::Event<Message>> {
        Some(match event {
            Event::Incoming(Packet::ConnAck(ack)) => delivery::Event::Connected {
                session_present: ack.session_present,
            },
            Event::Incoming(Packet::SubAck(ack)) => delivery::Event::Subscribed {
                granted: ack
                    .return_codes
                    .iter()
                    .all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure)),
            },
            Event::Incoming(Packet::Publish(p)) => delivery::Event::Message {
                topic: p.topic.clone(),
                bytes: p.payload.len(),
                oversized: self.relay.dropped(&p.payload).map(|d| d.bytes),
                message: p,
            },
            Event::Outgoing(Outgoing::Publish(pkid)) => delivery::Event::PublishSent { pkid },
            Event::Incoming(Packet::PubAck(ack)) => delivery::Event::PubAck { pkid: ack.pkid },
            _ => return None,
        })
    }

    /// Give the state machine one event and carry out its actions; the
    /// delay to wait before the next connection attempt, if it asks for one.
    fn feed(&mut self, event: delivery::Event<Message>) -> Option<Duration> {
        let mut wait = None;
        let mut actions = VecDeque::from(self.delivery.on(event));
        while let Some(action) = actions.pop_front() {
            match action {
                Action::ForgetLastConnection => {
                    self.eventloop
                        .pending
                        .retain(|r| !matches!(r, Request::Publish(_) | Request::Subscribe(_)));
                    self.eventloop.state.events.clear();
                }
                Action::Subscribe => {
                    if let Err(e) = self
                        .client
                        .try_subscribe(self.topics.commands.clone(), QoS::AtLeastOnce)
                    {
                        error!(broker = %self.broker, error = %e, "cannot queue the subscription");
                    }
                }
                Action::Ack(p) => {
                    if let Err(e) = self.client.try_ack(&p) {
                        warn!(error = %e, "cannot queue an acknowledgement; the broker will deliver the command again");
                    }
                }
                Action::Hand {
                    message,
                    generation,
                } => self.hand(message, generation),
                Action::Publish { name, bytes } => {
                    if let Err(e) = self.client.try_publish(
                        self.topics.results.clone(),
                        QoS::AtLeastOnce,
                        false,
                        bytes,
                    ) {
                        warn!(name = %name, error = %e, "cannot queue a result; retrying after reconnect");
                        actions.extend(self.delivery.on(delivery::Event::PublishNotQueued));
                    }
                }
                Action::ClearMarker { name } => clear_marker(&self.pending, &name),
                Action::Wait(delay) => wait = Some(delay),
            }
        }
        let now = self.delivery.status();
        self.status.send_if_modified(|s| {
            let changed = s != now;
            if changed {
                s.clone_from(now);
            }
            changed
        });
        wait
    }

    /// Mark the command pending, then hand it to the apply loop.
    fn hand(&mut self, mut p: Message, generation: u64) {
        let name = next_name();
        if let Err(e) = self.pending.mark(&name) {
            // Not acknowledged: the broker delivers it again after a reconnect.
            error!(name = %name, error = %e, "cannot record an incoming command; it stays with the broker");
            return;
        }
        let envelope = std::mem::take(&mut p.payload).to_vec();
        debug!(name = %name, bytes = envelope.len(), dup = p.dup, "command received");
        let cmd = MqttCommand {
            name: name.clone(),
            envelope,
            ticket: Ticket {
                name,
                generation,
                publish: p,
                answers: Some(self.answers_tx.clone()),
            },
        };
        if let Err(mpsc::error::SendError(cmd)) = self.commands.send(cmd) {
            // The apply loop is gone (shutting down): leave it with the broker.
            let mut cmd = cmd;
            cmd.ticket.answers = None;
            let _ = self.pending.clear(&cmd.name);
        }
    }
}

/// `mqtt-<unix µs, 16 digits>-<process sequence, 6 digits>`: unique, and
/// sorted the way commands arrived.
fn next_name() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed) % 1_000_000;
    format!("mqtt-{micros:016}-{seq:06}")
}

/// A connection error as an operator needs it: which broker, and for TLS
/// trust failures, which CA file did not vouch for it.
fn describe(e: &ConnectionError, broker: &str, ca_file: Option<&str>) -> String {
    if let ConnectionError::Tls(t) = e {
        if let Some(rustls_err) = tls_cause(t) {
            if matches!(rustls_err, rustls::Error::InvalidCertificate(_)) {
                return format!(
                    "the certificate of broker {broker} is not trusted by ca_file {}: {rustls_err}",
                    ca_file.unwrap_or("(none)")
                );
            }
            return format!("TLS handshake with broker {broker} failed: {rustls_err}");
        }
        return format!("TLS connection to broker {broker} failed: {t}");
    }
    match e {
        // MQTT 3.1.1 cannot skip a packet: the broker delivers it again on
        // every connection, so only the broker's operator can end this.
        ConnectionError::MqttState(rumqttc::StateError::Deserialization(
            rumqttc::Error::PayloadSizeLimitExceeded(size),
        )) => format!(
            "broker {broker} delivers a {size}-byte message, larger than this agent reads; \
             it is redelivered on every connection and holds back the commands queued after it: \
             remove it (or this client's session) on the broker and set message_size_limit there"
        ),
        ConnectionError::ConnectionRefused(code) => format!(
            "broker {broker} refused the connection ({code:?}): check username, password_file and the broker's ACL"
        ),
        ConnectionError::Io(io) => format!("cannot reach broker {broker}: {io}"),
        other => format!("broker {broker}: {other}"),
    }
}

fn tls_cause(e: &rumqttc::TlsError) -> Option<&rustls::Error> {
    match e {
        rumqttc::TlsError::TLS(r) => Some(r),
        rumqttc::TlsError::Io(io) => io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_sorted() {
        let a = next_name();
        let b = next_name();
        assert!(a < b, "{a} {b}");
        assert!(a.starts_with("mqtt-") && a.len() == "mqtt-".len() + 16 + 1 + 6);
    }
}
