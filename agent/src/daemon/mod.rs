//! The long-running agent (PROTOCOL §5 inbox delivery): watch
//! `<state_dir>/inbox` with inotify, apply command files one at a time in
//! lexical order, answer each in `<state_dir>/outbox` before deleting it.
//!
//! One task on a current-thread runtime does everything, so commands are
//! strictly serial and a signal is only acted on between two commands
//! (SIGTERM finishes the command in progress). Idle, the process sleeps in
//! epoll with no timer armed: the inotify thread blocks in its own poll, and
//! the only timers that can exist are the systemd watchdog when it is
//! enabled, and one wall-clock timer at the earliest managed key expiry
//! when some managed key expires (see [`expiry_timer`]).
//!
//! The mechanics here (ordering, durability, signals, pruning, vanishing and
//! half-written files) are written against the small [`Handler`] trait, so
//! they are tested with a recording handler; [`Engine`] is the real one.

pub mod expiry_timer;
pub mod spool;

use std::collections::HashMap;
use std::path::Path;
use std::time::SystemTime;

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc::{self, error::TryRecvError, UnboundedReceiver};

use crate::config::Config;
use crate::engine::{Engine, Handled};
use crate::error::{Error, IoContext, Result};
use crate::logging;
use crate::state_dir::StateDir;
use crate::sys::System;

pub use spool::{Outcome, Spool};

/// What the apply loop needs from the command path.
pub trait Handler {
    /// One envelope in, one signed result out. Must not panic on any input.
    fn handle(&mut self, envelope: &[u8]) -> Handled;
    /// Take a new configuration (SIGHUP).
    fn reconfigure(&mut self, cfg: Config);
    /// The largest envelope it takes: an inbox file is read up to this + 1
    /// bytes, enough for the handler to refuse it for its size.
    fn max_envelope_bytes(&self) -> usize;
    /// Carry out the key expiries that are due; the next one's time, or
    /// `None` when nothing expires (then no timer is armed). Called at
    /// start, after every command and when the timer fires, so it must be
    /// cheap when nothing is due.
    fn expire_keys(&mut self) -> Option<SystemTime> {
        None
    }
}

impl Handler for Engine {
    fn handle(&mut self, envelope: &[u8]) -> Handled {
        Engine::handle(self, envelope)
    }
    fn reconfigure(&mut self, cfg: Config) {
        Engine::reconfigure(self, cfg)
    }
    fn max_envelope_bytes(&self) -> usize {
        self.config().max_envelope_bytes
    }
    fn expire_keys(&mut self) -> Option<SystemTime> {
        Engine::expire_keys(self)
    }
}

/// Requests from outside the loop (signals in production, a channel in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// SIGTERM / SIGINT: finish the command in progress, then return.
    Shutdown,
    /// SIGHUP: re-read the configuration.
    Reload,
}

/// Turn SIGTERM, SIGINT and SIGHUP into [`Control`] messages. Must be called
/// inside the runtime. Registration replaces the default dispositions, so
/// from here on SIGTERM no longer kills the process mid-command.
pub fn signals() -> Result<UnboundedReceiver<Control>> {
    use tokio::signal::unix::{signal, SignalKind};
    let reg =
        |k: SignalKind, name: &str| signal(k).ctx(|| format!("installing the {name} handler"));
    let mut term = reg(SignalKind::terminate(), "SIGTERM")?;
    let mut int = reg(SignalKind::interrupt(), "SIGINT")?;
    let mut hup = reg(SignalKind::hangup(), "SIGHUP")?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let c = tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: finishing the command in progress, then exiting"); Control::Shutdown }
                _ = int.recv() => { tracing::info!("SIGINT: finishing the command in progress, then exiting"); Control::Shutdown }
                _ = hup.recv() => { tracing::info!("SIGHUP: re-reading the configuration"); Control::Reload }
            };
            if tx.send(c).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Where a new configuration comes from on [`Control::Reload`].
pub type Reload<'a> = &'a mut dyn FnMut() -> Result<Config>;

