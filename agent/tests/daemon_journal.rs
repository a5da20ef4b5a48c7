//! The journald path: with `JOURNAL_STREAM` set, audit events go to
//! journald's native socket with our fields under their own names. There is
//! no journald here, so a private mount namespace puts a listener of our own
//! at /run/systemd/journal/socket (a tmpfs over /run, visible only inside).

mod daemon_support;

use std::process::Command;

use daemon_support::*;
use serde_json::json;

/// Receives journald native-protocol datagrams (KEY=value lines, or KEY,
/// a little-endian u64 length and the raw value) and writes each one as a
/// JSON object per line.
const LISTENER: &str = r#"
import json, socket, sys
def parse(d):
    f, i = {}, 0
    while i < len(d):
        nl = d.index(b"\n", i)
        line = d[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            i = nl + 1
        else:
            k, n = line, int.from_bytes(d[nl + 1:nl + 9], "little")
            v = d[nl + 9:nl + 9 + n]
            i = nl + 9 + n + 1
        f[k.decode()] = v.decode(errors="replace")
    return f
out = open(sys.argv[1], "w")
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/run/systemd/journal/socket")
open(sys.argv[2], "w").close()
s.settimeout(30)
try:
    while True:
        f = parse(s.recv(1 << 20))
        if f:
            out.write(json.dumps(f) + "\n"); out.flush()
        if "RESULT_CODE" in f:
            break
except socket.timeout:
    pass
"#;

#[test]
fn audit_events_reach_journald_with_their_own_fields() {
    if !require_root() {
        return;
    }
    let m = Machine::new();
    let env = m.tmp.path().join("cmd.json");
    std::fs::write(
        &env,
        m.sign(
            "j-1",
            "add_keys",
            json!({"user": USER, "keys": [key_line(1)]}),
        ),
    )
    .unwrap();
    let out = m.tmp.path().join("journal.bin");
    let ready = m.tmp.path().join("listening");
    let script = format!(
        "set -e; mount -t tmpfs tmpfs /run; mkdir -p /run/systemd/journal; \
         /usr/bin/python3 -c '{LISTENER}' {out} {ready} & \
         while [ ! -e {ready} ]; do sleep 0.01; done; \
         JOURNAL_STREAM=8:12345 RUST_LOG=info {bin} apply --config {cfg} {env} >/dev/null; wait",
        out = out.display(),
        ready = ready.display(),
        bin = Machine::bin(),
        cfg = m.config.display(),
        env = env.display(),
    );
    let st = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .status()
        .unwrap();
    assert!(st.success(), "the namespaced run failed");

    let entries: Vec<serde_json::Map<String, serde_json::Value>> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |id: &str| {
        entries
            .iter()
            .find(|e| e.get("MESSAGE_ID").and_then(|v| v.as_str()) == Some(id))
            .unwrap_or_else(|| panic!("no event with MESSAGE_ID={id} in {entries:?}"))
    };
    let applied = find(accessd::logging::message_id::APPLIED);
    for (k, v) in [
        ("COMMAND_ID", "j-1"),
        ("OP", "add_keys"),
        ("TARGET_USER", "alice"),
        ("RESULT_CODE", "ok"),
        ("SYSLOG_IDENTIFIER", "accessd"),
    ] {
        assert_eq!(
            applied.get(k).and_then(|v| v.as_str()),
            Some(v),
            "{k} in {applied:?}"
        );
    }
    assert!(
        !applied.contains_key("F_COMMAND_ID"),
        "fields must not be prefixed"
    );
    let received = find(accessd::logging::message_id::RECEIVED);
    assert_eq!(
        received.get("COMMAND_ID").and_then(|v| v.as_str()),
        Some("j-1")
    );
}
