//! The delivery rules, event by event, with neither a broker nor root. A
//! message is a `&str` here (the state machine never looks inside one).

use super::*;

type M = &'static str;

const COMMANDS: &str = "accessd/i-1/commands";
const LIMIT: usize = 100;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// No jitter: each delay is exactly half its cap (500 ms, 1 s, 2 s, 4 s).
fn machine() -> Delivery {
    machine_with_session(false)
}

fn machine_with_session(had_session: bool) -> Delivery {
    Delivery::new(Settings {
        broker: "mqtt://broker.test:1883".into(),
        commands_topic: COMMANDS.into(),
        max_envelope_bytes: 1000,
        max_result_bytes: LIMIT,
        backoff: Backoff::with_jitter(ms(1000), ms(8000), || 0),
        had_session,
    })
}

fn connack() -> Event<M> {
    Event::Connected {
        session_present: true,
    }
}

fn lost() -> Event<M> {
    Event::ConnectionLost {
        reason: "cannot reach broker mqtt://broker.test:1883: refused".into(),
    }
}

fn command(m: M) -> Event<M> {
    Event::Message {
        topic: COMMANDS.into(),
        bytes: 10,
        oversized: None,
        message: m,
    }
}

fn answered(name: &str, generation: u64, m: M, result: &[u8]) -> Event<M> {
    Event::Answered {
        name: name.into(),
        generation,
        message: m,
        result: Some(result.to_vec()),
    }
}

fn sent(pkid: u16) -> Event<M> {
    Event::PublishSent { pkid }
}

fn puback(pkid: u16) -> Event<M> {
    Event::PubAck { pkid }
}

fn publish(name: &str, bytes: &[u8]) -> Action<M> {
    Action::Publish {
        name: name.into(),
        bytes: bytes.to_vec(),
    }
}

fn clear(name: &str) -> Action<M> {
    Action::ClearMarker { name: name.into() }
}

fn hand(m: M, generation: u64) -> Action<M> {
    Action::Hand {
        message: m,
        generation,
    }
}

fn on_connect() -> Vec<Action<M>> {
    vec![Action::ForgetLastConnection, Action::Subscribe]
}

fn on_connect_then(a: Action<M>) -> Vec<Action<M>> {
    let mut v = on_connect();
    v.push(a);
    v
}

#[test]
fn subscribes_again_after_every_connack() {
    let mut d = machine();
    for n in 1..=3 {
        assert_eq!(d.on(connack()), on_connect(), "connection {n}");
        assert!(d.status().connected && !d.status().subscribed);
        assert_eq!(d.on(Event::<M>::Subscribed { granted: true }), []);
        assert!(d.status().subscribed);
        assert!(matches!(d.on(lost())[..], [Action::Wait(_)]));
        assert!(!d.status().connected && !d.status().subscribed);
    }
    assert_eq!(d.status().connections, 3);
}

#[test]
fn a_refused_subscription_is_reported_in_the_status() {
    let mut d = machine();
    d.on(connack());
    assert_eq!(d.on(Event::<M>::Subscribed { granted: false }), []);
    let s = d.status();
    assert!(s.connected && !s.subscribed, "{s:?}");
    let e = s.last_error.as_deref().unwrap();
    assert!(
        e.contains("mqtt://broker.test:1883") && e.contains(COMMANDS) && e.contains("ACL"),
        "{e}"
    );
}

#[test]
fn a_command_is_handed_over_tagged_with_the_connection_it_came_on() {
    let mut d = machine();
    d.on(connack());
    assert_eq!(d.on(command("c1")), [hand("c1", 1)]);
    d.on(lost());
    d.on(connack());
    assert_eq!(d.on(command("c1-again")), [hand("c1-again", 2)]);
}

#[test]
fn an_oversized_message_is_acknowledged_and_never_handed_over() {
    let mut d = machine();
    d.on(connack());
    let big = Event::Message {
        topic: COMMANDS.into(),
        bytes: 40,
        oversized: Some(2 << 20),
        message: "huge",
    };
    assert_eq!(d.on(big), [Action::Ack("huge")]);
    // The one behind it flows.
    assert_eq!(d.on(command("next")), [hand("next", 1)]);
}

