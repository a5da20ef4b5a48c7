//! The binaries under test, found where cargo built them.

use std::fs;
use std::path::{Path, PathBuf};

/// The built `accessd` (`ACCESSD_BIN` overrides).
pub fn accessd_bin() -> PathBuf {
    product_bin("accessd", "ACCESSD_BIN")
}

/// The built `accessctl` (`ACCESSCTL_BIN` overrides).
pub fn accessctl_bin() -> PathBuf {
    product_bin("accessctl", "ACCESSCTL_BIN")
}

/// Cargo gives integration tests only their own package's binaries, so the
/// product binaries are found next to this test executable:
/// `<target>/<profile>/deps/<test>` → `<target>/<profile>/<name>`. This
/// follows CARGO_TARGET_DIR and the profile without reading either.
fn product_bin(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{env}={} does not name a file", p.display());
        return p;
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            candidates.push(profile_dir.join(name));
        }
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("debug").join(name));
    }
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => {
            assert_not_stale(p);
            p.clone()
        }
        None => panic!(
            "the {name} binary was not found (looked at {}); the e2e suite drives the built \
             binaries: run `cargo build --workspace --bins` first, or set {env}",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `cargo test -p accessd-e2e` alone does not rebuild the product, and a
/// stale binary makes every scenario lie; refuse one older than any source
/// file of the agent crate (when the sources are there to compare with).
fn assert_not_stale(bin: &Path) {
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src");
    let Ok(built) = fs::metadata(bin).and_then(|m| m.modified()) else {
        return;
    };
    let mut stack = vec![sources];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if fs::metadata(&p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > built)
            {
                panic!(
                    "{} is older than {}: run `cargo build --workspace --bins` first \
                     (`cargo test --workspace` does it too)",
                    bin.display(),
                    p.display()
                );
            }
        }
    }
}
