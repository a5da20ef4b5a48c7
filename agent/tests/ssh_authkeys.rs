//! authorized_keys end to end, in temporary roots, with `ssh-keygen` as the
//! oracle for fingerprints and parsing. Needs root (chown to test uids) and
//! ssh-keygen; under CI=true their absence fails the test.

#[path = "gate/mod.rs"]
mod gate;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use accessd::error::Code;
use accessd::names::UserName;
use accessd::ssh::authkeys::expiry::ExpiryForm;
use accessd::ssh::authkeys::{
    add_keys, add_keys_until, check_unexpired, expire_due, list_keys, managed_expiry, remove_keys,
    replace_keys, replace_keys_until, Expiry, KeyLine, KeySelector,
};
use accessd::sys::System;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};

const ALICE_UID: u32 = 1000;
const ALICE_GID: u32 = 1000;

/// Root and ssh-keygen are needed; outside CI a missing one skips with a reason.
fn ready() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let keygen = accessd::sys::find_program("ssh-keygen").is_some();
    if root && keygen {
        return true;
    }
    let why = format!("needs root ({root}) and ssh-keygen ({keygen})");
    gate::require(false, &why)
}

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    sys: System,
    keys: PathBuf,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let state = tmp.path().join("state");
        let keys = tmp.path().join("keys");
        for d in [&root, &state, &keys] {
            fs::create_dir_all(d).unwrap();
        }
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\n\
             alice:x:1000:1000::/home/alice:/bin/bash\n\
             bob:x:1001:1001::/home/bob:/bin/bash\n",
        )
        .unwrap();
        for (home, uid) in [("root", 0), ("home/alice", ALICE_UID), ("home/bob", 1001)] {
            let h = root.join(home);
            fs::create_dir_all(&h).unwrap();
            std::os::unix::fs::chown(&h, Some(uid), Some(uid)).unwrap();
            fs::set_permissions(&h, fs::Permissions::from_mode(0o750)).unwrap();
        }
        let sys = System::new(&root, &state);
        Env {
            _tmp: tmp,
            root,
            sys,
            keys,
        }
    }

    fn ak(&self, user: &str) -> PathBuf {
        let home = if user == "root" {
            "root".to_owned()
        } else {
            format!("home/{user}")
        };
        self.root.join(home).join(".ssh/authorized_keys")
    }

    /// A fresh key from ssh-keygen: (public line, fingerprint per ssh-keygen, bits).
    fn keygen(&self, name: &str, args: &[&str]) -> (String, String, u32) {
        let path = self.keys.join(name);
        let st = Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-C", &format!("{name}@test"), "-f"])
            .arg(&path)
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "ssh-keygen {args:?}");
        let public = PathBuf::from(format!("{}.pub", path.display()));
        let line = fs::read_to_string(&public).unwrap();
        let (bits, fp) = keygen_l(&public)[0].clone();
        (line.trim_end().to_owned(), fp, bits)
    }
}

impl Env {
    /// One of four fixed Ed25519 key lines (made once by ssh-keygen).
    fn keygen_cached(&self, i: usize) -> String {
        let name = format!("cached{i}");
        let public = self.keys.join(format!("{name}.pub"));
        if !public.exists() {
            return self.keygen(&name, &["-t", "ed25519"]).0;
        }
        fs::read_to_string(public).unwrap().trim_end().to_owned()
    }
}

/// `ssh-keygen -lf FILE`: (bits, fingerprint) per key line it accepts.
fn keygen_l(file: &Path) -> Vec<(u32, String)> {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut w = l.split(' ');
            let bits = w.next().unwrap().parse().unwrap();
            (bits, w.next().unwrap().to_owned())
        })
        .collect()
}

fn user(s: &str) -> UserName {
    UserName::parse(s).unwrap()
}

fn key(line: &str) -> KeyLine {
    KeyLine::parse(line).unwrap()
}

fn hash(p: &Path) -> Option<Vec<u8>> {
    fs::read(p).ok().map(|b| Sha256::digest(b).to_vec())
}

fn wire(parts: &[&[u8]]) -> String {
    let mut v = Vec::new();
    for p in parts {
        v.extend_from_slice(&(p.len() as u32).to_be_bytes());
        v.extend_from_slice(p);
    }
    STANDARD.encode(v)
}

/// Fields of a key blob (SSH wire strings).
fn fields(line: &str) -> Vec<Vec<u8>> {
    let blob = STANDARD.decode(line.split(' ').nth(1).unwrap()).unwrap();
    let mut out = Vec::new();
    let mut r = &blob[..];
    while !r.is_empty() {
        let n = u32::from_be_bytes(r[..4].try_into().unwrap()) as usize;
        out.push(r[4..4 + n].to_vec());
        r = &r[4 + n..];
    }
    out
}

