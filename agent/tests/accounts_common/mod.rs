//! Shared by the accounts_* integration tests: temp roots built from copies
//! of this host's account files (read, never written), the real
//! shadow-utils tools as oracles, and file snapshots to compare.
#![allow(dead_code)]

// A test binary that uses two support modules gets two copies of this
// small file; both are the same rule.
#[allow(clippy::duplicate_mod)]
#[path = "../gate/mod.rs"]
pub mod gate;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::SystemTime;

use accessd::sys::{FixedClock, System};

pub const DB_FILES: [&str; 6] = ["passwd", "group", "shadow", "gshadow", "subuid", "subgid"];

/// Root and the tools are required. Outside CI a missing prerequisite skips
/// the test with a reason; in CI (CI=true) it fails the test.
pub fn prerequisites(tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root".to_string());
    }
    for t in tools {
        if accessd::sys::find_program(t).is_none() {
            missing.push((*t).to_string());
        }
    }
    if missing.is_empty() {
        return true;
    }
    gate::require(false, &format!("missing {missing:?}"))
}

/// A temp root with etc/{passwd,group,shadow,gshadow,login.defs,
/// default/useradd,skel,shells,subuid,subgid,sudoers,sudoers.d} copied from
/// the host (owner and mode kept) and an empty home/.
pub fn fixture() -> tempfile::TempDir {
    let t = tempfile::Builder::new()
        .prefix("accessd-acct")
        .tempdir()
        .unwrap();
    let root = t.path();
    fs::create_dir_all(root.join("etc/default")).unwrap();
    for f in [
        "passwd",
        "group",
        "shadow",
        "gshadow",
        "login.defs",
        "default/useradd",
        "shells",
        "subuid",
        "subgid",
        "sudoers",
    ] {
        let src = Path::new("/etc").join(f);
        let dst = root.join("etc").join(f);
        if src.exists() {
            copy_file(&src, &dst);
        } else if f == "subuid" || f == "subgid" {
            fs::write(&dst, b"").unwrap();
        }
    }
    copy_dir(Path::new("/etc/skel"), &root.join("etc/skel"));
    fs::create_dir_all(root.join("etc/sudoers.d")).unwrap();
    fs::create_dir_all(root.join("home")).unwrap();
    fs::set_permissions(root.join("home"), fs::Permissions::from_mode(0o755)).unwrap();
    // pwck checks that each login shell exists under the root: stand-ins
    // for every shell the copied passwd and shells files name.
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    let shells = fs::read_to_string(root.join("etc/shells")).unwrap_or_default();
    let mut progs: Vec<&str> = passwd.lines().filter_map(|l| l.split(':').nth(6)).collect();
    progs.extend(shells.lines().filter(|l| l.starts_with('/')));
    progs.push("/bin/sh");
    for p in progs.into_iter().filter(|p| p.starts_with('/')) {
        let dst = root.join(p.trim_start_matches('/'));
        fs::create_dir_all(dst.parent().unwrap()).unwrap();
        fs::write(&dst, b"").unwrap();
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o755)).unwrap();
    }
    t
}

fn copy_file(src: &Path, dst: &Path) {
    fs::copy(src, dst).unwrap();
    let md = fs::metadata(src).unwrap();
    std::os::unix::fs::chown(dst, Some(md.uid()), Some(md.gid())).unwrap();
    fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777)).unwrap();
}

fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    if !src.exists() {
        return;
    }
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            copy_dir(&e.path(), &dst.join(e.file_name()));
        } else if ft.is_file() {
            copy_file(&e.path(), &dst.join(e.file_name()));
        }
    }
}

/// An exact copy of a whole tree (owners, modes, links) with `cp -a`.
pub fn clone_tree(src: &Path) -> tempfile::TempDir {
    let t = tempfile::Builder::new()
        .prefix("accessd-acct")
        .tempdir()
        .unwrap();
    let out = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(t.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cp -a: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t
}

/// A System on `root` whose clock says "now": the same day the real tools see.
pub fn sys(root: &Path) -> System {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    System::new(root, root.join("var/lib/accessd")).with_clock(Arc::new(FixedClock::at_unix(now)))
}

pub fn today() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86400
}

