//! Image mode (PROTOCOL §6): the sshd inside a disk image is untrusted code.
//! These tests plant a static "sshd" in an image-like root that tries every
//! way out we know of (write the host directly, chroot + chdir(".."),
//! /proc/1/root, the network, signals) and prints a fake `sshd -T`, then run
//! accessd's real code path (no test runner in between) and check that the
//! host did not change and that the result does not pass the image's word
//! off as a trusted validation. A last test checks that the host's real
//! Debian sshd, copied into such a root, still validates confined.
//!
//! Everything the planted program aims at lives in this test's own temp
//! directory or is a `sleep` this test started: on code that does not
//! confine the binary, the attempts succeed there and nowhere else.

mod image_support;

#[path = "gate/mod.rs"]
mod gate;

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use accessd::confine::{ConfineError, Limits};
use accessd::ssh::sshd::{effective, set_sshd, SshdChange, SshdOptions};
use accessd::sys::{find_program, System};

use image_support::{c_str, compile_static, copy_host_sshd, skeleton};

fn ready() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let tools = [
        "gcc",
        "ldd",
        "sshd",
        "ssh-keygen",
        "sleep",
        "setpriv",
        "unshare",
        "mount",
    ]
    .iter()
    .all(|t| find_program(t).is_some());
    if root && tools {
        return true;
    }
    let why = format!(
        "needs root ({root}) and gcc, ldd, sshd, ssh-keygen, sleep, setpriv, unshare, mount ({tools})"
    );
    gate::require(false, &why)
}

/// The planted "sshd". HOST_DIR is a directory of this test on the host
/// (outside the image), PORT a listener of this test on 127.0.0.1, VICTIM
/// the pid of a `sleep` this test started. For `-T` it prints a dump that
/// claims passwords are off, whatever the config says.
const HOSTILE: &str = r#"
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static void put(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        (void)!write(fd, "pwned\n", 6);
        close(fd);
        fprintf(stderr, "wrote %s\n", path);
    }
}

static void slurp(const char *path, const char *copy_to) {
    char buf[4096];
    int in = open(path, O_RDONLY);
    if (in < 0) return;
    ssize_t n = read(in, buf, sizeof buf);
    close(in);
    if (n <= 0) return;
    int out = open(copy_to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out >= 0) { (void)!write(out, buf, n); close(out); }
}

int main(int argc, char **argv) {
    int dump = argc > 1 && strcmp(argv[1], "-T") == 0;

    /* The network, and a host process. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(PORT) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) == 0) {
        (void)!write(s, "pwned\n", 6);
        fprintf(stderr, "connected\n");
    }
    if (kill(VICTIM, SIGKILL) == 0) fprintf(stderr, "killed %d\n", VICTIM);

    /* Write the host straight away, then inside the image. */
    put(HOST_DIR "/direct");
    put("/etc/ssh/planted");
    put("/planted");
    /* Read a host file into the image. */
    slurp(HOST_DIR "/secret", "/etc/ssh/stolen");

    /* /proc/1/root is the host's root when /proc is the host's. */
    mount("proc", "/proc", "proc", 0, NULL);
    put("/proc/1/root" HOST_DIR "/via-proc");

    /* The classic chroot escape: chroot deeper, keep the cwd, climb out. */
    mkdir("/tmp/deeper", 0755);
    if (chroot("/tmp/deeper") == 0 || chroot("/etc") == 0) {
        for (int i = 0; i < 64; i++) (void)!chdir("..");
        if (chroot(".") == 0) fprintf(stderr, "escaped\n");
    }
    put(HOST_DIR "/via-chroot");
    mount("proc", "/proc", "proc", 0, NULL);
    put("/proc/1/root" HOST_DIR "/via-chroot-proc");

    if (dump) {
        printf("port 22\npubkeyauthentication yes\npasswordauthentication no\n"
               "kbdinteractiveauthentication no\npermitrootlogin no\nusepam yes\n");
    }
    return 0;
}
"#;

/// What the image has at /dev.
#[derive(Debug, Clone, Copy)]
enum Dev {
    Dir,
    Missing,
    /// A symlink to a host directory: mounting on it would cover the host's.
    HostLink,
}

/// A root holding the hostile sshd, with passwords on in its config.
struct Hostile {
    tmp: tempfile::TempDir,
    root: PathBuf,
    /// Host-side directory the binary aims at (outside the root).
    host_dir: PathBuf,
    listener: TcpListener,
    victim: Child,
    sys: System,
}

impl Hostile {
    fn new() -> Hostile {
        Hostile::build(Dev::Dir)
    }