#[test]
fn fingerprints_and_bits_equal_ssh_keygen_for_every_accepted_type() {
    if !ready() {
        return;
    }
    let env = Env::new();
    let mut lines = Vec::new();
    for (name, args) in [
        ("ed25519", &["-t", "ed25519"][..]),
        ("ecdsa256", &["-t", "ecdsa", "-b", "256"]),
        ("ecdsa384", &["-t", "ecdsa", "-b", "384"]),
        ("ecdsa521", &["-t", "ecdsa", "-b", "521"]),
        ("rsa2048", &["-t", "rsa", "-b", "2048"]),
        ("rsa3072", &["-t", "rsa", "-b", "3072"]),
        ("dsa", &["-t", "dsa"]),
    ] {
        let (line, fp, bits) = env.keygen(name, args);
        let k = key(&line);
        assert_eq!(k.fingerprint(), fp, "{name}");
        assert_eq!(k.bits(), bits, "{name}");
        lines.push(line);
    }
    // sk-* keys need a hardware token to generate; build them from real
    // Ed25519 / P-256 public keys and let ssh-keygen check them.
    let ed = fields(&lines[0]);
    let ec = fields(&lines[1]);
    let sk_ed = format!(
        "sk-ssh-ed25519@openssh.com {} sk-ed@test",
        wire(&[b"sk-ssh-ed25519@openssh.com", &ed[1], b"ssh:"])
    );
    let sk_ec = format!(
        "sk-ecdsa-sha2-nistp256@openssh.com {} sk-ec@test",
        wire(&[
            b"sk-ecdsa-sha2-nistp256@openssh.com",
            b"nistp256",
            &ec[2],
            b"ssh:"
        ])
    );
    for line in [&sk_ed, &sk_ec] {
        let f = env.keys.join("sk.pub");
        fs::write(&f, format!("{line}\n")).unwrap();
        let (bits, fp) = keygen_l(&f)[0].clone();
        let k = key(line);
        assert_eq!((k.bits(), k.fingerprint()), (bits, fp), "{line}");
    }
    let dsa = key(&lines[6]);
    assert_eq!(dsa.warnings().len(), 1);
    assert!(key(&lines[0]).warnings().is_empty());

    // Every accepted type is written, listed and found by ssh-keygen.
    let mut all: Vec<KeyLine> = lines.iter().map(|l| key(l)).collect();
    all.push(key(&sk_ed));
    all.push(key(&sk_ec));
    let out = add_keys(&env.sys, &user("alice"), &all).unwrap();
    assert_eq!(out.added, all.len());
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    let listed: Vec<(u32, String)> = list_keys(&env.sys, &user("alice"))
        .unwrap()
        .into_iter()
        .map(|k| (k.bits, k.fingerprint))
        .collect();
    assert_eq!(listed, keygen_l(&env.ak("alice")));
}

#[test]
fn invalid_key_lines_are_refused_and_nothing_is_written() {
    if !ready() {
        return;
    }
    let env = Env::new();
    let (ed, ..) = env.keygen("ed", &["-t", "ed25519"]);
    let (rsa1024, ..) = env.keygen("rsa1024", &["-t", "rsa", "-b", "1024"]);
    let blob = ed.split(' ').nth(1).unwrap();
    let bad = [
        format!("ssh-rsa {blob} inner type is ed25519"),
        format!("ecdsa-sha2-nistp256 {blob}"),
        format!("ssh-ed25519 {blob} two\nlines"),
        format!("bogus-option ssh-ed25519 {blob}"),
        format!("command=\"unterminated ssh-ed25519 {blob}"),
        format!("command=unquoted ssh-ed25519 {blob}"),
        format!("ssh-ed25519 {}", &blob[..blob.len() - 8]),
        format!("ssh-ed25519 !!{blob}"),
        format!("ssh-foo {blob}"),
        format!("ssh-ed25519-cert-v01@openssh.com {blob}"),
        rsa1024,
        String::new(),
        "# just a comment".into(),
    ];
    for line in &bad {
        let e = KeyLine::parse(line).unwrap_err();
        assert_eq!(e.code(), Code::InvalidCommand, "{line:?}");
        let e = KeySelector::parse(line).unwrap_err();
        assert_eq!(e.code(), Code::InvalidCommand, "{line:?}");
    }
    for fp in ["SHA256:short", "SHA256:", "SHA256:!!!!"] {
        assert_eq!(
            KeySelector::parse(fp).unwrap_err().code(),
            Code::InvalidCommand
        );
    }
    // Parsing happens before anything is touched: no ~/.ssh appeared.
    assert!(!env.root.join("home/alice/.ssh").exists());
}

