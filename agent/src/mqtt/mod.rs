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

pub mod backoff;
pub mod client;
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

/// Connection state, for logs, readiness and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub connected: bool,
    /// The subscription to the command topic was granted on this connection.
    pub subscribed: bool,
    /// Successful connections so far.
    pub connections: u64,
    /// Results acknowledged by the broker since start.
    pub results_acked: u64,
    /// Why the last attempt or connection failed (names the broker).
    pub last_error: Option<String>,
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

/// Connection losses with the same result in flight after which it waits
/// behind the other results.
const LOSSES_BEFORE_REQUEUE: u32 = 2;

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
    let mut queue = VecDeque::new();
    for name in pending.list()? {
        match pending.outbox_result(&name)? {
            Some(bytes) if bytes.len() > opts.max_result_bytes => {
                set_aside(&pending, &name, bytes.len(), opts.max_result_bytes)
            }
            Some(bytes) => queue.push_back(Queued {
                name,
                bytes,
                losses: 0,
            }),
            // Never answered: the broker still holds the command (it was
            // never acknowledged) and delivers it again. Or, after a very
            // long broker outage, the outbox pruned the result first.
            None => {
                info!(name = %name, "no result in the outbox for a pending MQTT command: it was never answered and the broker will deliver it again (or its result was pruned)");
                pending.clear(&name)?
            }
        }
    }
    if !queue.is_empty() {
        info!(
            count = queue.len(),
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
        queue,
        inflight: None,
        commands: commands_tx,
        answers_tx,
        answers: answers_rx,
        status: status_tx,
        generation: 0,
        connected: false,
        backoff: Backoff::new(opts.min_backoff, opts.max_backoff),
        lost_in_flight: false,
        relay,
        max_envelope_bytes,
        max_result_bytes: opts.max_result_bytes,
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

struct Queued {
    name: String,
    bytes: Vec<u8>,
    /// Connections lost while this result was in flight.
    losses: u32,
}

struct Inflight {
    name: String,
    bytes: Vec<u8>,
    losses: u32,
    /// Set when rumqttc reports the PUBLISH as sent.
    pkid: Option<u16>,
}

/// A result the transport will never publish: its marker goes, the result
/// stays in the outbox for the operator.
fn set_aside(pending: &Pending, name: &str, size: usize, limit: usize) {
    error!(name = %name, bytes = size,
        "result outbox/{name}.json is {size} bytes, over max_result_bytes = {limit}: it is not published (a broker would drop it or the connection would fail); it stays in the outbox");
    if let Err(e) = pending.clear(name) {
        warn!(name = %name, error = %e, "cannot remove the pending marker");
    }
}

struct Task {
    broker: String,
    ca_file: Option<String>,
    topics: Topics,
    client: AsyncClient,
    eventloop: EventLoop,
    pending: Pending,
    /// Results durable in the outbox, waiting for their turn to be published.
    queue: VecDeque<Queued>,
    inflight: Option<Inflight>,
    commands: mpsc::UnboundedSender<MqttCommand>,
    answers_tx: mpsc::UnboundedSender<Answer>,
    answers: mpsc::UnboundedReceiver<Answer>,
    status: watch::Sender<Status>,
    /// Incremented on every CONNACK.
    generation: u64,
    connected: bool,
    backoff: Backoff,
    /// The last connection dropped while a result was in flight: the next
    /// CONNACK does not reset the backoff (a result that makes the broker
    /// drop us must not make us reconnect as fast as we can).
    lost_in_flight: bool,
    relay: relay::Relay,
    max_envelope_bytes: usize,
    max_result_bytes: usize,
}

impl Task {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some(answer) = self.answers.recv() => self.on_answer(answer),
                event = self.eventloop.poll() => match event {
                    Ok(event) => self.on_event(event),
                    Err(e) => {
                        self.on_connection_lost(&e);
                        let delay = self.backoff.next_delay();
                        debug!(broker = %self.broker, ?delay, "reconnecting after a delay");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = shutdown.changed() => break,
                        }
                    }
                },
            }
        }
        self.disconnect().await;
    }

    async fn disconnect(&mut self) {
        if !self.connected {
            return;
        }
        if self.client.try_disconnect().is_ok() {
            // Let the event loop write the DISCONNECT; it then reports an error.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while self.eventloop.poll().await.is_ok() {}
            })
            .await;
        }
        self.connected = false;
        info!(broker = %self.broker, "disconnected from the MQTT broker");
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Incoming(Packet::ConnAck(ack)) => {
                self.generation += 1;
                self.connected = true;
                if !self.lost_in_flight {
                    self.backoff.reset();
                }
                // rumqttc would resend the PUBLISHes of the last connection by
                // itself; the queue below is the one source of what to resend.
                self.eventloop
                    .pending
                    .retain(|r| !matches!(r, Request::Publish(_) | Request::Subscribe(_)));
                // Events still queued from the last connection are stale: an
                // old "PUBLISH sent" would be taken for the next result's, and
                // an old incoming command would be acknowledged by a packet id
                // that means something else now (the broker sends it again).
                self.eventloop.state.events.clear();
                if let Some(inf) = self.inflight.take() {
                    self.queue.push_front(Queued {
                        name: inf.name,
                        bytes: inf.bytes,
                        losses: inf.losses,
                    });
                }
                // A session is expected after any earlier connection, in
                // this process or (the pending directory exists) before a
                // restart; a broker without persistence loses it on restart.
                let had_session = self.status.borrow().connections > 0 || self.pending.existed;
                if !ack.session_present && had_session {
                    warn!(broker = %self.broker,
                        "the broker had no session for this client: commands published while it was away may be lost (is broker persistence on?)");
                }
                info!(broker = %self.broker, topic = %self.topics.commands,
                    session_present = ack.session_present, "connected to the MQTT broker");
                self.status.send_modify(|s| {
                    s.connected = true;
                    s.subscribed = false;
                    s.connections += 1;
                });
                if let Err(e) = self
                    .client
                    .try_subscribe(self.topics.commands.clone(), QoS::AtLeastOnce)
                {
                    error!(broker = %self.broker, error = %e, "cannot queue the subscription");
                }
                self.pump();
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                let granted = ack
                    .return_codes
                    .iter()
                    .all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure));
                if granted {
                    info!(broker = %self.broker, topic = %self.topics.commands, "subscribed to the command topic");
                    self.status.send_modify(|s| s.subscribed = true);
                } else {
                    let msg = format!(
                        "broker {} refused the subscription to {} (check its ACL for this client)",
                        self.broker, self.topics.commands
                    );
                    error!("{msg}");
                    self.status.send_modify(|s| s.last_error = Some(msg));
                }
            }
            Event::Incoming(Packet::Publish(p)) => self.on_publish(p),
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                debug!(pkid, inflight = ?self.inflight.as_ref().map(|i| (&i.name, i.pkid)), "outgoing publish");
                if let Some(inf) = &mut self.inflight {
                    if inf.pkid.is_none() {
                        inf.pkid = Some(pkid);
                    }
                }
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                debug!(pkid = ack.pkid, inflight = ?self.inflight.as_ref().map(|i| (&i.name, i.pkid)), "puback");
                let ours = matches!(&self.inflight, Some(inf) if inf.pkid == Some(ack.pkid));
                if ours {
                    let inf = self.inflight.take().expect("checked above");
                    self.lost_in_flight = false;
                    if let Err(e) = self.pending.clear(&inf.name) {
                        // Harmless: the result is published once more at restart.
                        warn!(name = %inf.name, error = %e, "cannot remove the pending marker");
                    }
                    debug!(name = %inf.name, "result acknowledged by the broker");
                    self.status.send_modify(|s| s.results_acked += 1);
                    self.pump();
                }
            }
            _ => {}
        }
    }

    fn on_publish(&mut self, mut p: rumqttc::Publish) {
        if p.topic != self.topics.commands {
            // Only possible with a misbehaving broker or a shared client id:
            // nothing to answer to, so log it and acknowledge it, or the
            // broker would send it forever.
            warn!(broker = %self.broker, topic = %p.topic, bytes = p.payload.len(),
                "message on an unexpected topic ignored");
            self.ack(&p);
            return;
        }
        if let Some(d) = self.relay.dropped(&p.payload) {
            // Never a command (over the envelope limit, so the engine would
            // refuse it unread): acknowledged, so the broker forgets it and
            // the commands behind it flow (PROTOCOL §5).
            warn!(broker = %self.broker, topic = %p.topic, bytes = d.bytes,
                limit = self.max_envelope_bytes,
                "a {}-byte message on the command topic is over the envelope limit of {} bytes: acknowledged and dropped unread (set message_size_limit on the broker)",
                d.bytes, self.max_envelope_bytes);
            self.ack(&p);
            return;
        }
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
                generation: self.generation,
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

    fn on_answer(&mut self, a: Answer) {
        let Some(bytes) = a.result else {
            warn!(name = %a.name, "command dropped without a result; the broker will deliver it again");
            let _ = self.pending.clear(&a.name);
            return;
        };
        if a.generation == self.generation && self.connected {
            self.ack(&a.publish);
        } else {
            // It arrived on an earlier connection; the broker has sent it
            // again on this one (it was never acknowledged), and that copy
            // will be answered `replayed` and acknowledged.
            debug!(name = %a.name, "not acknowledging a command from an earlier connection");
        }
        if bytes.len() > self.max_result_bytes {
            set_aside(&self.pending, &a.name, bytes.len(), self.max_result_bytes);
            return;
        }
        self.queue.push_back(Queued {
            name: a.name,
            bytes,
            losses: 0,
        });
        self.pump();
    }

    fn ack(&mut self, p: &rumqttc::Publish) {
        if let Err(e) = self.client.try_ack(p) {
            warn!(error = %e, "cannot queue an acknowledgement; the broker will deliver the command again");
        }
    }

    /// Publish the next result if none is waiting for the broker's PUBACK.
    fn pump(&mut self) {
        if !self.connected || self.inflight.is_some() {
            return;
        }
        let Some(next) = self.queue.pop_front() else {
            return;
        };
        match self.client.try_publish(
            self.topics.results.clone(),
            QoS::AtLeastOnce,
            false,
            next.bytes.clone(),
        ) {
            Ok(()) => {
                self.inflight = Some(Inflight {
                    name: next.name,
                    bytes: next.bytes,
                    losses: next.losses,
                    pkid: None,
                })
            }
            Err(e) => {
                warn!(name = %next.name, error = %e, "cannot queue a result; retrying after reconnect");
                self.queue.push_front(next);
            }
        }
    }

    fn on_connection_lost(&mut self, e: &ConnectionError) {
        let was_connected = std::mem::replace(&mut self.connected, false);
        if let Some(inf) = self.inflight.take() {
            self.lost_in_flight = true;
            let q = Queued {
                name: inf.name,
                bytes: inf.bytes,
                losses: inf.losses + 1,
            };
            if q.losses >= LOSSES_BEFORE_REQUEUE {
                // It may be what breaks the connection: let the others go
                // first; it is tried again after them.
                warn!(name = %q.name, losses = q.losses,
                    "the connection dropped while this result was being published; it now waits behind the other results");
                self.queue.push_back(Queued { losses: 0, ..q });
            } else {
                self.queue.push_front(q);
            }
        }
        // The relay knows why the broker could not be reached (refused,
        // TLS trust); rumqttc only sees its local socket close.
        let msg = self
            .relay
            .take_error()
            .unwrap_or_else(|| describe(e, &self.broker, self.ca_file.as_deref()));
        if was_connected {
            warn!(broker = %self.broker, "MQTT connection lost: {msg}");
        } else {
            warn!(broker = %self.broker, "MQTT connection failed: {msg}");
        }
        self.status.send_modify(|s| {
            s.connected = false;
            s.subscribed = false;
            s.last_error = Some(msg);
        });
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
