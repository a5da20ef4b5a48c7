//! The delivery state machine of the MQTT transport, without I/O: what to
//! do about each thing rumqttc, the relay and the apply loop report, as a
//! list of [`Action`]s for the transport task (`Task` in `mod.rs`) to carry
//! out. The same shape as ntpd-rs's sources, which return actions instead
//! of sending packets; here it means every delivery rule below is unit
//! tested with neither a broker nor root.
//!
//! The rules (see the module documentation of [`super`] for why):
//!
//! - Every CONNACK: forget what rumqttc kept of the last connection, then
//!   subscribe to the command topic again, then publish the next result.
//! - An incoming publish on the command topic is handed to the apply loop,
//!   tagged with the connection it came on; one the relay marked as over the
//!   envelope limit, or one on another topic, is acknowledged and dropped.
//! - A command is acknowledged when its result is durable, and only on the
//!   connection it arrived on (the broker delivers it again on a new one, and
//!   that copy is acknowledged instead).
//! - Results are published one at a time, in order; the broker's PUBACK of
//!   the one in flight clears its marker and lets the next go. What was in
//!   flight when the connection dropped goes first on the next connection,
//!   except after [`LOSSES_BEFORE_REQUEUE`] such losses, when it goes behind
//!   the others. A result over `max_result_bytes` is never published (its
//!   marker is cleared; it stays in the outbox), so it holds back nothing.
//! - A lost connection waits a capped, jittered, exponential delay before
//!   the next attempt; a CONNACK resets the delay, unless the last connection
//!   was lost with a result in flight and no PUBACK has come since.
//!
//! Logging is done here (`tracing`), where the decision is made; the
//! transport task logs only the I/O that fails.

use std::collections::VecDeque;
use std::time::Duration;

use tracing::{debug, error, info, warn};

use super::backoff::Backoff;

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

/// Connection losses with the same result in flight after which it waits
/// behind the other results.
pub const LOSSES_BEFORE_REQUEUE: u32 = 2;

/// What the transport reports. `M` is an incoming message as the transport
/// holds it (`rumqttc::Publish`): the state machine never looks inside, it
/// only says what to do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<M> {
    /// CONNACK: a connection is up.
    Connected { session_present: bool },
    /// SUBACK for the command topic.
    Subscribed { granted: bool },
    /// A PUBLISH from the broker.
    Message {
        topic: String,
        /// Its payload's size as received.
        bytes: usize,
        /// The relay replaced it by its marker: the original's size.
        oversized: Option<usize>,
        message: M,
    },
    /// rumqttc wrote a PUBLISH with this packet id.
    PublishSent { pkid: u16 },
    /// The broker acknowledged the PUBLISH with this packet id.
    PubAck { pkid: u16 },
    /// The last [`Action::Publish`] could not be queued with rumqttc.
    PublishNotQueued,
    /// The apply loop is done with a command it was handed.
    Answered {
        name: String,
        /// The connection it arrived on ([`Action::Hand`]).
        generation: u64,
        message: M,
        /// The result, durable in the outbox; `None`: dropped unanswered.
        result: Option<Vec<u8>>,
    },
    /// The connection, or the attempt to make one, failed.
    ConnectionLost {
        /// Why, for the operator (names the broker).
        reason: String,
    },
}

/// What the transport must do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<M> {
    /// Drop what rumqttc kept from the last connection: the PUBLISHes and
    /// SUBSCRIBEs it would resend by itself (the result queue here is the
    /// one source of what to resend), and its events not yet read (an old
    /// "PUBLISH sent" would be taken for the next result's; an old command
    /// would be acknowledged by a packet id that means something else now).
    ForgetLastConnection,
    /// Subscribe to the command topic (QoS 1).
    Subscribe,
    /// PUBACK this message.
    Ack(M),
    /// Mark the command pending (durably), then hand it to the apply loop,
    /// tagged with `generation`. If it cannot be marked, it is left
    /// unacknowledged with the broker; if the apply loop is gone, the
    /// marker is removed again.
    Hand { message: M, generation: u64 },
    /// Publish this result on the result topic (QoS 1). If rumqttc cannot
    /// take it, report [`Event::PublishNotQueued`].
    Publish { name: String, bytes: Vec<u8> },
    /// Remove this result's pending marker.
    ClearMarker { name: String },
    /// Wait this long before the next connection attempt.
    Wait(Duration),
}

/// A result found pending at start, and what became of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Queued, to be published again.
    Queued,
    /// No result in the outbox: the command was never answered (the broker
    /// delivers it again) or its result was pruned. Remove the marker.
    Unanswered,
    /// Over `max_result_bytes`: never published. Remove the marker; the
    /// result stays in the outbox.
    SetAside,
}

/// What the state machine is told once.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The broker, for logs.
    pub broker: String,
    /// The command topic, for logs.
    pub commands_topic: String,
    pub max_envelope_bytes: usize,
    /// Results larger than this are never published.
    pub max_result_bytes: usize,
    pub backoff: Backoff,
    /// A broker session is expected even on the first connection (the
    /// pending directory was there at start: an earlier run connected).
    pub had_session: bool,
}

