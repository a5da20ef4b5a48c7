//! A relay between rumqttc and the broker that never lets one oversized
//! publish block the command channel (PROTOCOL §5).
//!
//! MQTT 3.1.1 cannot skip a packet, and rumqttc reads every packet whole
//! into memory or, over its packet limit, drops the connection. A broker
//! without `message_size_limit` then delivers the same oversized (and
//! unacknowledged) publish first on every connection, and no command behind
//! it is ever read. So rumqttc talks to the broker through this relay, over
//! a Unix socket in the state directory (0700, root only): bytes from
//! rumqttc go to the broker unchanged; bytes from the broker are parsed at
//! packet boundaries, and a PUBLISH whose payload is over the envelope limit
//! is never buffered: the relay forwards its topic and packet id with a
//! small marker payload instead, and skips the rest as it streams in. The
//! transport task recognises the marker (it holds a per-process random
//! nonce that a broker cannot know), acknowledges the publish so the broker
//! forgets it, and logs a warning. Memory per connection stays at one read
//! buffer whatever the broker sends.
//!
//! TLS (`mqtts://`) is done here, towards the broker, with the same rustls
//! configuration rumqttc would use; rumqttc itself speaks plain MQTT over
//! the local socket.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tracing::debug;

use super::options::BrokerUrl;
use crate::error::{IoContext, Result};
use crate::state_dir::StateDir;

/// Longest time to reach the broker (TCP connect and TLS handshake): a
/// blackholed address must not hold the reconnect loop for minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the relay connects.
pub struct Upstream {
    pub url: BrokerUrl,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// For messages: the CA file that must vouch for the broker.
    pub ca_file: Option<String>,
}

/// A running relay; dropping it stops accepting (open connections end when
/// rumqttc closes its side).
pub struct Relay {
    pub socket: PathBuf,
    marker: Vec<u8>,
    last_error: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// A dropped publish, as the marker tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub bytes: usize,
}

impl Relay {
    /// Listen on `<state_dir>/mqtt-relay.sock` (a stale socket from an
    /// earlier run is replaced). Publishes with a payload over
    /// `max_payload` bytes are dropped. Must run inside the runtime.
    pub fn start(state: &StateDir, upstream: Upstream, max_payload: usize) -> Result<Relay> {
        let socket = state.mqtt_relay_socket();
        let ctx = || format!("MQTT relay socket {}", socket.display());
        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).ctx(ctx),
        }
        let listener = UnixListener::bind(&socket).ctx(ctx)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).ctx(ctx)?;
        }
        let mut nonce = [0u8; 16];
        getrandom::getrandom(&mut nonce)
            .map_err(|e| crate::error::random_failed("drawing the MQTT relay nonce", e))?;
        let mut marker = b"\0accessd-relay-dropped:".to_vec();
        marker.extend_from_slice(crate::hex::encode(&nonce).as_bytes());
        marker.push(b':');
        let last_error = Arc::new(Mutex::new(None));
        let upstream = Arc::new(upstream);
        let task = tokio::spawn(accept_loop(
            listener,
            upstream,
            max_payload,
            marker.clone(),
            last_error.clone(),
        ));
        Ok(Relay {
            socket,
            marker,
            last_error,
            task,
        })
    }

    /// Why the relay could not reach the broker on the last attempt, once.
    pub fn take_error(&self) -> Option<String> {
        self.last_error.lock().map_or(None, |mut e| e.take())
    }

    /// Is `payload` the relay's notice of a dropped publish?
    pub fn dropped(&self, payload: &[u8]) -> Option<Dropped> {
        let rest = payload.strip_prefix(self.marker.as_slice())?;
        let bytes = std::str::from_utf8(rest).ok()?.parse().ok()?;
        Some(Dropped { bytes })
    }
}

