//! Scenarios 6, 7 and 8: changing sshd's effective settings, proven with
//! `sshd -T` and real logins, and refusing a change sshd would not accept.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use accessd_e2e::{sandbox, ClientKey, HostSnapshot, KeyKind, Sandbox};

const PASSWORD: &str = "Ex4mple-Passw0rd!";

/// A user who can log in both ways, created through accessd.
fn user_with_key_and_password(sb: &Sandbox) -> ClientKey {
    let key = sb.client_key("exampleuser", KeyKind::Ed25519);
    sb.cmd("create_user")
        .user("exampleuser")
        .password(PASSWORD)
        .keys(&[&key])
        .send()
        .assert_ok();
    sb.assert_key_login("exampleuser", &key);
    sb.assert_password_login("exampleuser", PASSWORD);
    key
}

/// Every regular file under `dir` (host path) with its contents.
fn contents_under(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.insert(e.path(), fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// Apply a set_sshd command and check what the issue asks of one: applied,
/// validated, sshd restarted once through the configured command, and every
/// file it changed under /etc/ssh backed up first — the backups the result
/// lists exist and hold the originals, and no changed file lacks one.
fn set_sshd(sb: &Sandbox, flag: &str, value: &str) {
    let before = contents_under(&sb.path("/etc/ssh"));
    let restarts = sb.sshd_restarts();

    let r = sb.cmd("set_sshd").args([flag, value]).send();
    r.assert_ok();

    assert_eq!(r.payload["data"]["validated"], true, "{}", r.payload);
    assert_eq!(r.payload["data"]["restarted"], true, "{}", r.payload);
    assert_eq!(sb.sshd_restarts(), restarts + 1, "sshd restarted once");
    assert_eq!(sb.run(&[accessd_e2e::SSHD, "-t"]).status.code(), Some(0));
    let after = contents_under(&sb.path("/etc/ssh"));
    let changed: Vec<&PathBuf> = before
        .iter()
        .filter(|(p, old)| after.get(*p) != Some(*old))
        .map(|(p, _)| p)
        .collect();
    let created = after.keys().filter(|p| !before.contains_key(*p)).count();
    assert!(
        !changed.is_empty() || created > 0,
        "no file under /etc/ssh changed"
    );
    let backups: Vec<PathBuf> = r.payload["data"]["backups"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b.as_str())
                .map(|b| sb.path(b))
                .collect()
        })
        .unwrap_or_default();
    for b in &backups {
        let contents = fs::read(b).unwrap_or_else(|e| panic!("backup {}: {e}", b.display()));
        assert!(
            changed.iter().any(|p| before[*p] == contents),
            "backup {} holds no original",
            b.display()
        );
    }
    for p in changed {
        assert!(
            backups
                .iter()
                .any(|b| fs::read(b).ok().as_ref() == Some(&before[p])),
            "{} changed without a backup of its original ({})",
            p.display(),
            r.payload
        );
    }
}

#[test]
fn disabling_key_logins_leaves_password_logins_working() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    let key = user_with_key_and_password(&sb);

    set_sshd(&sb, "--pubkey-auth", "no");

    assert_eq!(sb.sshd_option("pubkeyauthentication"), "no");
    sb.assert_no_key_login("exampleuser", &key);
    sb.assert_password_login("exampleuser", PASSWORD);

    // Turning it back on edits accessd's own drop-in: that one is backed up.
    set_sshd(&sb, "--pubkey-auth", "yes");

    assert_eq!(sb.sshd_option("pubkeyauthentication"), "yes");
    sb.assert_key_login("exampleuser", &key);
    sb.assert_password_login("exampleuser", PASSWORD);
}