#[test]
fn a_message_on_another_topic_is_acknowledged_and_never_handed_over() {
    let mut d = machine();
    d.on(connack());
    let stray = Event::Message {
        topic: "accessd/i-2/commands".into(),
        bytes: 10,
        oversized: None,
        message: "stray",
    };
    assert_eq!(d.on(stray), [Action::Ack("stray")]);
}

#[test]
fn a_command_is_acknowledged_once_answered_and_its_result_published() {
    let mut d = machine();
    d.on(connack());
    d.on(command("c1"));
    assert_eq!(
        d.on(answered("mqtt-1", 1, "c1", b"r1")),
        [Action::Ack("c1"), publish("mqtt-1", b"r1")]
    );
}

#[test]
fn a_redelivered_command_is_acknowledged_only_on_the_connection_it_came_on() {
    let mut d = machine();
    d.on(connack());
    assert_eq!(d.on(command("c1")), [hand("c1", 1)]);
    d.on(lost());
    d.on(connack());
    // The broker delivers it again on the new connection.
    assert_eq!(d.on(command("c1-dup")), [hand("c1-dup", 2)]);
    // The first copy's answer: its packet id means nothing on this
    // connection, so no PUBACK; its result is still published.
    assert_eq!(
        d.on(answered("mqtt-1", 1, "c1", b"ok")),
        [publish("mqtt-1", b"ok")]
    );
    // The second copy (answered `replayed`) is the one acknowledged.
    assert_eq!(
        d.on(answered("mqtt-2", 2, "c1-dup", b"replayed")),
        [Action::Ack("c1-dup")]
    );
}

#[test]
fn an_answer_while_disconnected_is_not_acknowledged_and_its_result_waits() {
    let mut d = machine();
    d.on(connack());
    d.on(command("c1"));
    d.on(lost());
    assert_eq!(d.on(answered("mqtt-1", 1, "c1", b"r1")), []);
    assert_eq!(d.on(connack()), on_connect_then(publish("mqtt-1", b"r1")));
}

#[test]
fn a_command_dropped_unanswered_loses_its_marker_and_is_not_acknowledged() {
    let mut d = machine();
    d.on(connack());
    d.on(command("c1"));
    let dropped = Event::Answered {
        name: "mqtt-1".into(),
        generation: 1,
        message: "c1",
        result: None,
    };
    assert_eq!(d.on(dropped), [clear("mqtt-1")]);
    assert_eq!(d.queued(), 0);
}

#[test]
fn results_are_published_one_at_a_time_in_order() {
    let mut d = machine();
    d.on(connack());
    assert_eq!(
        d.on(answered("mqtt-1", 1, "c1", b"r1")),
        [Action::Ack("c1"), publish("mqtt-1", b"r1")]
    );
    assert_eq!(
        d.on(answered("mqtt-2", 1, "c2", b"r2")),
        [Action::Ack("c2")]
    );
    assert_eq!(d.on(sent(7)), []);
    assert_eq!(d.on(puback(7)), [clear("mqtt-1"), publish("mqtt-2", b"r2")]);
    assert_eq!(d.on(sent(8)), []);
    assert_eq!(d.on(puback(8)), [clear("mqtt-2")]);
    assert_eq!(d.status().results_acked, 2);
}

#[test]
fn a_puback_for_another_packet_clears_nothing() {
    let mut d = machine();
    d.on(connack());
    d.on(answered("mqtt-1", 1, "c1", b"r1"));
    // Before rumqttc reports the PUBLISH sent, no packet id is ours.
    assert_eq!(d.on(puback(7)), []);
    d.on(sent(7));
    // A second "sent" (a resend) does not change which id is ours.
    d.on(sent(9));
    assert_eq!(d.on(puback(9)), []);
    assert_eq!(d.on(puback(7)), [clear("mqtt-1")]);
    assert_eq!(d.status().results_acked, 1);
}

#[test]
fn pending_results_are_republished_after_a_reconnect() {
    let mut d = machine();
    d.on(connack());
    d.on(answered("mqtt-1", 1, "c1", b"r1"));
    d.on(answered("mqtt-2", 1, "c2", b"r2"));
    d.on(sent(3));
    d.on(lost());
    // The one in flight goes first again; its old packet id is forgotten.
    assert_eq!(d.on(connack()), on_connect_then(publish("mqtt-1", b"r1")));
    assert_eq!(d.on(puback(3)), []);
    d.on(sent(1));
    assert_eq!(d.on(puback(1)), [clear("mqtt-1"), publish("mqtt-2", b"r2")]);
}

