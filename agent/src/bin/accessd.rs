//! `accessd`: the agent binary (PROTOCOL §6). Argument parsing, logging,
//! exit codes; everything else is in the library.
//!
//! Exit status: 0 success; 1 the agent could not do its job (bad
//! configuration, unwritable state); 2 bad usage; 3 (`apply`) some command
//! was rejected or failed — its signed result says why. `apply-staged`
//! exits 0 once every due entry has its signed result, failed ones included.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use accessd::config::{Config, DEFAULT_PATH};
use accessd::daemon::{self, Spool};
use accessd::engine::{Engine, Status};
use accessd::sys::System;
use accessd::{demo, logging};

#[derive(Parser)]
#[command(
    name = "accessd",
    version,
    about = "Apply signed login-credential commands from a control plane"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon (the default): answer every file dropped in <state_dir>/inbox.
    Run,
    /// Print the agent's public key (base64 Ed25519), creating the identity if missing.
    Identity,
    /// Verify and apply envelope files once, without the daemon; print each
    /// signed result as one JSON line.
    Apply {
        #[arg(required = true, value_name = "ENVELOPE")]
        envelopes: Vec<PathBuf>,
    },
    /// Apply what `set_password` with `apply_at: next_boot` staged (run at boot, before sshd).
    ApplyStaged,
    /// Show accessd at work on a throwaway sandbox (never touches this machine's /etc).
    Demo,
}

const EXIT_ERROR: u8 = 1;
const EXIT_NOT_OK: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let demo = matches!(cli.cmd, Some(Cmd::Demo));
    // The demo prints its own story on stdout; keep the log to warnings.
    logging::init(if demo { "warn" } else { "info" });
    let result = match cli.cmd.unwrap_or(Cmd::Run) {
        Cmd::Run => daemon::serve(&cli.config).map(|()| true),
        Cmd::Identity => identity(&cli.config),
        Cmd::Apply { envelopes } => apply(&cli.config, &envelopes),
        Cmd::ApplyStaged => apply_staged(&cli.config),
        Cmd::Demo => demo::run(&mut std::io::stdout()).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_NOT_OK),
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("accessd: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn engine(config: &Path) -> accessd::error::Result<(Config, Engine)> {
    let cfg = Config::load(config)?;
    let engine = Engine::new(cfg.clone(), System::new(&cfg.root, &cfg.state_dir))?;
    Ok((cfg, engine))
}

fn identity(config: &Path) -> accessd::error::Result<bool> {
    let (_, engine) = engine(config)?;
    println!("{}", engine.public_key());
    Ok(true)
}

fn apply(config: &Path, files: &[PathBuf]) -> accessd::error::Result<bool> {
    use accessd::error::IoContext;
    use std::io::Write;
    let (_, mut engine) = engine(config)?;
    let mut all_ok = true;
    let mut out = std::io::stdout().lock();
    let limit = engine.config().max_envelope_bytes;
    for f in files {
        let bytes = read_input(f, limit).ctx(|| format!("reading {}", f.display()))?;
        let source = f.display().to_string();
        logging::received(
            &source,
            accessd::protocol::command::claimed_id(&bytes).as_deref(),
            bytes.len(),
        );
        let h = engine.handle(&bytes);
        logging::outcome(&source, &h);
        all_ok &= h.status == Status::Ok;
        out.write_all(&h.envelope)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush())
            .ctx(|| "writing to stdout".into())?;
    }
    Ok(all_ok)
}

/// At most `limit + 1` bytes of `f`: enough for the engine to refuse an
/// oversized envelope, never a buffer sized by what the file (or a pipe,
/// `/dev/stdin`) claims to hold.
fn read_input(f: &Path, limit: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(f)?
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn apply_staged(config: &Path) -> accessd::error::Result<bool> {
    let (cfg, mut engine) = engine(config)?;
    let state = accessd::state_dir::StateDir::open(&cfg.state_dir)?;
    let mut spool = Spool::open(&state, cfg.outbox.clone())?;
    // Every entry answered (a failed one with its signed result and an
    // error event) is the job done: exit 0, so that the boot unit does not
    // leave the boot `degraded` over a user deleted since.
    daemon::apply_staged(&mut engine, &mut spool)?;
    Ok(true)
}
