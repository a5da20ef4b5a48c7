//! `accessctl`: the operator's and control plane's side of the protocol —
//! make keys, build and sign commands, drop them in an agent's inbox, verify
//! the signed results. Everything protocol-shaped lives in
//! `accessd::protocol::client`; this file only turns flags into calls.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use accessd::engine::Status;
use accessd::protocol::client::{self, CommandSpec};
use accessd::protocol::{dsse, parse_time};
use clap::{Parser, Subcommand, ValueEnum};
use ed25519_dalek::SigningKey;
use serde_json::{json, Map, Value};
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
        accessctl sign --key console.key --key-id console --instance i-0abc123 \\\n      \
        --op add_keys --user ecs-user --key-file id_ed25519.pub --out cmd.json\n  \
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
    /// Build a command from flags, sign it, and print the envelope (one JSON line).
    #[command(after_help = "Examples:\n  \
        accessctl sign --key cp.key --key-id console --instance i-0abc123 \\\n      \
        --op add_keys --user ecs-user --key-file id_ed25519.pub\n  \
        printf '%s' 'N3w-Passw0rd' | accessctl sign --key cp.key --key-id console \\\n      \
        --instance i-0abc123 --op set_password --user root --password-stdin --agent-key AGENTPUB\n  \
        accessctl sign --key cp.key --key-id console --instance i-0abc123 \\\n      \
        --op set_sshd --password-auth no --permit-root-login prohibit-password\n  \
        accessctl sign --key cp.key --key-id console --instance i-0abc123 \\\n      \
        --op add_keys --user ecs-user --key-file id_ed25519.pub --keys-expire-at 2026-12-01T18:00:00Z\n  \
        accessctl sign --key cp.key --key-id console --instance i-0abc123 --op lock_user --user bob\n  \
        accessctl sign --key cp.key --key-id console --instance i-0abc123 \\\n      \
        --op set_password --user bob --crypt \"$HASH\" --must-change\n  \
        accessctl sign --key cp.key --key-id console --instance i-0abc123 \\\n      \
        --op set_sudo --user ecs-user --grant-sudo yes\n\n\
        Ops: set_password, create_user, delete_user, add_keys, remove_keys, replace_keys,\n\
        set_sshd, restart_sshd, inventory, lock_user, unlock_user, set_sudo.")]
    Sign(Box<SignArgs>),
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

#[derive(Clone, Copy, ValueEnum)]
enum RootLogin {
    Yes,
    No,
    ProhibitPassword,
}

