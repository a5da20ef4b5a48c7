//! sshd settings end to end: real layouts in temporary roots, checked with
//! the real `sshd -t`/`sshd -T`.
//!
//! How sshd sees a temp root without touching this machine: the root is an
//! "image that has an sshd" (PROTOCOL §6) — a copy of the host's real sshd
//! and its libraries (`image_support`) — so accessd runs that copy confined
//! to the root (`accessd::confine`), exactly as it would a mounted image's.
//! The independent oracle (`Env::sshd_t`) runs the host's sshd chrooted into
//! the root inside `unshare -m --propagation private` (a child process: the
//! test binary is multithreaded), with the host's /usr bound read-only,
//! /dev/null bound and a tmpfs /run holding /run/sshd. The mounts vanish
//! with the namespace.
//!
//! Restart is tested with a recording Runner (systemctl is never run) and a
//! restart_command pointing at a test script.

#[path = "gate/mod.rs"]
mod gate;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output};
use std::sync::{Arc, Mutex};

use accessd::error::Code;
use accessd::ssh::sshd::service::{self, Why};
use accessd::ssh::sshd::{
    effective, restart_sshd, set_sshd, PermitRootLogin, SshdChange, SshdOptions,
};
use accessd::sys::{find_program, Cmd, ProcessRunner, Runner, System};

mod image_support;

fn ready() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let tools = ["sshd", "ssh-keygen", "unshare", "chroot", "ldd"]
        .iter()
        .all(|t| find_program(t).is_some());
    if root && tools {
        return true;
    }
    let why = format!("needs root ({root}) and sshd, ssh-keygen, unshare, chroot, ldd ({tools})");
    gate::require(false, &why)
}

const NS_SCRIPT: &str = r#"set -e
r=$1; shift
mount --bind /usr "$r/usr"
mount -o remount,bind,ro "$r/usr"
mount --bind /dev/null "$r/dev/null"
mount -t tmpfs -o size=64k tmpfs "$r/run"
mkdir -m 0755 "$r/run/sshd"
exec "$@""#;

/// The oracle: runs `chroot ROOT ...` inside a private mount namespace where
/// ROOT has the host's /usr. Anything else is refused: a test must never
/// reach systemctl.
struct NsRunner;

impl Runner for NsRunner {
    fn run(&self, cmd: &Cmd) -> std::io::Result<Output> {
        if cmd.program != "chroot" {
            return Err(std::io::Error::other(format!(
                "test runner refuses {}",
                cmd.display()
            )));
        }
        let wrapped = Cmd::new("unshare")
            .args([
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                NS_SCRIPT,
                "sh",
            ])
            .arg(&cmd.args[0])
            .arg("chroot")
            .args(cmd.args.iter().cloned());
        ProcessRunner.run(&wrapped)
    }
}

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    sys: System,
}

fn debian_default() -> String {
    fs::read_to_string("/usr/share/openssh/sshd_config")
        .expect("openssh-server ships /usr/share/openssh/sshd_config")
}

impl Env {
    /// A root that looks like an image with sshd installed, holding `files`
    /// (paths under /etc/ssh; a trailing `/` makes a directory).
    fn new(files: &[(&str, String)], host_keys: bool, with_sshd: bool) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let state = tmp.path().join("state");
        for d in ["usr/sbin", "etc/ssh", "run", "dev"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::create_dir_all(&state).unwrap();
        for l in ["bin", "lib", "lib64", "sbin"] {
            symlink(format!("usr/{l}"), root.join(l)).unwrap();
        }
        if with_sshd {
            image_support::copy_host_sshd(&root);
        }
        fs::write(root.join("dev/null"), "").unwrap();
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
        if host_keys {
            let st = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(root.join("etc/ssh/ssh_host_ed25519_key"))
                .status()
                .unwrap();
            assert!(st.success());
        }
        for (path, text) in files {
            let p = root.join(path.trim_start_matches('/'));
            if path.ends_with('/') {
                fs::create_dir_all(&p).unwrap();
            } else {
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(&p, text).unwrap();
            }
        }
        let sys = System::new(&root, &state).with_runner(Arc::new(NsRunner));
        Env {
            _tmp: tmp,
            root,
            sys,
        }
    }

    /// Every file under etc/ssh with its bytes.
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.insert(p.clone(), fs::read(&p).unwrap());
                }
            }
        }
        let mut m = BTreeMap::new();
        walk(&self.root.join("etc/ssh"), &mut m);
        m
    }

    /// The real `sshd -T` of this root, independent of accessd's code.
    fn sshd_t(&self) -> BTreeMap<String, String> {
        let out = NsRunner
            .run(&Cmd::new("chroot").arg(&self.root).args([
                "/usr/sbin/sshd",
                "-T",
                "-f",
                "/etc/ssh/sshd_config",
            ]))
            .unwrap();
        assert!(
            out.status.success(),
            "sshd -T: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn p(&self, sys_path: &str) -> PathBuf {
        self.root.join(sys_path.trim_start_matches('/'))
    }
}

fn all_three() -> SshdChange {
    SshdChange {
        pubkey_authentication: Some(true),
        password_authentication: Some(false),
        permit_root_login: Some(PermitRootLogin::No),
    }
}

struct Layout {
    name: &'static str,
    files: Vec<(&'static str, String)>,
    change: SshdChange,
    /// Pre-existing files that must change (and be backed up).
    changed: &'static [&'static str],
    /// Files accessd must create.
    created: &'static [&'static str],
}

