//! Scenarios 1 and 12: creating and deleting users through accessd, checked
//! with the distribution's own tools (sudo, id, pwck) and real logins.

use std::fs;
use std::os::unix::fs::MetadataExt;

use accessd_e2e::{sandbox, KeyKind, Sandbox};

/// `pwck -r` / `grpck -r` complaints that mention `user` (the copied /etc
/// may have unrelated complaints of its own, e.g. missing system homes).
fn shadow_tool_complaints(sb: &Sandbox, user: &str) -> Vec<String> {
    let mut out = Vec::new();
    for tool in ["pwck", "grpck"] {
        let o = sb.run(&[tool, "-r"]);
        out.extend(
            o.stdout
                .lines()
                .chain(o.stderr.lines())
                .filter(|l| l.contains(user))
                .map(|l| format!("{tool}: {l}")),
        );
    }
    out
}

/// Files under `dir` (relative names), recursively.
fn files_under(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

#[test]
fn admin_creates_a_sudo_user_with_a_home_from_skel() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();

    let password = "Ex4mple-Passw0rd!";
    sb.cmd("create_user")
        .user("exampleuser")
        .args(["--sudo"])
        .password(password)
        .send()
        .assert_ok();
    // Key-only admins (no password to answer sudo's prompt) and plain users.
    sb.cmd("create_user")
        .user("keyadmin")
        .args(["--sudo"])
        .send()
        .assert_ok();
    sb.cmd("create_user").user("plainuser").send().assert_ok();

    let pw = sb
        .passwd_entry("exampleuser")
        .expect("exampleuser in /etc/passwd");
    let (uid, gid): (u32, u32) = (pw[2].parse().unwrap(), pw[3].parse().unwrap());
    assert_eq!(pw[5], "/home/exampleuser");
    assert!(uid >= 1000, "a regular uid from login.defs, got {uid}");
    let group = sb.group_entry("exampleuser").expect("a user private group");
    assert_eq!(group[2], pw[3], "the private group is the primary group");
    let shadow = sb.shadow_entry("exampleuser").expect("in /etc/shadow");
    assert!(shadow[1].starts_with("$6$"), "the password is set");
    let locked = sb.shadow_entry("plainuser").expect("in /etc/shadow");
    assert!(
        locked[1].starts_with('!'),
        "no password: locked as by useradd: {locked:?}"
    );

    // The home is what useradd -m makes: compare with useradd itself.
    sb.useradd("oracleuser");
    let home = sb.lstat("/home/exampleuser").expect("the home exists");
    let oracle = sb.lstat("/home/oracleuser").unwrap();
    assert!(home.is_dir());
    assert_eq!((home.uid(), home.gid()), (uid, gid));
    assert_eq!(
        home.mode() & 0o7777,
        oracle.mode() & 0o7777,
        "home mode as useradd -m"
    );
    let skel = files_under(&sb.path("/etc/skel"));
    assert!(!skel.is_empty(), "the copied /etc/skel is empty");
    assert_eq!(
        files_under(&sb.path("/home/exampleuser")),
        skel,
        "home populated from /etc/skel"
    );
    for f in &skel {
        let copied = sb.lstat(format!("/home/exampleuser/{f}")).unwrap();
        assert_eq!(
            (copied.uid(), copied.gid()),
            (uid, gid),
            "{f} owned by the user"
        );
        if copied.is_file() {
            assert_eq!(
                fs::read(sb.path(format!("/home/exampleuser/{f}"))).unwrap(),
                fs::read(sb.path(format!("/etc/skel/{f}"))).unwrap(),
                "{f} copied from skel"
            );
        }
    }

    // Sudo, as the distribution grants it, and as sudo itself sees it.
    let groups = sb.run_ok(&["id", "-nG", "exampleuser"]);
    assert!(
        groups.split_whitespace().any(|g| g == "sudo"),
        "exampleuser in the sudo group: {groups}"
    );
    let sudo = sb.run(&["sudo", "-l", "-U", "exampleuser"]);
    assert!(
        sudo.stdout
            .contains("User exampleuser may run the following commands")
            && sudo.stdout.contains("(ALL"),
        "sudo -l -U exampleuser: {}{}",
        sudo.stdout,
        sudo.stderr
    );
    // Without a password, sudo is granted by a drop-in that needs none.
    let key_admin = sb.run(&["sudo", "-l", "-U", "keyadmin"]);
    assert!(
        key_admin
            .stdout
            .contains("User keyadmin may run the following commands")
            && key_admin.stdout.contains("NOPASSWD"),
        "sudo -l -U keyadmin: {}{}",
        key_admin.stdout,
        key_admin.stderr
    );
    let plain = sb.run(&["sudo", "-l", "-U", "plainuser"]);
    assert!(
        plain.stdout.contains("is not allowed to run sudo"),
        "plainuser got sudo: {}",
        plain.stdout
    );

    for user in ["exampleuser", "keyadmin", "plainuser"] {
        assert_eq!(shadow_tool_complaints(&sb, user), Vec::<String>::new());
    }
    sb.assert_password_login("exampleuser", password);
    assert_eq!(
        sb.run(&["visudo", "-c"]).status.code(),
        Some(0),
        "sudoers still valid"
    );

    // Creating it again is refused and changes nothing.
    let passwd_before = sb.read("/etc/passwd");
    let r = sb.cmd("create_user").user("exampleuser").send();
    assert_eq!(r.code(), "user_exists", "{}", r.payload);
    assert_eq!(sb.read("/etc/passwd"), passwd_before);
}