    fn build(dev: Dev) -> Hostile {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("image");
        let host_dir = tmp.path().join("host");
        let state = tmp.path().join("state");
        fs::create_dir_all(&host_dir).unwrap();
        fs::create_dir_all(&state).unwrap();
        fs::write(host_dir.join("secret"), "host secret\n").unwrap();
        skeleton(&root);
        match dev {
            Dev::Dir => {}
            Dev::Missing => fs::remove_dir(root.join("dev")).unwrap(),
            Dev::HostLink => {
                fs::remove_dir(root.join("dev")).unwrap();
                std::os::unix::fs::symlink(&host_dir, root.join("dev")).unwrap();
            }
        }
        fs::write(
            root.join("etc/ssh/sshd_config"),
            "PasswordAuthentication yes\nUsePAM yes\n",
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let victim = Command::new("sleep").arg("600").spawn().unwrap();
        compile_static(
            HOSTILE,
            &[
                ("HOST_DIR", c_str(host_dir.to_str().unwrap())),
                ("PORT", listener.local_addr().unwrap().port().to_string()),
                ("VICTIM", victim.id().to_string()),
            ],
            &root.join("usr/sbin/sshd"),
        );
        // The production code path: the real process runner, nothing
        // wrapped around what accessd runs.
        let sys = System::new(&root, &state);
        Hostile {
            tmp,
            root,
            host_dir,
            listener,
            victim,
            sys,
        }
    }

    /// Run everything that makes accessd execute the image's sshd.
    fn run(&self) -> (accessd::ssh::sshd::Effective, String, bool) {
        let eff = effective(&self.sys, &SshdOptions::default()).unwrap();
        let change = SshdChange {
            password_authentication: Some(false),
            ..Default::default()
        };
        let (msg, validated) = match set_sshd(&self.sys, &SshdOptions::default(), &change, true) {
            Ok(o) => (o.message, o.validated),
            Err(e) => (e.to_string(), false),
        };
        (eff, msg, validated)
    }

    fn host_files(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.host_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn victim_alive(&mut self) -> bool {
        self.victim.try_wait().unwrap().is_none()
    }

    fn image_file(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        // Only the sleep this test started, by its pid.
        let _ = self.victim.kill();
        let _ = self.victim.wait();
        let _ = &self.tmp;
    }
}

#[test]
fn an_image_sshd_cannot_write_the_host() {
    if !ready() {
        return;
    }
    let h = Hostile::new();
    h.run();
    assert_eq!(
        h.host_files(),
        vec!["secret".to_string()],
        "the image's binary wrote into the host directory"
    );
    assert_eq!(
        fs::read_to_string(h.host_dir.join("secret")).unwrap(),
        "host secret\n"
    );
}

#[test]
fn an_image_sshd_cannot_write_its_own_image() {
    if !ready() {
        return;
    }
    let h = Hostile::new();
    h.run();
    for p in [
        "/etc/ssh/planted",
        "/planted",
        "/tmp/deeper",
        "/etc/ssh/stolen",
    ] {
        assert!(
            !h.image_file(p).exists(),
            "{p} was created in the image by its binary"
        );
    }
}

#[test]
fn an_image_sshd_cannot_reach_the_host_network() {
    if !ready() {
        return;
    }
    let h = Hostile::new();
    h.run();
    match h.listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((mut s, _)) => {
            let mut got = String::new();
            let _ = s.read_to_string(&mut got);
            panic!("the image's binary connected to 127.0.0.1 on the host: {got:?}");
        }
        Err(e) => panic!("accept: {e}"),
    }
}

#[test]
fn an_image_sshd_cannot_signal_host_processes() {
    if !ready() {
        return;
    }
    let mut h = Hostile::new();
    h.run();
    assert!(h.victim_alive(), "the image's binary killed a host process");
}

#[test]
fn an_image_sshd_is_not_reported_as_a_trusted_validation() {
    if !ready() {
        return;
    }
    let h = Hostile::new();
    let (eff, msg, validated) = h.run();
    // What the image's binary printed may be reported, but only under a
    // name that says whose word it is.
    assert_eq!(eff.source, "image sshd -T, confined", "{eff:?}");
    if validated {
        assert!(
            msg.contains("the image's own /usr/sbin/sshd, confined"),
            "{msg}"
        );
    }
}

#[test]
fn an_image_sshd_that_cannot_be_confined_is_not_run() {
    if !ready() {
        return;
    }
    // Without a /dev directory in the image there is nowhere to put
    // /dev/null, which sshd needs: confinement cannot be set up, so the
    // binary must not run at all (never a plain chroot instead).
    for dev in [Dev::Missing, Dev::HostLink] {
        let h = Hostile::build(dev);
        let (eff, msg, validated) = h.run();
        assert_eq!(h.host_files(), vec!["secret".to_string()], "{dev:?}");
        assert!(!validated, "{dev:?}: {msg}");
        assert_eq!(eff.source, "parsed", "{dev:?}: {eff:?}");
        assert!(msg.contains("could not be confined"), "{dev:?}: {msg}");
        assert!(!h.image_file("/etc/ssh/planted").exists(), "{dev:?}");
    }
}

fn ssh_keygen(root: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(root.join("etc/ssh/ssh_host_ed25519_key"))
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn the_real_sshd_still_validates_an_image_confined() {
    if !ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("image");
    let state = tmp.path().join("state");
    fs::create_dir_all(&state).unwrap();
    skeleton(&root);
    copy_host_sshd(&root);
    ssh_keygen(&root);
    fs::write(
        root.join("etc/ssh/sshd_config"),
        "Include /etc/ssh/sshd_config.d/*.conf\nPasswordAuthentication yes\nUsePAM yes\n",
    )
    .unwrap();
    fs::create_dir_all(root.join("etc/ssh/sshd_config.d")).unwrap();
    let sys = System::new(&root, &state);
    let change = SshdChange {
        password_authentication: Some(false),
        ..Default::default()
    };
    let out = set_sshd(&sys, &SshdOptions::default(), &change, true).unwrap();
    assert!(out.validated, "{}", out.message);
    assert!(
        out.message
            .contains("the image's own /usr/sbin/sshd, confined"),
        "{}",
        out.message
    );
    let eff = effective(&sys, &SshdOptions::default()).unwrap();
    assert_eq!(eff.source, "image sshd -T, confined");
    assert_eq!(eff.password_authentication.as_deref(), Some("no"));
    // The image itself was only changed by accessd: no /run/sshd left
    // behind, no files from sshd.
    assert!(!root.join("run/sshd").exists());

    // A config the image's sshd rejects still fails and rolls back.
    fs::write(
        root.join("etc/ssh/sshd_config.d/60-bad.conf"),
        "PasswordAuthentication maybe\n",
    )
    .unwrap();
    let before = fs::read(root.join("etc/ssh/sshd_config")).unwrap();
    let on = SshdChange {
        password_authentication: Some(true),
        ..Default::default()
    };
    let e = set_sshd(&sys, &SshdOptions::default(), &on, true).unwrap_err();
    assert_eq!(e.code(), accessd::error::Code::SshdInvalid, "{e}");
    assert!(e.to_string().contains("maybe"), "{e}");
    assert_eq!(fs::read(root.join("etc/ssh/sshd_config")).unwrap(), before);
}

/// An image holding `src` compiled as its /usr/sbin/sshd.
fn image_with(src: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("image");
    skeleton(&root);
    compile_static(src, &[], &root.join("usr/sbin/sshd"));
    (tmp, root)
}

fn run_confined(root: &Path, limits: Limits) -> Result<std::process::Output, ConfineError> {
    accessd::confine::run_in_image(root, Path::new("/usr/sbin/sshd"), &["-T".into()], limits)
}

#[test]
fn an_image_sshd_that_hangs_is_killed_at_the_time_limit() {
    if !ready() {
        return;
    }
    let (_tmp, root) = image_with("#include <unistd.h>\nint main(void){ for(;;) pause(); }\n");
    // A short limit so that the test does not wait for the default one.
    let limits = Limits {
        timeout: Duration::from_secs(1),
        ..Limits::SSHD
    };
    let e = run_confined(&root, limits).unwrap_err();
    assert_eq!(e, ConfineError::Timeout(Duration::from_secs(1)));
}

#[test]
fn an_image_sshd_that_floods_its_output_is_killed_at_the_size_limit() {
    if !ready() {
        return;
    }
    let (_tmp, root) = image_with(
        "#include <string.h>\n#include <unistd.h>\n\
         int main(void){ char b[4096]; memset(b, 'y', sizeof b); for(;;) (void)!write(1, b, sizeof b); }\n",
    );
    let e = run_confined(&root, Limits::SSHD).unwrap_err();
    assert_eq!(
        e,
        ConfineError::TooMuchOutput {
            stream: "stdout",
            limit: Limits::SSHD.max_stdout
        }
    );
}

#[test]
fn an_image_sshd_leaves_no_process_behind() {
    if !ready() {
        return;
    }
    // The binary forks a child that keeps stdout open and sleeps, and exits
    // at once. Its exit as pid 1 ends the namespace: the run returns with
    // its output instead of waiting out the sleeper or the time limit.
    let (_tmp, root) = image_with(
        "#include <stdio.h>\n#include <unistd.h>\n\
         int main(void){ if (fork() == 0) { sleep(600); return 0; } \
         printf(\"port 22\\n\"); fflush(stdout); return 0; }\n",
    );
    let out = run_confined(&root, Limits::SSHD).unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"port 22\n");
}

/// Set by [`run_half`] for the child half of a test that needs a process of
/// its own (fewer privileges, or a private mount namespace).
const HALF: &str = "ACCESSD_CONFINE_TEST_HALF";

/// Run the test `name` of this binary again, under `wrapper`, as its child
/// half; it must pass and print `done: NAME`, so a half that silently did
/// nothing fails the outer test.
fn run_half(name: &str, wrapper: &[&str]) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(wrapper[0])
        .args(&wrapper[1..])
        .arg(&exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(HALF, name)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name} under {wrapper:?}: {text}");
    assert!(text.contains(&format!("done: {name}")), "{name}: {text}");
}

