//! `accessctl`: the operator's and control plane's side of the protocol —
//! make keys, build and sign commands, drop them in an agent's inbox, verify
//! the signed results. Everything protocol-shaped lives in
//! `accessd::protocol::client`; this file only turns flags into calls.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use accessd::engine::Status;
use accessd::inbox::Inbox;
use accessd::names::UserName;
use accessd::protocol::client::{self, CommandSpec};
use accessd::protocol::command::{self, ApplyAt, Args, KeyExpiry, Password};
use accessd::protocol::{dsse, parse_time};
use accessd::ssh::sshd::PermitRootLogin;
use clap::{Parser, Subcommand, ValueEnum};
use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

#[derive(Parser)]
#[command(
    name = "accessctl",
    version,
    about = "Sign commands for accessd agents and verify their results",
    after_help = "A first command, end to end:\n  \
        accessctl keygen --out console            # console.key (0600) + console.pub\n  \
        # trust it on the instance: [trust] console = \"<contents of console.pub>\"\n  \
        accessd identity                          # on the instance: the agent's public key\n  \
        accessctl sign add-keys --key console.key --key-id console --instance i-0abc123 \\\n      \
        --user ecs-user --key-file id_ed25519.pub --out cmd.json\n  \
        accessctl send --inbox /var/lib/accessd/inbox --agent-key AGENTPUB cmd.json"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make an Ed25519 key pair: PREFIX.key (base64 seed, mode 0600) and
    /// PREFIX.pub (base64 public key, what goes in an agent's [trust] table).
    #[command(
        after_help = "Example:\n  accessctl keygen --out /etc/console/console-2026\n  \
        # prints the public key; put it in accessd.toml as\n  \
        # [trust]\n  # console-2026 = \"<public key>\""
    )]
    Keygen {
        /// Path prefix of the two files; neither may exist yet.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the base64 public key of a private key file.
    #[command(after_help = "Example:\n  accessctl pubkey --key console-2026.key")]
    Pubkey {
        #[arg(long)]
        key: PathBuf,
    },
    /// Build a command from flags, sign it, and print the envelope (one JSON
    /// line). One subcommand per op, each with only that op's flags.
    #[command(after_help = "Examples:\n  \
        accessctl sign add-keys --key cp.key --key-id console --instance i-0abc123 \\\n      \
        --user ecs-user --key-file id_ed25519.pub\n  \
        accessctl sign set-sshd --key cp.key --key-id console --instance i-0abc123 \\\n      \
        --password-auth no --permit-root-login prohibit-password\n\n\
        `accessctl sign OP --help` shows an op's flags and an example.")]
    Sign {
        #[command(subcommand)]
        op: Box<SignOp>,
    },
    /// Drop an envelope into an agent's inbox atomically, wait for the
    /// result in the sibling outbox, verify it and print its payload.
    /// Exit status: 0 ok, 2 rejected, 3 failed, 1 error (timeout, bad signature).
    #[command(after_help = "Example:\n  \
        accessctl sign ... --out cmd.json\n  \
        accessctl send --inbox /var/lib/accessd/inbox --agent-key \"$(accessd identity)\" cmd.json")]
    Send {
        /// The agent's inbox directory (results appear in ../outbox).
        #[arg(long, required_unless_present = "mqtt", conflicts_with = "mqtt")]
        inbox: Option<PathBuf>,
        /// Send through an MQTT broker instead (mqtt:// or mqtts://).
        #[arg(long, requires = "instance")]
        mqtt: Option<String>,
        /// The instance to send to over MQTT.
        #[arg(long)]
        instance: Option<String>,
        /// TLS files and credentials for --mqtt, as in accessd.toml's [mqtt]
        /// (ca_file, client_cert, client_key, username, password_file).
        #[arg(long, requires = "mqtt")]
        mqtt_config: Option<PathBuf>,
        /// The agent's public key: base64, or a file holding it.
        #[arg(long)]
        agent_key: String,
        /// How long to wait for the result.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// The envelope file, or - for stdin.
        #[arg(default_value = "-")]
        envelope: String,
    },
    /// Verify a result envelope with the agent's public key and print its payload.
    #[command(after_help = "Example:\n  \
        accessctl verify-result --agent-key AGENTPUB /var/lib/accessd/outbox/NAME.json")]
    VerifyResult {
        #[arg(long)]
        agent_key: String,
        /// The result envelope file, or - for stdin.
        #[arg(default_value = "-")]
        file: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum YesNo {
    Yes,
    No,
}

/// Flags every signed command takes: who signs it, for which instance, and
/// how long it is valid.
#[derive(clap::Args)]
struct Common {
    /// The control plane's private key file (base64 seed, mode 0600).
    #[arg(long)]
    key: PathBuf,
    /// The id under which the agent trusts this key.
    #[arg(long)]
    key_id: String,
    /// The target instance id.
    #[arg(long)]
    instance: String,
    /// Command id (default: random c-<hex>).
    #[arg(long)]
    id: Option<String>,
    /// Validity from issued_at (ignored with --expires-at).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    expires_in: Duration,
    /// RFC 3339 UTC (default: now).
    #[arg(long)]
    issued_at: Option<String>,
    /// The command's own validity, RFC 3339 UTC (default: issued_at +
    /// --expires-in). Not when keys stop working: that is --keys-expire-at.
    #[arg(long)]
    expires_at: Option<String>,
    /// Write the envelope here (mode 0600) instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// One op's flags with the [`Common`] ones.
#[derive(clap::Args)]
struct Signed<T: clap::Args> {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    op: T,
}

fn user_name(s: &str) -> Result<UserName, String> {
    UserName::parse(s).map_err(|e| e.to_string())
}

fn key_expiry(s: &str) -> Result<KeyExpiry, String> {
    KeyExpiry::parse(s).ok_or_else(|| format!("{s:?} is not an RFC 3339 UTC time"))
}

#[derive(clap::Args)]
struct UserFlag {
    /// The user the command is about.
    #[arg(long, value_parser = user_name)]
    user: UserName,
}

#[derive(clap::Args)]
struct KeyFlags {
    /// A public key file; every non-comment line is a key (repeatable).
    #[arg(long)]
    key_file: Vec<PathBuf>,
    /// One authorized_keys line (repeatable).
    #[arg(long)]
    key_line: Vec<String>,
}

#[derive(clap::Args)]
struct ExpiryFlag {
    /// The keys stop working at this RFC 3339 UTC time (not --expires-at,
    /// which is the command's own validity).
    #[arg(long, value_name = "RFC3339", value_parser = key_expiry)]
    keys_expire_at: Option<KeyExpiry>,
}

#[derive(clap::Args)]
struct PasswordFlags {
    /// Read the password from stdin (one line) and seal it to --agent-key.
    #[arg(long, requires = "agent_key")]
    password_stdin: bool,
    /// The agent's public key (base64, or a file holding it).
    #[arg(long, requires = "password_stdin")]
    agent_key: Option<String>,
    /// A crypt(3) hash ($6$, $5$, $y$) to store as the password.
    #[arg(long, conflicts_with = "password_stdin")]
    crypt: Option<String>,
}

#[derive(clap::Args)]
struct SetPasswordFlags {
    #[command(flatten)]
    user: UserFlag,
    #[command(flatten)]
    password: PasswordFlags,
    /// Apply at the next boot instead of now.
    #[arg(long)]
    next_boot: bool,
    /// The user must choose a new password at the next login (as `passwd -e`).
    #[arg(long)]
    must_change: bool,
}

#[derive(clap::Args)]
struct CreateUserFlags {
    #[command(flatten)]
    user: UserFlag,
    /// Grant sudo.
    #[arg(long)]
    sudo: bool,
    /// Login shell.
    #[arg(long)]
    shell: Option<String>,
    #[command(flatten)]
    password: PasswordFlags,
    #[command(flatten)]
    keys: KeyFlags,
    #[command(flatten)]
    expiry: ExpiryFlag,
}

#[derive(clap::Args)]
struct DeleteUserFlags {
    #[command(flatten)]
    user: UserFlag,
    /// Remove the home directory too.
    #[arg(long)]
    remove_home: bool,
    /// End the user's running processes (SIGTERM, then SIGKILL) instead of
    /// failing with user_busy.
    #[arg(long)]
    terminate_sessions: bool,
}

#[derive(clap::Args)]
struct BindKeysFlags {
    #[command(flatten)]
    user: UserFlag,
    #[command(flatten)]
    keys: KeyFlags,
    #[command(flatten)]
    expiry: ExpiryFlag,
}

#[derive(clap::Args)]
struct RemoveKeysFlags {
    #[command(flatten)]
    user: UserFlag,
    #[command(flatten)]
    keys: KeyFlags,
    /// A SHA256: fingerprint to remove (repeatable).
    #[arg(long)]
    fingerprint: Vec<String>,
    #[command(flatten)]
    sessions: KeySessionsFlag,
}

#[derive(clap::Args)]
struct ReplaceKeysFlags {
    #[command(flatten)]
    bind: BindKeysFlags,
    #[command(flatten)]
    sessions: KeySessionsFlag,
}

#[derive(clap::Args)]
struct KeySessionsFlag {
    /// End the live SSH sessions that logged in with a removed key
    /// (SIGTERM, then SIGKILL); other sessions of the user stay. With
    /// --keys-expire-at, the new keys' sessions also end when they expire.
    #[arg(long)]
    terminate_sessions: bool,
}

#[derive(clap::Args)]
#[group(id = "sshd_setting", required = true, multiple = true)]
struct SetSshdSettings {
    /// PubkeyAuthentication.
    #[arg(long, value_enum)]
    pubkey_auth: Option<YesNo>,
    /// PasswordAuthentication.
    #[arg(long, value_enum)]
    password_auth: Option<YesNo>,
    /// PermitRootLogin.
    #[arg(long, value_enum)]
    permit_root_login: Option<PermitRootLogin>,
}

#[derive(clap::Args)]
struct SetSshdFlags {
    #[command(flatten)]
    settings: SetSshdSettings,
    /// Do not reload (or start) sshd.
    #[arg(long)]
    no_restart: bool,
}

#[derive(clap::Args)]
struct NoFlags {}

#[derive(clap::Args)]
struct InventoryFlags {
    /// Report only these users (comma-separated or repeated).
    #[arg(long, value_delimiter = ',', value_parser = user_name)]
    users: Vec<UserName>,
    /// The next page, from an earlier result's data.next.
    #[arg(long)]
    cursor: Option<String>,
}

#[derive(clap::Args)]
struct LockUserFlags {
    #[command(flatten)]
    user: UserFlag,
    /// End the user's running processes after the lock.
    #[arg(long)]
    terminate_sessions: bool,
}

#[derive(clap::Args)]
struct SetSudoFlags {
    #[command(flatten)]
    user: UserFlag,
    /// Grant (yes) or revoke (no) sudo for an existing user.
    #[arg(long, value_enum)]
    grant_sudo: YesNo,
}

/// `K` in the examples: the flags every subcommand takes.
macro_rules! signing {
    () => {
        "--key cp.key --key-id console --instance i-0abc123"
    };
}

/// The ops, each a subcommand named as the op with dashes (`add-keys` for
/// `add_keys`). This enum is the op list of `accessctl`.
#[derive(Subcommand)]
enum SignOp {
    /// set_password: a password sealed to the agent's key, or a crypt hash.
    #[command(after_help = concat!("Examples:\n  \
        printf '%s' 'N3w-Passw0rd' | accessctl sign set-password ", signing!(), " \\\n      \
        --user root --password-stdin --agent-key AGENTPUB\n  \
        accessctl sign set-password ", signing!(), " \\\n      \
        --user bob --crypt \"$HASH\" --must-change"))]
    SetPassword(Signed<SetPasswordFlags>),
    /// create_user: a new user, optionally with sudo, a password and keys.
    #[command(after_help = concat!("Example:\n  \
        accessctl sign create-user ", signing!(), " \\\n      \
        --user alice --sudo --key-file alice.pub"))]
    CreateUser(Signed<CreateUserFlags>),
    /// delete_user: remove a user (and with --remove-home its home).
    #[command(after_help = concat!("Example:\n  \
        accessctl sign delete-user ", signing!(), " --user alice --remove-home"))]
    DeleteUser(Signed<DeleteUserFlags>),
    /// add_keys: bind SSH keys to a user.
    #[command(after_help = concat!("Examples:\n  \
        accessctl sign add-keys ", signing!(), " \\\n      \
        --user ecs-user --key-file id_ed25519.pub\n  \
        accessctl sign add-keys ", signing!(), " \\\n      \
        --user ecs-user --key-file id_ed25519.pub --keys-expire-at 2026-12-01T18:00:00Z"))]
    AddKeys(Signed<BindKeysFlags>),
    /// remove_keys: unbind keys, given as key lines or SHA256: fingerprints.
    #[command(after_help = concat!("Examples:\n  \
        accessctl sign remove-keys ", signing!(), " \\\n      \
        --user ecs-user --fingerprint SHA256:ZzlM1AbDTeIhCSl8TPuPOTTJzuOQ+z5LrRAQq3jVBgU\n  \
        accessctl sign remove-keys ", signing!(), " \\\n      \
        --user ecs-user --key-file leaked.pub --terminate-sessions"))]
    RemoveKeys(Signed<RemoveKeysFlags>),
    /// replace_keys: the user's managed keys become exactly these (none: all removed).
    #[command(after_help = concat!("Examples:\n  \
        accessctl sign replace-keys ", signing!(), " --user ecs-user --key-file new.pub\n  \
        accessctl sign replace-keys ", signing!(), " \\\n      \
        --user ecs-user --key-file temp.pub --keys-expire-at 2026-12-01T18:00:00Z --terminate-sessions"))]
    ReplaceKeys(Signed<ReplaceKeysFlags>),
    /// set_sshd: PubkeyAuthentication, PasswordAuthentication, PermitRootLogin.
    #[command(after_help = concat!("Example:\n  \
        accessctl sign set-sshd ", signing!(), " \\\n      \
        --password-auth no --permit-root-login prohibit-password"))]
    SetSshd(Signed<SetSshdFlags>),
    /// restart_sshd: reload (or start) sshd.
    #[command(after_help = concat!("Example:\n  \
        accessctl sign restart-sshd ", signing!()))]
    RestartSshd(Signed<NoFlags>),
    /// inventory: the users, their keys and sudo, and sshd's settings.
    #[command(after_help = concat!("Examples:\n  \
        accessctl sign inventory ", signing!(), " --users alice,bob\n  \
        accessctl sign inventory ", signing!(), " --users alice,bob --cursor \"$NEXT\""))]
    Inventory(Signed<InventoryFlags>),
    /// lock_user: no password or key login until unlock_user.
    #[command(after_help = concat!("Example:\n  \
        accessctl sign lock-user ", signing!(), " --user bob --terminate-sessions"))]
    LockUser(Signed<LockUserFlags>),
    /// unlock_user: undo lock_user.
    #[command(after_help = concat!("Example:\n  \
        accessctl sign unlock-user ", signing!(), " --user bob"))]
    UnlockUser(Signed<UserFlag>),
    /// set_sudo: grant or revoke sudo for an existing user.
    #[command(after_help = concat!("Example:\n  \
        accessctl sign set-sudo ", signing!(), " --user ecs-user --grant-sudo yes"))]
    SetSudo(Signed<SetSudoFlags>),
}