#[test]
fn a_result_lost_in_flight_twice_goes_behind_the_others() {
    let mut d = machine();
    d.on(connack());
    d.on(answered("mqtt-1", 1, "c1", b"r1"));
    d.on(answered("mqtt-2", 1, "c2", b"r2"));
    d.on(answered("mqtt-3", 1, "c3", b"r3"));
    d.on(sent(1));
    d.on(lost());
    assert_eq!(d.on(connack()), on_connect_then(publish("mqtt-1", b"r1")));
    d.on(sent(1));
    d.on(lost());
    assert_eq!(d.on(connack()), on_connect_then(publish("mqtt-2", b"r2")));
    d.on(sent(1));
    assert_eq!(d.on(puback(1)), [clear("mqtt-2"), publish("mqtt-3", b"r3")]);
    d.on(sent(2));
    // Behind the others, with a fresh count.
    assert_eq!(d.on(puback(2)), [clear("mqtt-3"), publish("mqtt-1", b"r1")]);
    d.on(sent(3));
    d.on(lost());
    assert_eq!(d.on(connack()), on_connect_then(publish("mqtt-1", b"r1")));
}

#[test]
fn a_result_too_large_to_send_does_not_hold_back_the_next() {
    let big = [b'x'; LIMIT + 1];
    let mut d = machine();
    d.on(connack());
    // Answered: acknowledged (it is durable), its marker cleared, never
    // published; the next result goes out at once.
    assert_eq!(
        d.on(answered("mqtt-1", 1, "c1", &big)),
        [Action::Ack("c1"), clear("mqtt-1")]
    );
    assert_eq!(
        d.on(answered("mqtt-2", 1, "c2", b"r2")),
        [Action::Ack("c2"), publish("mqtt-2", b"r2")]
    );
    // At the limit is published.
    d.on(sent(1));
    d.on(answered("mqtt-3", 1, "c3", &big[..LIMIT]));
    assert_eq!(
        d.on(puback(1)),
        [clear("mqtt-2"), publish("mqtt-3", &big[..LIMIT])]
    );
}

#[test]
fn a_result_too_large_left_pending_at_start_is_set_aside_and_the_rest_recovered() {
    let mut d = machine();
    let big = vec![b'x'; LIMIT + 1];
    assert_eq!(d.recover("mqtt-1".into(), Some(big)), Recovery::SetAside);
    assert_eq!(d.recover("mqtt-2".into(), None), Recovery::Unanswered);
    assert_eq!(
        d.recover("mqtt-3".into(), Some(b"r3".to_vec())),
        Recovery::Queued
    );
    assert_eq!(
        d.recover("mqtt-4".into(), Some(b"r4".to_vec())),
        Recovery::Queued
    );
    assert_eq!(d.queued(), 2);
    assert_eq!(d.on(connack()), on_connect_then(publish("mqtt-3", b"r3")));
    d.on(sent(1));
    assert_eq!(d.on(puback(1)), [clear("mqtt-3"), publish("mqtt-4", b"r4")]);
}

#[test]
fn nothing_is_published_before_the_first_connack() {
    let mut d = machine();
    d.recover("mqtt-1".into(), Some(b"r1".to_vec()));
    assert_eq!(d.on(answered("mqtt-2", 0, "c2", b"r2")), []);
    assert_eq!(d.queued(), 2);
    assert_eq!(d.on(connack()), on_connect_then(publish("mqtt-1", b"r1")));
}

#[test]
fn a_result_rumqttc_cannot_take_is_not_retried_at_once_and_goes_first_later() {
    let mut d = machine();
    d.on(connack());
    d.on(answered("mqtt-1", 1, "c1", b"r1"));
    // Retrying at once would fail the same way, in a loop.
    assert_eq!(d.on(Event::<M>::PublishNotQueued), []);
    assert_eq!(
        d.on(answered("mqtt-2", 1, "c2", b"r2")),
        [Action::Ack("c2"), publish("mqtt-1", b"r1")]
    );
}

