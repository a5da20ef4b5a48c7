//! The real `accessd` daemon with the real engine on a temp root: inbox
//! files in, signed results out, in order, nothing lost or applied twice.

mod daemon_support;

use std::os::unix::fs::MetadataExt;

use daemon_support::*;
use serde_json::json;

fn add_key(m: &Machine, n: u32) -> Vec<u8> {
    m.sign(
        &format!("add-{n}"),
        "add_keys",
        json!({"user": USER, "keys": [key_line(n)]}),
    )
}

/// Each key appears exactly once in alice's authorized_keys.
fn assert_keys_once(m: &Machine, range: std::ops::Range<u32>) {
    let ak = m.authorized_keys();
    for n in range {
        let line = key_line(n);
        assert_eq!(
            ak.lines().filter(|l| *l == line).count(),
            1,
            "key {n} in:\n{ak}"
        );
    }
}

/// Results were written in name order (outbox mtimes, ns resolution).
fn assert_answered_in_order(m: &Machine, names: &[String]) {
    let times: Vec<(i64, i64)> = names
        .iter()
        .map(|n| {
            let md = std::fs::metadata(m.outbox().join(n)).unwrap();
            (md.mtime(), md.mtime_nsec())
        })
        .collect();
    for w in times.windows(2) {
        assert!(w[0] <= w[1], "results not written in name order");
    }
}

#[test]
fn a_file_created_before_start_is_answered() {
    if !require_root() {
        return;
    }
    let m = Machine::new();
    std::fs::create_dir_all(m.inbox()).unwrap();
    m.drop_cmd("early.json", &add_key(&m, 1));
    let d = m.start();
    let r = m.result("early.json");
    assert_eq!(
        (r.code.as_str(), r.id.as_deref()),
        ("ok", Some("add-1")),
        "{}",
        r.message
    );
    assert_keys_once(&m, 1..2);
    assert!(!m.inbox().join("early.json").exists());
    assert!(d.stop().success());
}

#[test]
fn files_dropped_one_by_one_are_answered() {
    if !require_root() {
        return;
    }
    let m = Machine::new();
    let d = m.start();
    let mut names = Vec::new();
    for n in 0..20 {
        let name = format!("{n:03}.json");
        m.drop_cmd(&name, &add_key(&m, n));
        let r = m.result(&name);
        assert_eq!(r.code.as_str(), "ok", "{}", r.message);
        names.push(name);
    }
    assert!(d.stop().success());
    assert_keys_once(&m, 0..20);
    assert_eq!(Machine::names(&m.outbox()), names);
    assert!(Machine::names(&m.inbox()).is_empty());
}

#[test]
fn a_burst_of_500_is_answered_completely_and_in_order() {
    if !require_root() {
        return;
    }
    let m = Machine::new();
    let envs: Vec<Vec<u8>> = (0..500).map(|n| add_key(&m, n)).collect();
    let d = m.start();
    let names: Vec<String> = (0..500).map(|n| format!("{n:04}.json")).collect();
    for (name, env) in names.iter().zip(&envs) {
        m.drop_cmd(name, env);
    }
    wait_until("500 results", PATIENCE, || {
        Machine::names(&m.outbox()).len() == 500
    });
    assert!(d.stop().success());
    assert_eq!(Machine::names(&m.outbox()), names);
    assert!(Machine::names(&m.inbox()).is_empty());
    for (i, name) in names.iter().enumerate() {
        let r = m.result(name);
        assert_eq!(r.id.as_deref(), Some(format!("add-{i}").as_str()));
        assert_eq!(r.code.as_str(), "ok", "{name}: {}", r.message);
    }
    assert_answered_in_order(&m, &names);
    assert_keys_once(&m, 0..500);
}

#[test]
fn a_garbage_file_gets_a_signed_rejection_and_the_daemon_carries_on() {
    if !require_root() {
        return;
    }
    let m = Machine::new();
    let d = m.start();
    m.drop_cmd("a-garbage.json", b"{not json");
    m.drop_cmd("b-good.json", &add_key(&m, 9));
    assert_eq!(m.result("a-garbage.json").code.as_str(), "bad_envelope");
    assert_eq!(m.result("b-good.json").code.as_str(), "ok");
    assert!(d.stop().success());
}

#[test]
fn the_journal_fields_are_logged_without_secrets() {
    if !require_root() {
        return;
    }
    let m = Machine::new();
    let d = m.start();
    let agent = m.agent_key();
    let pw = accessd::protocol::client::sealed_password(&agent, b"Sup3r-Secret-pw");
    m.drop_cmd(
        "pw.json",
        &m.sign(
            "pw-1",
            "set_password",
            json!({"user": USER, "password": pw}),
        ),
    );
    assert_eq!(m.result("pw.json").code.as_str(), "ok");
    assert!(d.stop().success());
    let log = m.log_text();
    assert!(log.contains("command_id=\"pw-1\""), "{log}");
    assert!(log.contains("result_code=\"ok\""), "{log}");
    assert!(log.contains("target_user=\"alice\""), "{log}");
    assert!(log.contains(accessd::logging::message_id::APPLIED), "{log}");
    assert!(
        log.contains(accessd::logging::message_id::RECEIVED),
        "{log}"
    );
    assert!(!log.contains("Sup3r-Secret-pw"));
    let hash = m.shadow_line(USER).split(':').nth(1).unwrap().to_owned();
    assert!(hash.starts_with("$6$"));
    assert!(!log.contains(&hash), "the hash must not be logged");
}

/// Issue 12.4: `accessd apply FILE` reads at most the envelope limit + 1
/// bytes of FILE, whatever it claims to hold, and answers a signed
/// `bad_envelope` for it; it used to allocate the file's size (a 64 GiB
/// sparse file: no result at all). The child runs with a 2 GiB address
/// space so that the old behaviour fails here instead of eating the
/// machine's memory.
#[test]
fn accessd_apply_of_a_sparse_64_gib_file_reads_only_to_the_envelope_limit() {
    use std::os::unix::process::CommandExt;
    if !require_root() {
        return;
    }
    let m = Machine::new();
    let big = m.tmp.path().join("big.json");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(64 << 30)
        .unwrap();
    let mut cmd = std::process::Command::new(Machine::bin());
    cmd.arg("apply").arg("--config").arg(&m.config).arg(&big);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 2 << 30,
                rlim_max: 2 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "stdout {text} stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r =
        accessd::protocol::client::verify_result(&m.agent_key(), text.trim().as_bytes()).unwrap();
    assert_eq!(r.code.as_str(), "bad_envelope", "{}", r.message);
    assert!(r.message.contains("over the limit"), "{}", r.message);
}