fn layouts() -> Vec<Layout> {
    const MAIN: &str = "/etc/ssh/sshd_config";
    const DROPIN: &str = "/etc/ssh/sshd_config.d/00-accessd.conf";
    let main = MAIN;
    vec![
        Layout {
            name: "Debian 12 default",
            files: vec![(main, debian_default()), ("/etc/ssh/sshd_config.d/", String::new())],
            change: all_three(),
            changed: &[],
            created: &[DROPIN],
        },
        Layout {
            name: "Ubuntu: Include first + 50-cloud-init.conf",
            files: vec![
                (main, debian_default()),
                (
                    "/etc/ssh/sshd_config.d/50-cloud-init.conf",
                    "PasswordAuthentication yes\n".into(),
                ),
            ],
            change: all_three(),
            changed: &[],
            created: &[DROPIN],
        },
        Layout {
            name: "setting only inside a Match block",
            files: vec![(
                main,
                "UsePAM yes\nSubsystem sftp /usr/lib/openssh/sftp-server\nMatch User alice\n\tPasswordAuthentication no\n\tPermitRootLogin no\n".into(),
            )],
            change: all_three(),
            changed: &[MAIN],
            created: &[],
        },
        Layout {
            name: "setting after the last Match",
            files: vec![(
                main,
                "PermitRootLogin yes\nUsePAM no\nMatch User bob\n\tX11Forwarding no\nPasswordAuthentication no\n".into(),
            )],
            change: all_three(),
            changed: &[MAIN],
            created: &[],
        },
        Layout {
            name: "lower-case keywords",
            files: vec![(
                main,
                "passwordauthentication yes\npermitrootlogin yes\npubkeyauthentication no\nkbdinteractiveauthentication no\n".into(),
            )],
            change: all_three(),
            changed: &[MAIN],
            created: &[],
        },
        Layout {
            name: "Include inside an include",
            files: vec![
                (main, "Include /etc/ssh/first.conf\nInclude sshd_config.d/*.conf\n".into()),
                ("/etc/ssh/first.conf", "Include /etc/ssh/inner/*.conf\n".into()),
                (
                    "/etc/ssh/inner/a.conf",
                    "PasswordAuthentication yes\nMatch User x\n\tPermitRootLogin yes\n".into(),
                ),
                ("/etc/ssh/sshd_config.d/", String::new()),
            ],
            change: all_three(),
            changed: &["/etc/ssh/inner/a.conf"],
            created: &[DROPIN],
        },
        Layout {
            name: "a drop-in that sorts before ours sets the value",
            files: vec![
                (main, debian_default()),
                ("/etc/ssh/sshd_config.d/00-aaa.conf", "PasswordAuthentication yes\n".into()),
                (
                    "/etc/ssh/sshd_config.d/50-cloud-init.conf",
                    "PasswordAuthentication yes\n".into(),
                ),
            ],
            change: all_three(),
            changed: &["/etc/ssh/sshd_config.d/00-aaa.conf"],
            created: &[DROPIN],
        },
        Layout {
            name: "old ChallengeResponseAuthentication alias with UsePAM",
            files: vec![(
                main,
                "UsePAM yes\nChallengeResponseAuthentication yes\nPasswordAuthentication yes\n".into(),
            )],
            change: all_three(),
            changed: &[MAIN],
            created: &[],
        },
        Layout {
            name: "no Include at all (RHEL 8 / Alibaba Cloud Linux 3, OpenSSH 8.0)",
            files: vec![(
                main,
                "HostKey /etc/ssh/ssh_host_ed25519_key\nSyslogFacility AUTHPRIV\nPermitRootLogin yes\n\
                 AuthorizedKeysFile\t.ssh/authorized_keys\nPasswordAuthentication yes\n\
                 ChallengeResponseAuthentication no\nGSSAPIAuthentication yes\nGSSAPICleanupCredentials no\n\
                 UsePAM yes\nX11Forwarding yes\nPrintMotd no\nAcceptEnv LANG LC_CTYPE\n\
                 Subsystem\tsftp\t/usr/libexec/openssh/sftp-server\n"
                    .into(),
            )],
            change: SshdChange {
                permit_root_login: Some(PermitRootLogin::ProhibitPassword),
                ..all_three()
            },
            changed: &[MAIN],
            created: &[],
        },
    ]
}

fn expected_values(change: &SshdChange) -> Vec<(&'static str, &'static str)> {
    let yn = |b: bool| if b { "yes" } else { "no" };
    let mut v = Vec::new();
    if let Some(b) = change.pubkey_authentication {
        v.push(("pubkeyauthentication", yn(b)));
    }
    if let Some(b) = change.password_authentication {
        v.push(("passwordauthentication", yn(b)));
    }
    if let Some(p) = change.permit_root_login {
        v.push((
            "permitrootlogin",
            match p {
                PermitRootLogin::Yes => "yes",
                PermitRootLogin::No => "no",
                // sshd 9.2 prints the old name of the same value.
                PermitRootLogin::ProhibitPassword => "without-password",
            },
        ));
    }
    v
}