#[test]
fn the_reconnect_delay_doubles_to_its_cap_and_resets_after_a_connack() {
    let mut d = machine();
    let delays: Vec<_> = (0..6).flat_map(|_| d.on(lost())).collect();
    let waits: Vec<Action<M>> = [500, 1000, 2000, 4000, 4000, 4000]
        .map(|n| Action::Wait(ms(n)))
        .into();
    assert_eq!(delays, waits);
    d.on(connack());
    assert_eq!(d.on(lost()), [Action::Wait(ms(500))]);
    assert!(d
        .status()
        .last_error
        .as_deref()
        .unwrap()
        .contains("refused"));
}

#[test]
fn a_connection_lost_with_a_result_in_flight_keeps_the_delay_growing_until_a_puback() {
    let mut d = machine();
    d.on(connack());
    d.on(answered("mqtt-1", 1, "c1", b"r1"));
    d.on(sent(1));
    assert_eq!(d.on(lost()), [Action::Wait(ms(500))]);
    // This CONNACK does not reset the delay: the result may be what makes
    // the broker drop us.
    d.on(connack());
    d.on(sent(1));
    assert_eq!(d.on(lost()), [Action::Wait(ms(1000))]);
    d.on(connack());
    d.on(sent(1));
    assert_eq!(d.on(puback(1)), [clear("mqtt-1")]);
    // A PUBACK came: the next CONNACK resets it again.
    assert_eq!(d.on(lost()), [Action::Wait(ms(2000))]);
    d.on(connack());
    assert_eq!(d.on(lost()), [Action::Wait(ms(500))]);
}

/// One whole session, asserted whole: a result left by a crash, commands in
/// and out, the broker restarting under a result in flight, a redelivered
/// command, an oversized publish.
#[test]
fn a_scripted_session_through_a_broker_restart() {
    let mut d = machine_with_session(true);
    assert_eq!(
        d.recover("mqtt-0".into(), Some(b"r0".to_vec())),
        Recovery::Queued
    );
    let script: Vec<(Event<M>, Vec<Action<M>>)> = vec![
        (lost(), vec![Action::Wait(ms(500))]),
        (connack(), on_connect_then(publish("mqtt-0", b"r0"))),
        (Event::Subscribed { granted: true }, vec![]),
        (sent(1), vec![]),
        (command("c1"), vec![hand("c1", 1)]),
        (puback(1), vec![clear("mqtt-0")]),
        (
            answered("mqtt-1", 1, "c1", b"r1"),
            vec![Action::Ack("c1"), publish("mqtt-1", b"r1")],
        ),
        (sent(2), vec![]),
        (command("c2"), vec![hand("c2", 1)]),
        // The broker restarts: r1 is in flight, c2 is being applied.
        (lost(), vec![Action::Wait(ms(500))]),
        (lost(), vec![Action::Wait(ms(1000))]),
        (
            Event::Connected {
                session_present: true,
            },
            on_connect_then(publish("mqtt-1", b"r1")),
        ),
        // c2's answer comes from the last connection: not acknowledged.
        (answered("mqtt-2", 1, "c2", b"r2"), vec![]),
        (command("c2-dup"), vec![hand("c2-dup", 2)]),
        (
            Event::Message {
                topic: COMMANDS.into(),
                bytes: 40,
                oversized: Some(1 << 21),
                message: "huge",
            },
            vec![Action::Ack("huge")],
        ),
        (
            answered("mqtt-3", 2, "c2-dup", b"replayed"),
            vec![Action::Ack("c2-dup")],
        ),
        (sent(1), vec![]),
        (puback(1), vec![clear("mqtt-1"), publish("mqtt-2", b"r2")]),
        (sent(2), vec![]),
        (
            puback(2),
            vec![clear("mqtt-2"), publish("mqtt-3", b"replayed")],
        ),
        (sent(3), vec![]),
        (puback(3), vec![clear("mqtt-3")]),
    ];
    let (events, want): (Vec<_>, Vec<_>) = script.into_iter().unzip();
    let got: Vec<_> = events.into_iter().map(|e| d.on(e)).collect();
    assert_eq!(got, want);
    assert_eq!(
        d.status(),
        &Status {
            connected: true,
            subscribed: false,
            connections: 2,
            results_acked: 4,
            last_error: Some("cannot reach broker mqtt://broker.test:1883: refused".into()),
        }
    );
}
