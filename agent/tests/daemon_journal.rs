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
/// JSON object per line, until a `STOP=1` datagram (sent after the agent
/// has exited; a datagram socket keeps order, so nothing is lost).
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
s.settimeout(120)
try:
    while True:
        f = parse(s.recv(1 << 20))
        if "STOP" in f:
            break
        if f:
            out.write(json.dumps(f) + "\n"); out.flush()
except socket.timeout:
    pass
"#;

const STOP: &str = r#"
import socket
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"STOP=1\n", "/run/systemd/journal/socket")
"#;

type Entry = serde_json::Map<String, serde_json::Value>;

/// Run `accessd ARGS` as systemd would (JOURNAL_STREAM set) in a private
/// mount namespace whose /run/systemd/journal/socket is our listener, and
/// return every journal entry it sent. With `boot_id`, the kernel's boot id
/// reads as that inside (a bind mount), as after a reboot.
fn journal_of(m: &Machine, args: &str, boot_id: Option<&str>) -> Vec<Entry> {
    let out = m.tmp.path().join("journal.json");
    let ready = m.tmp.path().join("listening");
    let _ = std::fs::remove_file(&ready);
    let boot = match boot_id {
        Some(id) => {
            let f = m.tmp.path().join("boot_id");
            std::fs::write(&f, format!("{id}\n")).unwrap();
            format!(
                "mount --bind {} /proc/sys/kernel/random/boot_id; ",
                f.display()
            )
        }
        None => String::new(),
    };
    let script = format!(
        "set -e; mount -t tmpfs tmpfs /run; mkdir -p /run/systemd/journal; {boot}\
         /usr/bin/python3 -c '{LISTENER}' {out} {ready} & \
         while [ ! -e {ready} ]; do sleep 0.01; done; \
         JOURNAL_STREAM=8:12345 RUST_LOG=info {bin} {args} --config {cfg} >/dev/null || true; \
         /usr/bin/python3 -c '{STOP}'; wait",
        out = out.display(),
        ready = ready.display(),
        bin = Machine::bin(),
        cfg = m.config.display(),
    );
    let st = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .status()
        .unwrap();
    assert!(st.success(), "the namespaced run failed");
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn field<'a>(e: &'a Entry, k: &str) -> Option<&'a str> {
    e.get(k).and_then(|v| v.as_str())
}

fn find<'a>(entries: &'a [Entry], message_id: &str) -> &'a Entry {
    entries
        .iter()
        .find(|e| field(e, "MESSAGE_ID") == Some(message_id))
        .unwrap_or_else(|| panic!("no event with MESSAGE_ID={message_id} in {entries:?}"))
}

fn write_envelope(m: &Machine, name: &str, env: &[u8]) -> String {
    let p = m.tmp.path().join(name);
    std::fs::write(&p, env).unwrap();
    p.display().to_string()
}

#[test]
fn audit_events_reach_journald_with_their_own_fields() {
    if !require_root() {
        return;
    }
    let m = Machine::new();
    let env = write_envelope(
        &m,
        "cmd.json",
        &m.sign(
            "j-1",
            "add_keys",
            json!({"user": USER, "keys": [key_line(1)]}),
        ),
    );
    let entries = journal_of(&m, &format!("apply {env}"), None);
    let applied = find(&entries, accessd::logging::message_id::APPLIED);
    for (k, v) in [
        ("COMMAND_ID", "j-1"),
        ("OP", "add_keys"),
        ("TARGET_USER", "alice"),
        ("RESULT_CODE", "ok"),
        ("SYSLOG_IDENTIFIER", "accessd"),
    ] {
        assert_eq!(field(applied, k), Some(v), "{k} in {applied:?}");
    }
    assert!(
        !applied.contains_key("F_COMMAND_ID"),
        "fields must not be prefixed"
    );
    // Received before verification: the id is only what the bytes claim.
    let received = find(&entries, accessd::logging::message_id::RECEIVED);
    assert_eq!(field(received, "CLAIMED_COMMAND_ID"), Some("j-1"));
}

