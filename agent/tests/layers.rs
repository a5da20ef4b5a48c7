//! The module graph of `agent/src`, read from its source: which module
//! names which (`use crate::...`, `crate::x::y` paths, `super::`), and
//! whether any two reach each other (an import cycle, issue 14).
//!
//! Granularity: top-level modules, and one level inside the modules that
//! are themselves layered (`protocol`, `mqtt`, `daemon`, `ssh`, `accounts`).
//! A child naming its own parent (`super::`, or the parent's re-exports) is
//! not counted: `mod.rs` declaring `mod child` is how Rust nests, not an
//! import. Nor is a parent naming its child by a relative path
//! (`userdel::delete` in `accounts/mod.rs`): so the same graph is also
//! checked with every node folded into its top-level module (`a::x -> b::y`
//! counts as `a -> b`), where a cycle that runs through a parent shows.
//!
//! Cycles that exist today are listed in KNOWN_CYCLES, each to be removed;
//! the test fails on a new cycle, and on a listed one that is gone (so the
//! list is kept true).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const LAYERED: &[&str] = &["protocol", "mqtt", "daemon", "ssh", "accounts"];

/// Each entry: the modules of one strongly connected component, sorted,
/// joined by " <-> ".
const KNOWN_CYCLES: &[&str] = &[];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a source file: `a/b.rs` and `a/b/mod.rs` are `a::b`.
fn module_of_file(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    parts
}

/// The node of a source file: "engine", "protocol::command", "ssh::sshd";
/// None for lib.rs and binaries (the top, which may name anything).
fn node_of_file(rel: &Path) -> Option<String> {
    let parts = module_of_file(rel);
    if parts.first().is_some_and(|f| f == "bin" || f == "lib") || parts.is_empty() {
        return None;
    }
    Some(node_of_path(
        &parts.iter().map(String::as_str).collect::<Vec<_>>(),
    ))
}

/// The node a module path names, at this test's granularity.
fn node_of_path(segs: &[&str]) -> String {
    match segs {
        [top, sub, ..] if LAYERED.contains(top) && is_module(&[top, sub]) => {
            format!("{top}::{sub}")
        }
        [top, ..] => top.to_string(),
        [] => String::new(),
    }
}

