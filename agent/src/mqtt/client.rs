//! The control plane's side over MQTT, for `accessctl send --mqtt`: publish
//! one signed command to an instance and wait for its result, verified with
//! the agent's public key. A result that does not verify is ignored (the
//! broker is not trusted), so is a result for another command.

use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use rumqttc::{AsyncClient, Event, Packet, QoS, SubscribeReasonCode};

use crate::config::MqttConfig;
use crate::error::{Error, IoContext, Result};
use crate::protocol::client::verify_result;
use crate::protocol::result::ResultPayload;

use super::options::Connection;

/// The broker exchange failed (`io_error`): `doing` and how.
fn transport(doing: String, why: impl std::fmt::Display) -> Error {
    Error::Transport(format!("{doing}: {why}"))
}

/// Publish `envelope` to `<prefix>/<instance_id>/commands` and return the
/// verified result that answers it. `mqtt` holds the broker URL, TLS files
/// and credentials (the control plane's own, not an agent's); its
/// `client_id`, when unset, becomes a random one.
pub fn send(
    mqtt: &MqttConfig,
    instance_id: &str,
    envelope: &[u8],
    agent: &VerifyingKey,
    timeout: Duration,
) -> Result<ResultPayload> {
    let id = crate::protocol::command::claimed_id(envelope)
        .ok_or_else(|| Error::BadEnvelope("the envelope's payload has no readable id".into()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ctx(|| "starting the async runtime".into())?;
    rt.block_on(async {
        tokio::time::timeout(timeout, exchange(mqtt, instance_id, envelope, &id, agent))
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout(format!(
                    "waiting for the result of {id:?} from {instance_id} via {}: no verified result within {}",
                    mqtt.url,
                    humantime::format_duration(timeout)
                )))
            })
    })
}

async fn exchange(
    mqtt: &MqttConfig,
    instance_id: &str,
    envelope: &[u8],
    id: &str,
    agent: &VerifyingKey,
) -> Result<ResultPayload> {
    let conn = Connection::from_config(mqtt, instance_id, envelope.len())?;
    let mut options = conn.options.clone();
    // A one-shot client: its own id, no session left behind on the broker,
    // and the broker's deliveries acknowledged as they come.
    options.set_client_id(
        mqtt.client_id
            .clone()
            .unwrap_or_else(|| format!("accessctl-{}", crate::protocol::client::random_id())),
    );
    options.set_clean_session(true);
    options.set_manual_acks(false);
    let broker = conn.url.to_string();
    let (client, mut ev) = AsyncClient::new(options, 16);
    let fail = |e: rumqttc::ConnectionError| {
        transport(
            format!("talking to broker {broker}"),
            super::describe(
                &e,
                &broker,
                mqtt.ca_file
                    .as_deref()
                    .map(|p| p.to_string_lossy().into_owned())
                    .as_deref(),
            ),
        )
    };
    let client_err =
        |e: rumqttc::ClientError| transport(format!("talking to broker {broker}"), e.to_string());
    // Subscribe first, publish once the subscription is granted: the result
    // cannot then arrive before we listen for it.
    client
        .subscribe(conn.topics.results.clone(), QoS::AtLeastOnce)
        .await
        .map_err(client_err)?;
    loop {
        match ev.poll().await.map_err(fail)? {
            Event::Incoming(Packet::SubAck(ack)) => {
                if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                    return Err(transport(
                        format!("subscribing to {} on {broker}", conn.topics.results),
                        "refused by the broker (check its ACL for this user)",
                    ));
                }
                client
                    .publish(
                        conn.topics.commands.clone(),
                        QoS::AtLeastOnce,
                        false,
                        envelope.to_vec(),
                    )
                    .await
                    .map_err(client_err)?;
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == conn.topics.results => {
                match verify_result(agent, &p.payload) {
                    // The agent answers a command whose signature it cannot
                    // verify without an id (an unverified id is not trusted).
                    // Over a topic shared by every sender that cannot be
                    // matched for sure, but it is this command's fate unless
                    // another sender is failing at the same moment.
                    Ok(r) if r.id.is_none() => {
                        tracing::warn!(
                            "the agent rejected a command it could not identify ({}): most likely this one",
                            r.message
                        );
                        let _ = client.disconnect().await;
                        return Ok(r);
                    }
                    Ok(r) if r.id.as_deref() == Some(id) => {
                        let _ = client.disconnect().await;
                        // Let the DISCONNECT go out; the next poll then ends.
                        let _ = tokio::time::timeout(Duration::from_secs(1), ev.poll()).await;
                        return Ok(r);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(
                        topic = %p.topic,
                        "ignoring a result that does not verify with the agent key: {e}"
                    ),
                }
            }
            _ => {}
        }
    }
}
