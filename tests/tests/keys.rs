//! Scenarios 3, 4, 5 and 11: binding and unbinding SSH keys, checked with
//! real key logins, and refusing paths a user has turned into symlinks.

use std::os::unix::fs::MetadataExt;

use accessd_e2e::{sandbox, ClientKey, HostSnapshot, KeyKind, Out, Sandbox};

/// A sandbox whose agent is running and has created `exampleuser`.
fn sandbox_with_exampleuser() -> Option<Sandbox> {
    let mut sb = sandbox()?;
    sb.start_agent();
    sb.cmd("create_user").user("exampleuser").send().assert_ok();
    Some(sb)
}

/// Binds `keys` to `user` through the agent, which must answer `ok`.
fn add_keys(sb: &Sandbox, user: &str, keys: &[&ClientKey]) {
    sb.cmd("add_keys").user(user).keys(keys).send().assert_ok();
}

/// Runs `script` as `user` (through `su`): what the user can do in their
/// own home without any privilege.
fn as_user(sb: &Sandbox, user: &str, script: &str) -> Out {
    sb.run(&["su", "-s", "/bin/sh", "-c", script, user])
}

/// The sandbox's /etc, file by file.
fn etc_tree(sb: &Sandbox) -> HostSnapshot {
    HostSnapshot::tree_under(&sb.path("/"), "/etc")
}

fn assert_ssh_files_owned_by(sb: &Sandbox, user: &str, home: &str) {
    let uid: u32 = sb.passwd_entry(user).unwrap()[2].parse().unwrap();
    let dir = sb.lstat(format!("{home}/.ssh")).expect("~/.ssh exists");
    assert!(dir.is_dir(), "~/.ssh is a real directory");
    assert_eq!(dir.mode() & 0o7777, 0o700, "~/.ssh mode");
    assert_eq!(dir.uid(), uid, "~/.ssh owner");
    let file = sb
        .lstat(format!("{home}/.ssh/authorized_keys"))
        .expect("authorized_keys exists");
    assert!(file.is_file(), "authorized_keys is a regular file");
    assert_eq!(file.mode() & 0o7777, 0o600, "authorized_keys mode");
    assert_eq!(file.uid(), uid, "authorized_keys owner");
    assert_eq!(file.nlink(), 1, "authorized_keys has no other links");
}

#[test]
fn user_logs_in_with_each_bound_key_type() {
    let Some(sb) = sandbox_with_exampleuser() else {
        return;
    };
    let ed = sb.client_key("laptop-ed25519", KeyKind::Ed25519);
    let rsa = sb.client_key("laptop-rsa", KeyKind::Rsa2048);
    let ecdsa = sb.client_key("laptop-ecdsa", KeyKind::Ecdsa256);
    let never = sb.client_key("never-bound", KeyKind::Ed25519);
    sb.assert_no_key_login("exampleuser", &ed);

    add_keys(&sb, "exampleuser", &[&ed]);
    sb.assert_key_login("exampleuser", &ed);
    assert_ssh_files_owned_by(&sb, "exampleuser", "/home/exampleuser");

    add_keys(&sb, "exampleuser", &[&rsa, &ecdsa]);
    for k in [&ed, &rsa, &ecdsa] {
        sb.assert_key_login("exampleuser", k);
    }
    sb.assert_no_key_login("exampleuser", &never);
    assert_ssh_files_owned_by(&sb, "exampleuser", "/home/exampleuser");

    // Binding a key again does not duplicate it.
    let before = sb.read("/home/exampleuser/.ssh/authorized_keys");
    add_keys(&sb, "exampleuser", &[&ed]);
    assert_eq!(sb.read("/home/exampleuser/.ssh/authorized_keys"), before);
}

#[test]
fn replacing_keys_keeps_only_the_new_and_hand_added_keys() {
    let Some(sb) = sandbox_with_exampleuser() else {
        return;
    };
    let old1 = sb.client_key("old-1", KeyKind::Ed25519);
    let old2 = sb.client_key("old-2", KeyKind::Ecdsa256);
    let by_hand = sb.client_key("by-hand", KeyKind::Ed25519);
    let new = sb.client_key("new", KeyKind::Rsa2048);

    add_keys(&sb, "exampleuser", &[&old1, &old2]);
    // The user adds a key of their own, the way people do.
    let out = as_user(
        &sb,
        "exampleuser",
        &format!("echo '{}' >> ~/.ssh/authorized_keys", by_hand.public),
    );
    assert!(out.ok(), "hand-adding a key: {}", out.stderr);
    sb.assert_key_login("exampleuser", &by_hand);

    sb.cmd("replace_keys")
        .user("exampleuser")
        .keys(&[&new])
        .send()
        .assert_ok();

    sb.assert_key_login("exampleuser", &new);
    sb.assert_key_login("exampleuser", &by_hand);
    sb.assert_no_key_login("exampleuser", &old1);
    sb.assert_no_key_login("exampleuser", &old2);
    assert_ssh_files_owned_by(&sb, "exampleuser", "/home/exampleuser");
}

