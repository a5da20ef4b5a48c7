//! The harness itself, proven with real OpenSSH and shadow-utils only (no
//! accessd): if these fail, no scenario result means anything.

use accessd_e2e::{sandbox, HostSnapshot, KeyKind, CLOUD_INIT_DROPIN};

#[test]
fn sandbox_sshd_has_the_cloud_image_layout() {
    let Some(sb) = sandbox() else { return };
    let main = sb.read("/etc/ssh/sshd_config");
    let first = main
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty());
    assert_eq!(first, Some("Include /etc/ssh/sshd_config.d/*.conf"));
    assert_eq!(
        sb.read("/etc/ssh/sshd_config.d/50-cloud-init.conf"),
        CLOUD_INIT_DROPIN
    );
    let eff = sb.sshd_effective();
    assert_eq!(eff["passwordauthentication"], "yes");
    assert_eq!(eff["pubkeyauthentication"], "yes");
    assert_eq!(eff["usepam"], "yes");
    assert_eq!(eff["permitrootlogin"], "without-password");
    assert_eq!(eff["listenaddress"], format!("127.0.0.1:{}", sb.port));
}

#[test]
fn a_hand_made_user_logs_in_with_a_key_and_a_password() {
    let Some(sb) = sandbox() else { return };
    sb.useradd("alice");
    let key = sb.client_key("alice", KeyKind::Ed25519);
    let other = sb.client_key("mallory", KeyKind::Ed25519);
    sb.run_ok(&[
        "install",
        "-d",
        "-m",
        "700",
        "-o",
        "alice",
        "-g",
        "alice",
        "/home/alice/.ssh",
    ]);
    sb.write(
        "/home/alice/.ssh/authorized_keys",
        &format!("{}\n", key.public),
        0o600,
    );
    sb.run_ok(&["chown", "alice:alice", "/home/alice/.ssh/authorized_keys"]);

    sb.assert_key_login("alice", &key);
    sb.assert_no_key_login("alice", &other);
    sb.assert_no_key_login("root", &key);

    // Locked password (useradd's default): no password login.
    sb.assert_no_password_login("alice", "Corr3ct-Horse!");
    sb.chpasswd("alice", "Corr3ct-Horse!");
    sb.assert_password_login("alice", "Corr3ct-Horse!");
    sb.assert_no_password_login("alice", "wrong-Password-1");
}

#[test]
fn the_restart_command_makes_sshd_reread_its_config() {
    let Some(sb) = sandbox() else { return };
    sb.useradd("bob");
    sb.chpasswd("bob", "Corr3ct-Horse!");
    sb.assert_password_login("bob", "Corr3ct-Horse!");

    // A drop-in that sorts before cloud-init's wins once sshd re-reads.
    sb.write(
        "/etc/ssh/sshd_config.d/00-test.conf",
        "PasswordAuthentication no\n",
        0o644,
    );
    assert_eq!(sb.sshd_option("passwordauthentication"), "no");
    sb.assert_password_login("bob", "Corr3ct-Horse!"); // not yet re-read
    let before = sb.sshd_restarts();
    sb.restart_sshd();
    assert_eq!(sb.sshd_restarts(), before + 1);
    sb.assert_no_password_login("bob", "Corr3ct-Horse!");

    std::fs::remove_file(sb.path("/etc/ssh/sshd_config.d/00-test.conf")).unwrap();
    sb.restart_sshd();
    sb.assert_password_login("bob", "Corr3ct-Horse!");
}

#[test]
fn the_host_never_sees_what_happens_in_a_sandbox() {
    let Some(sb) = sandbox() else { return };
    let host_before = HostSnapshot::take();
    let sandbox_before = HostSnapshot::take_under(&sb.path("/"));
    assert!(
        host_before.len() > 5,
        "the guard reads nothing: {host_before:?}"
    );

    // Everything a scenario might do, done the blunt way.
    sb.useradd("carol");
    sb.chpasswd("carol", "Corr3ct-Horse!");
    sb.chpasswd("root", "Corr3ct-Horse!");
    sb.run_ok(&["install", "-d", "-m", "700", "/root/.ssh"]);
    sb.write(
        "/root/.ssh/authorized_keys",
        "ssh-ed25519 AAAA e2e\n",
        0o600,
    );
    sb.write(
        "/etc/ssh/sshd_config.d/00-test.conf",
        "PubkeyAuthentication no\n",
        0o600,
    );
    sb.write("/etc/sudoers.d/e2e", "carol ALL=(ALL) ALL\n", 0o440);
    sb.restart_sshd();

    // The guard sees those changes inside the sandbox...
    let changed = sandbox_before.diff(&HostSnapshot::take_under(&sb.path("/")));
    for p in [
        "/etc/passwd",
        "/etc/shadow",
        "/etc/group",
        "/root/.ssh",
        "/etc/sudoers.d/e2e",
        "/home/carol",
    ] {
        assert!(
            changed.iter().any(|c| c.starts_with(&format!("{p} "))),
            "the guard did not notice {p} changing: {changed:?}"
        );
    }
    // ...and none of them on the host.
    let diff = host_before.diff(&HostSnapshot::take());
    assert!(diff.is_empty(), "the host changed: {diff:?}");
    // Dropping the sandbox re-checks against the binary-wide baseline.
}