async fn accept_loop(
    listener: UnixListener,
    upstream: Arc<Upstream>,
    max_payload: usize,
    marker: Vec<u8>,
    last_error: Arc<Mutex<Option<String>>>,
) {
    loop {
        let local = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                debug!(error = %e, "MQTT relay accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let upstream = upstream.clone();
        let marker = marker.clone();
        let last_error = last_error.clone();
        tokio::spawn(async move {
            let remote = match tokio::time::timeout(CONNECT_TIMEOUT, connect(&upstream)).await {
                Ok(Ok(r)) => r,
                Ok(Err(msg)) => {
                    // Stored before `local` is dropped: rumqttc's error (the
                    // socket closes) is only seen after this is readable.
                    if let Ok(mut e) = last_error.lock() {
                        *e = Some(msg);
                    }
                    return;
                }
                Err(_) => {
                    if let Ok(mut e) = last_error.lock() {
                        *e = Some(format!(
                            "cannot reach broker {}: no connection within {}s",
                            upstream.url,
                            CONNECT_TIMEOUT.as_secs()
                        ));
                    }
                    return;
                }
            };
            relay(local, remote, max_payload, &marker).await;
        });
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

async fn connect(up: &Upstream) -> std::result::Result<Box<dyn Stream>, String> {
    let broker = up.url.to_string();
    let tcp = TcpStream::connect((up.url.host.as_str(), up.url.port))
        .await
        .map_err(|e| format!("cannot reach broker {broker}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let Some(tls) = &up.tls else {
        return Ok(Box::new(tcp));
    };
    let name = rustls_pki_types::ServerName::try_from(up.url.host.clone())
        .map_err(|e| format!("broker {broker}: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(tls.clone());
    match connector.connect(name, tcp).await {
        Ok(s) => Ok(Box::new(s)),
        Err(e) => Err(describe_tls(&e, &broker, up.ca_file.as_deref())),
    }
}

fn describe_tls(e: &io::Error, broker: &str, ca_file: Option<&str>) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(r @ rustls::Error::InvalidCertificate(_)) => format!(
            "the certificate of broker {broker} is not trusted by ca_file {}: {r}",
            ca_file.unwrap_or("(none)")
        ),
        Some(r) => format!("TLS handshake with broker {broker} failed: {r}"),
        None => format!("TLS connection to broker {broker} failed: {e}"),
    }
}

async fn relay(local: UnixStream, remote: Box<dyn Stream>, max_payload: usize, marker: &[u8]) {
    let (mut lr, mut lw) = local.into_split();
    let (mut rr, mut rw) = tokio::io::split(remote);
    let up = async {
        let r = tokio::io::copy(&mut lr, &mut rw).await;
        let _ = rw.shutdown().await;
        r.map(|_| ())
    };
    let down = async {
        let r = filter(&mut rr, &mut lw, max_payload, marker).await;
        let _ = lw.shutdown().await;
        r
    };
    // Either side ending ends the connection: rumqttc then reconnects.
    let r = tokio::select! {
        r = up => r,
        r = down => r,
    };
    if let Err(e) = r {
        debug!(error = %e, "MQTT relay connection ended");
    }
}

/// Bytes read from the broker and not yet passed on.
struct Buf<R> {
    r: R,
    data: Vec<u8>,
    start: usize,
}

/// Bytes read from the broker at a time; at most about twice this is held.
const CHUNK: usize = 16 * 1024;

impl<R: AsyncRead + Unpin> Buf<R> {
    fn available(&self) -> usize {
        self.data.len() - self.start
    }

    /// Make at least `n` unread bytes available (n is always small: a fixed
    /// header, or a topic of at most 64 KiB). False at a clean end of stream.
    async fn fill(&mut self, n: usize) -> io::Result<bool> {
        while self.available() < n {
            if self.start > 0 {
                self.data.drain(..self.start);
                self.start = 0;
            }
            let old = self.data.len();
            self.data.resize(old + CHUNK, 0);
            let got = self.r.read(&mut self.data[old..]).await?;
            self.data.truncate(old + got);
            if got == 0 {
                if self.available() == 0 && n > 0 {
                    return Ok(false);
                }
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(true)
    }

    /// [`Buf::fill`] inside a packet, where the end of the stream is an error.
    async fn need(&mut self, n: usize) -> io::Result<()> {
        if self.fill(n).await? {
            Ok(())
        } else {
            Err(io::ErrorKind::UnexpectedEof.into())
        }
    }

    fn peek(&self, i: usize) -> u8 {
        self.data[self.start + i]
    }

    fn slice(&self, from: usize, to: usize) -> &[u8] {
        &self.data[self.start + from..self.start + to]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
    }

    /// Pass `n` bytes on to `w` (streaming: never more than a chunk held).
    async fn forward<W: AsyncWrite + Unpin>(&mut self, mut n: usize, w: &mut W) -> io::Result<()> {
        while n > 0 {
            if self.available() == 0 {
                self.need(1).await?;
            }
            let k = n.min(self.available());
            w.write_all(self.slice(0, k)).await?;
            self.consume(k);
            n -= k;
        }
        w.flush().await
    }

    /// Read and throw away `n` bytes.
    async fn skip(&mut self, mut n: usize) -> io::Result<()> {
        while n > 0 {
            if self.available() == 0 {
                self.need(1).await?;
            }
            let k = n.min(self.available());
            self.consume(k);
            n -= k;
        }
        Ok(())
    }
}

/// The MQTT remaining-length encoding (1 to 4 bytes).
fn encode_len(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

/// Copy MQTT packets from `r` to `w`, replacing each PUBLISH whose payload
/// is over `max_payload` by the same PUBLISH (flags, topic, packet id) with
/// the payload `marker` + its size in decimal.
pub async fn filter<R, W>(r: R, w: &mut W, max_payload: usize, marker: &[u8]) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut b = Buf {
        r,
        data: Vec::with_capacity(CHUNK),
        start: 0,
    };
    loop {
        if !b.fill(2).await? {
            return Ok(());
        }
        // Fixed header: type and flags, then the remaining length.
        let mut remaining = 0usize;
        let mut header = 1;
        loop {
            if header > 4 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed MQTT remaining length from the broker",
                ));
            }
            b.need(header + 1).await?;
            let byte = b.peek(header);
            remaining |= usize::from(byte & 0x7f) << (7 * (header - 1));
            header += 1;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let first = b.peek(0);
        let is_publish = first >> 4 == 3;
        if is_publish && remaining > max_payload {
            let qos = (first >> 1) & 3;
            b.need(header + 2).await?;
            let topic_len = usize::from(b.peek(header)) << 8 | usize::from(b.peek(header + 1));
            let var = 2 + topic_len + if qos > 0 { 2 } else { 0 };
            if var <= remaining && remaining - var > max_payload {
                b.need(header + var).await?;
                let payload = remaining - var;
                let mut out = vec![first];
                let mut notice = marker.to_vec();
                notice.extend_from_slice(payload.to_string().as_bytes());
                encode_len(var + notice.len(), &mut out);
                out.extend_from_slice(b.slice(header, header + var));
                out.extend_from_slice(&notice);
                w.write_all(&out).await?;
                w.flush().await?;
                b.consume(header + var);
                b.skip(payload).await?;
                continue;
            }
        }
        b.forward(header + remaining, w).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(qos: u8, topic: &str, pkid: u16, payload: &[u8]) -> Vec<u8> {
        let mut var = Vec::new();
        var.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        var.extend_from_slice(topic.as_bytes());
        if qos > 0 {
            var.extend_from_slice(&pkid.to_be_bytes());
        }
        let mut p = vec![0x30 | (qos << 1)];
        encode_len(var.len() + payload.len(), &mut p);
        p.extend_from_slice(&var);
        p.extend_from_slice(payload);
        p
    }

    async fn run(input: Vec<u8>, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        filter(input.as_slice(), &mut out, max, b"MARK:")
            .await
            .unwrap();
        out
    }

    #[tokio::test]
    async fn small_packets_pass_unchanged_and_an_oversized_publish_becomes_a_notice() {
        let small = publish(1, "a/b/commands", 7, b"hello");
        let big = publish(1, "a/b/commands", 8, &vec![b'x'; 300_000]);
        let ping = vec![0xd0, 0x00];
        let mut input = small.clone();
        input.extend_from_slice(&big);
        input.extend_from_slice(&ping);
        input.extend_from_slice(&small);
        let out = run(input, 1000).await;
        let mut want = small.clone();
        want.extend_from_slice(&publish(1, "a/b/commands", 8, b"MARK:300000"));
        want.extend_from_slice(&ping);
        want.extend_from_slice(&small);
        assert_eq!(out, want);
    }

    #[tokio::test]
    async fn a_publish_at_the_limit_passes_and_qos0_keeps_no_packet_id() {
        let at = publish(0, "t", 0, &[b'y'; 1000]);
        assert_eq!(run(at.clone(), 1000).await, at);
        let over = publish(0, "t", 0, &[b'y'; 1001]);
        assert_eq!(run(over, 1000).await, publish(0, "t", 0, b"MARK:1001"));
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_packet_is_an_error() {
        let mut p = publish(1, "t", 1, b"abcdef");
        p.truncate(p.len() - 2);
        let mut out = Vec::new();
        assert!(filter(p.as_slice(), &mut out, 1000, b"M").await.is_err());
        let mut out = Vec::new();
        let bad = vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(filter(bad.as_slice(), &mut out, 1000, b"M").await.is_err());
    }
}
