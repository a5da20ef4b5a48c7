//! Every dependency a workspace member (or the fuzz crate) declares is used
//! by that member's code (issue 14: `sshkeys` sat in agent/Cargo.toml, used
//! nowhere). The
//! equivalent of `cargo machete`, without installing it: for each member's
//! `[dependencies]`, `[dev-dependencies]` and `[build-dependencies]`, the
//! crate's library name (dashes as underscores; `package = "..."` renames
//! honoured, the key is what the code names) must appear in the member's
//! Rust files (src, tests, benches, examples, build.rs) as a path
//! (`name::`), a `use name` or an `extern crate name`.
//!
//! A dependency declared only to turn on a feature of another crate is not
//! used in this sense; none exists today. If one is ever needed, list it in
//! FEATURE_ONLY with the reason, so that the exception is written down.

use std::fs;
use std::path::{Path, PathBuf};

/// (member directory, dependency key, why it is declared yet not named).
const FEATURE_ONLY: &[(&str, &str, &str)] = &[];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("agent/ has a parent")
        .to_path_buf()
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            // Build output is not the member's source.
            if p.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// True when `text` names the crate `lib`: `lib::`, `use lib`, `extern
/// crate lib`, each with `lib` as a whole identifier.
fn names_crate(text: &str, lib: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(i) = text[from..].find(lib) {
        let at = from + i;
        let end = at + lib.len();
        from = end;
        if text[..at].chars().next_back().is_some_and(ident) {
            continue;
        }
        let rest = &text[end..];
        if rest.chars().next().is_some_and(ident) {
            continue;
        }
        if rest.starts_with("::") {
            return true;
        }
        let before = text[..at].trim_end();
        if before.ends_with("use") || before.ends_with("extern crate") {
            return true;
        }
    }
    false
}

/// The workspace members, as directories relative to the root, and the
/// fuzz crate, which the workspace excludes (it builds with libFuzzer) but
/// whose manifest can carry an unused dependency all the same.
fn members(root: &Path) -> Vec<String> {
    let text = fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let manifest: toml::Table = text.parse().unwrap();
    let mut out: Vec<String> = manifest["workspace"]["members"]
        .as_array()
        .expect("workspace.members is a list")
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    assert!(
        root.join("fuzz/Cargo.toml").is_file(),
        "the fuzz crate moved: update members()"
    );
    out.push("fuzz".to_string());
    out
}

/// (table, key, library name) for every dependency of one member.
fn declared(manifest: &toml::Table) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for table in ["dependencies", "dev-dependencies", "build-dependencies"] {
        let Some(deps) = manifest.get(table).and_then(|t| t.as_table()) else {
            continue;
        };
        for key in deps.keys() {
            // The code names the key (a `package =` rename's new name),
            // with dashes turned into underscores as rustc does.
            out.push((table.to_string(), key.clone(), key.replace('-', "_")));
        }
    }
    out
}

#[test]
fn every_declared_dependency_is_used() {
    let root = workspace_root();
    let mut unused = Vec::new();
    let mut checked = 0;
    for member in members(&root) {
        let dir = root.join(&member);
        let text = fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let manifest: toml::Table = text.parse().unwrap();
        let mut files = Vec::new();
        rs_files(&dir, &mut files);
        assert!(!files.is_empty(), "{member} has no Rust files");
        let sources: Vec<String> = files
            .iter()
            .map(|f| fs::read_to_string(f).unwrap())
            .collect();
        for (table, key, lib) in declared(&manifest) {
            checked += 1;
            if FEATURE_ONLY
                .iter()
                .any(|(m, k, _)| *m == member && *k == key)
            {
                continue;
            }
            if !sources.iter().any(|s| names_crate(s, &lib)) {
                unused.push(format!(
                    "{member}/Cargo.toml [{table}] {key}: `{lib}` is named in no file"
                ));
            }
        }
    }
    assert!(
        checked > 0,
        "no dependencies found: the manifests were not read"
    );
    assert!(
        unused.is_empty(),
        "declared dependencies used nowhere (remove them, or list them in FEATURE_ONLY with why):\n{}",
        unused.join("\n")
    );
}

#[test]
fn a_crate_counts_as_named_only_as_a_whole_identifier() {
    assert!(names_crate("let x = serde_json::to_vec(&v);", "serde_json"));
    assert!(names_crate("use sha2::{Digest, Sha256};", "sha2"));
    assert!(names_crate("use libc;", "libc"));
    assert!(names_crate("extern crate libc;", "libc"));
    assert!(names_crate("#[tokio::test]", "tokio"));
    // A longer identifier that starts or ends with the name is not it.
    assert!(!names_crate("tokio_rustls::TlsConnector", "tokio"));
    assert!(!names_crate("my_serde::x", "serde"));
    assert!(!names_crate("let serde = 1;", "serde"));
}
