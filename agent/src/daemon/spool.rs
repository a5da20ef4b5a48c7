//! The inbox and outbox directories (PROTOCOL §5) and the durable hand-over
//! between them: read `inbox/NAME.json`, handle it, write the signed result to
//! `outbox/NAME.json` (atomically and durably), and only then delete the inbox
//! file and fsync the inbox.
//!
//! A crash before the result is durable leaves the inbox file, which is
//! handled again after restart: the engine's replay set answers `replayed`
//! and nothing runs twice. A crash after the result is durable but before the
//! inbox file is gone is recognised by the result being newer than the inbox
//! file; that file is then deleted, not handled again, so the first (real)
//! answer is the one that stays.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::stat::FileStat;

use crate::config::OutboxConfig;
use crate::engine::Handled;
use crate::error::{Code, Result};
use crate::fsx::{Dir, Meta};
use crate::logging;
use crate::state_dir::{private_file_meta, StateDir};

use super::Handler;

/// What became of one inbox name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Handled; the result is in the outbox and the inbox file is gone.
    Answered,
    /// The outbox already held the answer (a crash between writing it and
    /// deleting the inbox file); the inbox file was deleted.
    AlreadyAnswered,
    /// The file was gone by the time we looked.
    Vanished,
}

pub struct Spool {
    inbox: Dir,
    outbox: Dir,
    cfg: OutboxConfig,
    meta: Meta,
    /// Results written since the outbox was last listed, and the oldest
    /// result seen then: pruning lists the outbox only when one of the
    /// limits can have been crossed, not after every command.
    written_since_scan: usize,
    count_at_scan: usize,
    oldest_at_scan: Option<SystemTime>,
}

/// Is `name` a command file? `NAME.json`, not hidden (writers create
/// `.something` and rename it into place).
pub fn is_command_name(name: &str) -> bool {
    !name.starts_with('.') && name.len() > ".json".len() && name.ends_with(".json")
}

fn mtime(st: &FileStat) -> SystemTime {
    let secs = st.st_mtime.max(0) as u64;
    let nanos = st.st_mtime_nsec.clamp(0, 999_999_999) as u32;
    UNIX_EPOCH + Duration::new(secs, nanos)
}

