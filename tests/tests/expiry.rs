//! Issue 15, "Expiring keys": a key bound with `expires_at` logs in until
//! that time and is refused after it, with real sshd logins — removed by
//! accessd when it is running, refused by sshd's own `expiry-time` when it
//! is not, and removed at accessd's next start or by `apply-staged` at boot.
//!
//! No timing assertion can fail under load: each expiry is far enough ahead
//! for the login before it (checked, not assumed), and waits for what must
//! happen after it have generous deadlines.

use std::time::Duration;

use accessd_e2e::{rfc3339_at, sandbox, unix_now, wait_until, ClientKey, KeyKind, Sandbox};

/// Far enough ahead for a command and a login on a loaded machine.
const AHEAD: i64 = 20;
const AK: &str = "/home/exampleuser/.ssh/authorized_keys";
/// logging::message_id::KEY_EXPIRED.
const KEY_EXPIRED: &str = "3f9d2a6c8b1e4f07a5c3d9e2b6f1a845";

fn sandbox_with_exampleuser() -> Option<Sandbox> {
    let mut sb = sandbox()?;
    sb.start_agent();
    sb.cmd("create_user").user("exampleuser").send().assert_ok();
    Some(sb)
}

/// Bind `key` to exampleuser until `at`; the command's id.
fn bind_until(sb: &Sandbox, key: &ClientKey, at: i64) -> String {
    let r = sb
        .cmd("add_keys")
        .user("exampleuser")
        .keys(&[key])
        .args(["--keys-expire-at", &rfc3339_at(at)])
        .send();
    r.assert_ok();
    assert_eq!(r.payload["data"]["expires_at"], rfc3339_at(at).as_str());
    r.payload["id"].as_str().expect("result id").to_owned()
}

fn blob(key: &ClientKey) -> String {
    key.public.split_whitespace().nth(1).unwrap().to_owned()
}

/// The key logs in now, and now is still before its expiry (else the test
/// says the machine was too slow, instead of blaming accessd).
fn assert_logs_in_before(sb: &Sandbox, key: &ClientKey, at: i64) {
    sb.assert_key_login("exampleuser", key);
    assert!(
        unix_now() < at,
        "the machine was too slow: the login before the expiry finished after it"
    );
}