#[test]
fn effective_value_equals_request_for_real_layouts() {
    if !ready() {
        return;
    }
    for layout in layouts() {
        let env = Env::new(&layout.files, true, true);
        let before = env.snapshot();
        let out = set_sshd(&env.sys, &SshdOptions::default(), &layout.change, true)
            .unwrap_or_else(|e| panic!("{}: {e}", layout.name));
        assert!(out.validated, "{}: {}", layout.name, out.message);
        assert!(!out.restarted, "{}: not live, never restarted", layout.name);

        // The real sshd agrees, asked independently.
        let t = env.sshd_t();
        for (k, v) in expected_values(&layout.change) {
            assert_eq!(
                t.get(k).map(String::as_str),
                Some(v),
                "{}: {k}",
                layout.name
            );
        }
        // With UsePAM on, passwords off means keyboard-interactive off too.
        if t["usepam"] == "yes" {
            assert_eq!(t["kbdinteractiveauthentication"], "no", "{}", layout.name);
        }

        // Exactly the expected files changed; each changed one has a backup
        // holding its old bytes; everything else is byte for byte the same.
        let changed: Vec<PathBuf> = layout
            .changed
            .iter()
            .chain(layout.created)
            .map(PathBuf::from)
            .collect();
        let mut reported = out.changed_files.clone();
        reported.sort();
        let mut want = changed.clone();
        want.sort();
        assert_eq!(reported, want, "{}", layout.name);
        let after = env.snapshot();
        for (p, bytes) in &before {
            let sys_path = Path::new("/").join(p.strip_prefix(&env.root).unwrap());
            if layout.changed.iter().any(|c| Path::new(c) == sys_path) {
                assert_ne!(&after[p], bytes, "{}: {}", layout.name, p.display());
                let bak = PathBuf::from(format!("{}.bak", p.display()));
                assert_eq!(
                    &after[&bak],
                    bytes,
                    "{}: backup of {}",
                    layout.name,
                    p.display()
                );
            } else {
                assert_eq!(&after[p], bytes, "{}: {} changed", layout.name, p.display());
            }
        }
        for c in layout.created {
            assert!(
                after.contains_key(&env.p(c)),
                "{}: {c} created",
                layout.name
            );
        }
        assert_eq!(
            after.len(),
            before.len() + layout.created.len() + layout.changed.len(),
            "{}: no other files",
            layout.name
        );

        // Applying the same request again changes nothing.
        let again = set_sshd(&env.sys, &SshdOptions::default(), &layout.change, false).unwrap();
        assert!(
            again.changed_files.is_empty(),
            "{}: {:?}",
            layout.name,
            again.changed_files
        );
        assert_eq!(env.snapshot(), after, "{}", layout.name);

        let eff = effective(&env.sys, &SshdOptions::default()).unwrap();
        assert_eq!(eff.source, "image sshd -T, confined");
        assert_eq!(eff.password_authentication.as_deref(), Some("no"));
    }
}

