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

/// Inventory's `sudo` for each user it lists.
fn inventory_sudo(sb: &Sandbox) -> std::collections::BTreeMap<String, bool> {
    let r = sb.cmd("inventory").send();
    r.assert_ok();
    r.payload["data"]["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| {
            (
                u["name"].as_str().unwrap().to_owned(),
                u["sudo"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_user_created_without_sudo_never_inherits_sudo() {
    let Some(mut sb) = sandbox() else { return };
    // The real userdel below refuses a uid that any process on the machine
    // runs as: another sandbox's user 1001 made this test flaky.
    sb.private_uid_range();
    sb.start_agent();

    // carol had sudo (a key-only admin: accessd's NOPASSWD drop-in), and was
    // removed with plain userdel, which leaves the drop-in.
    sb.cmd("create_user")
        .user("carol")
        .args(["--sudo"])
        .send()
        .assert_ok();
    assert!(sb.sudo_grants("carol"));
    sb.run_ok(&["userdel", "-r", "carol"]);
    assert!(
        sb.lstat("/etc/sudoers.d/carol").is_some(),
        "userdel left it"
    );

    let r = sb.cmd("create_user").user("carol").send();
    r.assert_ok();
    assert!(r.payload["data"]["sudo"].is_null(), "{}", r.payload);
    assert!(
        !sb.sudo_grants("carol"),
        "the new carol inherited the old carol's sudo"
    );

    // A stale sudo group membership (a hand edit, another tool) for a name
    // that does not exist yet is not inherited either.
    sb.sh("sed -i 's/^\\(sudo:[^:]*:[^:]*:\\)\\(.*\\)$/\\1\\2,dave/; s/^\\(sudo:[^:]*:[^:]*:\\),dave$/\\1dave/' /etc/group");
    assert!(sb.group_entry("sudo").unwrap()[3]
        .split(',')
        .any(|m| m == "dave"));
    sb.cmd("create_user").user("dave").send().assert_ok();
    assert!(
        !sb.sudo_grants("dave"),
        "dave got sudo from a stale membership"
    );

    // A rule accessd did not write: no user is created whose result would
    // say "no sudo" while sudo says otherwise.
    sb.write(
        "/etc/sudoers.d/90-cloud-init-users",
        "# Created by cloud-init\nerin ALL=(ALL) NOPASSWD:ALL\n",
        0o440,
    );
    let passwd = sb.read("/etc/passwd");
    let r = sb.cmd("create_user").user("erin").send();
    r.assert_failed("foreign_grant");
    assert!(r.message().contains("90-cloud-init-users"), "{}", r.payload);
    assert_eq!(sb.read("/etc/passwd"), passwd, "failed, yet passwd changed");

    // And the inventory's sudo is what sudo itself says, for every user,
    // a grant through a foreign rule included.
    sb.useradd("frank");
    sb.write(
        "/etc/sudoers.d/ops",
        "User_Alias OPS = frank\nOPS ALL=(ALL) ALL\n",
        0o440,
    );
    sb.cmd("create_user")
        .user("gina")
        .args(["--sudo"])
        .password("Ex4mple-Passw0rd!")
        .send()
        .assert_ok();
    let inv = inventory_sudo(&sb);
    for user in ["root", "carol", "dave", "frank", "gina"] {
        assert_eq!(
            inv.get(user).copied(),
            Some(sb.sudo_grants(user)),
            "inventory and sudo -l -U disagree about {user}: {inv:?}"
        );
    }
    assert_eq!(inv.get("frank"), Some(&true));
}

#[test]
fn deleting_a_user_with_a_live_ssh_session() {
    let Some(mut sb) = sandbox() else { return };
    let uid_min = sb.private_uid_range();
    sb.start_agent();
    let key = sb.client_key("busyuser", KeyKind::Ed25519);
    sb.cmd("create_user")
        .user("busyuser")
        .keys(&[&key])
        .send()
        .assert_ok();
    sb.assert_key_login("busyuser", &key);
    let uid = sb.passwd_entry("busyuser").unwrap()[2].clone();
    assert_eq!(uid, uid_min.to_string(), "login.defs' UID_MIN was not used");

    sb.start_live_session("busyuser", &key);

    let passwd = sb.read("/etc/passwd");
    let shadow = sb.read("/etc/shadow");
    let r = sb.cmd("delete_user").user("busyuser").send();
    r.assert_failed("user_busy");
    assert_eq!(
        sb.read("/etc/passwd"),
        passwd,
        "user_busy, yet passwd changed"
    );
    assert_eq!(sb.read("/etc/shadow"), shadow);
    assert!(
        sb.run(&["pgrep", "-u", "busyuser", "-x", "sleep"]).ok(),
        "the session was ended without terminate_sessions"
    );

    let r = sb
        .cmd("delete_user")
        .user("busyuser")
        .args(["--remove-home", "--terminate-sessions"])
        .send();
    r.assert_ok();
    let ended = r.payload["data"]["sessions_ended"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!ended.is_empty(), "{}", r.payload);
    assert!(
        ended.iter().all(|s| s["user"] == "busyuser"),
        "{}",
        r.payload
    );
    assert!(
        ended.iter().any(|s| s["from"] == "127.0.0.1"),
        "the sshd session and where it came from: {}",
        r.payload
    );
    assert_eq!(r.payload["data"]["sessions_open"], 0);
    assert!(sb.passwd_entry("busyuser").is_none());
    assert!(sb.lstat("/home/busyuser").is_none());
    // Nothing runs under the deleted uid, and the client saw its session end.
    // (an ended process may be a zombie for a moment, until its root-owned
    // sshd parent reaps it)
    let left = sb.run(&["ps", "-o", "pid,stat,comm", "-U", &uid]);
    eprintln!(
        "processes of uid {uid} right after the delete:\n{}",
        left.stdout
    );
    sb.wait_for("no process of the deleted uid", || {
        !sb.run(&["pgrep", "-U", &uid]).ok()
    });
    sb.wait_for("the ssh client to see its session end", || {
        !sb.run(&["pgrep", "-f", "busyuser@127.0.0.1"]).ok()
    });
    sb.assert_no_key_login("busyuser", &key);
}

#[test]
fn inventory_sudo_agrees_with_sudo_on_every_kind_of_rule() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    for u in ["u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"] {
        sb.useradd(u);
    }
    sb.run_ok(&["groupadd", "-g", "4242", "ops"]);
    sb.run_ok(&["usermod", "-aG", "ops", "u3"]);
    let uid4 = sb.passwd_entry("u4").unwrap()[2].clone();
    // Each line grants (or, negated, withholds) through another part of the
    // grammar; sudo -l -U is the judge for every user.
    let rules = format!(
        "Defaults:u8 !requiretty\n\
         User_Alias TEAM = u1, u2, !u2\n\
         TEAM ALL=(ALL) ALL\n\
         %ops ALL = (root) /usr/bin/true\n\
         #{uid4} ALL=(ALL) NOPASSWD: ALL\n\
         %#4242 ALL=(ALL) ALL\n\
         u5, \\\n  u6 ALL=(ALL) ALL\n\
         # u7 ALL=(ALL) ALL\n\
         !u8, u7 ALL=(ALL) ALL\n"
    );
    sb.write("/etc/sudoers.d/mix", &rules, 0o440);
    assert_eq!(
        sb.run(&["visudo", "-c"]).status.code(),
        Some(0),
        "rules are valid"
    );
    let inv = inventory_sudo(&sb);
    for u in ["root", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"] {
        assert_eq!(
            inv.get(u).copied(),
            Some(sb.sudo_grants(u)),
            "inventory and sudo -l -U disagree about {u}: {inv:?}"
        );
    }
    // Both answers occur, so the comparison above can fail either way.
    for (u, want) in [
        ("u1", true),
        ("u2", false),
        ("u4", true),
        ("u7", true),
        ("u8", false),
    ] {
        assert_eq!(inv.get(u), Some(&want), "{u}: {inv:?}");
    }
}