#[test]
fn disabling_password_logins_wins_over_the_cloud_init_dropin() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    let key = user_with_key_and_password(&sb);
    let cloud_init = "/etc/ssh/sshd_config.d/50-cloud-init.conf";
    assert!(sb.read(cloud_init).contains("PasswordAuthentication yes"));

    set_sshd(&sb, "--password-auth", "no");

    assert_eq!(sb.sshd_option("passwordauthentication"), "no");
    sb.assert_no_password_login("exampleuser", PASSWORD);
    sb.assert_key_login("exampleuser", &key);

    set_sshd(&sb, "--password-auth", "yes");

    assert_eq!(sb.sshd_option("passwordauthentication"), "yes");
    sb.assert_password_login("exampleuser", PASSWORD);
    sb.assert_key_login("exampleuser", &key);
}

#[test]
fn a_broken_dropin_fails_set_sshd_and_changes_nothing() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    let key = user_with_key_and_password(&sb);
    // Someone left a drop-in that sshd will not accept; the running sshd
    // read its config before, so it still serves.
    sb.write(
        "/etc/ssh/sshd_config.d/60-broken.conf",
        "PasswordAuthentication maybe\n",
        0o644,
    );
    assert_ne!(sb.run(&[accessd_e2e::SSHD, "-t"]).status.code(), Some(0));
    let etc_before = HostSnapshot::tree_under(&sb.path("/"), "/etc");
    let (pid, restarts) = (sb.sshd_pid(), sb.sshd_restarts());

    let r = sb.cmd("set_sshd").args(["--pubkey-auth", "no"]).send();
    r.assert_failed("sshd_invalid");

    let diff = etc_before.diff(&HostSnapshot::tree_under(&sb.path("/"), "/etc"));
    assert!(diff.is_empty(), "files changed: {diff:?}");
    assert_eq!(sb.sshd_restarts(), restarts, "sshd was restarted");
    assert_eq!(sb.sshd_pid(), pid);
    sb.assert_key_login("exampleuser", &key);
    sb.assert_password_login("exampleuser", PASSWORD);

    // Same for a change that would be harmless on its own.
    let r = sb
        .cmd("set_sshd")
        .args(["--permit-root-login", "no"])
        .send();
    r.assert_failed("sshd_invalid");
    assert!(etc_before
        .diff(&HostSnapshot::tree_under(&sb.path("/"), "/etc"))
        .is_empty());
    assert_eq!(sb.sshd_restarts(), restarts);
}

#[test]
fn a_change_made_without_restart_takes_effect_on_restart_sshd() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    let key = user_with_key_and_password(&sb);
    let (pid, restarts) = (sb.sshd_pid(), sb.sshd_restarts());

    let r = sb
        .cmd("set_sshd")
        .args(["--password-auth", "no", "--no-restart"])
        .send();
    r.assert_ok();
    assert_eq!(r.payload["data"]["restarted"], false, "{}", r.payload);

    // On disk it is off; the running sshd has not read it yet.
    assert_eq!(sb.sshd_option("passwordauthentication"), "no");
    assert_eq!(sb.sshd_restarts(), restarts);
    assert_eq!(sb.sshd_pid(), pid);
    sb.assert_password_login("exampleuser", PASSWORD);

    sb.cmd("restart_sshd").send().assert_ok();

    assert_eq!(sb.sshd_restarts(), restarts + 1);
    sb.assert_no_password_login("exampleuser", PASSWORD);
    sb.assert_key_login("exampleuser", &key);
}

#[test]
fn forbidding_root_logins_locks_out_roots_key_until_allowed_again() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    let key = sb.client_key("root-admin", KeyKind::Ed25519);
    sb.cmd("add_keys")
        .user("root")
        .keys(&[&key])
        .send()
        .assert_ok();
    sb.assert_key_login("root", &key);

    set_sshd(&sb, "--permit-root-login", "no");
    assert_eq!(sb.sshd_option("permitrootlogin"), "no");
    sb.assert_no_key_login("root", &key);

    set_sshd(&sb, "--permit-root-login", "prohibit-password");
    assert_eq!(sb.sshd_option("permitrootlogin"), "without-password");
    sb.assert_key_login("root", &key);
}