#[test]
fn unbinding_a_key_by_fingerprint_locks_that_key_out() {
    let Some(sb) = sandbox_with_exampleuser() else {
        return;
    };
    let gone = sb.client_key("gone", KeyKind::Ed25519);
    let stays = sb.client_key("stays", KeyKind::Rsa2048);
    add_keys(&sb, "exampleuser", &[&gone, &stays]);
    sb.assert_key_login("exampleuser", &gone);

    sb.cmd("remove_keys")
        .user("exampleuser")
        .args(["--fingerprint", &gone.fingerprint])
        .send()
        .assert_ok();

    sb.assert_no_key_login("exampleuser", &gone);
    sb.assert_key_login("exampleuser", &stays);
    let blob = gone.public.split_whitespace().nth(1).unwrap();
    assert!(!sb
        .read("/home/exampleuser/.ssh/authorized_keys")
        .contains(blob));
    assert_ssh_files_owned_by(&sb, "exampleuser", "/home/exampleuser");
}

#[test]
fn root_logs_in_with_a_bound_key_under_prohibit_password() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    // Debian's default, which `sshd -T` prints under its old name.
    assert_eq!(sb.sshd_option("permitrootlogin"), "without-password");
    let key = sb.client_key("root-admin", KeyKind::Ed25519);
    sb.assert_no_key_login("root", &key);

    add_keys(&sb, "root", &[&key]);

    sb.assert_key_login("root", &key);
    assert_ssh_files_owned_by(&sb, "root", "/root");
    // prohibit-password means what it says, even with the right password.
    sb.chpasswd("root", "R00t-Passw0rd!");
    sb.assert_no_password_login("root", "R00t-Passw0rd!");
}

#[test]
fn keys_for_a_user_whose_ssh_dir_links_to_etc_are_refused() {
    let Some(sb) = sandbox_with_exampleuser() else {
        return;
    };
    let key = sb.client_key("attacker", KeyKind::Ed25519);
    // What the user can do in their own home without any privilege.
    let out = as_user(&sb, "exampleuser", "rm -rf ~/.ssh && ln -s /etc ~/.ssh");
    assert!(out.ok(), "{}", out.stderr);
    let etc_before = etc_tree(&sb);

    for op in ["add_keys", "replace_keys"] {
        let r = sb.cmd(op).user("exampleuser").keys(&[&key]).send();
        assert_eq!(r.code(), "unsafe_path", "{op}: {}", r.payload);
        assert_ne!(r.status(), "ok");
    }
    let r = sb
        .cmd("remove_keys")
        .user("exampleuser")
        .keys(&[&key])
        .send();
    assert_eq!(r.code(), "unsafe_path", "remove_keys: {}", r.payload);

    let diff = etc_before.diff(&etc_tree(&sb));
    assert!(diff.is_empty(), "/etc changed: {diff:?}");
    assert!(sb.lstat("/etc/authorized_keys").is_none());
    sb.assert_no_key_login("exampleuser", &key);
}

#[test]
fn keys_for_a_user_whose_authorized_keys_links_to_shadow_are_refused() {
    let Some(sb) = sandbox_with_exampleuser() else {
        return;
    };
    let key = sb.client_key("attacker", KeyKind::Ed25519);
    let out = as_user(
        &sb,
        "exampleuser",
        "mkdir -p -m 700 ~/.ssh && ln -sf /etc/shadow ~/.ssh/authorized_keys",
    );
    assert!(out.ok(), "{}", out.stderr);
    let etc_before = etc_tree(&sb);

    for op in ["add_keys", "replace_keys", "remove_keys"] {
        let r = sb.cmd(op).user("exampleuser").keys(&[&key]).send();
        assert_eq!(r.code(), "unsafe_path", "{op}: {}", r.payload);
        assert_ne!(r.status(), "ok");
    }

    let diff = etc_before.diff(&etc_tree(&sb));
    assert!(diff.is_empty(), "/etc changed: {diff:?}");
    let link = sb.lstat("/home/exampleuser/.ssh/authorized_keys").unwrap();
    assert!(
        link.file_type().is_symlink(),
        "the user's link was left as it was"
    );
    sb.assert_no_key_login("exampleuser", &key);
}

