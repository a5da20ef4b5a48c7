//! Next-boot staging end to end: the daemon stages, `accessd apply-staged`
//! applies once and never again; plus the `apply` and `identity` commands.

mod daemon_support;

use daemon_support::*;
use serde_json::json;

/// `openssl passwd -6 -salt saltsaltsaltsalt Next-Boot-pw1`
const HASH: &str = "$6$saltsaltsaltsalt$O2HS/QLzw2LXNAuEEjzBCvpTtT4/qqIzkH/QWm9fEK8jpOPPP.cUucXonsJZdFdRiwQcmf6l9V6QcO14VJNDj1";

/// What a boot runs: `accessd apply-staged`, which must succeed.
fn boot_apply_staged(m: &Machine) {
    let st = std::process::Command::new(Machine::bin())
        .args(["apply-staged", "--config"])
        .arg(&m.config)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn next_boot_password_is_applied_once_by_apply_staged_and_never_again() {
    if !require_root() {
        return;
    }
    let m = Machine::new();
    let before = m.shadow_line(USER);
    let d = m.start();
    m.drop_cmd(
        "stage.json",
        &m.sign(
            "stage-1",
            "set_password",
            json!({"user": USER, "password": {"crypt": HASH}, "apply_at": "next_boot"}),
        ),
    );
    let r = m.result("stage.json");
    assert_eq!(r.code.as_str(), "ok", "{}", r.message);
    assert!(d.stop().success());
    assert_eq!(m.shadow_line(USER), before, "staged, not applied yet");

    boot_apply_staged(&m);
    assert_eq!(
        m.shadow_line(USER).split(':').nth(1),
        Some(HASH),
        "applied at boot"
    );
    let r = m.result("staged-stage-1.json");
    assert_eq!(
        (r.code.as_str(), r.id.as_deref()),
        ("ok", Some("stage-1")),
        "{}",
        r.message
    );

    // Someone changes the password afterwards; a second boot must not undo it.
    let after_first = m.shadow_line(USER);
    let outbox_before = Machine::names(&m.outbox());
    boot_apply_staged(&m);
    assert_eq!(m.shadow_line(USER), after_first);
    assert_eq!(
        Machine::names(&m.outbox()),
        outbox_before,
        "nothing applied the second time"
    );
}

#[test]
fn apply_prints_one_signed_result_per_envelope_and_fails_if_any_is_not_ok() {
    if !require_root() {
        return;
    }
    let m = Machine::new();
    let good = m.sign(
        "apply-1",
        "add_keys",
        json!({"user": USER, "keys": [key_line(1)]}),
    );
    let (out, st) = m.apply_status(std::slice::from_ref(&good));
    assert!(st.success());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].code.as_str(), "ok");

    let (out, st) = m.apply_status(&[
        m.sign(
            "apply-2",
            "add_keys",
            json!({"user": USER, "keys": [key_line(2)]}),
        ),
        good,
    ]);
    assert_eq!(
        out.iter().map(|r| r.code.as_str()).collect::<Vec<_>>(),
        ["ok", "replayed"]
    );
    assert_eq!(st.code(), Some(3), "non-zero when one was not ok");
}