/// Issue 11 case 2: a `Match` block that re-enables what `set_sshd` turns
/// off. sshd applies the block to every connection from 127.0.0.1, so the
/// global value alone proves nothing; the login from 127.0.0.1 is the proof.
const MATCH_LOOPBACK: &str = "\nMatch Address 127.0.0.0/8,10.0.0.0/8\n\
     \tPasswordAuthentication yes\n\
     \tPubkeyAuthentication yes\n\
     \tPermitRootLogin yes\n";

/// What sshd reports for a connection to the sandbox from 127.0.0.1.
fn loopback_option(sb: &Sandbox, user: &str, key: &str) -> String {
    let spec = format!(
        "user={user},host=localhost,addr=127.0.0.1,laddr=127.0.0.1,lport={}",
        sb.port
    );
    let out = sb.run(&[accessd_e2e::SSHD, "-T", "-C", &spec]);
    assert!(out.ok(), "sshd -T -C {spec}: {}", out.stderr);
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")).map(str::to_owned))
        .unwrap_or_else(|| panic!("sshd -T -C prints no {key}"))
}

/// The sandbox with [`MATCH_LOOPBACK`] appended to the main file, read by
/// the running sshd.
fn with_match_loopback(sb: &Sandbox) {
    let main = sb.read("/etc/ssh/sshd_config");
    sb.write(
        "/etc/ssh/sshd_config",
        &format!("{main}{MATCH_LOOPBACK}"),
        0o644,
    );
    sb.restart_sshd();
}

/// The Match block the result lists as changed, by its criteria.
fn listed_match_blocks(r: &accessd_e2e::Reply) -> Vec<String> {
    r.payload["data"]["match_blocks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b["criteria"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn set_sshd_password_off_holds_inside_a_match_address_block() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    let key = user_with_key_and_password(&sb);
    with_match_loopback(&sb);
    sb.assert_password_login("exampleuser", PASSWORD);

    let r = sb.cmd("set_sshd").args(["--password-auth", "no"]).send();
    r.assert_ok();

    assert_eq!(
        loopback_option(&sb, "exampleuser", "passwordauthentication"),
        "no"
    );
    sb.assert_no_password_login("exampleuser", PASSWORD);
    sb.assert_key_login("exampleuser", &key);
    assert_eq!(
        listed_match_blocks(&r),
        vec!["Address 127.0.0.0/8,10.0.0.0/8"],
        "{}",
        r.payload
    );
}

#[test]
fn set_sshd_pubkey_off_holds_inside_a_match_address_block() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    let key = user_with_key_and_password(&sb);
    with_match_loopback(&sb);
    sb.assert_key_login("exampleuser", &key);

    let r = sb.cmd("set_sshd").args(["--pubkey-auth", "no"]).send();
    r.assert_ok();

    assert_eq!(
        loopback_option(&sb, "exampleuser", "pubkeyauthentication"),
        "no"
    );
    sb.assert_no_key_login("exampleuser", &key);
    sb.assert_password_login("exampleuser", PASSWORD);
}

#[test]
fn set_sshd_root_login_off_holds_inside_a_match_address_block() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    let key = sb.client_key("root-admin", KeyKind::Ed25519);
    sb.cmd("add_keys")
        .user("root")
        .keys(&[&key])
        .send()
        .assert_ok();
    with_match_loopback(&sb);
    sb.assert_key_login("root", &key);

    let r = sb
        .cmd("set_sshd")
        .args(["--permit-root-login", "no"])
        .send();
    r.assert_ok();

    assert_eq!(loopback_option(&sb, "root", "permitrootlogin"), "no");
    sb.assert_no_key_login("root", &key);
}

/// Issue 11 case 6: "restart the SSH service" is the remedy when logins
/// fail, so afterwards sshd serves.
#[test]
fn restart_sshd_starts_a_stopped_sshd() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    let key = user_with_key_and_password(&sb);
    sb.stop_sshd();

    let r = sb.cmd("restart_sshd").send();
    r.assert_ok();

    assert!(r.message().contains("sshd is running"), "{}", r.payload);
    sb.assert_key_login("exampleuser", &key);
}