fn is_half(name: &str) -> bool {
    std::env::var(HALF).as_deref() == Ok(name)
}

#[test]
fn an_image_sshd_is_not_run_without_the_privilege_to_confine_it() {
    if !ready() {
        return;
    }
    const NAME: &str = "an_image_sshd_is_not_run_without_the_privilege_to_confine_it";
    if !is_half(NAME) {
        // Root without CAP_SYS_ADMIN, as under a unit that forbids
        // namespaces: chroot would still work, confinement cannot.
        run_half(
            NAME,
            &[
                "setpriv",
                "--bounding-set",
                "-sys_admin",
                "--inh-caps",
                "-sys_admin",
                "--",
            ],
        );
        return;
    }
    let mut h = Hostile::new();
    let (eff, msg, validated) = h.run();
    assert_eq!(h.host_files(), vec!["secret".to_string()], "{msg}");
    assert!(h.victim_alive(), "the binary ran and killed a host process");
    assert!(!validated, "{msg}");
    assert!(
        msg.contains("could not be confined, so it was not run"),
        "{msg}"
    );
    assert_eq!(eff.source, "parsed");
    println!("done: {NAME}");
}

/// Reads /mnt/secret and tries to write /mnt/planted; for -T prints what
/// it read.
const PEEK: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
int main(void) {
    char buf[256] = {0};
    int fd = open("/mnt/secret", O_RDONLY);
    if (fd >= 0) { (void)!read(fd, buf, sizeof buf - 1); close(fd); }
    int w = open("/mnt/planted", O_WRONLY | O_CREAT, 0644);
    printf("read [%s] write %d\n", buf, w);
    return 0;
}
"#;