type CliResult<T> = Result<T, String>;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // Exit 2 means "rejected" for `send`; usage errors are 1.
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("accessctl: {msg}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> CliResult<ExitCode> {
    match cli.cmd {
        Cmd::Keygen { out } => keygen(&out).map(|()| ExitCode::SUCCESS),
        Cmd::Pubkey { key } => {
            let k = client::load_signing_key(&key).map_err(|e| e.to_string())?;
            println!("{}", dsse::encode_b64(k.verifying_key().as_bytes()));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Sign { op } => sign(*op).map(|()| ExitCode::SUCCESS),
        Cmd::Send {
            inbox,
            mqtt,
            instance,
            mqtt_config,
            agent_key,
            timeout,
            envelope,
        } => match (mqtt, instance, inbox) {
            (Some(url), Some(instance), _) => send_mqtt(
                &url,
                &instance,
                mqtt_config.as_deref(),
                &agent_key,
                timeout,
                &envelope,
            ),
            (_, _, Some(inbox)) => send(&inbox, &agent_key, timeout, &envelope),
            _ => Err("send needs --inbox, or --mqtt and --instance".into()),
        },
        Cmd::VerifyResult { agent_key, file } => {
            let key = client::public_key_arg(&agent_key).map_err(|e| e.to_string())?;
            let bytes = read_input(&file)?;
            let payload = client::verify_result(&key, &bytes).map_err(|e| e.to_string())?;
            println!("{}", serde_json::to_string(&payload).expect("serializes"));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn write_new_file(path: &Path, data: &[u8], mode: u32) -> CliResult<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

fn with_ext(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

fn keygen(prefix: &Path) -> CliResult<()> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(seed.as_mut()).map_err(|e| format!("random: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    let public = dsse::encode_b64(key.verifying_key().as_bytes());
    let private = Zeroizing::new(format!("{}\n", dsse::encode_b64(seed.as_ref())));
    write_new_file(&with_ext(prefix, ".key"), private.as_bytes(), 0o600)?;
    write_new_file(
        &with_ext(prefix, ".pub"),
        format!("{public}\n").as_bytes(),
        0o644,
    )?;
    println!("{public}");
    Ok(())
}

fn read_input(arg: &str) -> CliResult<Vec<u8>> {
    let mut buf = Vec::new();
    if arg == "-" {
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| format!("reading stdin: {e}"))?;
    } else {
        buf = std::fs::read(arg).map_err(|e| format!("reading {arg}: {e}"))?;
    }
    Ok(buf)
}

fn time_arg(s: &str, what: &str) -> CliResult<SystemTime> {
    parse_time(s).ok_or_else(|| format!("{what} {s:?} is not an RFC 3339 UTC time"))
}

fn keys_from_flags(a: &KeyFlags) -> CliResult<Vec<String>> {
    let mut keys = Vec::new();
    for f in &a.key_file {
        let text =
            std::fs::read_to_string(f).map_err(|e| format!("reading {}: {e}", f.display()))?;
        keys.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    keys.extend(a.key_line.iter().cloned());
    Ok(keys)
}

fn some_keys(op: &str, keys: Vec<String>) -> CliResult<Vec<String>> {
    if keys.is_empty() {
        Err(format!("{op} needs --key-file or --key-line"))
    } else {
        Ok(keys)
    }
}

fn password_from_flags(a: &PasswordFlags) -> CliResult<Option<Password>> {
    if let Some(c) = &a.crypt {
        return Ok(Some(Password::crypt(c)));
    }
    if !a.password_stdin {
        return Ok(None);
    }
    let agent = client::public_key_arg(a.agent_key.as_deref().unwrap_or_default())
        .map_err(|e| e.to_string())?;
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("reading the password from stdin: {e}"))?;
    let pw = line.strip_suffix('\n').unwrap_or(&line);
    let pw = pw.strip_suffix('\r').unwrap_or(pw);
    if pw.is_empty() {
        return Err("the password on stdin is empty".into());
    }
    Ok(Some(client::seal_password(&agent, pw.as_bytes())))
}

fn yes_no(v: YesNo) -> bool {
    matches!(v, YesNo::Yes)
}

/// The op's typed arguments from its flags (reading key files and the
/// password), and the common flags.
fn build_args(op: SignOp) -> CliResult<(Common, Args)> {
    Ok(match op {
        SignOp::SetPassword(Signed { common, op: a }) => {
            let password = password_from_flags(&a.password)?
                .ok_or("set-password needs --password-stdin --agent-key KEY, or --crypt HASH")?;
            let args = Args::SetPassword(command::SetPassword {
                user: a.user.user,
                password,
                apply_at: if a.next_boot {
                    ApplyAt::NextBoot
                } else {
                    ApplyAt::Now
                },
                must_change: a.must_change,
            });
            (common, args)
        }
        SignOp::CreateUser(Signed { common, op: a }) => {
            let keys = keys_from_flags(&a.keys)?;
            let args = Args::CreateUser(command::CreateUser {
                user: a.user.user,
                sudo: a.sudo,
                shell: a.shell,
                password: password_from_flags(&a.password)?,
                keys: (!keys.is_empty()).then_some(keys),
                keys_expire_at: a.expiry.keys_expire_at,
            });
            (common, args)
        }
        SignOp::DeleteUser(Signed { common, op: a }) => {
            let args = Args::DeleteUser(command::DeleteUser {
                user: a.user.user,
                remove_home: a.remove_home,
                terminate_sessions: a.terminate_sessions,
            });
            (common, args)
        }
        SignOp::AddKeys(Signed { common, op: a }) => {
            let args = Args::AddKeys(command::AddKeys {
                user: a.user.user,
                keys: some_keys("add-keys", keys_from_flags(&a.keys)?)?,
                expires_at: a.expiry.keys_expire_at,
            });
            (common, args)
        }
        SignOp::RemoveKeys(Signed { common, op: a }) => {
            let mut keys = keys_from_flags(&a.keys)?;
            keys.extend(a.fingerprint);
            let args = Args::RemoveKeys(command::RemoveKeys {
                user: a.user.user,
                keys: some_keys("remove-keys", keys)
                    .map_err(|e| format!("{e} or --fingerprint"))?,
                terminate_sessions: a.sessions.terminate_sessions,
            });
            (common, args)
        }
        SignOp::ReplaceKeys(Signed { common, op: a }) => {
            let args = Args::ReplaceKeys(command::ReplaceKeys {
                user: a.bind.user.user,
                keys: keys_from_flags(&a.bind.keys)?,
                expires_at: a.bind.expiry.keys_expire_at,
                terminate_sessions: a.sessions.terminate_sessions,
            });
            (common, args)
        }
        SignOp::SetSshd(Signed { common, op: a }) => {
            let args = Args::SetSshd(command::SetSshd {
                pubkey_authentication: a.settings.pubkey_auth.map(yes_no),
                password_authentication: a.settings.password_auth.map(yes_no),
                permit_root_login: a.settings.permit_root_login,
                restart: !a.no_restart,
            });
            (common, args)
        }
        SignOp::RestartSshd(Signed {
            common,
            op: NoFlags {},
        }) => (common, Args::RestartSshd(command::RestartSshd {})),
        SignOp::Inventory(Signed { common, op: a }) => {
            let args = Args::Inventory(command::Inventory {
                users: (!a.users.is_empty()).then_some(a.users),
                cursor: a.cursor,
            });
            (common, args)
        }
        SignOp::LockUser(Signed { common, op: a }) => {
            let args = Args::LockUser(command::LockUser {
                user: a.user.user,
                terminate_sessions: a.terminate_sessions,
            });
            (common, args)
        }
        SignOp::UnlockUser(Signed { common, op: a }) => (
            common,
            Args::UnlockUser(command::UnlockUser { user: a.user }),
        ),
        SignOp::SetSudo(Signed { common, op: a }) => {
            let args = Args::SetSudo(command::SetSudo {
                user: a.user.user,
                sudo: yes_no(a.grant_sudo),
            });
            (common, args)
        }
    })
}

fn sign(op: SignOp) -> CliResult<()> {
    let (c, args) = build_args(op)?;
    let key = client::load_signing_key(&c.key).map_err(|e| e.to_string())?;
    let issued_at = match &c.issued_at {
        Some(s) => time_arg(s, "--issued-at")?,
        None => SystemTime::now(),
    };
    let expires_at = match &c.expires_at {
        Some(s) => time_arg(s, "--expires-at")?,
        None => issued_at + c.expires_in,
    };
    let spec = CommandSpec {
        id: c.id.clone().unwrap_or_else(client::random_id),
        instance_id: c.instance.clone(),
        issued_at,
        expires_at,
        op: args.op().to_owned(),
        args: args.to_value(),
    };
    let envelope = spec.sign(&key, &c.key_id);
    match &c.out {
        Some(p) => write_new_file(p, format!("{envelope}\n").as_bytes(), 0o600),
        None => {
            println!("{envelope}");
            Ok(())
        }
    }
}

fn send(inbox: &Path, agent_key: &str, timeout: Duration, input: &str) -> CliResult<ExitCode> {
    let agent = client::public_key_arg(agent_key).map_err(|e| e.to_string())?;
    let envelope = read_input(input)?;
    let inbox = Inbox::at(inbox);
    let name = Inbox::name_for(&envelope);
    let bytes = inbox
        .send(&name, &envelope, timeout)
        .map_err(|e| e.to_string())?;
    let result = inbox.outbox().join(&name);
    let payload = client::verify_result(&agent, &bytes)
        .map_err(|e| format!("result {}: {e}", result.display()))?;
    let id = command::claimed_id(&envelope);
    if payload.id.is_some() && payload.id != id {
        return Err(format!(
            "result {} answers command {:?}, not {id:?}",
            result.display(),
            payload.id
        ));
    }
    println!("{}", serde_json::to_string(&payload).expect("serializes"));
    Ok(match payload.status {
        Status::Ok => ExitCode::SUCCESS,
        Status::Rejected => ExitCode::from(2),
        Status::Failed => ExitCode::from(3),
    })
}

/// `send --mqtt`: the same verified result, through the broker.
fn send_mqtt(
    url: &str,
    instance: &str,
    options_file: Option<&Path>,
    agent_key: &str,
    timeout: Duration,
    input: &str,
) -> CliResult<ExitCode> {
    let agent = client::public_key_arg(agent_key).map_err(|e| e.to_string())?;
    let envelope = read_input(input)?;
    let mut table = match options_file {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| format!("reading {}: {e}", p.display()))?
            .parse::<toml::Table>()
            .map_err(|e| format!("{}: {e}", p.display()))?,
        None => toml::Table::new(),
    };
    table.insert("url".into(), toml::Value::String(url.into()));
    let cfg: accessd::config::MqttConfig =
        table.try_into().map_err(|e| format!("MQTT options: {e}"))?;
    let payload = accessd::mqtt::client::send(&cfg, instance, &envelope, &agent, timeout)
        .map_err(|e| e.to_string())?;
    println!("{}", serde_json::to_string(&payload).expect("serializes"));
    Ok(match payload.status {
        Status::Ok => ExitCode::SUCCESS,
        Status::Rejected => ExitCode::from(2),
        Status::Failed => ExitCode::from(3),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_passes_clap_debug_assert() {
        Cli::command().debug_assert();
    }

    /// The smallest valid flags of each `sign` subcommand.
    fn minimal_flags(sub: &str) -> &'static [&'static str] {
        match sub {
            "set-password" => &["--user", "bob", "--crypt", "$6$s$h"],
            "set-sshd" => &["--password-auth", "no"],
            "set-sudo" => &["--user", "bob", "--grant-sudo", "yes"],
            "add-keys" | "remove-keys" => &["--user", "bob", "--key-line", "ssh-ed25519 AAAA"],
            "restart-sshd" | "inventory" => &[],
            _ => &["--user", "bob"],
        }
    }

    #[test]
    fn sign_has_one_subcommand_per_op_that_builds_that_ops_args_and_shows_an_example() {
        let cli = Cli::command();
        let sign = cli.find_subcommand("sign").expect("sign");
        let mut seen = Vec::new();
        for sub in sign.get_subcommands() {
            let name = sub.get_name();
            let help = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.contains("Example"),
                "sign {name} --help has an example"
            );
            assert!(help.contains(&format!("accessctl sign {name} ")), "{help}");
            let mut argv = vec!["accessctl", "sign", name, "--key", "k", "--key-id", "c"];
            argv.extend(["--instance", "i"]);
            argv.extend(minimal_flags(name));
            let Cmd::Sign { op } = Cli::try_parse_from(&argv).unwrap().cmd else {
                panic!("{argv:?}")
            };
            let (_, args) = build_args(*op).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            assert_eq!(args.op(), name.replace('-', "_"), "sign {name}");
            seen.push(args.op());
        }
        seen.sort_unstable();
        let mut ops = accessd::protocol::command::OPS.to_vec();
        ops.sort_unstable();
        assert_eq!(seen, ops);
    }

    #[test]
    fn a_flag_of_another_op_is_a_usage_error() {
        for argv in [
            &["sign", "inventory", "--user", "root"][..],
            &[
                "sign",
                "add-keys",
                "--user",
                "bob",
                "--fingerprint",
                "SHA256:x",
            ],
            &["sign", "lock-user", "--user", "bob", "--remove-home"],
            // add_keys removes no key, so it has no sessions to end.
            &[
                "sign",
                "add-keys",
                "--user",
                "bob",
                "--key-line",
                "ssh-ed25519 AAAA",
                "--terminate-sessions",
            ],
            &["sign", "set-sshd", "--no-restart"],
        ] {
            let common = ["--key", "k", "--key-id", "c", "--instance", "i"];
            let argv: Vec<&str> = ["accessctl"]
                .iter()
                .chain(argv)
                .chain(&common)
                .copied()
                .collect();
            assert!(Cli::try_parse_from(&argv).is_err(), "{argv:?}");
        }
    }

    #[test]
    fn terminate_sessions_reaches_the_args_of_remove_keys_and_replace_keys() {
        let common = ["--key", "k", "--key-id", "c", "--instance", "i"];
        let fp = "SHA256:ZzlM1AbDTeIhCSl8TPuPOTTJzuOQ+z5LrRAQq3jVBgU";
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMU3PG77wArVV58QldS0w27ZKeU/f5DVdcL7Fbmo4fgY";
        for (sub, what, flag) in [
            ("remove-keys", "--fingerprint", fp),
            ("replace-keys", "--key-line", key),
        ] {
            for with in [false, true] {
                let mut argv = vec!["accessctl", "sign", sub, "--user", "bob", what, flag];
                argv.extend(common);
                if with {
                    argv.push("--terminate-sessions");
                }
                let Cmd::Sign { op } = Cli::try_parse_from(&argv).unwrap().cmd else {
                    panic!("{argv:?}")
                };
                let (_, args) = build_args(*op).unwrap();
                let v = args.to_value();
                assert_eq!(
                    v.get("terminate_sessions"),
                    with.then_some(&serde_json::Value::Bool(true)),
                    "{argv:?}: {v}"
                );
            }
        }
    }
}