#[test]
fn deleting_a_user_with_its_home_locks_it_out_and_leaves_root_alone() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    let user_key = sb.client_key("exampleuser", KeyKind::Ed25519);
    let root_key = sb.client_key("root", KeyKind::Ed25519);
    let password = "Ex4mple-Passw0rd!";

    sb.cmd("add_keys")
        .user("root")
        .keys(&[&root_key])
        .send()
        .assert_ok();
    sb.cmd("create_user")
        .user("exampleuser")
        .args(["--sudo"])
        .password(password)
        .keys(&[&user_key])
        .send()
        .assert_ok();
    sb.assert_key_login("exampleuser", &user_key);
    sb.assert_password_login("exampleuser", password);
    sb.assert_key_login("root", &root_key);
    let root_keys_before = sb.read("/root/.ssh/authorized_keys");
    let root_ssh_before = sb.lstat("/root/.ssh").unwrap();

    sb.cmd("delete_user")
        .user("exampleuser")
        .args(["--remove-home"])
        .send()
        .assert_ok();

    sb.assert_no_key_login("exampleuser", &user_key);
    sb.assert_no_password_login("exampleuser", password);
    assert!(sb.lstat("/home/exampleuser").is_none(), "the home is gone");
    assert!(sb.passwd_entry("exampleuser").is_none());
    assert!(sb.shadow_entry("exampleuser").is_none());
    assert!(
        sb.group_entry("exampleuser").is_none(),
        "the private group is gone"
    );
    let sudo = sb.group_entry("sudo").unwrap();
    assert!(
        !sudo[3].split(',').any(|m| m == "exampleuser"),
        "still in sudo: {sudo:?}"
    );
    assert_eq!(
        shadow_tool_complaints(&sb, "exampleuser"),
        Vec::<String>::new()
    );

    // Root's keys are untouched, byte for byte, and still work.
    assert_eq!(sb.read("/root/.ssh/authorized_keys"), root_keys_before);
    let root_ssh = sb.lstat("/root/.ssh").unwrap();
    assert_eq!(
        (root_ssh.mode(), root_ssh.uid()),
        (root_ssh_before.mode(), root_ssh_before.uid())
    );
    sb.assert_key_login("root", &root_key);

    // And root itself cannot be deleted.
    let r = sb
        .cmd("delete_user")
        .user("root")
        .args(["--remove-home"])
        .send();
    assert_ne!(r.status(), "ok", "deleting root: {}", r.payload);
    assert!(sb.passwd_entry("root").is_some());
    assert_eq!(sb.read("/root/.ssh/authorized_keys"), root_keys_before);
    sb.assert_key_login("root", &root_key);
}