#[test]
fn broken_dropin_rolls_back_every_file_byte_for_byte() {
    if !ready() {
        return;
    }
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            "new drop-in, a broken 60-bad.conf",
            vec![
                ("/etc/ssh/sshd_config", debian_default()),
                (
                    "/etc/ssh/sshd_config.d/50-cloud-init.conf",
                    "PasswordAuthentication yes\n".into(),
                ),
                (
                    "/etc/ssh/sshd_config.d/60-bad.conf",
                    "PasswordAuthentication maybe\n".into(),
                ),
            ],
        ),
        (
            "main file edited, a broken include after it",
            vec![
                (
                    "/etc/ssh/sshd_config",
                    "passwordauthentication yes\nInclude /etc/ssh/sshd_config.d/*.conf\n".into(),
                ),
                (
                    "/etc/ssh/sshd_config.d/10-bad.conf",
                    "NoSuchKeyword yes\n".into(),
                ),
            ],
        ),
    ];
    for (name, files) in cases {
        let env = Env::new(&files, true, true);
        let before = env.snapshot();
        let listing = |env: &Env| -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(env.p("/etc/ssh/sshd_config.d"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
        let names = listing(&env);
        let change = SshdChange {
            password_authentication: Some(false),
            ..Default::default()
        };
        let e = set_sshd(&env.sys, &SshdOptions::default(), &change, true).unwrap_err();
        assert_eq!(e.code(), Code::SshdInvalid, "{name}: {e}");
        assert!(e.to_string().contains("sshd"), "{name}: {e}");
        assert_eq!(
            env.snapshot(),
            before,
            "{name}: files restored byte for byte"
        );
        assert_eq!(listing(&env), names, "{name}: set of drop-ins unchanged");
    }
}

#[test]
fn missing_host_keys_are_reported_and_nothing_changes() {
    if !ready() {
        return;
    }
    let env = Env::new(
        &[
            ("/etc/ssh/sshd_config", debian_default()),
            ("/etc/ssh/sshd_config.d/", String::new()),
        ],
        false,
        true,
    );
    let before = env.snapshot();
    let e = set_sshd(&env.sys, &SshdOptions::default(), &all_three(), false).unwrap_err();
    assert_eq!(e.code(), Code::SshdInvalid);
    assert!(e.to_string().contains("ssh-keygen -A"), "{e}");
    assert_eq!(env.snapshot(), before);
    // The image's sshd got its /run/sshd in a tmpfs of its confinement:
    // the image itself is not written for it.
    assert!(!env.p("/run/sshd").exists());
}

#[test]
fn image_without_sshd_is_changed_without_validation_and_says_so() {
    if !ready() {
        return;
    }
    let env = Env::new(
        &[
            ("/etc/ssh/sshd_config", debian_default()),
            (
                "/etc/ssh/sshd_config.d/50-cloud-init.conf",
                "PasswordAuthentication yes\n".into(),
            ),
        ],
        true,
        false,
    );
    let out = set_sshd(&env.sys, &SshdOptions::default(), &all_three(), true).unwrap();
    assert!(!out.validated);
    assert!(out.message.contains("not validated"), "{}", out.message);
    let eff = effective(&env.sys, &SshdOptions::default()).unwrap();
    assert_eq!(eff.source, "parsed");
    assert_eq!(eff.password_authentication.as_deref(), Some("no"));
    assert_eq!(eff.permit_root_login.as_deref(), Some("no"));
    // The parse agrees with the real sshd on the same files (the oracle
    // brings the host's /usr, so the image needs no sshd of its own).
    let t = env.sshd_t();
    assert_eq!(t["passwordauthentication"], "no");
    assert_eq!(t["permitrootlogin"], "no");
}

/// A systemd that knows a few units, records every command, and changes a
/// unit's state as `systemctl start/restart/reload` would. It also answers
/// `sshd -t` (accessd checks the files before a restart). Nothing real is
/// ever run.
struct Systemctl {
    /// unit → `systemctl show` text (Id, ActiveState, LoadState, CanReload, SubState)
    units: Mutex<BTreeMap<String, String>>,
    /// The start/restart/reload job fails (exit 1).
    fail_job: bool,
    /// The job succeeds, but the unit is `failed` afterwards (sshd died).
    dies: bool,
    /// `sshd -t` refuses the files.
    bad_config: bool,
    log: Mutex<Vec<String>>,
}

impl Systemctl {
    fn new(units: &[(&str, &str)]) -> Systemctl {
        Systemctl {
            units: Mutex::new(
                units
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            fail_job: false,
            dies: false,
            bad_config: false,
            log: Mutex::new(Vec::new()),
        }
    }
}

fn output(code: i32, stdout: &str, stderr: &str) -> Output {
    use std::os::unix::process::ExitStatusExt;
    Output {
        status: ExitStatus::from_raw(code << 8),
        stdout: stdout.as_bytes().to_vec(),
        stderr: stderr.as_bytes().to_vec(),
    }
}

impl Runner for Systemctl {
    fn run(&self, cmd: &Cmd) -> std::io::Result<Output> {
        self.log.lock().unwrap().push(cmd.display());
        let args: Vec<String> = cmd
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        if cmd.program == "/usr/sbin/sshd" {
            assert_eq!(args[0], "-t", "{}", cmd.display());
            return Ok(if self.bad_config {
                output(
                    255,
                    "",
                    "/etc/ssh/sshd_config line 3: Bad configuration option: Nonsense",
                )
            } else {
                output(0, "", "")
            });
        }
        assert_eq!(
            cmd.program,
            OsString::from("systemctl"),
            "{}",
            cmd.display()
        );
        let mut units = self.units.lock().unwrap();
        match args[0].as_str() {
            "show" => Ok(output(
                0,
                units.get(&args[3]).map_or(
                    "LoadState=not-found\nActiveState=inactive\n",
                    String::as_str,
                ),
                "",
            )),
            "start" | "restart" | "reload" if self.fail_job => Ok(output(
                1,
                "",
                "Job for ssh.service failed because the control process exited",
            )),
            "start" | "restart" | "reload" => {
                let unit = units.get_mut(&args[1]).expect("a known unit");
                let state = if self.dies {
                    "ActiveState=failed\nSubState=failed"
                } else {
                    "ActiveState=active\nSubState=running"
                };
                *unit = unit
                    .lines()
                    .filter(|l| !l.starts_with("ActiveState=") && !l.starts_with("SubState="))
                    .chain([state])
                    .collect::<Vec<_>>()
                    .join("\n");
                Ok(output(0, "", ""))
            }
            // What systemd does with it: a stopped unit stays stopped.
            "try-reload-or-restart" => Ok(output(0, "", "")),
            other => panic!("unexpected systemctl {other}"),
        }
    }
}

fn live(runner: Arc<dyn Runner>) -> System {
    // Root "/" makes the System live; only the runner is ever used here.
    System::new("/", "/nonexistent-state").with_runner(runner)
}

const SSH_ACTIVE: &str = "Id=ssh.service\nActiveState=active\nLoadState=loaded\nCanReload=yes\n";
const SSH_STOPPED: &str = "Id=ssh.service\nActiveState=inactive\nLoadState=loaded\nCanReload=yes\n";
const DETECT_SSH: &str = "systemctl show -p Id,ActiveState,LoadState,CanReload ssh.service";
const DETECT_SSHD: &str = "systemctl show -p Id,ActiveState,LoadState,CanReload sshd.service";
const SSHD_T: &str = "/usr/sbin/sshd -t -f /etc/ssh/sshd_config";

/// (case, units, why, commands run, message)
type RestartCase<'a> = (
    &'a str,
    &'a [(&'a str, &'a str)],
    Why,
    &'a [&'a str],
    &'a str,
);

