//! From `[mqtt]` in accessd.toml to a connection: the broker URL, the
//! persistent-session options, the broker password, and the rustls
//! configuration for `mqtts://`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{MqttOptions, Transport};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::MqttConfig;
use crate::error::{Error, Result};
use crate::fsx::{read_private_file, show, Private, MAX_SECRET_BYTES};

/// Packets larger than this are refused by the MQTT codec, which drops the
/// connection (MQTT 3.1.1 cannot skip a packet). The agent's transport never
/// sees a PUBLISH over the envelope limit (the relay, mqtt/relay.rs, drops
/// those), so this only bounds other packets; for `accessctl send` it bounds
/// results.
const MIN_PACKET_LIMIT: usize = 1024 * 1024;

/// A settings error (`io_error`), with a message that names the setting.
fn invalid_setting(setting: String, why: impl Into<String>) -> Error {
    Error::Setting {
        setting,
        message: why.into(),
    }
}

/// `mqtt://host[:port]` or `mqtts://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl BrokerUrl {
    pub fn parse(url: &str) -> Result<BrokerUrl> {
        let ctx = || format!("mqtt url {url:?}");
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(invalid_setting(
                ctx(),
                "must start with mqtt:// or mqtts://",
            ));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('@') {
            return Err(invalid_setting(
                ctx(),
                "credentials do not belong in the URL: use username and password_file",
            ));
        }
        if rest.contains(['/', '?', '#', '[', ']']) || rest.is_empty() {
            return Err(invalid_setting(
                ctx(),
                "expected host or host:port (IPv6 literals are not supported)",
            ));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| invalid_setting(ctx(), format!("bad port {p:?}")))?;
                (h, port)
            }
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() || host.contains(':') {
            return Err(invalid_setting(ctx(), "missing or invalid host"));
        }
        Ok(BrokerUrl {
            tls,
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// The topics of one instance (PROTOCOL §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub commands: String,
    pub results: String,
}

impl Topics {
    pub fn new(prefix: &str, instance_id: &str) -> Result<Topics> {
        // An instance id or prefix with a wildcard or separator would let the
        // subscription match other instances' topics.
        for (what, v) in [("topic_prefix", prefix), ("instance_id", instance_id)] {
            if v.is_empty()
                || v.contains(['+', '#', '\0'])
                || (what == "instance_id" && v.contains('/'))
            {
                return Err(invalid_setting(
                    format!("mqtt {what} {v:?}"),
                    "must be non-empty and free of MQTT wildcards (+ #) and NUL",
                ));
            }
        }
        Ok(Topics {
            commands: format!("{prefix}/{instance_id}/commands"),
            results: format!("{prefix}/{instance_id}/results"),
        })
    }
}

/// Everything needed to (re)connect; built once, cloned for each attempt.
pub struct Connection {
    pub url: BrokerUrl,
    pub topics: Topics,
    pub options: MqttOptions,
    /// For `mqtts://`: what `options` uses, for the relay to use instead.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Connection {
    /// `max_envelope` is the engine's limit; the packet limit is above it.
    pub fn from_config(cfg: &MqttConfig, instance_id: &str, max_envelope: usize) -> Result<Self> {
        let url = BrokerUrl::parse(&cfg.url)?;
        let topics = Topics::new(&cfg.topic_prefix, instance_id)?;
        let client_id = cfg
            .client_id
            .clone()
            .unwrap_or_else(|| instance_id.to_owned());
        if client_id.is_empty() {
            return Err(invalid_setting(
                "mqtt client_id".into(),
                "must not be empty",
            ));
        }
        let mut options = MqttOptions::new(client_id, url.host.clone(), url.port);
        // A persistent session: the broker keeps our subscription and queues
        // commands published while we are away.
        options.set_clean_session(false);
        // A command is acknowledged only once its result is durable.
        options.set_manual_acks(true);
        options.set_keep_alive(Duration::from_secs(cfg.keep_alive_secs.max(5)));
        // Room for a topic of up to 64 KiB besides the payload.
        let limit = MIN_PACKET_LIMIT.max(max_envelope.saturating_add(66 * 1024));
        options.set_max_packet_size(limit, limit);
        // Requests are queued without blocking the transport task; a few
        // dozen is plenty (acks and one result publish at a time).
        options.set_request_channel_capacity(256);
        options.set_inflight(16);
        if let Some(user) = &cfg.username {
            let password = match &cfg.password_file {
                Some(p) => read_password_file(p)?,
                None => String::new(),
            };
            options.set_credentials(user.clone(), password);
        } else if cfg.password_file.is_some() {
            return Err(invalid_setting(
                "mqtt password_file".into(),
                "is set without username",
            ));
        }
        let mut tls_arc = None;
        if url.tls {
            let tls = tls_config(cfg)?;
            tls_arc = Some(Arc::new(tls.clone()));
            options.set_transport(Transport::tls_with_config(tls.into()));
        } else if cfg.ca_file.is_some() || cfg.client_cert.is_some() || cfg.client_key.is_some() {
            return Err(invalid_setting(
                format!("mqtt url {:?}", cfg.url),
                "ca_file/client_cert/client_key need an mqtts:// URL",
            ));
        }
        Ok(Connection {
            url,
            topics,
            options,
            tls: tls_arc,
        })
    }

    /// The same session options, but connecting in plain MQTT to the local
    /// relay at `socket` (mqtt/relay.rs), which reaches the broker (and does
    /// TLS) on rumqttc's behalf.
    pub fn through_relay(&self, socket: &Path) -> MqttOptions {
        let o = &self.options;
        let mut r = MqttOptions::new(o.client_id(), socket.to_string_lossy(), 0);
        r.set_transport(Transport::Unix);
        r.set_clean_session(o.clean_session());
        r.set_manual_acks(o.manual_acks());
        r.set_keep_alive(o.keep_alive());
        r.set_max_packet_size(o.max_packet_size(), o.max_packet_size());
        r.set_request_channel_capacity(o.request_channel_capacity());
        r.set_inflight(o.inflight());
        if let Some(login) = o.credentials() {
            r.set_credentials(login.username, login.password);
        }
        r
    }
}

/// The broker password, from a file only root can read: a password in
/// accessd.toml or in argv would be visible to more people.
pub fn read_password_file(path: &Path) -> Result<String> {
    let ctx = || format!("reading mqtt password_file {}", show(path));
    let bytes = read_private_file(
        path,
        "mqtt password_file",
        Private::Secret,
        MAX_SECRET_BYTES,
    )?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| invalid_setting(ctx(), "the file is not UTF-8 text"))?;
    // One line; a trailing newline from `echo` is not part of the password.
    let pw = text.lines().next().unwrap_or("").to_owned();
    if pw.is_empty() {
        return Err(invalid_setting(ctx(), "the file is empty"));
    }
    Ok(pw)
}