fn is_module(segs: &[&str]) -> bool {
    let p = segs.iter().fold(src(), |p, s| p.join(s));
    p.with_extension("rs").is_file() || p.join("mod.rs").is_file()
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Module paths named after `crate::` in `text`, expanding one level of
/// `crate::{a::b, c}` groups.
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        if i > 0 && text[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        {
            continue; // `$crate::`, `my_crate::`
        }
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = 0;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.push(segments(&group[start..j]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(segments(&group[start..j]));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.push(segments(rest));
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

fn segments(s: &str) -> Vec<String> {
    let mut segs = Vec::new();
    let mut rest = s.trim_start();
    loop {
        let id = ident(rest);
        if id.is_empty() {
            break;
        }
        segs.push(id.to_string());
        match rest[id.len()..].strip_prefix("::") {
            Some(r) if segs.len() < 2 => rest = r,
            _ => break,
        }
    }
    segs
}

/// `super::x` written as the `crate::` path it names, for the file at
/// `rel` (the parent of `a/b.rs` and of `a/b/mod.rs` is `a`).
fn resolve_super(code: &str, rel: &Path) -> String {
    let mut module = module_of_file(rel);
    module.pop();
    let parent = if module.is_empty() {
        "crate::".to_string()
    } else {
        format!("crate::{}::", module.join("::"))
    };
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(i) = rest.find("super::") {
        let word_start = i == 0
            || !rest[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        out.push_str(&rest[..i]);
        if word_start {
            out.push_str(&parent);
        } else {
            out.push_str("super::");
        }
        rest = &rest[i + "super::".len()..];
    }
    out.push_str(rest);
    out
}

/// Source text without comments (a doc comment naming `crate::x` is not
/// an import), and without the `#[cfg(test)]` tail of a file (tests may
/// name the module under test from anywhere).
fn code_of(text: &str) -> String {
    let body = match text.find("#[cfg(test)]\nmod ") {
        Some(i) => &text[..i],
        None => text,
    };
    body.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rs_files(&src(), &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src()).unwrap();
        let Some(from) = node_of_file(rel) else {
            continue;
        };
        let code = resolve_super(&code_of(&fs::read_to_string(&f).unwrap()), rel);
        let edges = g.entry(from.clone()).or_default();
        for p in crate_paths(&code) {
            let segs: Vec<&str> = p.iter().map(String::as_str).collect();
            let to = node_of_path(&segs);
            // A child naming its parent, or a module naming itself.
            if to == from || from.starts_with(&format!("{to}::")) {
                continue;
            }
            edges.insert(to);
        }
    }
    g
}

/// Strongly connected components with more than one node (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<String>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp.join(" <-> "));
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out.sort();
    t.out
}

/// The graph with each node replaced by its top-level module: an edge
/// `a::x -> b::y` counts as `a -> b` (for `a != b`). This sees the cycles
/// that run through a parent, which the graph above cannot: a `mod.rs`
/// naming its own child by a relative path (`userdel::delete`) is not an
/// edge there, so `protocol::command -> ssh::authkeys` plus
/// `ssh::authkeys -> protocol` (through `protocol/mod.rs`) would be missed.
fn top_level(g: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, BTreeSet<String>> {
    let mut t: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in g {
        let a = top_of(from);
        let edges = t.entry(a.to_string()).or_default();
        for to in tos {
            let b = top_of(to);
            if a != b {
                edges.insert(b.to_string());
            }
        }
    }
    t
}

/// Each edge `a -> b` of the top-level graph with the finer edges behind it,
/// so a failure says which files to look at.
fn top_edges(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    g.iter()
        .flat_map(|(f, ts)| {
            ts.iter()
                .filter(move |t| top_of(f) != top_of(t))
                .map(move |t| format!("  {} -> {}   ({f} -> {t})", top_of(f), top_of(t)))
        })
        .collect()
}

#[test]
fn module_imports_form_no_new_cycle() {
    let g = graph();
    assert!(g.values().any(|e| !e.is_empty()), "no edges read: {g:?}");
    // Cycles at both granularities: the layered modules' children, and the
    // top-level modules (see `top_level`).
    let mut found = cycles(&g);
    found.extend(cycles(&top_level(&g)));
    found.sort();
    found.dedup();
    let known: Vec<String> = KNOWN_CYCLES.iter().map(|s| s.to_string()).collect();
    let new: Vec<&String> = found.iter().filter(|c| !known.contains(c)).collect();
    let gone: Vec<&String> = known.iter().filter(|c| !found.contains(c)).collect();
    let edges = top_edges(&g);
    assert!(
        new.is_empty() && gone.is_empty(),
        "import cycles changed.\nnew (break them: a lower module must not name an upper one): {new:#?}\n\
         gone (remove from KNOWN_CYCLES): {gone:#?}\nedges between top-level modules:\n{}",
        edges.join("\n")
    );
}

#[test]
fn the_reader_sees_grouped_and_nested_crate_paths() {
    let code =
        "use crate::{config::Config, error::{Code, Error}};\nlet x = crate::engine::Status::Ok;";
    let got: Vec<Vec<String>> = crate_paths(code);
    let want: Vec<Vec<String>> = [
        vec!["config", "Config"],
        vec!["error"],
        vec!["engine", "Status"],
    ]
    .iter()
    .map(|v| v.iter().map(|s| s.to_string()).collect())
    .collect();
    assert_eq!(got, want);
}

#[test]
fn the_top_level_graph_sees_a_cycle_through_a_parent() {
    // `a::x -> b::y` and `b::z -> a` (a's mod.rs, which names x only by a
    // relative path): no cycle between these nodes, one between a and b.
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a::x", vec!["b::y"]),
        ("b::z", vec!["a"]),
        ("b::y", vec![]),
        ("a", vec![]),
    ]
    .into_iter()
    .map(|(f, ts)| (f.to_string(), ts.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(cycles(&g), Vec::<String>::new());
    assert_eq!(cycles(&top_level(&g)), vec!["a <-> b".to_string()]);
}

/// Every node reachable from the nodes of `top` (itself and its children).
fn reach(g: &BTreeMap<String, BTreeSet<String>>, top: &str) -> BTreeSet<String> {
    let inside = |n: &str| n == top || n.starts_with(&format!("{top}::"));
    let mut todo: Vec<String> = g.keys().filter(|n| inside(n)).cloned().collect();
    let mut seen = BTreeSet::new();
    while let Some(n) = todo.pop() {
        for m in g.get(&n).into_iter().flatten() {
            if seen.insert(m.clone()) {
                todo.push(m.clone());
            }
        }
    }
    seen
}

fn top_of(n: &str) -> &str {
    n.split("::").next().unwrap_or(n)
}

#[test]
fn mqtt_depends_on_neither_the_daemon_nor_the_engine() {
    let bad: Vec<String> = reach(&graph(), "mqtt")
        .into_iter()
        .filter(|n| ["daemon", "engine"].contains(&top_of(n)))
        .collect();
    assert!(bad.is_empty(), "mqtt reaches {bad:?}");
}

#[test]
fn protocol_imports_no_layer_above_it() {
    // Key ids and public keys are the protocol's (§1); config reads them
    // through protocol, not the reverse.
    let bad: Vec<String> = reach(&graph(), "protocol")
        .into_iter()
        .filter(|n| ["engine", "daemon", "mqtt", "identity", "config"].contains(&top_of(n)))
        .collect();
    assert!(bad.is_empty(), "protocol reaches {bad:?}");
}