fn is_regular(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

impl Spool {
    /// Open (creating 0700 where missing, see [`StateDir`]) the inbox and
    /// the outbox. Results are signed but may say which users exist, so
    /// both are private.
    pub fn open(state: &StateDir, cfg: OutboxConfig) -> Result<Spool> {
        Ok(Spool {
            inbox: state.inbox()?,
            outbox: state.outbox()?,
            cfg,
            meta: private_file_meta(),
            written_since_scan: 0,
            count_at_scan: 0,
            oldest_at_scan: None,
        })
    }

    pub fn inbox_path(&self) -> &Path {
        self.inbox.path()
    }

    pub fn set_config(&mut self, cfg: OutboxConfig) {
        self.cfg = cfg;
    }

    /// Command files waiting in the inbox, in lexical (bytewise) order.
    pub fn pending(&self) -> Result<Vec<String>> {
        Ok(self
            .inbox
            .list()?
            .into_iter()
            .filter(|n| is_command_name(n))
            .collect())
    }

    /// Size of `inbox/name`, `None` if it is gone.
    pub fn size(&self, name: &str) -> Result<Option<u64>> {
        Ok(self.inbox.stat_at(name)?.map(|st| st.st_size.max(0) as u64))
    }

    /// Hand `name` over: handle it and answer it durably, then delete it.
    /// Errors are about our own directories (the outbox cannot be written):
    /// the command's own problems are answered in its result.
    pub fn process(&mut self, name: &str, handler: &mut dyn Handler) -> Result<Outcome> {
        let Some(in_st) = self.inbox.stat_at(name)? else {
            return Ok(Outcome::Vanished);
        };
        if let Some(out_st) = self.outbox.stat_at(name)? {
            if is_regular(&out_st) && mtime(&out_st) >= mtime(&in_st) {
                tracing::warn!(
                    source = name,
                    "{name} was answered before a restart; removing it without handling it again"
                );
                self.remove_from_inbox(name)?;
                return Ok(Outcome::AlreadyAnswered);
            }
        }
        // At most the envelope limit + 1 bytes, whatever size the file
        // claims: enough for the handler to answer `bad_envelope` for its
        // size, never an allocation a writer of the inbox chooses.
        let bytes = match self.inbox.read_at_most(name, handler.max_envelope_bytes()) {
            Ok(Some(data)) => data.bytes,
            Ok(None) => return Ok(Outcome::Vanished),
            // A symlink, FIFO or directory: never followed or read. It still
            // gets an answer (bad_envelope from the empty input) so that
            // whoever put it there is not left waiting.
            Err(e) if e.code() == Code::UnsafePath => {
                tracing::warn!(source = name, "not reading {name}: {e}");
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        logging::received(
            name,
            crate::protocol::command::claimed_id(&bytes).as_deref(),
            bytes.len(),
        );
        let handled = handler.handle(&bytes);
        drop(bytes);
        logging::outcome(name, &handled);
        self.answer(name, &handled)?;
        self.remove_from_inbox(name)?;
        Ok(Outcome::Answered)
    }

    /// Write `handled`'s result envelope to `outbox/name` (atomic, durable).
    /// Also used for staged (next-boot) outcomes, which have no inbox file.
    pub fn answer(&mut self, name: &str, handled: &Handled) -> Result<()> {
        let mut out = Vec::with_capacity(handled.envelope.len() + 1);
        out.extend_from_slice(&handled.envelope);
        out.push(b'\n');
        self.outbox.write_atomic(name, &out, &self.meta)?;
        self.written_since_scan += 1;
        Ok(())
    }

    fn remove_from_inbox(&self, name: &str) -> Result<()> {
        // A directory planted under a command name cannot be unlinked; leaving
        // it is harmless because its answer is now newer than it.
        match self.inbox.remove_file(name) {
            Ok(_) => {}
            Err(e) if e.code() == Code::UnsafePath => return Err(e),
            Err(e) => {
                if let Some(st) = self.inbox.stat_at(name)? {
                    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                        tracing::warn!(
                            source = name,
                            "cannot remove directory {name} from the inbox: {e}"
                        );
                        return Ok(());
                    }
                }
                return Err(e);
            }
        }
        self.inbox.sync()
    }

    /// Delete results older than `max_age_secs`, then the oldest beyond
    /// `max_files`. Lists the outbox only when a limit can have been crossed
    /// since the last listing (`force` lists regardless, e.g. at startup).
    /// Returns how many results were deleted.
    pub fn prune(&mut self, now: SystemTime, force: bool) -> Result<usize> {
        let max_age = Duration::from_secs(self.cfg.max_age_secs);
        let may_be_over_count = self.count_at_scan + self.written_since_scan > self.cfg.max_files;
        let may_be_too_old = self
            .oldest_at_scan
            .is_some_and(|t| now.duration_since(t).unwrap_or_default() > max_age);
        if !force && !may_be_over_count && !may_be_too_old {
            return Ok(0);
        }
        let mut results: Vec<(SystemTime, String)> = Vec::new();
        for name in self.outbox.list()? {
            if !is_command_name(&name) {
                continue;
            }
            if let Some(st) = self.outbox.stat_at(&name)? {
                if is_regular(&st) {
                    results.push((mtime(&st), name));
                }
            }
        }
        // Oldest first; ties broken by name so that the order is total.
        results.sort();
        let over_count = results.len().saturating_sub(self.cfg.max_files);
        let mut removed = 0;
        let mut kept = Vec::with_capacity(results.len());
        for (i, (t, name)) in results.into_iter().enumerate() {
            let too_old = now.duration_since(t).unwrap_or_default() > max_age;
            if i < over_count || too_old {
                self.outbox.remove_file(&name)?;
                removed += 1;
            } else {
                kept.push(t);
            }
        }
        if removed > 0 {
            self.outbox.sync()?;
            tracing::info!("pruned {removed} old results from the outbox");
        }
        self.count_at_scan = kept.len();
        self.oldest_at_scan = kept.first().copied();
        self.written_since_scan = 0;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names() {
        assert!(is_command_name("0001.json"));
        assert!(!is_command_name(".0001.json"));
        assert!(!is_command_name(".json"));
        assert!(!is_command_name("0001.json.tmp"));
        assert!(!is_command_name("0001"));
    }
}
