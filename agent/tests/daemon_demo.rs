//! The README's first command, `accessd demo`, works and stays in its sandbox.

mod daemon_support;

use daemon_support::require_root;

#[test]
fn demo_runs_every_step_and_leaves_the_hosts_etc_alone() {
    if !require_root() {
        return;
    }
    let host_files = ["/etc/passwd", "/etc/shadow", "/etc/group"];
    let before: Vec<Vec<u8>> = host_files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_default())
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_accessd"))
        .arg("demo")
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.matches("signature verified; status ok, code ok")
            .count(),
        4,
        "{text}"
    );
    assert!(text.contains("status rejected, code replayed"), "{text}");
    assert!(text.contains("/etc/passwd: alice:x:"), "{text}");
    assert!(
        text.contains("(hash elided)")
            && !text.contains("$6$rounds")
            && !text.contains("Demo-Passw0rd"),
        "{text}"
    );
    assert!(text.contains("PasswordAuthentication no"), "{text}");
    assert!(text.contains("authorized_keys: ssh-ed25519 "), "{text}");
    let after: Vec<Vec<u8>> = host_files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_default())
        .collect();
    assert_eq!(before, after, "the host's /etc must not change");
    // Everything the demo made is under TMPDIR.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
}
