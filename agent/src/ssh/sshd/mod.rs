//! sshd_config: make the *effective* value of an option what a command asks,
//! with backup, `sshd -t` validation, rollback and a service restart.
//!
//! - [`config`]: the one parser that reads and edits sshd_config and its
//!   Include files, and decides where a value must be written.
//! - [`service`]: unit detection, reload/restart/start, and the check that
//!   sshd runs afterwards.
//!
//! - [`matching`]: a connection that satisfies each Match block, for
//!   `sshd -T -C`.
//!
//! Order of a change: plan every edit in memory (the global value, and the
//! keyword inside every Match block that sets it) → back up each existing
//! file that changes → write (atomically) → `sshd -t` → `sshd -T` and
//! `sshd -T -C <a connection each Match block applies to>` must report the
//! requested values → reload/restart. Any failure after the first write
//! restores every changed file byte for byte and removes every file accessd
//! created; a failed reload/restart is followed by another one, so that sshd
//! serves the restored configuration.

pub mod config;
pub mod matching;
pub mod service;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::confine;
use crate::error::{Error, IoContext, Result};
use crate::fsx::{Dir, Meta};
use crate::sys::{Cmd, System};

use self::config::{same_value, Config, MatchEdit};
use self::matching::{free_port, parse_criteria, spec_for, Accounts, Criterion};

/// The drop-in accessd writes when the drop-in directory is read first.
pub const DROPIN_NAME: &str = "00-accessd.conf";

/// `[sshd]` in accessd.toml (PROTOCOL §6).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SshdOptions {
    /// Main config file, an absolute system path (resolved under the root).
    pub config: PathBuf,
    /// The sshd binary used for `sshd -t` and `sshd -T`.
    pub binary: PathBuf,
    /// Run instead of `systemctl reload/restart/start <detected unit>`; a
    /// live sshd in the PidFile must follow.
    pub restart_command: Option<Vec<String>>,
}

impl Default for SshdOptions {
    fn default() -> Self {
        SshdOptions {
            config: PathBuf::from("/etc/ssh/sshd_config"),
            binary: PathBuf::from("/usr/sbin/sshd"),
            restart_command: None,
        }
    }
}

/// `PermitRootLogin`, named as sshd_config, the protocol and `accessctl
/// sign set-sshd --permit-root-login` write it (`prohibit-password`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PermitRootLogin {
    Yes,
    No,
    ProhibitPassword,
}

/// The settings a `set_sshd` command asks for; `None` leaves one alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshdChange {
    pub pubkey_authentication: Option<bool>,
    pub password_authentication: Option<bool>,
    pub permit_root_login: Option<PermitRootLogin>,
}

/// Effective values (as `sshd -T` prints them: `yes`, `no`, `prohibit-password`...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Effective {
    pub pubkey_authentication: Option<String>,
    pub password_authentication: Option<String>,
    pub permit_root_login: Option<String>,
    /// `sshd -T` when sshd could be asked, `parsed` when read from the files.
    pub source: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SshdOutcome {
    pub changed_files: Vec<PathBuf>,
    pub backups: Vec<PathBuf>,
    /// The Match blocks in which a keyword was changed.
    pub match_blocks: Vec<MatchBlockChange>,
    pub validated: bool,
    /// The connection contexts sshd was asked about (`sshd -T ...`), each
    /// of which reported every requested value.
    pub verified: Vec<String>,
    /// Match blocks for which no connection could be built, and why.
    pub unverified: Vec<UnverifiedBlock>,
    /// The service was reloaded, restarted or started (see `message`);
    /// false when nothing had to run (socket activation, no sshd yet).
    pub restarted: bool,
    pub message: String,
}

/// A Match block whose keywords `set_sshd` changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchBlockChange {
    /// The file and 1-based line of the `Match` line.
    pub file: PathBuf,
    pub line: usize,
    /// What follows `Match` on that line.
    pub criteria: String,
    /// The Match blocks around it (an Include inside a block), outermost first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub within: Vec<String>,
    /// The keywords changed in it (as `set_sshd` names them).
    pub keywords: Vec<String>,
    /// `file:line` of each changed directive.
    pub lines: Vec<String>,
}

