//! Inventory's cost in memory and bytes (issue 12, "Done when"): the real
//! `accessd apply` binary on a temporary root, measured by GNU time (the
//! child's peak RSS, the kernel's VmHWM high-water mark), for
//!
//! 1. 10,000 users with 5 keys each: the first page, then the next pages
//!    following `data.next` (4 of them; every page with
//!    `ACCESSD_BENCH_ALL_PAGES=1`, which takes long: each page reads the
//!    whole passwd/shadow/group again);
//! 2. one user with an 8 MiB authorized_keys of ~101,000 short key lines.
//!
//! Prints figures; asserts nothing about time. Run as root:
//! `scripts/bench-inventory` (or `cargo bench -p accessd --bench inventory`).
//! `ACCESSD_BENCH_BASELINE=/path/to/an/older/accessd` measures that binary
//! on the same roots too (its first page only: an older agent has no pages).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use accessd::protocol::client::CommandSpec;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};

const GNU_TIME: &str = "/usr/bin/time";
const INSTANCE: &str = "i-bench";

fn fake_key(n: u64, comment: &str) -> String {
    let mut blob = Vec::new();
    let mut key = [0x5au8; 32];
    key[..8].copy_from_slice(&n.to_be_bytes());
    for part in [b"ssh-ed25519".as_slice(), key.as_slice()] {
        blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
        blob.extend_from_slice(part);
    }
    format!(
        "ssh-ed25519 {} {comment}",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

fn write_keys(root: &Path, user: &str, uid: u32, text: &[u8]) {
    let home = root.join("home").join(user);
    let ssh = home.join(".ssh");
    fs::create_dir_all(&ssh).unwrap();
    let f = ssh.join("authorized_keys");
    fs::write(&f, text).unwrap();
    for (p, mode) in [(&home, 0o700), (&ssh, 0o700), (&f, 0o600)] {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
    }
}

struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    key: SigningKey,
    seq: u32,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        accessd::demo::build_root(&root).unwrap();
        let key = SigningKey::from_bytes(&[3; 32]);
        let config = tmp.path().join("accessd.toml");
        fs::write(
            &config,
            format!(
                "instance_id = \"{INSTANCE}\"\nstate_dir = \"{}\"\nroot = \"{}\"\n\n[trust]\ncp = \"{}\"\n",
                tmp.path().join("state").display(),
                root.display(),
                base64::engine::general_purpose::STANDARD.encode(key.verifying_key().as_bytes())
            ),
        )
        .unwrap();
        fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
        World {
            _tmp: tmp,
            root,
            config,
            key,
            seq: 0,
        }
    }

    /// Users `b00000`.. with `keys` keys each, as useradd would leave them.
    fn add_users(&self, n: usize, keys: usize) {
        let etc = self.root.join("etc");
        let mut passwd = fs::read_to_string(etc.join("passwd")).unwrap();
        let mut shadow = fs::read_to_string(etc.join("shadow")).unwrap();
        let mut group = fs::read_to_string(etc.join("group")).unwrap();
        for i in 0..n {
            let (name, uid) = (format!("b{i:05}"), 20_000 + i as u32);
            passwd.push_str(&format!("{name}:x:{uid}:{uid}::/home/{name}:/bin/sh\n"));
            shadow.push_str(&format!("{name}:!:20000:0:99999:7:::\n"));
            group.push_str(&format!("{name}:x:{uid}:\n"));
            let mut text = String::new();
            for k in 0..keys {
                text.push_str(&fake_key(
                    (i * 1000 + k) as u64,
                    &format!("{name}-{k}@laptop"),
                ));
                text.push('\n');
            }
            write_keys(&self.root, &name, uid, text.as_bytes());
        }
        fs::write(etc.join("passwd"), passwd).unwrap();
        fs::write(etc.join("shadow"), shadow).unwrap();
        fs::write(etc.join("group"), group).unwrap();
    }

    fn uid_of(&self, user: &str) -> u32 {
        fs::read_to_string(self.root.join("etc/passwd"))
            .unwrap()
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f[0] == user).then(|| f[2].parse().unwrap())
            })
            .unwrap()
    }

    /// One `accessd apply` of an inventory: (peak RSS KiB, result bytes,
    /// payload, wall time).
    fn inventory(&mut self, bin: &Path, args: Value) -> (u64, usize, Value, Duration) {
        self.seq += 1;
        let env = CommandSpec {
            id: format!("bench-{}", self.seq),
            ..CommandSpec::new(INSTANCE, "inventory", args, Duration::from_secs(900))
        }
        .sign(&self.key, "cp");
        let dir = tempfile::tempdir().unwrap();
        let envf = dir.path().join("env.json");
        fs::write(&envf, env).unwrap();
        let rss = dir.path().join("rss");
        let t = Instant::now();
        let out = Command::new(GNU_TIME)
            .args(["-f", "%M", "-o"])
            .arg(&rss)
            .arg(bin)
            .arg("apply")
            .arg("--config")
            .arg(&self.config)
            .arg(&envf)
            .stderr(Stdio::null())
            .output()
            .expect("running /usr/bin/time (Debian package `time`)");
        let wall = t.elapsed();
        let kib = fs::read_to_string(&rss)
            .unwrap()
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .expect("GNU time's %M");
        let line = String::from_utf8(out.stdout).unwrap();
        let line = line.trim_end();
        let env: Value = serde_json::from_str(line).expect("a result envelope");
        let payload =
            accessd::protocol::dsse::decode_b64(env["payload"].as_str().unwrap()).unwrap();
        let payload: Value = serde_json::from_slice(&payload).unwrap();
        (kib, line.len(), payload, wall)
    }
}

