//! Signals on the real `accessd` daemon: SIGTERM and SIGKILL mid-burst,
//! SIGHUP with a new trusted key and with a broken configuration.

mod daemon_support;

use std::collections::HashSet;
use std::process::ExitStatus;

use daemon_support::*;
use ed25519_dalek::SigningKey;
use nix::sys::signal::Signal;
use serde_json::json;

const N: u32 = 200;

fn burst(m: &Machine) -> Vec<String> {
    let envs: Vec<Vec<u8>> = (0..N)
        .map(|n| {
            m.sign(
                &format!("add-{n}"),
                "add_keys",
                json!({"user": USER, "keys": [key_line(n)]}),
            )
        })
        .collect();
    let names: Vec<String> = (0..N).map(|n| format!("{n:04}.json")).collect();
    for (name, env) in names.iter().zip(&envs) {
        m.drop_cmd(name, env);
    }
    names
}

/// Starts the daemon on a burst and sends it `sig` once 20 results are out;
/// returns the burst's file names and how the daemon ended.
fn interrupt_burst(m: &Machine, sig: Signal) -> (Vec<String>, ExitStatus) {
    let d = m.start();
    let names = burst(m);
    wait_until("20 results", PATIENCE, || {
        Machine::names(&m.outbox()).len() >= 20
    });
    d.signal(sig);
    (names, d.wait())
}

/// Drops `{n}.json`, adding key `n` for `USER`, signed by `other` under the
/// key id `other`; returns the daemon's result code for it.
fn add_key_signed_by_other(m: &Machine, other: &SigningKey, n: u32) -> &'static str {
    let name = format!("{n}.json");
    m.drop_cmd(
        &name,
        &m.sign_with(
            other,
            "other",
            &format!("by-other-{n}"),
            "add_keys",
            json!({"user": USER, "keys": [key_line(n)]}),
        ),
    );
    m.result(&name).code.as_str()
}

fn assert_every_key_once(m: &Machine) {
    let ak = m.authorized_keys();
    for n in 0..N {
        let line = key_line(n);
        assert_eq!(ak.lines().filter(|l| *l == line).count(), 1, "key {n}");
    }
}

#[test]
fn sigterm_mid_burst_loses_nothing_and_the_rest_is_applied_after_restart() {
    if !require_root() {
        return;
    }
    let m = Machine::new();
    let (names, st) = interrupt_burst(&m, Signal::SIGTERM);
    assert_eq!(st.code(), Some(0), "SIGTERM is a clean exit");

    let answered: HashSet<String> = Machine::names(&m.outbox()).into_iter().collect();
    let waiting: HashSet<String> = Machine::names(&m.inbox()).into_iter().collect();
    assert!(
        answered.is_disjoint(&waiting),
        "a file both answered and still waiting"
    );
    let all: HashSet<String> = names.iter().cloned().collect();
    assert_eq!(&answered | &waiting, all, "nothing lost");
    assert!(
        !waiting.is_empty(),
        "the burst was interrupted (else this test proves little)"
    );

    let d = m.start();
    wait_until("every result", PATIENCE, || {
        Machine::names(&m.outbox()).len() == names.len()
    });
    assert!(d.stop().success());
    for name in &names {
        let r = m.result(name);
        assert_eq!(r.code.as_str(), "ok", "{name}: {}", r.message);
    }
    assert_every_key_once(&m);
}

#[test]
fn sigkill_mid_burst_every_file_gets_exactly_one_result_and_nothing_runs_twice() {
    if !require_root() {
        return;
    }
    let m = Machine::new();
    let (names, _) = interrupt_burst(&m, Signal::SIGKILL);

    let d = m.start();
    wait_until("an empty inbox", PATIENCE, || {
        Machine::names(&m.inbox()).is_empty()
    });
    assert!(d.stop().success());
    assert_eq!(
        Machine::names(&m.outbox()),
        names,
        "exactly one result per file"
    );
    let ak = m.authorized_keys();
    let mut replayed = 0;
    for (n, name) in names.iter().enumerate() {
        let r = m.result(name);
        let copies = ak.lines().filter(|l| *l == key_line(n as u32)).count();
        match r.code.as_str() {
            "ok" => assert_eq!(copies, 1, "{name}: applied exactly once"),
            // The command in flight when the process died: its id was
            // recorded, so after the restart it is answered `replayed` and
            // not run again — applied at most once.
            "replayed" => {
                replayed += 1;
                assert!(copies <= 1, "{name}: applied twice");
            }
            other => panic!("{name}: {other}: {}", r.message),
        }
    }
    assert!(
        replayed <= 1,
        "only the command in flight can have been cut off"
    );
}

#[test]
fn sighup_takes_a_new_trusted_key_and_keeps_the_old_config_when_the_new_one_is_broken() {
    if !require_root() {
        return;
    }
    let m = Machine::new();
    let other = key(2);
    let d = m.start();

    assert_eq!(add_key_signed_by_other(&m, &other, 1), "unknown_key");

    m.write_config(&[("cp", &b64(&m.cp)), ("other", &b64(&other))]);
    d.signal(Signal::SIGHUP);
    m.wait_log("configuration reloaded", 1);
    assert_eq!(
        add_key_signed_by_other(&m, &other, 2),
        "ok",
        "the new key is trusted after SIGHUP"
    );

    // A broken file: an unknown key. Logged, and the running config stays.
    let broken = m
        .config_text(&[("cp", &b64(&m.cp))])
        .replace("[trust]\n", "bogus_setting = 1\n[trust]\n");
    m.write_raw_config(&broken);
    d.signal(Signal::SIGHUP);
    m.wait_log("configuration not reloaded", 1);
    assert_eq!(
        add_key_signed_by_other(&m, &other, 3),
        "ok",
        "the old config (trusting `other`) is kept"
    );

    assert!(d.stop().success());
    assert!(
        m.log_text().contains("bogus_setting"),
        "the error names the bad key"
    );
}