#[test]
fn an_unverified_envelope_is_logged_only_as_claimed_command_id() {
    if !require_root() {
        return;
    }
    let m = Machine::new();
    // Anyone who can deliver bytes can claim a real command's id: signed
    // under the trusted key id with the wrong key (bad_signature), and by
    // a key nobody trusts (unknown_key).
    let forged = write_envelope(
        &m,
        "forged.json",
        &m.sign_with(
            &key(99),
            "cp",
            "real-1",
            "add_keys",
            json!({"user": USER, "keys": [key_line(1)]}),
        ),
    );
    let stranger = write_envelope(
        &m,
        "stranger.json",
        &m.sign_with(
            &key(98),
            "stranger",
            "real-1",
            "delete_user",
            json!({"user": USER}),
        ),
    );
    let entries = journal_of(&m, &format!("apply {forged} {stranger}"), None);
    assert!(entries.len() >= 4, "two events per envelope: {entries:?}");
    for e in &entries {
        assert_eq!(
            field(e, "COMMAND_ID"),
            None,
            "an unverified id as COMMAND_ID: {e:?}"
        );
        assert_ne!(field(e, "OP"), Some("add_keys"), "an unverified op: {e:?}");
        assert_ne!(
            field(e, "TARGET_USER"),
            Some(USER),
            "an unverified user: {e:?}"
        );
    }
    let received = entries
        .iter()
        .filter(|e| field(e, "MESSAGE_ID") == Some(accessd::logging::message_id::RECEIVED))
        .collect::<Vec<_>>();
    assert_eq!(received.len(), 2, "{entries:?}");
    for r in received {
        assert_eq!(field(r, "CLAIMED_COMMAND_ID"), Some("real-1"), "{r:?}");
    }
    let rejected = entries
        .iter()
        .filter(|e| field(e, "MESSAGE_ID") == Some(accessd::logging::message_id::REJECTED))
        .map(|e| (field(e, "RESULT_CODE"), field(e, "CLAIMED_COMMAND_ID")))
        .collect::<Vec<_>>();
    assert_eq!(
        rejected,
        [
            (Some("bad_signature"), Some("real-1")),
            (Some("unknown_key"), Some("real-1"))
        ]
    );
}

/// `journalctl COMMAND_ID=ID` without `-u` is a next-boot command's whole
/// story: the staging (daemon or `accessd apply`) and the boot unit's
/// outcome — applied, or failed with an error event — carry the same id.
#[test]
fn the_boot_time_part_of_a_next_boot_command_is_logged_under_its_command_id() {
    if !require_root() {
        return;
    }
    let m = Machine::new();
    let hash = "$6$saltsaltsaltsalt$O2HS/QLzw2LXNAuEEjzBCvpTtT4/qqIzkH/QWm9fEK8jpOPPP.cUucXonsJZdFdRiwQcmf6l9V6QcO14VJNDj1";
    let bob = m.apply(&[m.sign("mk-bob", "create_user", json!({"user": "bob"}))]);
    assert_eq!(bob[0].code.as_str(), "ok", "{}", bob[0].message);
    let stage = |id: &str, user: &str| {
        write_envelope(
            &m,
            &format!("{id}.json"),
            &m.sign(
                id,
                "set_password",
                json!({"user": user, "password": {"crypt": hash}, "apply_at": "next_boot"}),
            ),
        )
    };
    let (ok, gone) = (stage("nb-ok", USER), stage("nb-gone", "bob"));
    let staging = journal_of(&m, &format!("apply {ok} {gone}"), None);
    let st = std::process::Command::new("userdel")
        .arg("--root")
        .arg(&m.root)
        .arg("bob")
        .status()
        .unwrap();
    assert!(st.success());

    let boot = journal_of(&m, "apply-staged", Some(NEXT_BOOT_ID));
    for id in ["nb-ok", "nb-gone"] {
        let story: Vec<&Entry> = staging
            .iter()
            .chain(&boot)
            .filter(|e| field(e, "COMMAND_ID") == Some(id))
            .collect();
        let kinds: Vec<_> = story.iter().map(|e| field(e, "MESSAGE_ID")).collect();
        let want_last = if id == "nb-ok" {
            accessd::logging::message_id::APPLIED
        } else {
            accessd::logging::message_id::FAILED
        };
        assert_eq!(
            kinds,
            [Some(accessd::logging::message_id::APPLIED), Some(want_last)],
            "{id}: staged, then its boot-time outcome: {story:?}"
        );
        let last = story.last().unwrap();
        assert_eq!(
            field(last, "SOURCE"),
            Some(format!("staged-{id}.json").as_str())
        );
        assert_eq!(field(last, "OP"), Some("set_password"));
    }
    let failed = find(&boot, accessd::logging::message_id::FAILED);
    assert_eq!(field(failed, "PRIORITY"), Some("3"), "an error event");
    assert_eq!(field(failed, "RESULT_CODE"), Some("user_not_found"));
}