/// A restart command that succeeds without starting sshd (as `systemctl
/// try-reload-or-restart` does to a stopped unit) is not an `ok`.
#[test]
fn restart_sshd_that_leaves_sshd_down_is_restart_failed() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    sb.stop_sshd();
    sb.restart_does_nothing();

    let r = sb.cmd("restart_sshd").send();
    r.assert_failed("restart_failed");

    assert!(r.message().contains("not running"), "{}", r.payload);
    assert!(!sb.sshd_listening());
}

/// Issue 11 case 10: the restart after set_sshd fails once sshd has
/// already read the new files; the files are restored, and sshd must be
/// made to read them again, or it serves a configuration no file holds.
#[test]
fn failed_restart_leaves_sshd_serving_the_old_config() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    let key = user_with_key_and_password(&sb);
    let etc_before = HostSnapshot::tree_under(&sb.path("/"), "/etc");
    sb.fail_next_restart_after_reload();

    let r = sb.cmd("set_sshd").args(["--password-auth", "no"]).send();
    r.assert_failed("restart_failed");

    let diff = etc_before.diff(&HostSnapshot::tree_under(&sb.path("/"), "/etc"));
    assert!(diff.is_empty(), "files changed: {diff:?}");
    // The old configuration (passwords on) is what sshd serves.
    sb.assert_password_login("exampleuser", PASSWORD);
    sb.assert_key_login("exampleuser", &key);
    assert!(r.message().contains("restored"), "{}", r.payload);
}

/// The same through a drop-in: a Match block whose Include reads another
/// file, as configuration managers split them. The line that must change
/// is in the inner file, and the block is listed by where its Match is.
#[test]
fn set_sshd_password_off_holds_inside_a_match_block_of_an_included_file() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    let key = user_with_key_and_password(&sb);
    sb.run_ok(&["mkdir", "-p", "/etc/ssh/lan.d"]);
    sb.write(
        "/etc/ssh/sshd_config.d/60-lan.conf",
        "Match Address 127.0.0.1\n\tInclude /etc/ssh/lan.d/*.conf\n",
        0o644,
    );
    sb.write(
        "/etc/ssh/lan.d/pw.conf",
        "PasswordAuthentication yes\n",
        0o644,
    );
    // Global passwords off by hand, so that only the block turns them on.
    sb.write(
        "/etc/ssh/sshd_config.d/50-cloud-init.conf",
        "PasswordAuthentication no\n",
        0o600,
    );
    sb.restart_sshd();
    sb.assert_password_login("exampleuser", PASSWORD);

    let r = sb.cmd("set_sshd").args(["--password-auth", "no"]).send();
    r.assert_ok();
    let block = &r.payload["data"]["match_blocks"][0];
    assert_eq!(
        block["file"], "/etc/ssh/sshd_config.d/60-lan.conf",
        "{}",
        r.payload
    );
    assert_eq!(block["line"], 1);
    assert_eq!(block["criteria"], "Address 127.0.0.1");
    assert_eq!(
        block["lines"],
        serde_json::json!(["/etc/ssh/lan.d/pw.conf:1"])
    );

    let r = sb.cmd("set_sshd").args(["--password-auth", "no"]).send();
    r.assert_ok();
    assert!(
        r.payload["data"]["match_blocks"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "a second identical request changes nothing: {}",
        r.payload
    );

    assert_eq!(
        loopback_option(&sb, "exampleuser", "passwordauthentication"),
        "no"
    );
    sb.assert_no_password_login("exampleuser", PASSWORD);
    sb.assert_key_login("exampleuser", &key);
    assert_eq!(
        sb.read("/etc/ssh/lan.d/pw.conf"),
        "PasswordAuthentication no\n"
    );
    assert_eq!(
        sb.read("/etc/ssh/lan.d/pw.conf.bak"),
        "PasswordAuthentication yes\n"
    );
}
