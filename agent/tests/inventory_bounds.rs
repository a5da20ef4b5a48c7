//! Inventory within bounds (issue 12, items 1 and 5): every result envelope
//! fits `max_result_bytes`, a large inventory is paged at whole users with an
//! opaque cursor, keys are capped per user with `keys_total`, long comments
//! are shortened, and the agent's memory stays bounded by what it sends, not
//! by what a user wrote into their authorized_keys.
//!
//! Everything runs the real `accessd apply` on a temp root (daemon_support).

mod daemon_support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use accessd::protocol::client::verify_result;
use accessd::protocol::result::ResultPayload;
use daemon_support::{add_users, fake_key, require_root, uid_of, write_keys, Machine, USER};
use serde_json::{json, Value};

/// PROTOCOL §4: 60 KiB, so that a result fits a 64 KiB broker limit.
const DEFAULT_RESULT_LIMIT: usize = 60 * 1024;

/// One `accessd apply` run: the raw result envelope lines, their verified
/// payloads, and the process's peak RSS in KiB as GNU time reports it (the
/// child's ru_maxrss: the kernel's high-water mark, VmHWM). Measured through
/// `time` because a process spawned straight from this big, multi-threaded
/// test process would count the test's own memory too: the kernel records
/// the high-water mark of the address space that exec replaces.
fn apply_measured(m: &Machine, envs: &[Vec<u8>]) -> (Vec<String>, Vec<ResultPayload>, i64) {
    let dir = tempfile::tempdir_in(m.tmp.path()).unwrap();
    let mut files = Vec::new();
    for (i, e) in envs.iter().enumerate() {
        let p = dir.path().join(format!("{i}.json"));
        std::fs::write(&p, e).unwrap();
        files.push(p);
    }
    let rss_file = dir.path().join("maxrss");
    let out = Command::new(GNU_TIME)
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(Machine::bin())
        .arg("apply")
        .arg("--config")
        .arg(&m.config)
        .args(&files)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let maxrss: i64 = std::fs::read_to_string(&rss_file)
        .unwrap()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("GNU time wrote the peak RSS");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let agent = m.agent_key();
    let results = lines
        .iter()
        .map(|l| verify_result(&agent, l.as_bytes()).unwrap())
        .collect();
    (lines, results, maxrss)
}

/// GNU time (Debian package `time`, in scripts/install-test-deps).
const GNU_TIME: &str = "/usr/bin/time";

fn inventory(m: &Machine, id: &str, args: Value) -> (String, ResultPayload) {
    let (lines, mut results, _) = apply_measured(m, &[m.sign(id, "inventory", args)]);
    assert_eq!(lines.len(), 1, "one result line");
    (lines.into_iter().next().unwrap(), results.remove(0))
}

/// Follow `next` from the first page to the last; every page must fit.
fn all_pages(m: &Machine, base: Value, limit: usize) -> Vec<ResultPayload> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    for n in 0..1000 {
        let mut args = base.clone();
        if let Some(c) = &cursor {
            args["cursor"] = json!(c);
        }
        let (line, r) = inventory(m, &format!("inv-page-{n}"), args);
        assert_eq!(r.code.as_str(), "ok", "page {n}: {}", r.message);
        assert!(
            line.len() <= limit,
            "page {n}: a {}-byte result envelope is over the {limit}-byte limit",
            line.len()
        );
        let truncated = r.data["truncated"].as_bool();
        cursor = r.data["next"].as_str().map(str::to_owned);
        pages.push(r);
        match truncated {
            Some(true) => assert!(cursor.is_some(), "truncated without next"),
            Some(false) => {
                assert!(cursor.is_none(), "next without truncated");
                return pages;
            }
            None => panic!("page {n} has no data.truncated"),
        }
    }
    panic!("1000 pages and still truncated");
}

fn names_of(pages: &[ResultPayload]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| p.data["users"].as_array().unwrap().iter())
        .map(|u| u["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn an_inventory_of_many_users_is_paged_within_the_result_limit_and_lists_each_user_once() {
    if !require_root() {
        return;
    }
    let m = Machine::new();
    let added = add_users(&m.root, 400, 5);
    let pages = all_pages(&m, json!({}), DEFAULT_RESULT_LIMIT);
    assert!(pages.len() > 1, "400 users x 5 keys does not fit one page");
    let names = names_of(&pages);
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "a user listed twice: {names:?}");
    // Every local user is there (which system accounts count as local is
    // the accounts module's business, tested there).
    let listed: BTreeSet<String> = unique.into_iter().cloned().collect();
    for name in added.iter().map(String::as_str).chain(["root", USER]) {
        assert!(listed.contains(name), "{name} is missing");
    }
    // Every page is a whole report: each user with all five keys, and sshd.
    for p in &pages {
        assert!(p.data["sshd"].is_object(), "{}", p.data["sshd"]);
        for u in p.data["users"].as_array().unwrap() {
            if u["name"].as_str().unwrap().starts_with('u') {
                assert_eq!(u["keys"].as_array().unwrap().len(), 5, "{u}");
                assert_eq!(u["keys_total"], 5, "{u}");
            }
        }
    }
}

#[test]
fn a_configured_result_limit_pages_smaller() {
    if !require_root() {
        return;
    }
    let m = Machine::new();
    add_users(&m.root, 60, 5);
    let text = std::fs::read_to_string(&m.config).unwrap();
    m.write_raw_config(&text.replace("[trust]", "max_result_bytes = 16384\n\n[trust]"));
    let pages = all_pages(&m, json!({}), 16384);
    assert!(pages.len() >= 3, "{} pages", pages.len());
    let names = names_of(&pages);
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "a user listed twice");
    assert!(names.len() >= 62, "{names:?}");
}