#[derive(clap::Args)]
struct SignArgs {
    /// The control plane's private key file (base64 seed, mode 0600).
    #[arg(long)]
    key: PathBuf,
    /// The id under which the agent trusts this key.
    #[arg(long)]
    key_id: String,
    /// The target instance id.
    #[arg(long)]
    instance: String,
    /// The operation.
    #[arg(long)]
    op: String,
    /// Command id (default: random c-<hex>).
    #[arg(long)]
    id: Option<String>,
    /// Validity from issued_at (ignored with --expires-at).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    expires_in: Duration,
    /// RFC 3339 UTC (default: now).
    #[arg(long)]
    issued_at: Option<String>,
    /// RFC 3339 UTC (default: issued_at + --expires-in).
    #[arg(long)]
    expires_at: Option<String>,
    /// The user the command is about.
    #[arg(long)]
    user: Option<String>,
    /// A public key file; every non-comment line is a key (repeatable).
    #[arg(long)]
    key_file: Vec<PathBuf>,
    /// One authorized_keys line (repeatable).
    #[arg(long)]
    key_line: Vec<String>,
    /// add_keys, replace_keys, create_user: the keys stop working at this
    /// RFC 3339 UTC time (args `expires_at` / `keys_expire_at`; not
    /// --expires-at, which is the command's own validity).
    #[arg(long, value_name = "RFC3339")]
    keys_expire_at: Option<String>,
    /// A SHA256: fingerprint to remove (repeatable; remove_keys).
    #[arg(long)]
    fingerprint: Vec<String>,
    /// Read the password from stdin (one line) and seal it to --agent-key.
    #[arg(long, requires = "agent_key")]
    password_stdin: bool,
    /// The agent's public key (base64, or a file holding it).
    #[arg(long)]
    agent_key: Option<String>,
    /// A crypt(3) hash ($6$, $5$, $y$) to store as the password.
    #[arg(long, conflicts_with = "password_stdin")]
    crypt: Option<String>,
    /// set_password: apply at the next boot instead of now.
    #[arg(long)]
    next_boot: bool,
    /// set_password: the user must choose a new password at the next login
    /// (as `passwd -e`).
    #[arg(long)]
    must_change: bool,
    /// create_user: grant sudo.
    #[arg(long)]
    sudo: bool,
    /// create_user: login shell.
    #[arg(long)]
    shell: Option<String>,
    /// delete_user: remove the home directory too.
    #[arg(long)]
    remove_home: bool,
    /// delete_user: end the user's running processes (SIGTERM, then
    /// SIGKILL) instead of failing with user_busy; lock_user: end them
    /// after the lock.
    #[arg(long)]
    terminate_sessions: bool,
    /// set_sudo: grant (yes) or revoke (no) sudo for an existing user.
    #[arg(long, value_enum)]
    grant_sudo: Option<YesNo>,
    /// set_sshd: PubkeyAuthentication.
    #[arg(long, value_enum)]
    pubkey_auth: Option<YesNo>,
    /// set_sshd: PasswordAuthentication.
    #[arg(long, value_enum)]
    password_auth: Option<YesNo>,
    /// set_sshd: PermitRootLogin.
    #[arg(long, value_enum)]
    permit_root_login: Option<RootLogin>,
    /// set_sshd: do not reload (or start) sshd.
    #[arg(long)]
    no_restart: bool,
    /// inventory: report only these users (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    users: Vec<String>,
    /// inventory: the next page, from an earlier result's data.next.
    #[arg(long)]
    cursor: Option<String>,
    /// Write the envelope here (mode 0600) instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
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
        Cmd::Sign(args) => sign(&args).map(|()| ExitCode::SUCCESS),
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

fn keys_from_flags(a: &SignArgs) -> CliResult<Vec<String>> {
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

fn password_from_flags(a: &SignArgs) -> CliResult<Option<Value>> {
    if let Some(c) = &a.crypt {
        return Ok(Some(json!({ "crypt": c })));
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
    Ok(Some(client::sealed_password(&agent, pw.as_bytes())))
}

fn yes_no(v: YesNo) -> bool {
    matches!(v, YesNo::Yes)
}

/// The op's `args` object from the flags. Flags that do not belong to the op
/// are an error, so a typo cannot silently sign a different command.
fn build_args(a: &SignArgs) -> CliResult<Value> {
    let mut args = Map::new();
    let user = || {
        a.user
            .clone()
            .ok_or_else(|| format!("--op {} needs --user", a.op))
    };
    let keys = keys_from_flags(a)?;
    let mut used_keys = false;
    let mut used_password = false;
    match a.op.as_str() {
        "set_password" => {
            args.insert("user".into(), user()?.into());
            let pw = password_from_flags(a)?.ok_or(
                "--op set_password needs --password-stdin --agent-key KEY, or --crypt HASH",
            )?;
            args.insert("password".into(), pw);
            used_password = true;
            if a.next_boot {
                args.insert("apply_at".into(), "next_boot".into());
            }
            if a.must_change {
                args.insert("must_change".into(), true.into());
            }
        }
        "set_sudo" => {
            args.insert("user".into(), user()?.into());
            let v = a
                .grant_sudo
                .ok_or("--op set_sudo needs --grant-sudo yes|no")?;
            args.insert("sudo".into(), yes_no(v).into());
        }
        "lock_user" | "unlock_user" => {
            args.insert("user".into(), user()?.into());
            if a.terminate_sessions && a.op == "lock_user" {
                args.insert("terminate_sessions".into(), true.into());
            }
        }
        "create_user" => {
            args.insert("user".into(), user()?.into());
            if a.sudo {
                args.insert("sudo".into(), true.into());
            }
            if let Some(s) = &a.shell {
                args.insert("shell".into(), s.clone().into());
            }
            if let Some(pw) = password_from_flags(a)? {
                args.insert("password".into(), pw);
            }
            used_password = true;
            if !keys.is_empty() {
                args.insert("keys".into(), keys.clone().into());
            }
            used_keys = true;
            if let Some(t) = &a.keys_expire_at {
                time_arg(t, "--keys-expire-at")?;
                args.insert("keys_expire_at".into(), t.clone().into());
            }
        }
        "delete_user" => {
            args.insert("user".into(), user()?.into());
            if a.remove_home {
                args.insert("remove_home".into(), true.into());
            }
            if a.terminate_sessions {
                args.insert("terminate_sessions".into(), true.into());
            }
        }
        "add_keys" | "replace_keys" | "remove_keys" => {
            args.insert("user".into(), user()?.into());
            let mut all = keys.clone();
            if a.op == "remove_keys" {
                all.extend(a.fingerprint.iter().cloned());
            } else if !a.fingerprint.is_empty() {
                return Err("--fingerprint is only for --op remove_keys".into());
            }
            if all.is_empty() && a.op != "replace_keys" {
                return Err(format!("--op {} needs --key-file or --key-line", a.op));
            }
            args.insert("keys".into(), all.into());
            used_keys = true;
            if let Some(t) = &a.keys_expire_at {
                if a.op == "remove_keys" {
                    return Err("--keys-expire-at does not apply to --op remove_keys".into());
                }
                time_arg(t, "--keys-expire-at")?;
                args.insert("expires_at".into(), t.clone().into());
            }
        }
        "set_sshd" => {
            if let Some(v) = a.pubkey_auth {
                args.insert("pubkey_authentication".into(), yes_no(v).into());
            }
            if let Some(v) = a.password_auth {
                args.insert("password_authentication".into(), yes_no(v).into());
            }
            if let Some(v) = a.permit_root_login {
                let s = match v {
                    RootLogin::Yes => "yes",
                    RootLogin::No => "no",
                    RootLogin::ProhibitPassword => "prohibit-password",
                };
                args.insert("permit_root_login".into(), s.into());
            }
            if args.is_empty() {
                return Err(
                    "--op set_sshd needs --pubkey-auth, --password-auth or --permit-root-login"
                        .into(),
                );
            }
            if a.no_restart {
                args.insert("restart".into(), false.into());
            }
        }
        "restart_sshd" => {}
        "inventory" => {
            if !a.users.is_empty() {
                args.insert("users".into(), a.users.clone().into());
            }
            if let Some(c) = &a.cursor {
                args.insert("cursor".into(), c.clone().into());
            }
        }
        other => return Err(format!("unknown --op {other:?}")),
    }
    let stray = [
        (a.user.is_some() && !args.contains_key("user"), "--user"),
        (!used_keys && !keys.is_empty(), "--key-file/--key-line"),
        (
            !used_password && (a.password_stdin || a.crypt.is_some()),
            "--password-stdin/--crypt",
        ),
        (
            (a.next_boot || a.must_change) && a.op != "set_password",
            "--next-boot/--must-change",
        ),
        (
            (a.sudo || a.shell.is_some()) && a.op != "create_user",
            "--sudo/--shell",
        ),
        (a.remove_home && a.op != "delete_user", "--remove-home"),
        (a.grant_sudo.is_some() && a.op != "set_sudo", "--grant-sudo"),
        (
            a.terminate_sessions && a.op != "delete_user" && a.op != "lock_user",
            "--terminate-sessions",
        ),
        (
            a.keys_expire_at.is_some()
                && !matches!(a.op.as_str(), "add_keys" | "replace_keys" | "create_user"),
            "--keys-expire-at",
        ),
        (
            (!a.users.is_empty() || a.cursor.is_some()) && a.op != "inventory",
            "--users/--cursor",
        ),
        (
            (a.no_restart
                || a.pubkey_auth.is_some()
                || a.password_auth.is_some()
                || a.permit_root_login.is_some())
                && a.op != "set_sshd",
            "--no-restart/--pubkey-auth/--password-auth/--permit-root-login",
        ),
    ];
    if let Some((_, flag)) = stray.iter().find(|(bad, _)| *bad) {
        return Err(format!("{flag} does not apply to --op {}", a.op));
    }
    Ok(if args.is_empty() {
        Value::Null
    } else {
        Value::Object(args)
    })
}

fn sign(a: &SignArgs) -> CliResult<()> {
    let key = client::load_signing_key(&a.key).map_err(|e| e.to_string())?;
    let args = build_args(a)?;
    let issued_at = match &a.issued_at {
        Some(s) => time_arg(s, "--issued-at")?,
        None => SystemTime::now(),
    };
    let expires_at = match &a.expires_at {
        Some(s) => time_arg(s, "--expires-at")?,
        None => issued_at + a.expires_in,
    };
    let spec = CommandSpec {
        id: a.id.clone().unwrap_or_else(client::random_id),
        instance_id: a.instance.clone(),
        issued_at,
        expires_at,
        op: a.op.clone(),
        args,
    };
    let envelope = spec.sign(&key, &a.key_id);
    match &a.out {
        Some(p) => write_new_file(p, format!("{envelope}\n").as_bytes(), 0o600),
        None => {
            println!("{envelope}");
            Ok(())
        }
    }
}

/// The command id inside our own envelope (for the file name); not verified,
/// since it is the caller's own envelope.
fn envelope_id(envelope: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(envelope).ok()?;
    let body = dsse::decode_b64(v.get("payload")?.as_str()?)?;
    accessd::protocol::command::claimed_id(&body)
}

fn send(inbox: &Path, agent_key: &str, timeout: Duration, input: &str) -> CliResult<ExitCode> {
    let agent = client::public_key_arg(agent_key).map_err(|e| e.to_string())?;
    let envelope = read_input(input)?;
    let id = envelope_id(&envelope).unwrap_or_else(client::random_id);
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    // Lexical order of names is arrival order: fixed-width nanoseconds first.
    let name = format!("{stamp:020}-{id}.json");
    let tmp = inbox.join(format!(".{name}"));
    write_new_file(&tmp, &envelope, 0o600)?;
    std::fs::rename(&tmp, inbox.join(&name))
        .map_err(|e| format!("renaming {} into the inbox: {e}", tmp.display()))?;

    let outbox = inbox
        .join("..")
        .join(accessd::state_dir::OUTBOX)
        .join(&name);
    let deadline = Instant::now() + timeout;
    let bytes = loop {
        match std::fs::read(&outbox) {
            Ok(b) => break b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("reading {}: {e}", outbox.display())),
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no result in {} after {}",
                outbox.display(),
                humantime::format_duration(timeout)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let payload = client::verify_result(&agent, &bytes)
        .map_err(|e| format!("result {}: {e}", outbox.display()))?;
    if payload.id.as_ref().is_some_and(|rid| *rid != id) {
        return Err(format!(
            "result {} answers command {:?}, not {id:?}",
            outbox.display(),
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