#[test]
fn mounts_under_the_image_stay_invisible_to_its_sshd() {
    if !ready() {
        return;
    }
    const NAME: &str = "mounts_under_the_image_stay_invisible_to_its_sshd";
    if !is_half(NAME) {
        // The bind mount below is made in a private mount namespace of the
        // child half, never in this machine's.
        run_half(NAME, &["unshare", "-m", "--propagation", "private", "--"]);
        return;
    }
    // An operator on a rescue host bind-mounts a host directory under the
    // image (as for /dev, /proc or a separate partition): the image's sshd
    // sees only the image's own filesystem, not what is mounted on it.
    let (tmp, root) = image_with(PEEK);
    let host = tmp.path().join("host");
    fs::create_dir_all(&host).unwrap();
    fs::write(host.join("secret"), "host secret").unwrap();
    fs::create_dir_all(root.join("mnt")).unwrap();
    let st = Command::new("mount")
        .arg("--bind")
        .arg(&host)
        .arg(root.join("mnt"))
        .status()
        .unwrap();
    assert!(st.success());
    let out = run_confined(&root, Limits::SSHD).unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.starts_with("read [] write -1"), "{said}");
    assert!(!host.join("planted").exists());
    println!("done: {NAME}");
}

#[test]
fn an_image_sshd_that_closes_its_output_and_hangs_is_killed_at_the_time_limit() {
    if !ready() {
        return;
    }
    // Closing stdout and stderr ends the reading; the time limit must
    // still hold while waiting for the process itself.
    let (_tmp, root) =
        image_with("#include <unistd.h>\nint main(void){ close(1); close(2); for(;;) pause(); }\n");
    let limits = Limits {
        timeout: Duration::from_secs(1),
        ..Limits::SSHD
    };
    let e = run_confined(&root, limits).unwrap_err();
    assert_eq!(e, ConfineError::Timeout(Duration::from_secs(1)));
}
