//! set_password on a 100,000-user /etc/shadow, against `chpasswd -e -R` on
//! an identical copy. Prints both medians and the ratio (the aim is ≤ 0.3).
//! Run as root: `cargo bench -p accessd --bench set_password`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use accessd::accounts::{self, AccountsConfig, Password};
use accessd::names::UserName;
use accessd::sys::System;

const USERS: usize = 100_000;
const RUNS: usize = 7;

fn build_root(root: &Path) {
    let etc = root.join("etc");
    fs::create_dir_all(&etc).unwrap();
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/bash\n");
    let mut shadow = String::from("root:*:20000:0:99999:7:::\n");
    let group = String::from("root:x:0:\nshadow:x:42:\nusers:x:100:\n");
    for i in 0..USERS {
        passwd.push_str(&format!(
            "user{i}:x:{}:100::/home/user{i}:/bin/sh\n",
            10_000 + i
        ));
        shadow.push_str(&format!(
            "user{i}:$6$abcdefghijklmnop$Jx2N0cXbR5xjpTqyyNxWq2rVjEQ1n4RJmVjfk2WqCpwEGSWm8h4W8lP7dvSsZ2m1Gk6b4Ywqs9jHGtGJz1kXf0:20000:0:99999:7:::\n"
        ));
    }
    fs::write(etc.join("passwd"), passwd).unwrap();
    fs::write(etc.join("shadow"), shadow).unwrap();
    fs::write(etc.join("group"), group).unwrap();
    fs::set_permissions(etc.join("shadow"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(etc.join("login.defs"), "UID_MIN 1000\nUID_MAX 60000\n").unwrap();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn hash(i: usize) -> accounts::CryptHash {
    accounts::hash::sha512_crypt(b"Bench-Pass-1", &[i as u8; 12], 5000).unwrap()
}

fn main() {
    if !nix::unistd::geteuid().is_root() || accessd::sys::find_program("chpasswd").is_none() {
        eprintln!("set_password bench: needs root and chpasswd; skipped");
        return;
    }
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    build_root(a.path());
    build_root(b.path());
    let target = format!("user{}", USERS - 1);
    let sys = System::new(b.path(), b.path().join("state"));
    let cfg = AccountsConfig::default();
    let name = UserName::parse(&target).unwrap();

    let mut theirs = Vec::new();
    let mut ours = Vec::new();
    for i in 0..RUNS {
        let h = hash(i);
        let t = Instant::now();
        let mut child = Command::new("chpasswd")
            .args(["-e", "-R", a.path().to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{target}:{}\n", h.as_str()).as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
        theirs.push(t.elapsed());

        let t = Instant::now();
        accounts::set_password(&sys, &cfg, &name, &Password::Crypt(h)).unwrap();
        ours.push(t.elapsed());
        assert_eq!(
            fs::read(a.path().join("etc/shadow")).unwrap(),
            fs::read(b.path().join("etc/shadow")).unwrap(),
            "both must write the same file"
        );
    }
    let (t, o) = (median(theirs), median(ours));
    println!("set_password, {USERS}-user shadow, last user, median of {RUNS}:");
    println!("  chpasswd -e -R : {:>8.2} ms", t.as_secs_f64() * 1e3);
    println!("  accessd        : {:>8.2} ms", o.as_secs_f64() * 1e3);
    println!(
        "  ratio accessd/chpasswd = {:.3} (aim <= 0.3)",
        o.as_secs_f64() / t.as_secs_f64()
    );
}