#[test]
fn add_creates_dir_and_file_with_owner_and_modes_and_is_idempotent() {
    if !ready() {
        return;
    }
    let env = Env::new();
    let (ed, fp, _) = env.keygen("ed", &["-t", "ed25519"]);
    let out = add_keys(&env.sys, &user("alice"), &[key(&ed)]).unwrap();
    assert_eq!((out.added, out.updated, out.removed), (1, 0, 0));
    let ssh = env.root.join("home/alice/.ssh");
    let md = fs::metadata(&ssh).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (ALICE_UID, ALICE_GID, 0o700)
    );
    let md = fs::metadata(env.ak("alice")).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (ALICE_UID, ALICE_GID, 0o600)
    );
    let first = fs::read(env.ak("alice")).unwrap();
    assert_eq!(first, format!("{ed}\n").into_bytes());
    assert_eq!(keygen_l(&env.ak("alice")), vec![(256, fp)]);

    let again = add_keys(&env.sys, &user("alice"), &[key(&ed), key(&ed)]).unwrap();
    assert_eq!((again.added, again.updated, again.removed), (0, 0, 0));
    assert_eq!(fs::read(env.ak("alice")).unwrap(), first);
    // No temp files left next to it.
    assert_eq!(fs::read_dir(&ssh).unwrap().count(), 1);
}

#[test]
fn add_updates_options_and_comment_of_a_present_key_and_keeps_other_lines() {
    if !ready() {
        return;
    }
    let env = Env::new();
    let (ed, ..) = env.keygen("ed", &["-t", "ed25519"]);
    let (ec, ..) = env.keygen("ec", &["-t", "ecdsa"]);
    let blob = ed.split(' ').nth(1).unwrap();
    let ssh = env.root.join("home/alice/.ssh");
    fs::create_dir(&ssh).unwrap();
    std::os::unix::fs::chown(&ssh, Some(ALICE_UID), Some(ALICE_GID)).unwrap();
    fs::set_permissions(&ssh, fs::Permissions::from_mode(0o755)).unwrap();
    // Every kind of line a user may have, none of which accessd may touch;
    // the file does not end in a newline.
    let kept = format!(
        "# my keys\r\n\n   \t\n  {ec}\nfrom=\"10.0.0.1\",command=\"echo \\\"x y\\\"\" ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ== broken rsa\nssh-unknown AAAA x\n"
    );
    let mut before = kept.clone().into_bytes();
    before.extend_from_slice(b"\xff\xfe binary comment line\n");
    before.extend_from_slice(format!("no-pty ssh-ed25519 {blob} old comment").as_bytes());
    fs::write(env.ak("alice"), &before).unwrap();
    std::os::unix::fs::chown(env.ak("alice"), Some(0), Some(0)).unwrap();
    fs::set_permissions(env.ak("alice"), fs::Permissions::from_mode(0o644)).unwrap();

    let new_line = format!("restrict,command=\"echo \\\"hi\\\"\" ssh-ed25519 {blob} new comment");
    let out = add_keys(&env.sys, &user("alice"), &[key(&new_line)]).unwrap();
    assert_eq!((out.added, out.updated), (0, 1));
    let after = fs::read(env.ak("alice")).unwrap();
    let mut expected = kept.into_bytes();
    expected.extend_from_slice(b"\xff\xfe binary comment line\n");
    expected.extend_from_slice(format!("{new_line}\n").as_bytes());
    assert_eq!(after, expected);
    // Wrong owner and modes were corrected.
    let md = fs::metadata(env.ak("alice")).unwrap();
    assert_eq!((md.uid(), md.mode() & 0o7777), (ALICE_UID, 0o600));
    assert_eq!(fs::metadata(&ssh).unwrap().mode() & 0o7777, 0o700);

    // list agrees with ssh-keygen on which lines are keys.
    let listed = list_keys(&env.sys, &user("alice")).unwrap();
    let oracle: Vec<String> = keygen_l(&env.ak("alice"))
        .into_iter()
        .map(|(_, f)| f)
        .collect();
    let ours: Vec<String> = listed.iter().map(|k| k.fingerprint.clone()).collect();
    assert_eq!(ours, oracle);
    let last = listed.last().unwrap();
    assert_eq!(last.comment.as_deref(), Some("new comment"));
    assert_eq!(
        last.options.as_deref(),
        Some("restrict,command=\"echo \\\"hi\\\"\"")
    );
}