/// What a row of the options table expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// accessd accepts it and the key logs in from 127.0.0.1.
    Login,
    /// accessd accepts it; its options refuse a plain login from here
    /// (another source address, a CA line), as sshd intends.
    NoPlainLogin,
    /// accessd rejects it (`invalid_command`) and sshd refuses the key.
    Refused,
}

/// Issue 11.5: key options are judged as sshd(8) judges them. Each row goes
/// to accessd in an `add_keys`; a line it accepts is then in the file as
/// accessd wrote it and must let its key log in (where its options allow a
/// plain login), and a line it rejects is written into the file by hand and
/// must be one that the real sshd refuses. The quirks in the table (an empty
/// option, a trailing comma, `tunnel="ANY"`, a service name as a port) are
/// what sshd accepts, read from its `sshauthopt_parse`.
#[test]
fn key_options_are_accepted_exactly_when_the_real_sshd_accepts_them() {
    use Verdict::*;
    let Some(sb) = sandbox_with_exampleuser() else {
        return;
    };
    let key = sb.client_key("options", KeyKind::Ed25519);
    // Makes ~/.ssh, so that refused rows can be written by hand.
    add_keys(&sb, "exampleuser", &[&key]);
    let table: &[(&str, Verdict)] = &[
        ("restrict", Login),
        ("RESTRICT,Pty", Login),
        (
            "no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-user-rc",
            Login,
        ),
        (
            "agent-forwarding,x11-forwarding,port-forwarding,user-rc",
            Login,
        ),
        ("no-touch-required,touch-required,verify-required", Login),
        (",pty", Login),
        ("pty,,user-rc", Login),
        ("pty,", Login),
        (r#"command="id -un""#, Login),
        (r#"restrict,command="id -un""#, Login),
        (r#"from="127.0.0.1""#, Login),
        (r#"from="127.0.0.0/8""#, Login),
        (r#"from="10.0.0.0/8,127.0.0.1""#, Login),
        (r#"from="127.0.0.*""#, Login),
        (r#"from="!10.0.0.1,127.0.0.1""#, Login),
        (r#"from="::1,127.0.0.1,fe80::/10""#, Login),
        (r#"from="not/a-net,127.0.0.1""#, Login),
        (r#"from="10.0.0.0/8""#, NoPlainLogin),
        (r#"from="!127.0.0.1,*""#, NoPlainLogin),
        (r#"expiry-time="20991231""#, Login),
        (r#"expiry-time="209912312359""#, Login),
        (r#"expiry-time="20991231235959""#, Login),
        (r#"expiry-time="20991231Z""#, Login),
        (r#"expiry-time="20991231235959UTC""#, Login),
        (r#"expiry-time="20991231",expiry-time="20981231""#, Login),
        (r#"environment="LC_TEST=1""#, Login),
        (r#"permitopen="127.0.0.1:80",permitopen="[::1]:22""#, Login),
        (
            r#"permitopen="host/22",permitopen="h:ssh",permitopen="h:*""#,
            Login,
        ),
        (
            r#"permitlisten="8080",permitlisten="localhost:8080""#,
            Login,
        ),
        (r#"permitlisten="ssh""#, Login),
        (r#"tunnel="0""#, Login),
        (r#"tunnel="ANY""#, Login),
        ("cert-authority", NoPlainLogin),
        (r#"cert-authority,principals="exampleuser""#, NoPlainLogin),
        // The cases of the issue.
        (r#"command="id -un",command="true""#, Refused),
        (r#"from="127.0.0.1",from="::1""#, Refused),
        (r#"expiry-time="tomorrow""#, Refused),
        (r#"permitlisten="nonsense""#, Refused),
        (r#"principals="exampleuser""#, Refused),
        (r#"from="127.0.0.1/99""#, Refused),
        // More of the same kinds.
        (r#"principals="a",cert-authority,principals="b""#, Refused),
        (r#"expiry-time="20000101""#, Refused),
        (r#"expiry-time="19691231Z""#, Refused),
        (r#"expiry-time="2099123""#, Refused),
        (r#"expiry-time="20991331""#, Refused),
        (r#"permitopen="127.0.0.1""#, Refused),
        (r#"permitopen="127.0.0.1:0""#, Refused),
        (r#"permitopen="127.0.0.1:65536""#, Refused),
        (r#"permitopen="[::1:22""#, Refused),
        (r#"tunnel="-1""#, Refused),
        (r#"tunnel="2147483646""#, Refused),
        (r#"from="127.0.0.1/8""#, Refused),
        (r#"from="127.0.0.1,""#, Refused),
        (r#"from="127.0.0.1,!""#, Refused),
        (r#"from="""#, Refused),
        (r#"environment="=x""#, Refused),
        (r#"environment="A-B=x""#, Refused),
        ("bogus", Refused),
        ("restrictive", Refused),
        ("no-restrict", Refused),
        (r#"pty="yes""#, Refused),
        ("command=unquoted", Refused),
    ];
    let ak = "/home/exampleuser/.ssh/authorized_keys";
    let mut wrong = Vec::new();
    for &(opts, want) in table {
        let line = format!("{opts} {}", key.public);
        let r = sb
            .cmd("add_keys")
            .user("exampleuser")
            .args(["--key-line", &line])
            .send();
        let accepted = r.status() == "ok";
        if !accepted {
            assert_eq!(r.code(), "invalid_command", "{opts}: {}", r.payload);
            // What sshd makes of the line, with accessd out of the way.
            sb.write(ak, &format!("{line}\n"), 0o600);
            sb.run_ok(&["chown", "exampleuser:exampleuser", ak]);
        } else {
            assert!(
                sb.read(ak).lines().any(|l| l.starts_with(opts)),
                "{opts}: accessd did not write the options: {}",
                sb.read(ak)
            );
        }
        let login = sb.try_key_login("exampleuser", &key).ok;
        let got = match (accepted, login) {
            (true, true) => Login,
            (true, false) => NoPlainLogin,
            (false, false) => Refused,
            (false, true) => {
                wrong.push(format!(
                    "{opts}: rejected by accessd, yet sshd logs the key in"
                ));
                continue;
            }
        };
        if got != want {
            wrong.push(format!(
                "{opts}: expected {want:?}, got {got:?} ({})",
                r.message()
            ));
        }
    }
    sb.assert_sshd_serving();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Ends a FUSE mount made inside the sandbox, even when the test fails:
/// the daemon is continued, the mount detached and the daemon killed (by
/// its pid, which the test started).
struct FuseMount<'a> {
    sb: &'a Sandbox,
    pid: String,
    at: &'static str,
}

impl Drop for FuseMount<'_> {
    fn drop(&mut self) {
        let _ = self.sb.run(&["kill", "-CONT", &self.pid]);
        let _ = self.sb.run(&["umount", "-l", self.at]);
        let _ = self.sb.run(&["kill", "-KILL", &self.pid]);
    }
}

/// Issue 12.11: a home on FUSE (here bindfs, whose daemon is then stopped,
/// as a user's hung or hostile FUSE server would be) made the serial loop
/// hang in open(2) of the home for ever, and with it every later command.
/// accessd decides from the kernel's mount table, before anything reaches
/// the file system, that the home is not on a local disk file system: the
/// command is answered `unsafe_path` at once and the agent keeps serving.
#[test]
fn a_home_on_a_stopped_fuse_file_system_is_refused_without_hanging() {
    let Some(sb) = sandbox_with_exampleuser() else {
        return;
    };
    let have_bindfs = sb.run(&["sh", "-c", "command -v bindfs"]).code() == Some(0);
    if !accessd_e2e::gate::require(have_bindfs, "bindfs is not installed") {
        return;
    }
    let key = sb.client_key("fuse", KeyKind::Ed25519);
    let home = "/home/exampleuser";
    sb.run_ok(&["cp", "-a", home, "/home/.backing"]);
    let pid = sb.run_ok(&[
        "sh",
        "-c",
        &format!(
            "bindfs -f -o nonempty /home/.backing {home} </dev/null >/dev/null 2>&1 & echo $!"
        ),
    ]);
    let mount = FuseMount {
        sb: &sb,
        pid: pid.trim().to_string(),
        at: home,
    };
    sb.wait_for("the bindfs mount", || {
        sb.run_ok(&["cat", "/proc/self/mountinfo"])
            .lines()
            .any(|l| l.contains(&format!(" {home} ")) && l.contains("fuse"))
    });
    sb.run_ok(&["kill", "-STOP", &mount.pid]);

    for op in ["add_keys", "replace_keys", "remove_keys"] {
        let r = sb.cmd(op).user("exampleuser").keys(&[&key]).send();
        assert_eq!(r.code(), "unsafe_path", "{op}: {}", r.payload);
        assert!(r.message().contains("fuse"), "{op}: {}", r.message());
    }
    // The loop is free: a command about another user is applied.
    sb.cmd("add_keys")
        .user("root")
        .keys(&[&key])
        .send()
        .assert_ok();
    drop(mount);
    assert!(sb.lstat("/home/.backing/.ssh/authorized_keys").is_none());
}