/// Run a tool; panic with its stderr if it fails.
pub fn run(prog: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut c = Command::new(prog);
    c.args(args)
        .env("LC_ALL", "C")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap_or_else(|e| panic!("spawning {prog}: {e}"));
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{prog} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn root_arg(root: &Path) -> String {
    root.to_str().unwrap().to_owned()
}

/// Contents, owner and mode of the six account databases (and, with
/// `backups`, their `FILE-`).
pub fn snapshot(root: &Path, backups: bool) -> BTreeMap<String, (Vec<u8>, u32, u32, u32)> {
    let mut m = BTreeMap::new();
    for f in DB_FILES {
        let names = if backups {
            vec![f.to_string(), format!("{f}-")]
        } else {
            vec![f.to_string()]
        };
        for n in names {
            let p = root.join("etc").join(&n);
            if let Ok(bytes) = fs::read(&p) {
                let md = fs::metadata(&p).unwrap();
                m.insert(n, (bytes, md.uid(), md.gid(), md.mode() & 0o7777));
            }
        }
    }
    m
}

/// Every file under `root/etc` (recursively) and `root/home`, with content:
/// for "nothing changed at all" checks.
pub fn whole_tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut m = BTreeMap::new();
    walk(root, root, &mut m);
    m
}

/// Every file under `root` is as [`whole_tree`] found it in `before`, byte
/// for byte. `etc/.pwd.lock` is left out of both: its existence is not
/// content, and glibc leaves it too.
pub fn assert_tree_unchanged(root: &Path, before: &BTreeMap<PathBuf, String>, msg: &str) {
    let mut after = whole_tree(root);
    let mut before = before.clone();
    after.remove(Path::new("etc/.pwd.lock"));
    before.remove(Path::new("etc/.pwd.lock"));
    assert_eq!(before, after, "{msg}");
}

fn walk(base: &Path, dir: &Path, m: &mut BTreeMap<PathBuf, String>) {
    let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let md = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(base).unwrap().to_path_buf();
        let desc = if md.file_type().is_symlink() {
            format!("link {}", fs::read_link(&p).unwrap().display())
        } else if md.is_dir() {
            format!("dir {:o} {}:{}", md.mode() & 0o7777, md.uid(), md.gid())
        } else {
            format!(
                "file {:o} {}:{} {:?}",
                md.mode() & 0o7777,
                md.uid(),
                md.gid(),
                String::from_utf8_lossy(&fs::read(&p).unwrap())
            )
        };
        m.insert(rel, desc);
        if md.is_dir() {
            walk(base, &p, m);
        }
    }
}

/// The tree under one home directory, as comparable text.
pub fn home_tree(root: &Path, name: &str) -> BTreeMap<PathBuf, String> {
    let home = root.join("home").join(name);
    let mut m = BTreeMap::new();
    if let Ok(md) = fs::symlink_metadata(&home) {
        m.insert(
            PathBuf::from("."),
            format!("dir {:o} {}:{}", md.mode() & 0o7777, md.uid(), md.gid()),
        );
        walk(&home, &home, &mut m);
    }
    m
}

/// Lines `pwck -r` and `grpck -r` print for this root (sorted).
pub fn check_report(root: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for tool in ["pwck", "grpck"] {
        let out = Command::new(tool)
            .args(["-r", "-R", &root_arg(root)])
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        for l in String::from_utf8_lossy(&out.stdout)
            .lines()
            .chain(String::from_utf8_lossy(&out.stderr).lines())
        {
            lines.push(format!("{tool}: {l}"));
        }
    }
    lines.sort();
    lines
}

/// `pwck`/`grpck` report nothing that `baseline` did not already have.
pub fn assert_no_new_complaints(root: &Path, baseline: &[String]) {
    let new: Vec<String> = check_report(root)
        .into_iter()
        .filter(|l| !baseline.contains(l))
        .collect();
    assert!(new.is_empty(), "pwck/grpck report new problems: {new:#?}");
}

/// The given file's line for `name`.
pub fn entry(root: &Path, file: &str, name: &str) -> Option<String> {
    let text = fs::read_to_string(root.join("etc").join(file)).ok()?;
    text.lines()
        .find(|l| l.split(':').next() == Some(name))
        .map(str::to_owned)
}

/// Give both trees the same user, made by the real useradd.
pub fn useradd(root: &Path, args: &[&str]) {
    let mut a = vec!["-R", root.to_str().unwrap()];
    a.extend_from_slice(args);
    run("useradd", &a, None);
}

pub fn user(name: &str) -> accessd::names::UserName {
    accessd::names::UserName::parse(name).unwrap()
}

/// A fixed, valid SHA-512 crypt string (password "Correct-Horse1").
pub fn known_hash() -> String {
    let out = run(
        "openssl",
        &["passwd", "-6", "-salt", "saltsaltsaltsalt", "-stdin"],
        Some(b"Correct-Horse1\n"),
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