#[test]
fn remove_by_fingerprint_and_by_line_and_replace_keeps_hand_added_keys() {
    if !ready() {
        return;
    }
    let env = Env::new();
    let (a, fp_a, _) = env.keygen("a", &["-t", "ed25519"]);
    let (b, _, _) = env.keygen("b", &["-t", "ed25519"]);
    let (c, fp_c, _) = env.keygen("c", &["-t", "ecdsa"]);
    let (hand, fp_hand, _) = env.keygen("hand", &["-t", "ed25519"]);
    let bob = user("bob");
    add_keys(&env.sys, &bob, &[key(&a), key(&b)]).unwrap();
    // A key the user adds by hand, between accessd's lines.
    let text = fs::read_to_string(env.ak("bob")).unwrap();
    let (first, rest) = text.split_once('\n').unwrap();
    fs::write(env.ak("bob"), format!("{first}\n# mine\n{hand}\n{rest}")).unwrap();

    let out = replace_keys(&env.sys, &bob, &[key(&c)]).unwrap();
    assert_eq!((out.added, out.removed), (1, 2));
    assert_eq!(
        fs::read_to_string(env.ak("bob")).unwrap(),
        format!("# mine\n{hand}\n{c}\n")
    );
    let fps: Vec<String> = keygen_l(&env.ak("bob")).into_iter().map(|k| k.1).collect();
    assert_eq!(fps, vec![fp_hand.clone(), fp_c.clone()]);

    // Replace with nothing removes only accessd's key.
    replace_keys(&env.sys, &bob, &[]).unwrap();
    assert_eq!(
        fs::read_to_string(env.ak("bob")).unwrap(),
        format!("# mine\n{hand}\n")
    );

    // remove_keys works on any key, by fingerprint or line.
    add_keys(&env.sys, &bob, &[key(&a)]).unwrap();
    let out = remove_keys(
        &env.sys,
        &bob,
        &[
            KeySelector::parse(&fp_hand).unwrap(),
            KeySelector::parse(&a).unwrap(),
            KeySelector::parse(&fp_c).unwrap(), // absent: fine
        ],
    )
    .unwrap();
    assert_eq!(out.removed, 2);
    assert_eq!(fs::read_to_string(env.ak("bob")).unwrap(), "# mine\n");
    let _ = fp_a;
    // A hand-added key that accessd later "adds" is not accessd's to take back.
    fs::write(env.ak("bob"), format!("{hand}\n")).unwrap();
    add_keys(&env.sys, &bob, &[key(&hand)]).unwrap();
    replace_keys(&env.sys, &bob, &[]).unwrap();
    assert_eq!(
        fs::read_to_string(env.ak("bob")).unwrap(),
        format!("{hand}\n")
    );
    // The record is in the state dir, 0600.
    let state = env.sys.state_dir.join("keys/bob.json");
    assert_eq!(fs::metadata(state).unwrap().mode() & 0o777, 0o600);
}

#[test]
fn root_user_keys_go_to_root_home() {
    if !ready() {
        return;
    }
    let env = Env::new();
    let (a, ..) = env.keygen("a", &["-t", "ed25519"]);
    add_keys(&env.sys, &user("root"), &[key(&a)]).unwrap();
    let md = fs::metadata(env.ak("root")).unwrap();
    assert_eq!((md.uid(), md.mode() & 0o777), (0, 0o600));
    assert_eq!(
        add_keys(&env.sys, &user("nobody"), &[key(&a)])
            .unwrap_err()
            .code(),
        Code::UserNotFound
    );
}