/// A Match block that `sshd -T -C` could not be asked about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnverifiedBlock {
    pub file: PathBuf,
    pub line: usize,
    pub criteria: String,
    pub reason: String,
}

pub fn set_sshd(
    sys: &System,
    opts: &SshdOptions,
    change: &SshdChange,
    restart: bool,
) -> Result<SshdOutcome> {
    let root = Dir::open(&sys.root)?;
    let mut cfg = Config::load(&root, &opts.config)?;
    let plan = plan(&mut cfg, change)?;

    let mut outcome = SshdOutcome {
        match_blocks: describe_match_edits(&cfg, &plan.match_edits),
        ..Default::default()
    };
    let mut undo = Undo::default();
    let applied = write_plan(sys, &root, &cfg, &mut undo, &mut outcome)
        .and_then(|()| validate(sys, &root, opts, &cfg, &plan.wanted));
    let validation = match applied {
        Ok(v) => v,
        Err(e) => {
            let rollback = undo.rollback(&root);
            return Err(with_rollback(e, rollback));
        }
    };
    // What a reader must see comes first (a result too large for
    // max_result_bytes keeps only the start of its message); the lists of
    // changed files and blocks come last.
    let mut notes = Vec::new();
    let mut lists = Vec::new();
    if outcome.changed_files.is_empty() {
        notes.push("the requested values were already in effect".to_owned());
    } else {
        lists.push(format!(
            "changed {}",
            outcome
                .changed_files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !outcome.match_blocks.is_empty() {
        lists.push(format!(
            "changed inside {}",
            outcome
                .match_blocks
                .iter()
                .map(|b| format!("Match {}", b.criteria))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    match validation {
        Validation::Checked {
            verified,
            unverified,
            who,
        } => {
            outcome.validated = true;
            notes.push(format!("validated by {who}"));
            notes.push(format!(
                "sshd -T reports the requested values in {} connection context(s)",
                verified.len()
            ));
            if !unverified.is_empty() {
                notes.push(format!(
                    "{} Match block(s) not verified (data.unverified says why)",
                    unverified.len()
                ));
            }
            for u in &unverified {
                lists.push(format!(
                    "not verified for Match {} ({} line {}): {}",
                    u.criteria,
                    u.file.display(),
                    u.line,
                    u.reason
                ));
            }
            outcome.verified = verified;
            outcome.unverified = unverified;
        }
        Validation::Skipped(why) => notes.push(format!("not validated: {why}")),
    }
    if restart && sys.is_live() {
        match service::restart_acted(sys, opts, service::Why::Apply) {
            Ok((what, acted)) => {
                outcome.restarted = acted;
                notes.push(what);
            }
            Err(e) => {
                // PROTOCOL §4: a failed command leaves every file as it was.
                // The reload may have failed after sshd had re-read the new
                // files (or it died on them): it must read the old ones
                // again, or it serves a configuration no file holds.
                let rollback = undo.rollback(&root);
                if rollback.is_err() {
                    return Err(with_rollback(e, rollback));
                }
                let again = service::restart(sys, opts, service::Why::Apply);
                return Err(Error::RestartFailed(match again {
                    Ok(what) => format!(
                        "{e}; every file was restored, and then the old configuration was applied: {what}"
                    ),
                    Err(e2) => format!(
                        "{e}; every file was restored, but applying the old configuration failed too: {e2}"
                    ),
                }));
            }
        }
    } else if restart {
        notes.push("no service restarted: root is not the running system".to_owned());
    } else if sys.is_live() && !outcome.changed_files.is_empty() {
        notes.push(
            "sshd was not reloaded (restart: false): it serves the old settings until it is"
                .to_owned(),
        );
    }
    notes.extend(lists);
    outcome.message = notes.join("; ");
    Ok(outcome)
}

/// Restart the ssh service (detected unit, or the configured command).
/// Returns a short description of what was run.
pub fn restart_sshd(sys: &System, opts: &SshdOptions) -> Result<String> {
    service::restart(sys, opts, service::Why::Restart)
}

/// `sshd -t` of the live configuration, before a restart would act on it.
/// /run/sshd is not created here: a running sshd under systemd has it.
fn check_config(sys: &System, opts: &SshdOptions) -> Result<()> {
    let root = Dir::open(&sys.root)?;
    if let Some(base) = sshd_command(sys, &root, opts)? {
        run_sshd(sys, &base, opts, "-t")?;
    }
    Ok(())
}

pub fn effective(sys: &System, opts: &SshdOptions) -> Result<Effective> {
    let root = Dir::open(&sys.root)?;
    if let Some(base) = sshd_command(sys, &root, opts)? {
        prepare_runtime(&root, &base)?;
        let spec = Config::load(&root, &opts.config)
            .ok()
            .and_then(|cfg| base_spec(&match_chains(&cfg)));
        if let Ok(values) = sshd_dump(sys, &base, opts, spec.as_deref()) {
            let get = |k: &str| values.get(k).cloned();
            return Ok(Effective {
                pubkey_authentication: get("pubkeyauthentication"),
                password_authentication: get("passwordauthentication"),
                permit_root_login: get("permitrootlogin"),
                source: base.source().into(),
            });
        }
    }
    let cfg = Config::load(&root, &opts.config)?;
    // OpenSSH's compiled-in defaults when no file sets the option.
    let get = |k: &str, default: &str| Some(cfg.value(&[k]).unwrap_or_else(|| default.into()));
    Ok(Effective {
        pubkey_authentication: get("pubkeyauthentication", "yes"),
        password_authentication: get("passwordauthentication", "yes"),
        permit_root_login: get("permitrootlogin", "prohibit-password"),
        source: "parsed".into(),
    })
}

/// The edits made to the model: what `sshd -T` must report afterwards, and
/// the directives changed inside Match blocks.
struct Plan {
    wanted: Vec<(&'static str, String)>,
    match_edits: Vec<(&'static str, MatchEdit)>,
}

/// Edit the model so that each requested value holds globally and inside
/// every Match block.
fn plan(cfg: &mut Config, change: &SshdChange) -> Result<Plan> {
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let mut wanted = Vec::new();
    if let Some(v) = change.pubkey_authentication {
        wanted.push(("PubkeyAuthentication", &[][..], yes_no(v)));
    }
    if let Some(v) = change.password_authentication {
        wanted.push(("PasswordAuthentication", &[][..], yes_no(v)));
    }
    if let Some(v) = change.permit_root_login {
        let s = match v {
            PermitRootLogin::Yes => "yes",
            PermitRootLogin::No => "no",
            PermitRootLogin::ProhibitPassword => "prohibit-password",
        };
        // `without-password` is the old spelling of the same option value.
        wanted.push(("PermitRootLogin", &[][..], s.to_owned()));
    }
    // With UsePAM, keyboard-interactive asks PAM, and PAM asks for the
    // password: "passwords off" must switch that path off too (UsePAM is
    // global only, so the files' global value is sshd's).
    if change.password_authentication == Some(false)
        && cfg
            .value(&["usepam"])
            .is_some_and(|v| same_value(&v, "yes"))
    {
        wanted.push((
            "KbdInteractiveAuthentication",
            &["challengeresponseauthentication"][..],
            "no".to_owned(),
        ));
    }
    let mut match_edits = Vec::new();
    for (kw, aliases, value) in &wanted {
        cfg.set(kw, aliases, value, Some(DROPIN_NAME))?;
        match_edits.extend(
            cfg.set_in_matches(kw, aliases, value)
                .into_iter()
                .map(|e| (*kw, e)),
        );
    }
    Ok(Plan {
        wanted: wanted.into_iter().map(|(kw, _, v)| (kw, v)).collect(),
        match_edits,
    })
}

/// A Match line's criteria as written, for results and messages.
fn criteria_text(cfg: &Config, (file, line): (usize, usize)) -> String {
    cfg.match_args(file, line).join(" ")
}

/// The changed Match blocks, in reading order, one entry per block.
fn describe_match_edits(
    cfg: &Config,
    edits: &[(&'static str, MatchEdit)],
) -> Vec<MatchBlockChange> {
    let mut out: Vec<(Vec<(usize, usize)>, MatchBlockChange)> = Vec::new();
    for (kw, e) in edits {
        let at = format!("{}:{}", cfg.files[e.file].path.display(), e.line + 1);
        if let Some((_, b)) = out.iter_mut().find(|(ctx, _)| *ctx == e.context) {
            if !b.keywords.iter().any(|k| k == kw) {
                b.keywords.push((*kw).to_owned());
            }
            b.lines.push(at);
            continue;
        }
        let (outer, _) = e.context.split_at(e.context.len() - 1);
        out.push((
            e.context.clone(),
            MatchBlockChange {
                file: cfg.files[e.block.0].path.clone(),
                line: e.block.1 + 1,
                criteria: criteria_text(cfg, e.block),
                within: outer.iter().map(|&m| criteria_text(cfg, m)).collect(),
                keywords: vec![(*kw).to_owned()],
                lines: vec![at],
            },
        ));
    }
    let order = cfg.match_blocks();
    out.sort_by_key(|(ctx, _)| order.iter().position(|c| c == ctx));
    out.into_iter().map(|(_, b)| b).collect()
}

/// What to undo when a later step fails.
#[derive(Default)]
struct Undo {
    /// (directory, name, original bytes, original metadata)
    restore: Vec<(PathBuf, String, Vec<u8>, Meta)>,
    /// Files accessd created (new drop-ins and backups).
    created: Vec<(PathBuf, String)>,
}

impl Undo {
    /// Put every file back; report what could not be restored.
    fn rollback(&self, root: &Dir) -> Result<()> {
        let mut failures = Vec::new();
        for (dir, name, bytes, meta) in &self.restore {
            let r = root
                .open_dir(dir)
                .and_then(|d| d.write_atomic(name, bytes, meta));
            if let Err(e) = r {
                failures.push(e.to_string());
            }
        }
        for (dir, name) in &self.created {
            let r = root.open_dir(dir).and_then(|d| {
                d.remove_file(name)?;
                d.sync()
            });
            if let Err(e) = r {
                failures.push(e.to_string());
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::RollbackIncomplete(format!(
                "rolling back sshd configuration: {}",
                failures.join("; ")
            )))
        }
    }
}

/// A failure, with the rollback's own failure appended when it had one.
fn with_rollback(e: Error, rollback: Result<()>) -> Error {
    match rollback {
        Ok(()) => e,
        // One "(rollback incomplete)", after both failures.
        Err(Error::RollbackIncomplete(r)) => {
            Error::RollbackIncomplete(format!("{e}; and then {r}"))
        }
        Err(r) => Error::RollbackIncomplete(format!("{e}; and then {r}")),
    }
}

fn split_path(p: &Path) -> Result<(PathBuf, String)> {
    match (p.parent(), p.file_name().and_then(|n| n.to_str())) {
        (Some(d), Some(n)) => Ok((d.to_path_buf(), n.to_owned())),
        _ => Err(Error::unsafe_path(p, "not a file path")),
    }
}

/// Back up and write every file the plan changed, recording how to undo.
fn write_plan(
    sys: &System,
    root: &Dir,
    cfg: &Config,
    undo: &mut Undo,
    outcome: &mut SshdOutcome,
) -> Result<()> {
    for f in cfg.files.iter().filter(|f| f.changed()) {
        let (dir_path, name) = split_path(&f.path)?;
        let dir = root.open_dir(&dir_path)?;
        let new = f.render();
        match &f.original {
            Some((bytes, meta)) => {
                let backup = backup_name(sys, &dir, cfg, &dir_path, &name)?;
                dir.write_atomic(&backup, bytes, meta)?;
                undo.created.push((dir_path.clone(), backup.clone()));
                outcome.backups.push(dir_path.join(&backup));
                undo.restore
                    .push((dir_path.clone(), name.clone(), bytes.clone(), meta.clone()));
                dir.write_atomic(&name, &new, meta)?;
            }
            None => {
                if dir.stat_at(&name)?.is_some() {
                    return Err(Error::unsafe_path(
                        dir.display(&name),
                        "appeared while the change was being prepared",
                    ));
                }
                // Recorded first: a failed write may still leave the name.
                undo.created.push((dir_path.clone(), name.clone()));
                dir.write_atomic(&name, &new, &Meta::new(0, 0, 0o644))?;
            }
        }
        outcome.changed_files.push(f.path.clone());
    }
    Ok(())
}

/// `X.bak`, as the console docs do; `X.bak.<UTC time>` when `X.bak` exists.
/// A name an Include pattern would read (e.g. `Include d/*`) gets a leading
/// dot, which glob(3) wildcards never match, so sshd never reads a backup.
fn backup_name(
    sys: &System,
    dir: &Dir,
    cfg: &Config,
    dir_path: &Path,
    name: &str,
) -> Result<String> {
    let stamp = humantime::format_rfc3339_seconds(sys.clock.now())
        .to_string()
        .replace(['-', ':'], "");
    let mut candidates = vec![format!("{name}.bak"), format!("{name}.bak.{stamp}")];
    candidates.extend((1..100).map(|i| format!("{name}.bak.{stamp}.{i}")));
    for c in candidates {
        let c = if cfg.is_included(&dir_path.join(&c)) {
            format!(".{c}")
        } else {
            c
        };
        if dir.stat_at(&c)?.is_none() {
            return Ok(c);
        }
    }
    Err(Error::Internal(format!(
        "choosing a backup name for {}: {name}.bak and the 100 names after it exist already",
        dir.display(name).display()
    )))
}

enum Validation {
    Checked {
        verified: Vec<String>,
        unverified: Vec<UnverifiedBlock>,
        /// Which sshd answered (see [`SshdCmd::who`]).
        who: String,
    },
    Skipped(String),
}

/// How this root's sshd is run (PROTOCOL §6). Every invocation (`-t`, `-T`,
/// `-T -C ...`) goes through [`run_sshd`], so an image's binary is always
/// confined.
#[derive(Debug, Clone)]
enum SshdCmd {
    /// The running system's configured sshd, through the [`System`]'s runner.
    Host(Cmd),
    /// The image's own binary: untrusted code, run by [`crate::confine`]
    /// with no power over the host, never chrooted as root.
    Image {
        program: PathBuf,
        args: Vec<std::ffi::OsString>,
    },
}

impl SshdCmd {
    fn arg(self, a: impl Into<std::ffi::OsString>) -> Self {
        match self {
            SshdCmd::Host(c) => SshdCmd::Host(c.arg(a)),
            SshdCmd::Image { program, mut args } => {
                args.push(a.into());
                SshdCmd::Image { program, args }
            }
        }
    }

    fn display(&self) -> String {
        match self {
            SshdCmd::Host(c) => c.display(),
            SshdCmd::Image { program, args } => {
                format!("the image's {} (confined)", confine::display(program, args))
            }
        }
    }

    /// Which sshd answered, for results: an image's binary may print
    /// anything, so its word is never passed off as the host's sshd.
    fn who(&self) -> String {
        match self {
            SshdCmd::Host(c) => c.program.to_string_lossy().into_owned(),
            SshdCmd::Image { program, .. } => {
                format!("the image's own {}, confined", program.display())
            }
        }
    }

    /// [`Effective::source`] for values this sshd's `-T` printed.
    fn source(&self) -> &'static str {
        match self {
            SshdCmd::Host(_) => "sshd -T",
            SshdCmd::Image { .. } => "image sshd -T, confined",
        }
    }
}

/// How to run this root's sshd: the configured binary on the live system;
/// the image's own sshd, confined to the image, otherwise (PROTOCOL §6);
/// `None` when the image has none.
fn sshd_command(sys: &System, root: &Dir, opts: &SshdOptions) -> Result<Option<SshdCmd>> {
    if sys.is_live() {
        return Ok(Some(SshdCmd::Host(Cmd::new(&opts.binary))));
    }
    let (dir, name) = split_path(&opts.binary)?;
    let present = match root.try_open_dir(&dir) {
        Ok(Some(d)) => d.stat_at(&name)?.is_some_and(|st| {
            nix::sys::stat::SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT)
                == nix::sys::stat::SFlag::S_IFREG
        }),
        Ok(None) | Err(_) => false,
    };
    Ok(present.then(|| SshdCmd::Image {
        program: opts.binary.clone(),
        args: Vec::new(),
    }))
}

/// sshd refuses to start (even for -t) without its privilege separation
/// directory, which systemd creates only while ssh.service runs. An image's
/// sshd gets one in a tmpfs of its confinement instead: the image is not
/// written for it.
fn prepare_runtime(root: &Dir, cmd: &SshdCmd) -> Result<()> {
    if let SshdCmd::Image { .. } = cmd {
        return Ok(());
    }
    if let Some(run) = root.try_open_dir("run")? {
        if run.stat_at("sshd")?.is_none() {
            run.create_dir("sshd", &Meta::new(0, 0, 0o755))?;
        }
    }
    Ok(())
}

/// What running sshd came to: its stdout, or the reason an image's sshd
/// never ran (it could not be confined, or not be executed), so that
/// [`validate`] can tell "not validated" from "sshd said no". This used to
/// ride inside an `Error::Io` as a made-up `io::Error`; an `Io` error is
/// one the OS gave.
enum Ran {
    Out(Vec<u8>),
    /// The command as displayed, and why it did not run.
    NotRun {
        cmd: String,
        why: String,
    },
}

/// At most this much of sshd's stderr goes into a message: an image's
/// binary chooses those bytes.
const STDERR_IN_MESSAGE: usize = 2000;

fn explain_sshd_failure(stderr: &str) -> String {
    let mut s: String = stderr
        .trim()
        .chars()
        .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
        .take(STDERR_IN_MESSAGE)
        .collect();
    if stderr.trim().chars().count() > STDERR_IN_MESSAGE {
        s.push_str(" [...]");
    }
    if s.contains("no hostkeys available") || s.contains("Unable to load host key") {
        format!("sshd has no usable host keys (create them with `ssh-keygen -A`): {s}")
    } else if s.contains("privilege separation directory") {
        format!("sshd's /run/sshd is missing or unsafe: {s}")
    } else {
        s
    }
}

fn run_sshd(sys: &System, base: &SshdCmd, opts: &SshdOptions, flag: &str) -> Result<Vec<u8>> {
    run_sshd_args(sys, base, opts, &[flag])
}

/// [`try_run_sshd_args`], with an image's sshd that did not run an error
/// ([`Error::Program`]: accessd's own program step failed, not the OS).
fn run_sshd_args(
    sys: &System,
    base: &SshdCmd,
    opts: &SshdOptions,
    args: &[&str],
) -> Result<Vec<u8>> {
    match try_run_sshd_args(sys, base, opts, args)? {
        Ran::Out(out) => Ok(out),
        // The text an `Io` error with this context showed.
        Ran::NotRun { cmd, why } => Err(Error::Program(format!("running {cmd}: {why}"))),
    }
}

/// `sshd ARGS -f CONFIG` through the command [`sshd_command`] built: the
/// runner for the running system's sshd, [`confine`] for an image's.
fn try_run_sshd_args(
    sys: &System,
    base: &SshdCmd,
    opts: &SshdOptions,
    args: &[&str],
) -> Result<Ran> {
    let cmd = args
        .iter()
        .fold(base.clone(), |c, a| c.arg(*a))
        .arg("-f")
        .arg(&opts.config);
    let out = match &cmd {
        SshdCmd::Host(c) => sys
            .runner
            .run(c)
            .ctx(|| format!("running {}", cmd.display()))?,
        SshdCmd::Image { program, args } => {
            match confine::run_in_image(&sys.root, program, args, confine::Limits::SSHD) {
                Ok(out) => out,
                Err(e) if e.not_run() => {
                    let why = if let confine::ConfineError::Exec(errno) = e {
                        format!(
                            "the image's {} could not be executed ({errno}), so sshd did not run",
                            program.display()
                        )
                    } else {
                        format!(
                            "the image's {} could not be confined, so it was not run: {e}",
                            program.display()
                        )
                    };
                    return Ok(Ran::NotRun {
                        cmd: cmd.display(),
                        why,
                    });
                }
                // It ran and misbehaved (too long, too much output): no answer.
                Err(e) => {
                    return Err(Error::SshdInvalid(format!(
                        "{} gave no answer: {e}",
                        cmd.display()
                    )))
                }
            }
        }
    };
    if !out.status.success() {
        return Err(Error::SshdInvalid(format!(
            "{} failed: {}",
            cmd.display(),
            explain_sshd_failure(&String::from_utf8_lossy(&out.stderr))
        )));
    }
    Ok(Ran::Out(out.stdout))
}

/// Longest `sshd -T` value kept. Real ones are short words; an image's
/// binary could print a megabyte that would then land in a result.
const MAX_DUMP_VALUE: usize = 256;

/// `sshd -T [-C SPEC]` as keyword → first value. A line whose value is too
/// long or holds control characters is dropped (as if sshd had not
/// printed it).
fn sshd_dump(
    sys: &System,
    base: &SshdCmd,
    opts: &SshdOptions,
    spec: Option<&str>,
) -> Result<BTreeMap<String, String>> {
    let out = match spec {
        Some(spec) => run_sshd_args(sys, base, opts, &["-T", "-C", spec])?,
        None => run_sshd(sys, base, opts, "-T")?,
    };
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
        .filter(|(_, v)| v.len() <= MAX_DUMP_VALUE && !v.chars().any(char::is_control))
        .collect())
}

/// A Match block (its Match line: file, line) and the criteria of every
/// Match line it is inside, outermost first, its own last.
type MatchChain = ((usize, usize), Vec<Vec<Criterion>>);

/// Every Match block's criteria chain.
fn match_chains(cfg: &Config) -> Vec<MatchChain> {
    cfg.match_blocks()
        .into_iter()
        .filter_map(|chain| {
            let inner = *chain.last()?;
            let criteria = chain
                .iter()
                .map(|&(f, l)| parse_criteria(&cfg.match_args(f, l)))
                .collect();
            Some((inner, criteria))
        })
        .collect()
}

/// The spec for the context outside every Match block: none, unless a
/// LocalPort criterion exists, which makes sshd -T without `lport` fatal
/// ("'Match LocalPort' in configuration but 'lport' not in connection test
/// specification"); then a port that no block names.
fn base_spec(chains: &[MatchChain]) -> Option<String> {
    let all: Vec<&Criterion> = chains
        .iter()
        .flat_map(|(_, c)| c.iter().flatten())
        .collect();
    all.iter()
        .any(|c| matches!(c, Criterion::LocalPort(_)))
        .then(|| format!("lport={}", free_port(all.iter().copied())))
}

/// Users and groups as sshd in this root would see them (files only).
fn accounts(root: &Dir) -> Accounts {
    let read = |name: &str| -> Vec<u8> {
        root.try_open_dir("etc")
            .ok()
            .flatten()
            .and_then(|d| d.read(name).ok().flatten())
            .map(|d| d.bytes)
            .unwrap_or_default()
    };
    Accounts::parse(&read("passwd"), &read("group"))
}

/// Does `values` (one `sshd -T` run) report every wanted value? The error
/// names the context, `what`.
fn check_values(
    values: &BTreeMap<String, String>,
    wanted: &[(&'static str, String)],
    what: &str,
) -> Result<()> {
    for (kw, want) in wanted {
        // sshd before 8.7 reports ChallengeResponseAuthentication separately,
        // and either one left on keeps keyboard-interactive (PAM) passwords.
        if *kw == "KbdInteractiveAuthentication" {
            if let Some(cr) = values.get("challengeresponseauthentication") {
                if !same_value(cr, want) {
                    return Err(Error::SshdInvalid(format!(
                        "after the change {what} reports challengeresponseauthentication {cr}, not {want}"
                    )));
                }
            }
        }
        let got = values.get(&kw.to_ascii_lowercase());
        if !got.is_some_and(|g| same_value(g, want)) {
            return Err(Error::SshdInvalid(format!(
                "after the change {what} reports {} {}, not {want}",
                kw.to_ascii_lowercase(),
                got.map_or("(nothing)", String::as_str)
            )));
        }
    }
    Ok(())
}

/// `sshd -t`, then `sshd -T` (outside every Match block) and `sshd -T -C`
/// for a connection each Match block applies to must report every wanted
/// value.
fn validate(
    sys: &System,
    root: &Dir,
    opts: &SshdOptions,
    cfg: &Config,
    wanted: &[(&'static str, String)],
) -> Result<Validation> {
    let Some(base) = sshd_command(sys, root, opts)? else {
        return Ok(Validation::Skipped(format!(
            "{} has no {}, so sshd -t could not run",
            sys.root.display(),
            opts.binary.display()
        )));
    };
    prepare_runtime(root, &base)?;
    if let Ran::NotRun { why, .. } = try_run_sshd_args(sys, &base, opts, &["-t"])? {
        return Ok(Validation::Skipped(why));
    }
    let chains = match_chains(cfg);
    let global = base_spec(&chains);
    let mut verified = Vec::new();
    let mut unverified = Vec::new();
    let describe = |spec: Option<&str>| match spec {
        Some(s) => format!("sshd -T -C {s}"),
        None => "sshd -T".to_owned(),
    };
    let values = sshd_dump(sys, &base, opts, global.as_deref())?;
    check_values(&values, wanted, &describe(global.as_deref()))?;
    verified.push(describe(global.as_deref()));
    if chains.is_empty() {
        return Ok(Validation::Checked {
            verified,
            unverified,
            who: base.who(),
        });
    }
    let accounts = accounts(root);
    let port = free_port(chains.iter().flat_map(|(_, c)| c.iter().flatten()));
    for (block, criteria) in &chains {
        let spec = match spec_for(criteria, &accounts, port) {
            Ok(spec) => spec.to_arg(),
            Err(reason) => {
                unverified.push(UnverifiedBlock {
                    file: cfg.files[block.0].path.clone(),
                    line: block.1 + 1,
                    criteria: criteria_text(cfg, *block),
                    reason,
                });
                continue;
            }
        };
        let what = describe(Some(&spec));
        if verified.contains(&what) {
            continue;
        }
        let values = sshd_dump(sys, &base, opts, Some(&spec))?;
        let what_block = format!(
            "{what} (for Match {}, {} line {})",
            criteria_text(cfg, *block),
            cfg.files[block.0].path.display(),
            block.1 + 1
        );
        check_values(&values, wanted, &what_block)?;
        verified.push(what);
    }
    Ok(Validation::Checked {
        verified,
        unverified,
        who: base.who(),
    })
}