fn sleep_until_after(at: i64) {
    while unix_now() <= at {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Wait (generously) until the key's line is gone from the file.
fn wait_until_line_gone(sb: &Sandbox, key: &ClientKey) {
    // On a timeout the sandbox's teardown prints the tail of accessd.log.
    wait_until(
        "the expired key's line to be removed",
        Duration::from_secs(120),
        || !sb.read(AK).contains(&blob(key)),
    );
}

/// The audit event of the removal names the key, its user and the command
/// that bound it.
fn assert_removal_audited(sb: &Sandbox, key: &ClientKey, command_id: &str) {
    let log = std::fs::read_to_string(sb.log_dir().join("accessd.log")).unwrap_or_default();
    let line = log
        .lines()
        .find(|l| l.contains(KEY_EXPIRED) && l.contains(&key.fingerprint))
        .unwrap_or_else(|| {
            panic!(
                "no KEY_EXPIRED event for {}{}",
                key.fingerprint,
                sb.tail("accessd.log")
            )
        });
    assert!(line.contains(command_id), "{line}");
    assert!(line.contains("exampleuser"), "{line}");
}

/// On OpenSSH 9.1 and later (this host's 9.2) the line carries the UTC
/// form: the second before the expiry, with a `Z`.
fn assert_expiry_time_written(sb: &Sandbox, key: &ClientKey, at: i64) {
    let text = sb.read(AK);
    let line = text
        .lines()
        .find(|l| l.contains(&blob(key)))
        .expect("the key's line");
    let digits: String = rfc3339_at(at - 1)
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    assert!(
        line.starts_with(&format!("expiry-time=\"{digits}Z\" ")),
        "{line}"
    );
}

#[test]
fn a_key_bound_until_a_time_logs_in_before_it_and_accessd_removes_it_then() {
    let Some(sb) = sandbox_with_exampleuser() else {
        return;
    };
    let key = sb.client_key("temporary", KeyKind::Ed25519);
    let other = sb.client_key("permanent", KeyKind::Ed25519);
    sb.cmd("add_keys")
        .user("exampleuser")
        .keys(&[&other])
        .send()
        .assert_ok();
    let at = unix_now() + AHEAD;
    let id = bind_until(&sb, &key, at);
    assert_expiry_time_written(&sb, &key, at);
    // inventory says when accessd removes it, and nothing for the other key.
    let inv = sb.cmd("inventory").args(["--users", "exampleuser"]).send();
    inv.assert_ok();
    let keys = inv.payload["data"]["users"][0]["keys"]
        .as_array()
        .unwrap()
        .clone();
    let of = |k: &ClientKey| {
        keys.iter()
            .find(|e| e["fingerprint"] == k.fingerprint.as_str())
            .unwrap_or_else(|| panic!("{} not in {keys:?}", k.fingerprint))
            .clone()
    };
    assert_eq!(of(&key)["expires_at"], rfc3339_at(at).as_str());
    assert!(of(&other).get("expires_at").is_none(), "{:?}", of(&other));
    assert_logs_in_before(&sb, &key, at);

    wait_until_line_gone(&sb, &key);
    assert!(unix_now() >= at, "removed before its time");
    sb.assert_no_key_login("exampleuser", &key);
    sb.assert_key_login("exampleuser", &other);
    assert_removal_audited(&sb, &key, &id);
}

#[test]
fn sshd_refuses_an_expired_key_while_accessd_is_stopped_and_its_next_start_removes_the_line() {
    let Some(mut sb) = sandbox_with_exampleuser() else {
        return;
    };
    let key = sb.client_key("temporary", KeyKind::Ed25519);
    let at = unix_now() + AHEAD;
    let id = bind_until(&sb, &key, at);
    assert_logs_in_before(&sb, &key, at);
    sb.stop_agent();

    sleep_until_after(at);
    // Nobody removed the line: sshd's own expiry-time refuses the key.
    assert!(sb.read(AK).contains(&blob(&key)));
    sb.assert_no_key_login("exampleuser", &key);

    sb.resume_agent();
    wait_until_line_gone(&sb, &key);
    sb.assert_no_key_login("exampleuser", &key);
    assert_removal_audited(&sb, &key, &id);
}

#[test]
fn apply_staged_at_boot_removes_keys_that_expired_while_the_machine_was_down() {
    let Some(mut sb) = sandbox() else {
        return;
    };
    sb.start_agent();
    let key = sb.client_key("temporary", KeyKind::Ed25519);
    let at = unix_now() + AHEAD;
    // create_user's keys_expire_at, through the same flag.
    let r = sb
        .cmd("create_user")
        .user("exampleuser")
        .keys(&[&key])
        .args(["--keys-expire-at", &rfc3339_at(at)])
        .send();
    r.assert_ok();
    let id = r.payload["id"].as_str().unwrap().to_owned();
    assert_expiry_time_written(&sb, &key, at);
    assert_logs_in_before(&sb, &key, at);
    sb.stop_agent();

    sleep_until_after(at);
    sb.assert_no_key_login("exampleuser", &key);
    let out = sb.apply_staged();
    assert!(out.ok(), "apply-staged: {}{}", out.stdout, out.stderr);
    assert!(!sb.read(AK).contains(&blob(&key)), "{}", out.stderr);
    assert!(
        out.stderr.contains(KEY_EXPIRED) && out.stderr.contains(&id),
        "{}",
        out.stderr
    );
}

#[test]
fn an_expires_at_that_is_not_in_the_future_is_invalid_command_and_changes_nothing() {
    let Some(sb) = sandbox_with_exampleuser() else {
        return;
    };
    let key = sb.client_key("late", KeyKind::Ed25519);
    let before = sb.read("/home/exampleuser/.bashrc");
    for at in [unix_now() - 5, unix_now() - 86_400 * 365] {
        sb.cmd("add_keys")
            .user("exampleuser")
            .keys(&[&key])
            .args(["--keys-expire-at", &rfc3339_at(at)])
            .send()
            .assert_rejected("invalid_command");
    }
    sb.cmd("replace_keys")
        .user("exampleuser")
        .keys(&[&key])
        .args(["--keys-expire-at", &rfc3339_at(unix_now() - 1)])
        .send()
        .assert_rejected("invalid_command");
    assert!(sb.lstat(AK).is_none(), "no authorized_keys was written");
    assert_eq!(sb.read("/home/exampleuser/.bashrc"), before);
    sb.assert_no_key_login("exampleuser", &key);
}