/// Each hostile layout: every operation is `unsafe_path` and the file an
/// attacker points at is unchanged.
#[test]
fn hostile_homes_are_refused_and_targets_unchanged() {
    if !ready() {
        return;
    }
    type Setup = fn(&Path, &Path) -> PathBuf;
    let cases: &[(&str, Setup)] = &[
        ("~/.ssh is a symlink to another dir", |root, home| {
            let other = root.join("etc/otherdir");
            fs::create_dir_all(&other).unwrap();
            fs::write(other.join("authorized_keys"), "precious\n").unwrap();
            symlink(&other, home.join(".ssh")).unwrap();
            other.join("authorized_keys")
        }),
        (
            "authorized_keys is a symlink to a root-owned file",
            |root, home| {
                let target = root.join("etc/shadow");
                fs::write(&target, "root:!:1::::::\n").unwrap();
                fs::create_dir(home.join(".ssh")).unwrap();
                chown_alice(&home.join(".ssh"));
                symlink(&target, home.join(".ssh/authorized_keys")).unwrap();
                target
            },
        ),
        ("authorized_keys is a hard link", |root, home| {
            let target = root.join("etc/hardlinked");
            fs::write(&target, "root data\n").unwrap();
            chown_alice(&target);
            fs::create_dir(home.join(".ssh")).unwrap();
            chown_alice(&home.join(".ssh"));
            fs::hard_link(&target, home.join(".ssh/authorized_keys")).unwrap();
            target
        }),
        ("authorized_keys is a FIFO", |_root, home| {
            fs::create_dir(home.join(".ssh")).unwrap();
            chown_alice(&home.join(".ssh"));
            let p = home.join(".ssh/authorized_keys");
            nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
            home.join(".ssh")
        }),
        ("~/.ssh is owned by another uid", |_root, home| {
            fs::create_dir(home.join(".ssh")).unwrap();
            std::os::unix::fs::chown(home.join(".ssh"), Some(1001), Some(1001)).unwrap();
            fs::write(home.join(".ssh/authorized_keys"), "bob's\n").unwrap();
            home.join(".ssh/authorized_keys")
        }),
        ("authorized_keys is a huge sparse file", |_root, home| {
            fs::create_dir(home.join(".ssh")).unwrap();
            chown_alice(&home.join(".ssh"));
            let p = home.join(".ssh/authorized_keys");
            fs::File::create(&p).unwrap().set_len(16 << 20).unwrap();
            chown_alice(&p);
            p
        }),
        ("~ itself is a symlink", |root, home| {
            fs::remove_dir(home).unwrap();
            let target = root.join("etc");
            symlink(&target, home).unwrap();
            target
        }),
    ];
    for (name, setup) in cases {
        let env = Env::new();
        let (a, fp, _) = env.keygen("a", &["-t", "ed25519"]);
        let home = env.root.join("home/alice");
        let target = setup(&env.root, &home);
        let snapshot = || -> Vec<(PathBuf, Option<Vec<u8>>)> {
            let mut v = vec![(target.clone(), hash(&target))];
            if target.is_dir() {
                for e in fs::read_dir(&target).unwrap() {
                    let p = e.unwrap().path();
                    let h = if p.is_file() { hash(&p) } else { None };
                    v.push((p, h));
                }
            }
            v.sort();
            v
        };
        let before = snapshot();
        let alice = user("alice");
        let results = [
            add_keys(&env.sys, &alice, &[key(&a)]).map(|_| ()),
            replace_keys(&env.sys, &alice, &[key(&a)]).map(|_| ()),
            remove_keys(&env.sys, &alice, &[KeySelector::parse(&fp).unwrap()]).map(|_| ()),
            list_keys(&env.sys, &alice).map(|_| ()),
        ];
        for (i, r) in results.into_iter().enumerate() {
            let code = r.err().map(|e| e.code());
            assert_eq!(code, Some(Code::UnsafePath), "{name}: operation {i}");
        }
        assert_eq!(snapshot(), before, "{name}: target changed");
        assert!(!env.root.join("etc/.ssh").exists(), "{name}");
    }
}

fn chown_alice(p: &Path) {
    std::os::unix::fs::chown(p, Some(ALICE_UID), Some(ALICE_GID)).unwrap();
}

/// Issue 11.5: each of these key lines is one that sshd(8) refuses (its
/// `sshauthopt_parse` fails, or `auth_authorise_keyopts` denies the key for
/// every client), so a command carrying it must not be answered `ok`.
#[test]
fn key_lines_whose_options_sshd_refuses_are_rejected() {
    if !ready() {
        return;
    }
    let env = Env::new();
    let (ed, ..) = env.keygen("ed", &["-t", "ed25519"]);
    let mut accepted = Vec::new();
    for opts in [
        r#"command="a",command="b""#,
        r#"from="127.0.0.1",from="::1""#,
        r#"expiry-time="tomorrow""#,
        r#"permitlisten="nonsense""#,
        r#"principals="alice""#,
        r#"from="127.0.0.1/99""#,
    ] {
        let line = format!("{opts} {ed}");
        match KeyLine::parse(&line) {
            Ok(_) => accepted.push(opts),
            Err(e) => assert_eq!(e.code(), Code::InvalidCommand, "{line}"),
        }
    }
    assert!(accepted.is_empty(), "accepted: {accepted:?}");
}