#[test]
fn restart_detects_the_unit_says_what_it_did_and_never_reaches_the_real_systemctl() {
    let cases: &[RestartCase] = &[
        (
            "set_sshd, Debian/Ubuntu: a running ssh.service is reloaded",
            &[("ssh.service", SSH_ACTIVE)],
            Why::Apply,
            &[
                DETECT_SSH,
                "systemctl reload ssh.service",
                "systemctl show -p ActiveState,SubState ssh.service",
            ],
            "reloaded ssh.service; it is running",
        ),
        (
            "set_sshd, RHEL/SUSE/Alibaba: sshd.service",
            &[(
                "sshd.service",
                "Id=sshd.service\nActiveState=active\nLoadState=loaded\nCanReload=yes\n",
            )],
            Why::Apply,
            &[
                DETECT_SSH,
                DETECT_SSHD,
                "systemctl reload sshd.service",
                "systemctl show -p ActiveState,SubState sshd.service",
            ],
            "reloaded sshd.service; it is running",
        ),
        (
            "set_sshd, a unit that cannot reload is restarted",
            &[(
                "ssh.service",
                "Id=ssh.service\nActiveState=active\nLoadState=loaded\nCanReload=no\n",
            )],
            Why::Apply,
            &[
                DETECT_SSH,
                "systemctl restart ssh.service",
                "systemctl show -p ActiveState,SubState ssh.service",
            ],
            "restarted ssh.service; it is running",
        ),
        (
            "restart_sshd restarts a running sshd after sshd -t",
            &[("ssh.service", SSH_ACTIVE)],
            Why::Restart,
            &[
                DETECT_SSH,
                SSHD_T,
                "systemctl restart ssh.service",
                "systemctl show -p ActiveState,SubState ssh.service",
            ],
            "restarted ssh.service; it is running",
        ),
        (
            "Ubuntu 22.10+: socket-activated, no sshd running yet",
            &[
                ("ssh.service", SSH_STOPPED),
                ("ssh.socket", "ActiveState=active\n"),
            ],
            Why::Restart,
            &[DETECT_SSH, "systemctl show -p ActiveState ssh.socket"],
            "ssh.socket is active: the next connection starts sshd",
        ),
    ];
    for (name, units, why, cmds, message) in cases {
        let runner = Arc::new(Systemctl::new(units));
        let what = service::restart(&live(runner.clone()), &SshdOptions::default(), *why)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(*runner.log.lock().unwrap(), *cmds, "{name}");
        assert!(what.contains(message), "{name}: {what}");
    }
}

#[test]
fn restart_sshd_starts_a_stopped_sshd() {
    let runner = Arc::new(Systemctl::new(&[("ssh.service", SSH_STOPPED)]));
    let what = restart_sshd(&live(runner.clone()), &SshdOptions::default()).unwrap();
    assert_eq!(
        *runner.log.lock().unwrap(),
        [
            DETECT_SSH,
            "systemctl show -p ActiveState ssh.socket",
            "systemctl start ssh.service",
            "systemctl show -p ActiveState,SubState ssh.service",
        ]
    );
    assert_eq!(
        what,
        "started ssh.service (it was not running); it is running"
    );
}

#[test]
fn restart_sshd_whose_sshd_does_not_stay_up_is_restart_failed() {
    for (name, fail_job, dies, text) in [
        ("the job fails", true, false, "control process exited"),
        (
            "the job succeeds, sshd dies",
            false,
            true,
            "not running afterwards (ActiveState=failed",
        ),
    ] {
        for units in [SSH_ACTIVE, SSH_STOPPED] {
            let runner = Arc::new(Systemctl {
                fail_job,
                dies,
                ..Systemctl::new(&[("ssh.service", units)])
            });
            let e = restart_sshd(&live(runner), &SshdOptions::default()).unwrap_err();
            assert_eq!(e.code(), Code::RestartFailed, "{name}");
            assert!(e.to_string().contains(text), "{name}: {e}");
        }
    }
    let e = restart_sshd(
        &live(Arc::new(Systemctl::new(&[]))),
        &SshdOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.code(), Code::RestartFailed);
    assert!(e.to_string().contains("restart_command"), "{e}");
}

/// A restart stops the listener before ExecStartPre's `sshd -t` runs: with
/// files sshd refuses, the remedy would take sshd down.
#[test]
fn restart_sshd_never_restarts_a_running_sshd_into_files_sshd_refuses() {
    let runner = Arc::new(Systemctl {
        bad_config: true,
        ..Systemctl::new(&[("ssh.service", SSH_ACTIVE)])
    });
    let e = restart_sshd(&live(runner.clone()), &SshdOptions::default()).unwrap_err();
    assert_eq!(e.code(), Code::RestartFailed);
    assert!(
        e.to_string()
            .contains("keeps serving the configuration it read before")
            && e.to_string().contains("Bad configuration option"),
        "{e}"
    );
    assert_eq!(*runner.log.lock().unwrap(), [DETECT_SSH, SSHD_T]);
}

/// A restart_command in a temp dir, and an sshd_config naming a PidFile
/// there (the check after the command reads it; nothing of the host's).
struct RestartCommand {
    tmp: tempfile::TempDir,
}

impl RestartCommand {
    fn new() -> RestartCommand {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(
            tmp.path().join("sshd_config"),
            format!("PidFile {}/sshd.pid\n", tmp.path().display()),
        )
        .unwrap();
        // A process whose name is sshd: a copy of sleep(1).
        fs::copy("/bin/sleep", tmp.path().join("sshd")).unwrap();
        RestartCommand { tmp }
    }

    fn script(&self, name: &str, body: &str) -> SshdOptions {
        let p = self.tmp.path().join(name);
        fs::write(
            &p,
            format!("#!/bin/sh\nd={}\n{body}", self.tmp.path().display()),
        )
        .unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        SshdOptions {
            config: self.tmp.path().join("sshd_config"),
            restart_command: Some(vec![p.display().to_string(), "arg1".into()]),
            ..Default::default()
        }
    }
}

