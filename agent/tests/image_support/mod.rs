//! Image-like roots for the image-mode sshd tests (PROTOCOL §6): a temp
//! directory that holds a *copy* of the host's real sshd and the libraries
//! it links (never a bind mount or a hard link: the confined sshd sees only
//! the image's own filesystem, and a test must never be able to write the
//! host's /usr through its image), or a static binary compiled from C.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The directories and merged-/usr symlinks of a Debian image, plus the
/// account files sshd -t looks up (its privilege separation user).
pub fn skeleton(root: &Path) {
    for d in [
        "usr/sbin", "usr/lib", "usr/bin", "etc/ssh", "run", "dev", "proc", "tmp",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    for l in ["bin", "lib", "lib64", "sbin"] {
        fs::create_dir_all(root.join("usr").join(l)).unwrap();
        symlink(format!("usr/{l}"), root.join(l)).unwrap();
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nsshd:x:102:65534::/run/sshd:/usr/sbin/nologin\n",
    )
    .unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    fs::write(
        root.join("etc/nsswitch.conf"),
        "passwd: files\ngroup: files\n",
    )
    .unwrap();
}

/// Copy the host's /usr/sbin/sshd and every library `ldd` lists into the
/// same paths under `root`.
pub fn copy_host_sshd(root: &Path) {
    let sshd = Path::new("/usr/sbin/sshd");
    let out = Command::new("ldd").arg(sshd).output().unwrap();
    assert!(out.status.success(), "ldd /usr/sbin/sshd");
    let mut files = vec![sshd.to_path_buf()];
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        if let Some(p) = path {
            files.push(p);
        }
    }
    // The targets of a merged-/usr root's lib, lib64, bin and sbin links.
    for d in ["lib", "lib64", "bin", "sbin"] {
        fs::create_dir_all(root.join("usr").join(d)).unwrap();
    }
    for f in files {
        let dest = root.join(f.strip_prefix("/").unwrap());
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        // fs::copy follows the library's symlink chain to the real file.
        fs::copy(&f, &dest).unwrap_or_else(|e| panic!("copying {}: {e}", f.display()));
    }
}

/// `gcc -static` the C program `src` to `out` (mode 0755).
pub fn compile_static(src: &str, defines: &[(&str, String)], out: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("prog.c");
    fs::write(&c, src).unwrap();
    let mut cmd = Command::new("gcc");
    cmd.args(["-static", "-O1", "-o"]).arg(out).arg(&c);
    for (k, v) in defines {
        cmd.arg(format!("-D{k}={v}"));
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    fs::set_permissions(out, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A C string literal for a -D define.
pub fn c_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
