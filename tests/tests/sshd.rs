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

/// Every file of /etc/ssh that the command changed has a backup holding its
/// original contents, under /etc/ssh or accessd's state directory.
fn assert_changed_files_backed_up(sb: &Sandbox, before: &BTreeMap<PathBuf, Vec<u8>>) {
    let after = contents_under(&sb.path("/etc/ssh"));
    let mut everywhere = after.clone();
    everywhere.extend(contents_under(sb.state_dir()));
    let mut changed = 0;
    for (path, old) in before {
        if after.get(path) == Some(old) {
            continue;
        }
        changed += 1;
        let backed_up = everywhere.iter().any(|(p, c)| p != path && c == old);
        assert!(
            backed_up,
            "{} changed and no backup holds its original contents",
            path.display()
        );
    }
    let created = after.keys().filter(|p| !before.contains_key(*p)).count();
    assert!(
        changed + created > 0,
        "set_sshd changed no file under /etc/ssh"
    );
}

#[test]
fn disabling_key_logins_leaves_password_logins_working() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    let key = user_with_key_and_password(&sb);
    let before = contents_under(&sb.path("/etc/ssh"));
    let restarts = sb.sshd_restarts();

    sb.cmd("set_sshd")
        .args(["--pubkey-auth", "no"])
        .send()
        .assert_ok();

    assert_eq!(sb.sshd_option("pubkeyauthentication"), "no");
    assert_eq!(sb.sshd_restarts(), restarts + 1, "sshd restarted once");
    sb.assert_no_key_login("exampleuser", &key);
    sb.assert_password_login("exampleuser", PASSWORD);
    assert_changed_files_backed_up(&sb, &before);
    assert_eq!(sb.run(&[accessd_e2e::SSHD, "-t"]).status.code(), Some(0));

    sb.cmd("set_sshd")
        .args(["--pubkey-auth", "yes"])
        .send()
        .assert_ok();

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
    let before = contents_under(&sb.path("/etc/ssh"));

    sb.cmd("set_sshd")
        .args(["--password-auth", "no"])
        .send()
        .assert_ok();

    assert_eq!(sb.sshd_option("passwordauthentication"), "no");
    sb.assert_no_password_login("exampleuser", PASSWORD);
    sb.assert_key_login("exampleuser", &key);
    assert_changed_files_backed_up(&sb, &before);

    sb.cmd("set_sshd")
        .args(["--password-auth", "yes"])
        .send()
        .assert_ok();

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