#[derive(Debug)]
struct Queued {
    name: String,
    bytes: Vec<u8>,
    /// Connections lost while this result was in flight.
    losses: u32,
}

#[derive(Debug)]
struct Inflight {
    name: String,
    bytes: Vec<u8>,
    losses: u32,
    /// Set when rumqttc reports the PUBLISH as sent.
    pkid: Option<u16>,
}

/// The delivery state: results waiting and in flight, the connection.
#[derive(Debug)]
pub struct Delivery {
    settings: Settings,
    /// Results durable in the outbox, waiting for their turn to be published.
    queue: VecDeque<Queued>,
    inflight: Option<Inflight>,
    /// Incremented on every CONNACK.
    generation: u64,
    /// The last connection dropped while a result was in flight: the next
    /// CONNACK does not reset the backoff (a result that makes the broker
    /// drop us must not make us reconnect as fast as we can).
    lost_in_flight: bool,
    status: Status,
}

impl Delivery {
    pub fn new(settings: Settings) -> Delivery {
        Delivery {
            settings,
            queue: VecDeque::new(),
            inflight: None,
            generation: 0,
            lost_in_flight: false,
            status: Status::default(),
        }
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    pub fn connected(&self) -> bool {
        self.status.connected
    }

    /// Results waiting to be published (the one in flight not counted).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Before the first connection: the result `name` left pending by an
    /// earlier run, as read from the outbox.
    pub fn recover(&mut self, name: String, result: Option<Vec<u8>>) -> Recovery {
        match result {
            Some(bytes) if bytes.len() > self.settings.max_result_bytes => {
                self.set_aside(&name, bytes.len());
                Recovery::SetAside
            }
            Some(bytes) => {
                self.queue.push_back(Queued {
                    name,
                    bytes,
                    losses: 0,
                });
                Recovery::Queued
            }
            None => {
                info!(name = %name, "no result in the outbox for a pending MQTT command: it was never answered and the broker will deliver it again (or its result was pruned)");
                Recovery::Unanswered
            }
        }
    }

    /// Take one event; the actions to carry out, in order.
    pub fn on<M>(&mut self, event: Event<M>) -> Vec<Action<M>> {
        let mut out = Vec::new();
        match event {
            Event::Connected { session_present } => self.on_connected(session_present, &mut out),
            Event::Subscribed { granted } => self.on_subscribed(granted),
            Event::Message {
                topic,
                bytes,
                oversized,
                message,
            } => out.push(self.on_message(&topic, bytes, oversized, message)),
            Event::PublishSent { pkid } => {
                debug!(pkid, inflight = ?self.inflight.as_ref().map(|i| (&i.name, i.pkid)), "outgoing publish");
                if let Some(inf) = &mut self.inflight {
                    if inf.pkid.is_none() {
                        inf.pkid = Some(pkid);
                    }
                }
            }
            Event::PubAck { pkid } => self.on_puback(pkid, &mut out),
            Event::PublishNotQueued => {
                // Not pumped again here: it would fail the same way at once.
                // The next answer, PUBACK or CONNACK tries again.
                if let Some(inf) = self.inflight.take() {
                    self.queue.push_front(Queued {
                        name: inf.name,
                        bytes: inf.bytes,
                        losses: inf.losses,
                    });
                }
            }
            Event::Answered {
                name,
                generation,
                message,
                result,
            } => self.on_answered(name, generation, message, result, &mut out),
            Event::ConnectionLost { reason } => self.on_connection_lost(reason, &mut out),
        }
        out
    }

    fn on_connected<M>(&mut self, session_present: bool, out: &mut Vec<Action<M>>) {
        self.generation += 1;
        if !self.lost_in_flight {
            self.settings.backoff.reset();
        }
        out.push(Action::ForgetLastConnection);
        if let Some(inf) = self.inflight.take() {
            self.queue.push_front(Queued {
                name: inf.name,
                bytes: inf.bytes,
                losses: inf.losses,
            });
        }
        // A session is expected after any earlier connection, in this
        // process or (the pending directory exists) before a restart; a
        // broker without persistence loses it on restart.
        let had_session = self.status.connections > 0 || self.settings.had_session;
        if !session_present && had_session {
            warn!(broker = %self.settings.broker,
                "the broker had no session for this client: commands published while it was away may be lost (is broker persistence on?)");
        }
        info!(broker = %self.settings.broker, topic = %self.settings.commands_topic,
            session_present, "connected to the MQTT broker");
        self.status.connected = true;
        self.status.subscribed = false;
        self.status.connections += 1;
        out.push(Action::Subscribe);
        self.pump(out);
    }

    fn on_subscribed(&mut self, granted: bool) {
        if granted {
            info!(broker = %self.settings.broker, topic = %self.settings.commands_topic, "subscribed to the command topic");
            self.status.subscribed = true;
        } else {
            let msg = format!(
                "broker {} refused the subscription to {} (check its ACL for this client)",
                self.settings.broker, self.settings.commands_topic
            );
            error!("{msg}");
            self.status.last_error = Some(msg);
        }
    }

    fn on_message<M>(
        &mut self,
        topic: &str,
        bytes: usize,
        oversized: Option<usize>,
        message: M,
    ) -> Action<M> {
        let broker = &self.settings.broker;
        if topic != self.settings.commands_topic {
            // Only possible with a misbehaving broker or a shared client id:
            // nothing to answer to, so log it and acknowledge it, or the
            // broker would send it forever.
            warn!(broker = %broker, topic = %topic, bytes, "message on an unexpected topic ignored");
            return Action::Ack(message);
        }
        if let Some(size) = oversized {
            // Never a command (over the envelope limit, so the engine would
            // refuse it unread): acknowledged, so the broker forgets it and
            // the commands behind it flow (PROTOCOL §5).
            let limit = self.settings.max_envelope_bytes;
            warn!(broker = %broker, topic = %topic, bytes = size, limit,
                "a {size}-byte message on the command topic is over the envelope limit of {limit} bytes: acknowledged and dropped unread (set message_size_limit on the broker)");
            return Action::Ack(message);
        }
        Action::Hand {
            message,
            generation: self.generation,
        }
    }

    fn on_puback<M>(&mut self, pkid: u16, out: &mut Vec<Action<M>>) {
        debug!(pkid, inflight = ?self.inflight.as_ref().map(|i| (&i.name, i.pkid)), "puback");
        let Some(inf) = self.inflight.take_if(|inf| inf.pkid == Some(pkid)) else {
            return;
        };
        self.lost_in_flight = false;
        debug!(name = %inf.name, "result acknowledged by the broker");
        out.push(Action::ClearMarker { name: inf.name });
        self.status.results_acked += 1;
        self.pump(out);
    }

    fn on_answered<M>(
        &mut self,
        name: String,
        generation: u64,
        message: M,
        result: Option<Vec<u8>>,
        out: &mut Vec<Action<M>>,
    ) {
        let Some(bytes) = result else {
            warn!(name = %name, "command dropped without a result; the broker will deliver it again");
            out.push(Action::ClearMarker { name });
            return;
        };
        if generation == self.generation && self.status.connected {
            out.push(Action::Ack(message));
        } else {
            // It arrived on an earlier connection; the broker has sent it
            // again on this one (it was never acknowledged), and that copy
            // will be answered `replayed` and acknowledged.
            debug!(name = %name, "not acknowledging a command from an earlier connection");
        }
        if bytes.len() > self.settings.max_result_bytes {
            self.set_aside(&name, bytes.len());
            out.push(Action::ClearMarker { name });
            return;
        }
        self.queue.push_back(Queued {
            name,
            bytes,
            losses: 0,
        });
        self.pump(out);
    }

    fn on_connection_lost<M>(&mut self, reason: String, out: &mut Vec<Action<M>>) {
        let was_connected = std::mem::replace(&mut self.status.connected, false);
        if let Some(inf) = self.inflight.take() {
            self.lost_in_flight = true;
            let losses = inf.losses + 1;
            if losses >= LOSSES_BEFORE_REQUEUE {
                // It may be what breaks the connection: let the others go
                // first; it is tried again after them.
                warn!(name = %inf.name, losses,
                    "the connection dropped while this result was being published; it now waits behind the other results");
                self.queue.push_back(Queued {
                    name: inf.name,
                    bytes: inf.bytes,
                    losses: 0,
                });
            } else {
                self.queue.push_front(Queued {
                    name: inf.name,
                    bytes: inf.bytes,
                    losses,
                });
            }
        }
        let broker = &self.settings.broker;
        if was_connected {
            warn!(broker = %broker, "MQTT connection lost: {reason}");
        } else {
            warn!(broker = %broker, "MQTT connection failed: {reason}");
        }
        self.status.subscribed = false;
        self.status.last_error = Some(reason);
        let delay = self.settings.backoff.next_delay();
        debug!(broker = %broker, ?delay, "reconnecting after a delay");
        out.push(Action::Wait(delay));
    }

    /// Publish the next result if none is waiting for the broker's PUBACK.
    fn pump<M>(&mut self, out: &mut Vec<Action<M>>) {
        if !self.status.connected || self.inflight.is_some() {
            return;
        }
        let Some(next) = self.queue.pop_front() else {
            return;
        };
        out.push(Action::Publish {
            name: next.name.clone(),
            bytes: next.bytes.clone(),
        });
        self.inflight = Some(Inflight {
            name: next.name,
            bytes: next.bytes,
            losses: next.losses,
            pkid: None,
        });
    }

    /// A result that is never published: its marker goes (the caller's
    /// action), the result stays in the outbox for the operator.
    fn set_aside(&self, name: &str, size: usize) {
        let limit = self.settings.max_result_bytes;
        error!(name = %name, bytes = size,
            "result outbox/{name}.json is {size} bytes, over max_result_bytes = {limit}: it is not published (a broker would drop it or the connection would fail); it stays in the outbox");
    }
}

#[cfg(test)]
mod tests;