impl Drop for RestartCommand {
    fn drop(&mut self) {
        // End the fake sshd this test started, by its pid.
        if let Ok(pid) = fs::read_to_string(self.tmp.path().join("sshd.pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

#[test]
fn restart_command_wins_and_its_stderr_is_reported() {
    let rc = RestartCommand::new();
    let sys = live(Arc::new(ProcessRunner));
    let ok = rc.script(
        "ok.sh",
        "echo \"$1\" > \"$d/ran\"\n\"$d/sshd\" 60 </dev/null >/dev/null 2>&1 &\necho $! > \"$d/sshd.pid\"\n",
    );
    let what = restart_sshd(&sys, &ok).unwrap();
    assert!(what.contains("ok.sh arg1"), "{what}");
    assert!(what.contains("sshd is running (pid "), "{what}");
    assert_eq!(
        fs::read_to_string(rc.tmp.path().join("ran")).unwrap(),
        "arg1\n"
    );
    let bad = rc.script("bad.sh", "echo 'sshd: cannot bind' >&2\nexit 3\n");
    let e = restart_sshd(&sys, &bad).unwrap_err();
    assert_eq!(e.code(), Code::RestartFailed);
    assert!(e.to_string().contains("sshd: cannot bind"), "{e}");
}

/// Exit status 0 is the command's word, not sshd's: with no live sshd in
/// the PidFile afterwards the result is restart_failed.
#[test]
fn restart_command_that_leaves_no_sshd_running_is_restart_failed() {
    let rc = RestartCommand::new();
    let sys = live(Arc::new(ProcessRunner));
    for (name, body) in [
        ("no pid file", "exit 0\n"),
        ("a pid that is not sshd", "echo $$ > \"$d/sshd.pid\"\n"),
    ] {
        let opts = rc.script("noop.sh", body);
        let e = restart_sshd(&sys, &opts).unwrap_err();
        assert_eq!(e.code(), Code::RestartFailed, "{name}");
        assert!(
            e.to_string().contains("sshd is not running afterwards"),
            "{name}: {e}"
        );
    }
}

#[test]
fn not_live_never_restarts() {
    let runner = Arc::new(Systemctl::new(&[]));
    let sys = System::new("/tmp/not-root", "/tmp/s").with_runner(runner.clone());
    let msg = restart_sshd(&sys, &SshdOptions::default()).unwrap();
    assert!(msg.contains("no service restarted"), "{msg}");
    assert!(runner.log.lock().unwrap().is_empty());
}

#[test]
fn second_backup_is_timestamped_and_first_is_kept() {
    if !ready() {
        return;
    }
    let mut env = Env::new(
        &[(
            "/etc/ssh/sshd_config",
            "PasswordAuthentication yes\nUsePAM no\n".into(),
        )],
        true,
        true,
    );
    // 2026-11-29T20:00:00Z
    env.sys = env
        .sys
        .clone()
        .with_clock(Arc::new(accessd::sys::FixedClock::at_unix(1_795_982_400)));
    let main = env.p("/etc/ssh/sshd_config");
    let original = fs::read(&main).unwrap();
    let off = SshdChange {
        password_authentication: Some(false),
        ..Default::default()
    };
    set_sshd(&env.sys, &SshdOptions::default(), &off, false).unwrap();
    let after_first = fs::read(&main).unwrap();
    let on = SshdChange {
        password_authentication: Some(true),
        ..Default::default()
    };
    let out = set_sshd(&env.sys, &SshdOptions::default(), &on, false).unwrap();
    let stamped = env.p("/etc/ssh/sshd_config.bak.20261129T200000Z");
    assert_eq!(
        out.backups,
        vec![PathBuf::from("/etc/ssh/sshd_config.bak.20261129T200000Z")]
    );
    assert_eq!(
        fs::read(env.p("/etc/ssh/sshd_config.bak")).unwrap(),
        original
    );
    assert_eq!(fs::read(stamped).unwrap(), after_first);
    assert_eq!(env.sshd_t()["passwordauthentication"], "yes");
}

/// `sshd -T -C SPEC` of this root, independent of accessd's code.
fn sshd_t_c(env: &Env, spec: &str) -> BTreeMap<String, String> {
    let out = NsRunner
        .run(&Cmd::new("chroot").arg(&env.root).args([
            "/usr/sbin/sshd",
            "-T",
            "-C",
            spec,
            "-f",
            "/etc/ssh/sshd_config",
        ]))
        .unwrap();
    assert!(
        out.status.success(),
        "sshd -T -C {spec}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Accounts for `Match Group`: sshd asks getgrouplist, which in the chroot
/// reads the root's files.
fn with_accounts(env: &Env) {
    fs::write(
        env.p("/etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nsshd:x:102:65534::/run/sshd:/usr/sbin/nologin\n\
         alice:x:1000:1000::/home/alice:/bin/sh\nbob:x:1001:1001::/home/bob:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        env.p("/etc/group"),
        "root:x:0:\nnogroup:x:65534:\nalice:x:1000:\nbob:x:1001:\nadmins:x:2000:bob\n",
    )
    .unwrap();
}

/// Match blocks of every kind sshd 8.4..10.0 accepts, each turning all
/// three settings back on, with a connection spec written by hand for each
/// (the oracle does not use accessd's spec builder).
const EVERY_KIND_OF_MATCH: &str = "\
UsePAM no
Include /etc/ssh/sshd_config.d/*.conf
Match User alice
\tPasswordAuthentication yes
Match Group admins
\tPubkeyAuthentication no
\tPermitRootLogin yes
Match Host *.example.com,!bad.example.com
\tPasswordAuthentication yes
Match Address 127.0.0.0/8,10.0.0.0/8,!10.9.0.0/16
\tPasswordAuthentication yes
\tPermitRootLogin yes
Match LocalAddress 192.0.2.0/24 LocalPort 2222
\tPermitRootLogin=yes
Match RDomain vrf*
\tPasswordAuthentication yes
Match User *,!root Address 198.51.100.*
\tpasswordauthentication YES
Match User carol
\tInclude /etc/ssh/inner.conf
Match all
\tPubkeyAuthentication no
";

/// Included inside `Match User carol`: its own block applies only when both match.
const INNER_CONF: &str = "\
PasswordAuthentication yes
Match Address 203.0.113.0/24
\tPermitRootLogin yes
";

const HAND_SPECS: &[&str] = &[
    "user=alice,host=h,addr=192.0.2.50,laddr=192.0.2.1,lport=22",
    "user=bob,host=h,addr=192.0.2.50,laddr=192.0.2.1,lport=22",
    "user=dave,host=www.example.com,addr=192.0.2.50,laddr=192.0.2.1,lport=22",
    "user=dave,host=h,addr=127.0.0.1,laddr=127.0.0.1,lport=22",
    "user=dave,host=h,addr=10.1.2.3,laddr=127.0.0.1,lport=22",
    "user=dave,host=h,addr=192.0.2.50,laddr=192.0.2.7,lport=2222",
    "user=dave,host=h,addr=192.0.2.50,laddr=192.0.2.1,lport=22,rdomain=vrf1",
    "user=dave,host=h,addr=198.51.100.9,laddr=192.0.2.1,lport=22",
    "user=carol,host=h,addr=192.0.2.50,laddr=192.0.2.1,lport=22",
    "user=carol,host=h,addr=203.0.113.5,laddr=192.0.2.1,lport=22",
    "user=root,host=h,addr=192.0.2.50,laddr=192.0.2.1,lport=22",
];

#[test]
fn set_sshd_holds_in_every_match_block_context() {
    if !ready() {
        return;
    }
    let env = Env::new(
        &[
            ("/etc/ssh/sshd_config", EVERY_KIND_OF_MATCH.into()),
            ("/etc/ssh/inner.conf", INNER_CONF.into()),
            (
                "/etc/ssh/sshd_config.d/50-cloud-init.conf",
                "PasswordAuthentication yes\n".into(),
            ),
        ],
        true,
        true,
    );
    with_accounts(&env);
    // The fixture does what it says: each spec sees a value turned back on.
    for spec in HAND_SPECS {
        let t = sshd_t_c(&env, spec);
        assert!(
            t["passwordauthentication"] == "yes"
                || t["permitrootlogin"] == "yes"
                || t["pubkeyauthentication"] == "no",
            "fixture: {spec} sees nothing to change"
        );
    }
    let before = env.snapshot();
    let change = SshdChange {
        pubkey_authentication: Some(true),
        password_authentication: Some(false),
        permit_root_login: Some(PermitRootLogin::No),
    };
    let out = set_sshd(&env.sys, &SshdOptions::default(), &change, false).unwrap();
    for spec in HAND_SPECS.iter().copied().chain(["lport=22"]) {
        let t = sshd_t_c(&env, spec);
        assert_eq!(t["passwordauthentication"], "no", "{spec}");
        assert_eq!(t["pubkeyauthentication"], "yes", "{spec}");
        assert_eq!(t["permitrootlogin"], "no", "{spec}");
    }
    // Every changed block is listed (the blocks inside inner.conf included),
    // with the file backed up first.
    let listed: Vec<&str> = out
        .match_blocks
        .iter()
        .map(|b| b.criteria.as_str())
        .collect();
    assert_eq!(
        listed,
        [
            "User alice",
            "Group admins",
            "Host *.example.com,!bad.example.com",
            "Address 127.0.0.0/8,10.0.0.0/8,!10.9.0.0/16",
            "LocalAddress 192.0.2.0/24 LocalPort 2222",
            "RDomain vrf*",
            "User *,!root Address 198.51.100.*",
            "User carol",
            "Address 203.0.113.0/24",
            "all",
        ],
        "{:#?}",
        out.match_blocks
    );
    let inner = out
        .match_blocks
        .iter()
        .find(|b| b.criteria == "Address 203.0.113.0/24")
        .unwrap();
    assert_eq!(inner.within, ["User carol"]);
    assert_eq!(inner.file, Path::new("/etc/ssh/inner.conf"));
    for f in ["/etc/ssh/sshd_config", "/etc/ssh/inner.conf"] {
        assert_eq!(
            fs::read(env.p(&format!("{f}.bak"))).unwrap(),
            before[&env.p(f)],
            "backup of {f}"
        );
    }
    // sshd was asked about each block (`Match all` shares the global
    // context's connection), and none was left out.
    assert!(out.unverified.is_empty(), "{:?}", out.unverified);
    assert_eq!(out.verified.len(), 10, "{:?}", out.verified);
    // The same request again changes nothing.
    let snap = env.snapshot();
    let again = set_sshd(&env.sys, &SshdOptions::default(), &change, false).unwrap();
    assert!(again.changed_files.is_empty() && again.match_blocks.is_empty());
    assert_eq!(env.snapshot(), snap);
}

/// The connection accessd builds for a Match block is one the real sshd
/// applies that block to: each block alone sets a marker (`MaxSessions 7`),
/// and `sshd -T -C <accessd's spec>` must report it.
#[test]
fn the_connection_built_for_a_match_block_is_one_sshd_applies_it_to() {
    use accessd::ssh::sshd::matching::{parse_criteria, spec_for, Accounts};
    if !ready() {
        return;
    }
    let blocks = [
        "User alice",
        "User *,!root",
        "User a*,b?b,!bad*",
        "Group admins",
        "Group *,!alice User b*",
        "Host *.example.com,!bad.example.com",
        "Host WEB?.Example.COM",
        "Address 10.0.0.0/8,!10.0.0.0/9",
        "Address 192.168.1.*",
        "Address 2001:db8::/32",
        "Address 127.0.0.1",
        "LocalAddress ::1",
        "LocalAddress 192.0.2.0/24 LocalPort 2222",
        "LocalPort 22",
        "RDomain vrf-*",
        "User alice Address 203.0.113.0/24 Host *.example.net",
        "all",
        // OpenSSH 10.0 syntax; skipped where sshd -t refuses it.
        "User=alice Address=198.51.100.0/24",
        "invalid-user",
    ];
    let env = Env::new(&[("/etc/ssh/sshd_config", String::new())], true, true);
    with_accounts(&env);
    let accounts = Accounts::parse(
        &fs::read(env.p("/etc/passwd")).unwrap(),
        &fs::read(env.p("/etc/group")).unwrap(),
    );
    let mut checked = 0;
    for block in blocks {
        fs::write(
            env.p("/etc/ssh/sshd_config"),
            format!("MaxSessions 10\nMatch {block}\n\tMaxSessions 7\n"),
        )
        .unwrap();
        let t = NsRunner
            .run(&Cmd::new("chroot").arg(&env.root).args([
                "/usr/sbin/sshd",
                "-t",
                "-f",
                "/etc/ssh/sshd_config",
            ]))
            .unwrap();
        if !t.status.success() {
            eprintln!("this sshd refuses Match {block}: skipped");
            continue;
        }
        let args: Vec<String> = block.split_whitespace().map(str::to_owned).collect();
        let spec = spec_for(&[parse_criteria(&args)], &accounts, 22)
            .unwrap_or_else(|e| panic!("Match {block}: {e}"));
        let values = sshd_t_c(&env, &spec.to_arg());
        assert_eq!(
            values["maxsessions"],
            "7",
            "Match {block}: sshd -T -C {} does not apply the block",
            spec.to_arg()
        );
        checked += 1;
    }
    assert!(checked >= blocks.len() - 2, "only {checked} blocks checked");
    // Blocks no connection satisfies are reported, not guessed.
    for block in [
        "User !root",
        "Group nosuchgroup",
        "LocalPort 22 LocalPort 23",
    ] {
        let args: Vec<String> = block.split_whitespace().map(str::to_owned).collect();
        assert!(
            spec_for(&[parse_criteria(&args)], &accounts, 22).is_err(),
            "Match {block}"
        );
    }
}

/// A block no connection can satisfy (a group nobody is in; negations
/// only, which sshd never matches) is still changed — a user may join the
/// group tomorrow — and the result says it was not verified, never that it was.
#[test]
fn a_match_block_no_connection_satisfies_is_changed_and_reported_unverified() {
    if !ready() {
        return;
    }
    let env = Env::new(
        &[(
            "/etc/ssh/sshd_config",
            "UsePAM no\nPasswordAuthentication no\nMatch Group nosuchgroup\n\tPasswordAuthentication yes\n\
             Match User !root\n\tPasswordAuthentication yes\n"
                .into(),
        )],
        true,
        true,
    );
    let change = SshdChange {
        password_authentication: Some(false),
        ..Default::default()
    };
    let out = set_sshd(&env.sys, &SshdOptions::default(), &change, false).unwrap();
    assert_eq!(
        fs::read_to_string(env.p("/etc/ssh/sshd_config")).unwrap(),
        "UsePAM no\nPasswordAuthentication no\nMatch Group nosuchgroup\n\tPasswordAuthentication no\n\
         Match User !root\n\tPasswordAuthentication no\n"
    );
    let reasons: Vec<(&str, &str)> = out
        .unverified
        .iter()
        .map(|u| (u.criteria.as_str(), u.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(reasons[0].0, "Group nosuchgroup");
    assert!(reasons[0].1.contains("no user"), "{reasons:?}");
    assert_eq!(reasons[1].0, "User !root");
    assert!(reasons[1].1.contains("negated"), "{reasons:?}");
    assert!(
        out.message.contains("2 Match block(s) not verified"),
        "{}",
        out.message
    );
    // The oracle agrees for the one context sshd can be asked about.
    assert_eq!(env.sshd_t()["passwordauthentication"], "no");
}

/// sshd expands `Include /etc/ssh/*/x.conf` with glob(3); accessd reads
/// wildcards in the last component only. A Match block in such a file is
/// one accessd cannot see, so it would answer ok while sshd re-enables the
/// setting for that block: it must refuse instead and change nothing.
#[test]
fn set_sshd_refuses_a_config_whose_includes_it_cannot_read_instead_of_answering_ok() {
    if !ready() {
        return;
    }
    let env = Env::new(
        &[
            (
                "/etc/ssh/sshd_config",
                "UsePAM no\nPasswordAuthentication no\nInclude /etc/ssh/*/x.conf\n".into(),
            ),
            (
                "/etc/ssh/d1/x.conf",
                "Match User alice\n\tPasswordAuthentication yes\n".into(),
            ),
        ],
        true,
        true,
    );
    // The fixture: sshd reads that file.
    assert_eq!(
        sshd_t_c(&env, "user=alice,lport=22")["passwordauthentication"],
        "yes"
    );
    let before = env.snapshot();
    let change = SshdChange {
        password_authentication: Some(false),
        ..Default::default()
    };
    match set_sshd(&env.sys, &SshdOptions::default(), &change, false) {
        Ok(out) => panic!(
            "ok, while sshd -T -C user=alice says passwordauthentication {}: {}",
            sshd_t_c(&env, "user=alice,lport=22")["passwordauthentication"],
            out.message
        ),
        Err(e) => {
            assert_eq!(e.code(), Code::SshdInvalid, "{e}");
            assert!(e.to_string().contains("/etc/ssh/*/x.conf"), "{e}");
        }
    }
    assert_eq!(env.snapshot(), before);
}