/// Run the daemon for `config_path` until SIGTERM/SIGINT (PROTOCOL §6).
pub fn serve(config_path: &Path) -> Result<()> {
    let cfg = Config::load(config_path)?;
    let sys = System::new(&cfg.root, &cfg.state_dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ctx(|| "starting the async runtime".into())?;
    rt.block_on(async {
        let control = signals()?;
        let state = StateDir::open(&cfg.state_dir)?;
        let mut spool = Spool::open(&state, cfg.outbox.clone())?;
        let mut engine = Engine::new(cfg.clone(), sys)?;
        let path = config_path.to_path_buf();
        let mut reload = move || Config::load(&path);
        // MQTT (issue 7): its commands join the same serial apply path.
        let mqtt = crate::mqtt::start_for(&cfg, &state)?;
        let (mqtt_rx, mqtt_handle) = mqtt.map_or((None, None), |(rx, h)| (Some(rx), Some(h)));
        let r = run_with(&mut engine, &mut spool, cfg, &mut reload, control, mqtt_rx).await;
        if let Some(h) = mqtt_handle {
            h.shutdown().await;
        }
        r
    })
}

/// The apply loop: answer what is already in the inbox, tell systemd we are
/// ready, then answer every file that appears, until told to stop.
pub async fn run(
    handler: &mut dyn Handler,
    spool: &mut Spool,
    cfg: Config,
    reload: Reload<'_>,
    control: UnboundedReceiver<Control>,
) -> Result<()> {
    run_with(handler, spool, cfg, reload, control, None).await
}

/// [`run`], also applying the commands the MQTT transport hands over.
pub async fn run_with(
    handler: &mut dyn Handler,
    spool: &mut Spool,
    cfg: Config,
    reload: Reload<'_>,
    control: UnboundedReceiver<Control>,
    mut mqtt: Option<UnboundedReceiver<crate::mqtt::MqttCommand>>,
) -> Result<()> {
    let (ev_tx, events) = mpsc::unbounded_channel();
    // The watch is in place before the first listing, so a file that arrives
    // while we answer the backlog is seen either way.
    let mut watcher = notify::recommended_watcher(move |ev| {
        let _ = ev_tx.send(ev);
    })
    .map_err(|e| watch_error(spool.inbox_path(), e))?;
    watcher
        .watch(spool.inbox_path(), RecursiveMode::NonRecursive)
        .map_err(|e| watch_error(spool.inbox_path(), e))?;
    // The state directory too: while we hold the inbox open, its removal
    // shows only there (IN_DELETE "inbox"), never as IN_DELETE_SELF.
    if let Some(state_dir) = spool.inbox_path().parent() {
        watcher
            .watch(state_dir, RecursiveMode::NonRecursive)
            .map_err(|e| watch_error(state_dir, e))?;
    }

    let mut lp = Loop {
        handler,
        spool,
        cfg,
        reload,
        control,
        events,
        writing: HashMap::new(),
        dirty: true,
        inbox_gone: false,
    };
    lp.spool.prune(SystemTime::now(), true)?;
    // Keys that expired while accessd was not running go first.
    let mut expiry = expiry_timer::ExpiryTimer::new()?;
    expiry.set(lp.handler.expire_keys())?;
    if lp.drain().await? == Flow::Stop {
        return lp.stop();
    }
    expiry.set(lp.handler.expire_keys())?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(inbox = %lp.spool.inbox_path().display(), "accessd ready: watching the inbox");

    // The only timer the daemon can have; absent unless systemd asks for it.
    let mut watchdog = sd_notify::watchdog_enabled().map(|d| tokio::time::interval(d / 2));
    loop {
        // Checked before waiting, not only after an event: `drain` also
        // reads events, and the inbox's removal may be among them — waiting
        // first would then wait forever on a directory nobody writes to.
        if lp.inbox_gone {
            // Exit with an error: systemd restarts us, and the restart
            // creates and watches the inbox afresh.
            return Err(watch_stopped(
                lp.spool.inbox_path(),
                "the inbox directory was removed or moved",
            ));
        }
        tokio::select! {
            biased;
            c = lp.control.recv() => match c {
                Some(Control::Reload) => lp.reconfigure(),
                Some(Control::Shutdown) | None => return lp.stop(),
            },
            ev = lp.events.recv() => match ev {
                Some(ev) => lp.note(ev),
                None => return Err(watch_stopped(lp.spool.inbox_path(), "the inotify thread stopped")),
            },
            _ = tick(&mut watchdog) => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            r = expiry.fired() => r?,
            cmd = next_mqtt(&mut mqtt) => match cmd {
                Some(cmd) => apply_mqtt(cmd, &mut *lp.handler, &mut *lp.spool)?,
                None => mqtt = None,
            },
        }
        if !lp.inbox_gone && lp.dirty && lp.drain().await? == Flow::Stop {
            return lp.stop();
        }
        // After any wake-up: a command may have bound an expiring key, the
        // timer may have fired, or the clock may have been set.
        expiry.set(lp.handler.expire_keys())?;
    }
}

async fn next_mqtt(
    rx: &mut Option<UnboundedReceiver<crate::mqtt::MqttCommand>>,
) -> Option<crate::mqtt::MqttCommand> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn tick(t: &mut Option<tokio::time::Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// inotify's own failure (a genuine OS error stays one), or notify's.
fn watch_error(inbox: &Path, e: notify::Error) -> Error {
    match e.kind {
        notify::ErrorKind::Io(source) => Error::Io {
            context: format!("watching {}", inbox.display()),
            source,
        },
        _ => watch_stopped(inbox, e),
    }
}

/// The watch ended for a reason that is not an OS error.
fn watch_stopped(inbox: &Path, why: impl std::fmt::Display) -> Error {
    Error::Transport(format!("watching {}: {why}", inbox.display()))
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Idle,
    Stop,
}

struct Loop<'a> {
    handler: &'a mut dyn Handler,
    spool: &'a mut Spool,
    cfg: Config,
    reload: Reload<'a>,
    control: UnboundedReceiver<Control>,
    events: UnboundedReceiver<notify::Result<notify::Event>>,
    /// Command names some writer has open: created and still empty, or
    /// written to in place, with no close-after-write seen yet. Writers are
    /// meant to rename into place; one that does not is waited for rather
    /// than read half-way.
    writing: HashMap<String, bool>,
    /// Something may have arrived since the inbox was last listed.
    dirty: bool,
    /// The inbox directory itself was removed or renamed: our watch (and
    /// descriptor) point at a directory nobody writes to any more.
    inbox_gone: bool,
}

impl Loop<'_> {
    /// Update what we know from one inotify event.
    fn note(&mut self, ev: notify::Result<notify::Event>) {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!("inotify: {e}; listing the inbox again");
                self.dirty = true;
                return;
            }
        };
        if ev.need_rescan() {
            self.dirty = true;
        }
        if matches!(
            ev.kind,
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From))
        ) && ev.paths.iter().any(|p| p == self.spool.inbox_path())
        {
            self.inbox_gone = true;
        }
        for name in ev.paths.iter().filter_map(|p| p.file_name()?.to_str()) {
            if !spool::is_command_name(name) {
                continue;
            }
            match ev.kind {
                EventKind::Create(CreateKind::File | CreateKind::Any) => {
                    // Either a writer just opened it (empty so far) or it was
                    // linked into place complete; `ready` tells them apart.
                    self.writing.entry(name.to_owned()).or_insert(false);
                    self.dirty = true;
                }
                EventKind::Modify(ModifyKind::Data(_)) => {
                    self.writing.insert(name.to_owned(), true);
                }
                EventKind::Access(AccessKind::Close(AccessMode::Write))
                | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) => {
                    self.writing.remove(name);
                    self.dirty = true;
                }
                EventKind::Remove(RemoveKind::File | RemoveKind::Any)
                | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
                    self.writing.remove(name);
                }
                EventKind::Other => self.dirty = true,
                _ => {}
            }
        }
    }

    fn absorb_events(&mut self) {
        loop {
            match self.events.try_recv() {
                Ok(ev) => self.note(ev),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }

    /// May `name` be read now? Not while a writer is visibly filling it.
    fn ready(&self, name: &str) -> Result<bool> {
        match self.writing.get(name) {
            None => Ok(true),
            Some(true) => Ok(false),
            Some(false) => Ok(self.spool.size(name)?.is_none_or(|n| n > 0)),
        }
    }

    /// Answer everything in the inbox, oldest name first, listing again while
    /// new files keep arriving. Checks for control messages between commands.
    async fn drain(&mut self) -> Result<Flow> {
        while self.dirty {
            self.absorb_events();
            self.dirty = false;
            for name in self.spool.pending()? {
                // Let the signal task run: a SIGTERM that arrived during the
                // previous command is seen before the next one starts.
                tokio::task::yield_now().await;
                loop {
                    match self.control.try_recv() {
                        Ok(Control::Reload) => self.reconfigure(),
                        Ok(Control::Shutdown) => return Ok(Flow::Stop),
                        Err(_) => break,
                    }
                }
                self.absorb_events();
                if !self.ready(&name)? {
                    continue;
                }
                // An error here is about our own directories (the outbox cannot
                // be written): stop with it, and let systemd restart us.
                self.spool.process(&name, &mut *self.handler)?;
            }
            self.spool.prune(SystemTime::now(), false)?;
            self.absorb_events();
        }
        Ok(Flow::Idle)
    }

    fn reconfigure(&mut self) {
        match (self.reload)() {
            Ok(new) => {
                if new.state_dir != self.cfg.state_dir || new.root != self.cfg.root {
                    tracing::warn!("state_dir and root changes take effect only after a restart");
                }
                self.spool.set_config(new.outbox.clone());
                self.handler.reconfigure(new.clone());
                self.cfg = new;
                tracing::info!(
                    trusted_keys = self.cfg.trust.len(),
                    "configuration reloaded"
                );
            }
            Err(e) => tracing::error!("configuration not reloaded, keeping the old one: {e}"),
        }
    }

    fn stop(&mut self) -> Result<()> {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        tracing::info!("accessd stopping");
        Ok(())
    }
}

/// `accessd apply-staged`: apply what `next_boot` staged in an earlier boot,
/// answer each in the outbox (`staged-ID.json`) and the journal (under the
/// command's `COMMAND_ID`). Returns the outcomes.
pub fn apply_staged(handler: &mut Engine, spool: &mut Spool) -> Result<Vec<Handled>> {
    // At boot, before sshd starts: keys that expired while the machine was
    // down are removed (each an audit event, no result file).
    let _ = handler.expire_keys();
    let handled = handler.apply_staged()?;
    for (i, h) in handled.iter().enumerate() {
        let name = staged_result_name(h, i);
        logging::outcome(&name, h);
        spool.answer(&name, h)?;
    }
    Ok(handled)
}

/// Outbox name of a staged outcome: the command id is unique (replay set),
/// and an id-less outcome gets the time and position instead.
pub fn staged_result_name(h: &Handled, index: usize) -> String {
    match &h.id {
        Some(id) => format!("staged-{id}.json"),
        None => {
            let t = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            format!("staged-{t}-{index}.json")
        }
    }
}

/// The daemon's half of the MQTT hand-over, on its single serial apply path
/// (here and not in `mqtt`, which knows neither the spool nor the handler):
/// handle the envelope, make the result durable as `outbox/NAME.json` (the
/// same routine as for inbox files), then let the transport acknowledge the
/// command and publish the result. An error (the outbox cannot be written)
/// leaves the command unacknowledged, so the broker delivers it again.
fn apply_mqtt(
    cmd: crate::mqtt::MqttCommand,
    handler: &mut dyn Handler,
    spool: &mut Spool,
) -> Result<()> {
    let name = format!("{}.json", cmd.name);
    logging::received(
        &name,
        crate::protocol::command::claimed_id(&cmd.envelope).as_deref(),
        cmd.envelope.len(),
    );
    let handled = handler.handle(&cmd.envelope);
    logging::outcome(&name, &handled);
    spool.answer(&name, &handled)?;
    cmd.answered(handled.envelope);
    Ok(())
}

#[cfg(test)]
mod tests;