/// rustls with the `ring` provider: the CA bundle from `ca_file` only (a
/// fleet broker is the operator's, not the web's), and a client certificate
/// when both `client_cert` and `client_key` are set.
pub fn tls_config(cfg: &MqttConfig) -> Result<rustls::ClientConfig> {
    let ca = cfg.ca_file.as_deref().ok_or_else(|| {
        invalid_setting(
            format!("mqtt url {:?}", cfg.url),
            "mqtts:// needs ca_file (the CA that issued the broker's certificate)",
        )
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(ca, "ca_file")? {
        roots.add(cert).map_err(|e| {
            invalid_setting(format!("loading mqtt ca_file {}", show(ca)), e.to_string())
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid_setting("building the TLS configuration".into(), e.to_string()))?
        .with_root_certificates(roots);
    match (&cfg.client_cert, &cfg.client_key) {
        (Some(cert), Some(key)) => {
            let key_pem =
                read_private_file(key, "mqtt client_key", Private::Secret, MAX_SECRET_BYTES)?;
            let chain = read_certs(cert, "client_cert")?;
            let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                invalid_setting(
                    format!("reading mqtt client_key {}", show(key)),
                    format!("no usable PEM private key: {e}"),
                )
            })?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                invalid_setting(
                    format!("mqtt client_cert {} / client_key {}", show(cert), show(key)),
                    e.to_string(),
                )
            })
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(invalid_setting(
            "mqtt client_cert/client_key".into(),
            "set both or neither",
        )),
    }
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let ctx = || format!("reading mqtt {what} {}", show(path));
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| invalid_setting(ctx(), e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid_setting(ctx(), "no PEM certificate in the file"));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn urls_parse_with_default_ports() {
        assert_eq!(
            BrokerUrl::parse("mqtt://127.0.0.1").unwrap(),
            BrokerUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port: 1883
            }
        );
        let u = BrokerUrl::parse("mqtts://broker.example:8884/").unwrap();
        assert!(u.tls);
        assert_eq!(u.port, 8884);
        assert_eq!(u.to_string(), "mqtts://broker.example:8884");
        for bad in [
            "tcp://x",
            "mqtt://",
            "mqtt://u:p@h",
            "mqtt://h:0",
            "mqtt://h:99999",
            "mqtt://h/path",
            "mqtt://[::1]:1883",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn topics_refuse_wildcards() {
        let t = Topics::new("accessd", "i-1").unwrap();
        assert_eq!(t.commands, "accessd/i-1/commands");
        assert_eq!(t.results, "accessd/i-1/results");
        assert!(Topics::new("accessd", "i-+").is_err());
        assert!(Topics::new("acc/#", "i-1").is_err());
        assert!(Topics::new("accessd", "a/b").is_err());
    }

    #[test]
    fn password_file_must_be_private() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_password_file(&p).unwrap_err();
        assert_eq!(e.code(), crate::error::Code::UnsafePath);
        assert!(e.to_string().contains("0644"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_password_file(&p).unwrap(), "s3cret");
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(read_password_file(&link).is_err());
    }

    #[test]
    fn mqtts_without_ca_is_refused() {
        let cfg: MqttConfig = toml::from_str("url = \"mqtts://127.0.0.1:8883\"").unwrap();
        let e = Connection::from_config(&cfg, "i-1", 65536).err().unwrap();
        assert!(e.to_string().contains("ca_file"), "{e}");
    }
}