/// sshd refuses a key once its `expiry-time` has passed, so a command that
/// adds such a line is refused before anything is touched; a line that is
/// still valid is kept as written, with a warning when its `Z` suffix is one
/// that OpenSSH before 9.1 does not read.
#[test]
fn a_key_line_whose_expiry_time_has_passed_is_refused() {
    if !ready() {
        return;
    }
    let env = Env::new();
    let (ed, ..) = env.keygen("ed", &["-t", "ed25519"]);
    let jan_2030 = 1_893_456_000;
    let line = key(&format!(r#"expiry-time="20300101Z" {ed}"#));
    assert!(
        check_unexpired(std::slice::from_ref(&line), jan_2030).is_ok(),
        "not before its time"
    );
    let e = check_unexpired(std::slice::from_ref(&line), jan_2030 + 1).unwrap_err();
    assert_eq!(e.code(), Code::InvalidCommand);
    assert_eq!(line.warnings().len(), 1, "{:?}", line.warnings());
    let local = key(&format!(r#"expiry-time="20300101" {ed}"#));
    assert!(local.warnings().is_empty());
    assert!(
        check_unexpired(&[key(&ed)], u64::MAX).is_ok(),
        "no expiry-time"
    );
}

/// Issue 12.4: alice swaps her tiny authorized_keys with a 64 GiB sparse
/// file (renameat2 RENAME_EXCHANGE, in a loop) while add_keys runs. The
/// agent checked the size by name and then read the reopened name whole,
/// allocating what the new inode's st_size said: "memory allocation of
/// 68719476736 bytes failed" and an abort. Every add_keys must instead be
/// `ok` (it read the tiny file) or `unsafe_path` (it saw the big one) — and
/// the test process must still be alive to count them.
#[test]
fn a_swapped_in_sparse_authorized_keys_is_refused_not_allocated() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    if !ready() {
        return;
    }
    let env = Env::new();
    let (a, ..) = env.keygen("a", &["-t", "ed25519"]);
    let alice = user("alice");
    add_keys(&env.sys, &alice, &[key(&a)]).unwrap();
    let ssh = env.root.join("home/alice/.ssh");
    let (ak, big) = (ssh.join("authorized_keys"), ssh.join("big"));
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, ak, big) = (stop.clone(), ak.clone(), big.clone());
        std::thread::spawn(move || {
            let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
            let (cak, cbig) = (c(&ak), c(&big));
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // An agent write replaces whichever inode held the name, so
                // make sure one of the two is a 64 GiB file again.
                let len = |p: &Path| fs::metadata(p).map_or(0, |m| m.len());
                if len(&ak) < (1 << 30) && len(&big) < (1 << 30) {
                    let f = fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .open(&big)
                        .unwrap();
                    f.set_len(64 << 30).unwrap();
                    chown_alice(&big);
                }
                // SAFETY: valid C strings; a plain syscall.
                let rc = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        cak.as_ptr(),
                        libc::AT_FDCWD,
                        cbig.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
                swaps += 1;
            }
            swaps
        })
    };
    let (mut ok, mut refused) = (0, 0);
    for i in 0..2000 {
        let k = env.keygen_cached(i % 4);
        match add_keys(&env.sys, &alice, &[key(&k)]) {
            Ok(_) => ok += 1,
            Err(e) if e.code() == Code::UnsafePath => refused += 1,
            Err(e) => panic!("add_keys #{i}: {e}"),
        }
        if ok >= 20 && refused >= 20 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    eprintln!("{ok} ok, {refused} refused, {swaps} swaps");
    assert!(refused > 0, "the big file was never in place ({ok} ok)");
}

const JAN_2030: u64 = 1_893_456_000;

fn expiry(at: u64, id: &str) -> Expiry {
    Expiry {
        at,
        command_id: id.into(),
        form: ExpiryForm::Utc,
        terminate_sessions: false,
    }
}

/// A key bound with `expires_at` carries sshd's own `expiry-time` (the
/// second before, as sshd lets a key in while now <= expiry-time), and the
/// sweep removes exactly its line at that time, naming the command that
/// bound it; every other line stays byte for byte.
#[test]
fn an_expiring_key_carries_expiry_time_and_the_sweep_removes_it_at_its_time() {
    if !ready() {
        return;
    }
    let env = Env::new();
    let (stays, ..) = env.keygen("stays", &["-t", "ed25519"]);
    let (ends, ends_fp, _) = env.keygen("ends", &["-t", "ed25519"]);
    let alice = user("alice");
    add_keys(&env.sys, &alice, &[key(&stays)]).unwrap();
    let e = expiry(JAN_2030, "c-bind-1");
    let o = add_keys_until(
        &env.sys,
        &alice,
        &[key(&format!("restrict {ends}"))],
        Some(&e),
    )
    .unwrap();
    assert_eq!(o.added, 1);
    assert!(o.warnings.is_empty(), "{:?}", o.warnings);
    let text = fs::read_to_string(env.ak("alice")).unwrap();
    assert!(
        text.contains(&format!(r#"expiry-time="20291231235959Z",restrict {ends}"#)),
        "{text}"
    );
    // ssh-keygen reads the line (options and all) as the same key.
    assert_eq!(keygen_l(&env.ak("alice"))[1].1, ends_fp);
    assert_eq!(
        managed_expiry(&env.sys, &alice, &ends_fp).unwrap(),
        Some(JAN_2030)
    );

    let early = expire_due(&env.sys, JAN_2030 - 1).unwrap();
    assert!(early.removed.is_empty() && early.failed.is_empty());
    assert_eq!(early.next, Some(JAN_2030));
    assert_eq!(fs::read_to_string(env.ak("alice")).unwrap(), text);

    let due = expire_due(&env.sys, JAN_2030).unwrap();
    assert!(due.failed.is_empty(), "{:?}", due.failed);
    assert_eq!(due.removed.len(), 1);
    let r = &due.removed[0];
    assert_eq!(
        (
            r.user.as_str(),
            r.fingerprint.as_str(),
            r.command_id.as_str(),
            r.at,
            r.lines_removed
        ),
        ("alice", ends_fp.as_str(), "c-bind-1", JAN_2030, 1)
    );
    assert_eq!(due.next, None, "nothing else expires: no timer");
    assert_eq!(
        fs::read_to_string(env.ak("alice")).unwrap(),
        format!("{stays}\n")
    );
    assert_eq!(managed_expiry(&env.sys, &alice, &ends_fp).unwrap(), None);
    // A second sweep has nothing to do.
    assert!(expire_due(&env.sys, JAN_2030 + 10)
        .unwrap()
        .removed
        .is_empty());
}

/// The latest command about a key decides: bound again without
/// `expires_at`, it no longer expires (line and record).
#[test]
fn binding_an_expiring_key_again_without_expires_at_makes_it_permanent() {
    if !ready() {
        return;
    }
    let env = Env::new();
    let (k, fp, _) = env.keygen("k", &["-t", "ed25519"]);
    let alice = user("alice");
    add_keys_until(&env.sys, &alice, &[key(&k)], Some(&expiry(JAN_2030, "c-1"))).unwrap();
    add_keys(&env.sys, &alice, &[key(&k)]).unwrap();
    assert_eq!(
        fs::read_to_string(env.ak("alice")).unwrap(),
        format!("{k}\n")
    );
    assert_eq!(managed_expiry(&env.sys, &alice, &fp).unwrap(), None);
    let s = expire_due(&env.sys, JAN_2030 + 1).unwrap();
    assert!(s.removed.is_empty() && s.next.is_none());
    // replace_keys with an expiry makes the replacement expire, and one
    // without drops the old expiry with the old key.
    let (k2, fp2, _) = env.keygen("k2", &["-t", "ed25519"]);
    replace_keys_until(
        &env.sys,
        &alice,
        &[key(&k2)],
        Some(&expiry(JAN_2030, "c-2")),
    )
    .unwrap();
    assert_eq!(
        managed_expiry(&env.sys, &alice, &fp2).unwrap(),
        Some(JAN_2030)
    );
    replace_keys(&env.sys, &alice, &[key(&k)]).unwrap();
    assert_eq!(managed_expiry(&env.sys, &alice, &fp2).unwrap(), None);
    assert!(expire_due(&env.sys, JAN_2030 + 1).unwrap().next.is_none());
    // remove_keys forgets the expiry with the key.
    add_keys_until(
        &env.sys,
        &alice,
        &[key(&k2)],
        Some(&expiry(JAN_2030, "c-3")),
    )
    .unwrap();
    remove_keys(&env.sys, &alice, &[KeySelector::Fingerprint(fp2.clone())]).unwrap();
    assert!(expire_due(&env.sys, JAN_2030 + 1).unwrap().next.is_none());
}

/// A key bound by a command that asked for `terminate_sessions` is
/// recorded so, and the sweep that removes it names it among the sessions
/// to end (per user, with the fingerprints); a key bound without it, or
/// of a user who is gone, is not.
#[test]
fn an_expiring_key_that_asked_for_terminate_sessions_is_named_for_ending_at_expiry() {
    if !ready() {
        return;
    }
    let env = Env::new();
    let (ends, ends_fp, _) = env.keygen("ends", &["-t", "ed25519"]);
    let (quiet, quiet_fp, _) = env.keygen("quiet", &["-t", "ed25519"]);
    let (bobs, _, _) = env.keygen("bobs", &["-t", "ed25519"]);
    let alice = user("alice");
    let bob = user("bob");
    let ending = Expiry {
        terminate_sessions: true,
        ..expiry(JAN_2030, "c-ending")
    };
    replace_keys_until(&env.sys, &alice, &[key(&ends)], Some(&ending)).unwrap();
    add_keys_until(
        &env.sys,
        &alice,
        &[key(&quiet)],
        Some(&expiry(JAN_2030, "c-q")),
    )
    .unwrap();
    add_keys_until(&env.sys, &bob, &[key(&bobs)], Some(&ending)).unwrap();
    let record = fs::read_to_string(env.sys.state_dir.join("keys/alice.json")).unwrap();
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["expiring"][&ends_fp]["terminate_sessions"], true);
    assert!(
        record["expiring"][&quiet_fp]
            .get("terminate_sessions")
            .is_none(),
        "left out when false: {record}"
    );
    // bob is deleted before his key's time.
    fs::write(
        env.root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n",
    )
    .unwrap();
    let s = expire_due(&env.sys, JAN_2030).unwrap();
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    assert_eq!(s.removed.len(), 3);
    let flagged: Vec<(&str, bool)> = s
        .removed
        .iter()
        .map(|k| (k.fingerprint.as_str(), k.terminate_sessions))
        .collect();
    assert!(flagged.contains(&(ends_fp.as_str(), true)), "{flagged:?}");
    assert!(flagged.contains(&(quiet_fp.as_str(), false)), "{flagged:?}");
    let to_end = s.sessions_to_end();
    assert_eq!(
        to_end.into_iter().collect::<Vec<_>>(),
        [(alice, std::collections::BTreeSet::from([ends_fp]))]
    );
}

/// A user deleted before their key's time: nothing is left to remove, and
/// the expiry is forgotten instead of failing (and being retried) forever.
#[test]
fn the_expiry_of_a_deleted_user_is_forgotten_not_retried() {
    if !ready() {
        return;
    }
    let env = Env::new();
    let (k, fp, _) = env.keygen("k", &["-t", "ed25519"]);
    let bob = user("bob");
    add_keys_until(&env.sys, &bob, &[key(&k)], Some(&expiry(JAN_2030, "c-9"))).unwrap();
    fs::write(
        env.root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n",
    )
    .unwrap();
    let s = expire_due(&env.sys, JAN_2030).unwrap();
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    assert_eq!(s.removed.len(), 1);
    assert_eq!(
        (
            s.removed[0].lines_removed,
            s.removed[0].fingerprint.as_str()
        ),
        (0, fp.as_str())
    );
    assert!(expire_due(&env.sys, JAN_2030).unwrap().removed.is_empty());
}

/// A user who turns ~/.ssh into a symlink cannot make accessd write
/// through it: the removal fails, is reported, and stays due (sshd's own
/// expiry-time refuses the key meanwhile).
#[test]
fn a_removal_that_a_hostile_home_blocks_is_reported_and_kept_for_later() {
    if !ready() {
        return;
    }
    let env = Env::new();
    let (k, _, _) = env.keygen("k", &["-t", "ed25519"]);
    let alice = user("alice");
    add_keys_until(&env.sys, &alice, &[key(&k)], Some(&expiry(JAN_2030, "c-5"))).unwrap();
    let ssh = env.root.join("home/alice/.ssh");
    fs::rename(&ssh, env.root.join("home/alice/elsewhere")).unwrap();
    symlink("elsewhere", &ssh).unwrap();
    let s = expire_due(&env.sys, JAN_2030).unwrap();
    assert!(s.removed.is_empty());
    assert_eq!(s.failed.len(), 1, "{:?}", s.failed);
    assert_eq!(s.failed[0].1.len(), 1);
    // Still due at the next sweep.
    assert_eq!(expire_due(&env.sys, JAN_2030).unwrap().failed.len(), 1);
    assert!(
        fs::read_to_string(env.root.join("home/alice/elsewhere/authorized_keys"))
            .unwrap()
            .contains("expiry-time=")
    );
}