fn users_in(p: &Value) -> usize {
    p["data"]["users"].as_array().map_or(0, Vec::len)
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("inventory bench: needs root (it chowns files in a temp root); skipped");
        return;
    }
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        // `cargo test --benches` / `--list`: nothing to run quickly.
        return;
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_accessd"));
    let baseline = std::env::var_os("ACCESSD_BENCH_BASELINE").map(PathBuf::from);

    println!("== 10,000 users with 5 keys each");
    let mut w = World::new();
    w.add_users(10_000, 5);
    let (kib, bytes, p, wall) = w.inventory(&bin, json!({}));
    println!(
        "first page: peak RSS {kib} KiB, result {bytes} bytes, {} users, truncated={}, {:.2?}",
        users_in(&p),
        p["data"]["truncated"],
        wall
    );
    let (mut pages, mut total_bytes, mut max_kib, mut max_bytes, mut users) =
        (1, bytes, kib, bytes, users_in(&p));
    let mut next = p["data"]["next"].as_str().map(str::to_owned);
    let all = std::env::var_os("ACCESSD_BENCH_ALL_PAGES").is_some();
    let t = Instant::now();
    while let Some(c) = next.clone() {
        if !all && pages >= 5 {
            break;
        }
        let (kib, bytes, p, _) = w.inventory(&bin, json!({ "cursor": c }));
        pages += 1;
        total_bytes += bytes;
        max_kib = max_kib.max(kib);
        max_bytes = max_bytes.max(bytes);
        users += users_in(&p);
        next = p["data"]["next"].as_str().map(str::to_owned);
    }
    println!(
        "{} {pages} pages: {users} users, {total_bytes} bytes in all, largest result {max_bytes} bytes, highest peak RSS {max_kib} KiB, {:.2?} for the pages after the first",
        if next.is_none() { "all" } else { "first" },
        t.elapsed()
    );
    if let Some(old) = &baseline {
        let (kib, bytes, p, wall) = w.inventory(old, json!({}));
        println!(
            "baseline {}: peak RSS {kib} KiB, result {bytes} bytes, {} users, {wall:.2?}",
            old.display(),
            users_in(&p)
        );
    }

    println!("== one user with an 8 MiB authorized_keys");
    let mut w = World::new();
    w.add_users(1, 0);
    let uid = w.uid_of("b00000");
    let mut text = Vec::new();
    let mut n = 0u64;
    loop {
        let l = fake_key(n, "k");
        if text.len() + l.len() + 1 >= 8 << 20 {
            break;
        }
        text.extend_from_slice(l.as_bytes());
        text.push(b'\n');
        n += 1;
    }
    write_keys(&w.root, "b00000", uid, &text);
    let (kib, bytes, p, wall) = w.inventory(&bin, json!({}));
    let total = p["data"]["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "b00000")
        .map(|u| u["keys_total"].clone())
        .unwrap_or(Value::Null);
    println!(
        "{n} key lines, {} bytes: peak RSS {kib} KiB, result {bytes} bytes, keys_total {total}, {wall:.2?}",
        text.len()
    );
    if let Some(old) = &baseline {
        let (kib, bytes, _, wall) = w.inventory(old, json!({}));
        println!(
            "baseline {}: peak RSS {kib} KiB, result {bytes} bytes, {wall:.2?}",
            old.display()
        );
    }
}