#[test]
fn inventory_users_and_cursor_page_within_the_named_users() {
    if !require_root() {
        return;
    }
    let m = Machine::new();
    let added = add_users(&m.root, 300, 5);
    let wanted: Vec<&String> = added.iter().step_by(3).collect();
    let pages = all_pages(&m, json!({ "users": wanted }), DEFAULT_RESULT_LIMIT);
    assert!(pages.len() > 1, "100 users x 5 keys does not fit one page");
    let mut names = names_of(&pages);
    names.sort();
    let mut expected: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected);

    // A cursor is opaque but not trusted blindly; a name that is not a
    // user is refused rather than silently left out.
    let (_, r) = inventory(&m, "inv-bad-cursor", json!({"cursor": "not a cursor"}));
    assert_eq!(
        (r.status, r.code.as_str()),
        (accessd::engine::Status::Rejected, "invalid_command"),
        "{}",
        r.message
    );
    let (_, r) = inventory(&m, "inv-nobody", json!({"users": ["nosuchuser"]}));
    assert_eq!(r.code.as_str(), "user_not_found", "{}", r.message);
}

#[test]
fn a_huge_key_comment_is_shortened_and_keys_are_capped_at_100_per_user() {
    if !require_root() {
        return;
    }
    let m = Machine::new();
    let uid = uid_of(&m.root, USER);
    // One valid key with a 1.5 MiB comment (under the 8 MiB read limit),
    // then 149 ordinary keys.
    let mut text = fake_key(1, &"C".repeat(1536 * 1024));
    text.push('\n');
    for k in 2..=150 {
        text.push_str(&fake_key(k, &format!("key{k}")));
        text.push('\n');
    }
    write_keys(&m.root, USER, uid, text.as_bytes());
    let (line, r) = inventory(&m, "inv-huge-comment", json!({ "users": [USER] }));
    assert_eq!(r.code.as_str(), "ok", "{}", r.message);
    assert!(line.len() <= DEFAULT_RESULT_LIMIT, "{} bytes", line.len());
    let alice = &r.data["users"][0];
    assert_eq!(alice["name"], USER);
    assert_eq!(alice["keys_total"], 150);
    let keys = alice["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 100, "at most 100 keys are listed");
    let first = keys[0]["comment"].as_str().unwrap();
    assert!(
        first.len() <= 128 && first.starts_with("CCCC") && first.ends_with("[1572864 bytes]"),
        "the long comment is shortened and says how long it was: {first:?}"
    );
    assert_eq!(
        keys[1]["comment"], "key2",
        "short comments stay as they are"
    );
    assert_eq!(r.data["truncated"], false);
}

/// Issue 12.5: a legal authorized_keys of ~101k short lines (under 8 MiB)
/// made inventory peak at 190 MiB RSS and a 17.5 MB result, under a unit
/// with MemoryMax=64M. Peak RSS is measured by the kernel (not a timing),
/// and the bound is far from the baseline, so this is not flaky.
#[test]
fn inventory_of_an_8_mib_authorized_keys_stays_under_32_mib_peak_rss() {
    if !require_root() {
        return;
    }
    let m = Machine::new();
    let uid = uid_of(&m.root, USER);
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
    assert!(n > 100_000, "{n} lines");
    write_keys(&m.root, USER, uid, &text);
    let (lines, results, maxrss_kib) =
        apply_measured(&m, &[m.sign("inv-8mib", "inventory", json!({}))]);
    eprintln!(
        "inventory of {n} keys ({} bytes): peak RSS {maxrss_kib} KiB, result {} bytes",
        text.len(),
        lines[0].len()
    );
    assert!(
        maxrss_kib < 32 * 1024,
        "peak RSS {maxrss_kib} KiB is over 32 MiB"
    );
    let r = &results[0];
    assert_eq!(r.code.as_str(), "ok", "{}", r.message);
    assert!(lines[0].len() <= DEFAULT_RESULT_LIMIT, "{}", lines[0].len());
    let alice = r.data["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == USER)
        .unwrap();
    assert_eq!(alice["keys_total"], n);
}

/// An image (a root other than `/`) has no log of this machine and runs
/// nothing: no key has `last_login`, every user has `sessions: 0`, and no
/// program of the image (its journalctl) is run — an auth.log in the image
/// with a record of alice's key is not read either.
#[test]
fn an_image_inventory_has_no_last_login_and_no_sessions() {
    if !require_root() {
        return;
    }
    let m = Machine::new();
    let uid = uid_of(&m.root, USER);
    let key = fake_key(1, "laptop");
    write_keys(&m.root, USER, uid, format!("{key}\n").as_bytes());
    let (_, r) = inventory(&m, "inv-fp", json!({ "users": [USER] }));
    let fp = r.data["users"][0]["keys"][0]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let log = m.root.join("var/log");
    std::fs::create_dir_all(&log).unwrap();
    std::fs::write(
        log.join("auth.log"),
        format!(
            "Dec  3 06:10:43 h sshd[812]: Accepted publickey for {USER} from 192.0.2.7 port 40000 ssh2: ED25519 {fp}\n"
        ),
    )
    .unwrap();
    let (_, r) = inventory(&m, "inv-logins", json!({}));
    assert_eq!(r.code.as_str(), "ok", "{}", r.message);
    assert!(r.data.get("logins_error").is_none(), "{}", r.data);
    let users = r.data["users"].as_array().unwrap();
    assert!(users.len() >= 2, "{users:?}");
    for u in users {
        assert_eq!(u["sessions"], 0, "{u}");
        for k in u["keys"].as_array().unwrap() {
            assert!(k.get("last_login").is_none(), "{k}");
        }
    }
    let alice = users.iter().find(|u| u["name"] == USER).unwrap();
    assert_eq!(alice["keys"][0]["fingerprint"], fp.as_str());
}
