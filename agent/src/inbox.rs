//! The writer's side of inbox delivery (PROTOCOL §5), shared by
//! `accessctl send`, the demo and the tests: drop an envelope into
//! `<state_dir>/inbox/` under a hidden name, rename it in, and wait for its
//! result in `<state_dir>/outbox/`. (The agent's side is `daemon/spool.rs`.)

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::config::MAX_RESULT_BYTES;
use crate::error::{Error, IoContext, Result};
use crate::fsx::Dir;
use crate::state_dir::{INBOX, OUTBOX};

/// How often the outbox is looked at: a client has no cheaper signal (the
/// agent answers within milliseconds; a poll costs one failed `openat`).
const POLL: Duration = Duration::from_millis(10);

/// An agent's inbox and the outbox its results appear in.
#[derive(Debug, Clone)]
pub struct Inbox {
    inbox: PathBuf,
    outbox: PathBuf,
}

impl Inbox {
    /// The inbox at `inbox`, with the outbox beside it (`../outbox`, as the
    /// state directory lays them out).
    pub fn at(inbox: &Path) -> Inbox {
        Inbox {
            inbox: inbox.to_path_buf(),
            outbox: inbox.join("..").join(OUTBOX),
        }
    }

    /// The inbox of the state directory `state`.
    pub fn of_state_dir(state: &Path) -> Inbox {
        Inbox {
            inbox: state.join(INBOX),
            outbox: state.join(OUTBOX),
        }
    }

    pub fn outbox(&self) -> &Path {
        &self.outbox
    }

    /// A file name for `envelope` that sorts in arrival order (the agent
    /// applies names in lexical order): fixed-width nanoseconds since the
    /// epoch, then the id the envelope claims (a random one if it has
    /// none), so that a human can find it.
    pub fn name_for(envelope: &[u8]) -> String {
        let id = crate::protocol::command::claimed_id(envelope)
            .unwrap_or_else(crate::protocol::client::random_id);
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        format!("{stamp:020}-{id}.json")
    }

    /// Drop `envelope` as `name` the way the protocol asks: written to
    /// `.name` (created exclusively, mode 0600, fsynced), then renamed in,
    /// so that the agent never sees a partial file.
    pub fn drop_envelope(&self, name: &str, envelope: &[u8]) -> Result<()> {
        if name.is_empty() || name.starts_with('.') || name.contains('/') {
            return Err(Error::Internal(format!(
                "{name:?} is not a name for the inbox (plain, not starting with '.')"
            )));
        }
        let tmp = self.inbox.join(format!(".{name}"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .ctx(|| format!("creating {}", tmp.display()))?;
        f.write_all(envelope)
            .and_then(|()| f.sync_all())
            .ctx(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, self.inbox.join(name))
            .ctx(|| format!("renaming {} into the inbox", tmp.display()))
    }

    /// The result envelope answering `name`, once it is in the outbox;
    /// [`Error::Timeout`] if none came within `timeout`. The result is read
    /// without following a symlink and at most [`MAX_RESULT_BYTES`]: more
    /// is no result of an agent.
    pub fn wait_result(&self, name: &str, timeout: Duration) -> Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(bytes) = self.read_result(name)? {
                return Ok(bytes);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "no result for {name} in {} after {}; is the agent running?",
                    self.outbox.display(),
                    humantime::format_duration(timeout)
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// [`Inbox::drop_envelope`], then [`Inbox::wait_result`].
    pub fn send(&self, name: &str, envelope: &[u8], timeout: Duration) -> Result<Vec<u8>> {
        self.drop_envelope(name, envelope)?;
        self.wait_result(name, timeout)
    }

    fn read_result(&self, name: &str) -> Result<Option<Vec<u8>>> {
        // The agent creates the outbox with its first result.
        let outbox = match Dir::open(&self.outbox) {
            Ok(d) => d,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let Some(data) = outbox.read_at_most(name, MAX_RESULT_BYTES)? else {
            return Ok(None);
        };
        if data.over(MAX_RESULT_BYTES) {
            return Err(Error::BadEnvelope(format!(
                "result {} is larger than {MAX_RESULT_BYTES} bytes",
                outbox.display(name).display()
            )));
        }
        Ok(Some(data.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    fn state() -> (tempfile::TempDir, Inbox) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(INBOX)).unwrap();
        let inbox = Inbox::of_state_dir(dir.path());
        (dir, inbox)
    }

    #[test]
    fn no_answer_is_a_timeout_that_names_the_command_not_an_invalid_command() {
        let (_dir, inbox) = state();
        let e = inbox
            .send("c1.json", b"{}", Duration::from_millis(20))
            .unwrap_err();
        assert!(matches!(e, Error::Timeout(_)), "{e:?}");
        assert_eq!(e.code(), Code::IoError);
        assert!(e.to_string().contains("no result for c1.json"), "{e}");
    }

    #[test]
    fn a_dropped_envelope_appears_whole_under_its_name_and_its_result_is_read() {
        let (dir, inbox) = state();
        inbox.drop_envelope("a.json", b"{\"x\":1}").unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path().join(INBOX))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["a.json"]);
        assert_eq!(
            std::fs::read(dir.path().join(INBOX).join("a.json")).unwrap(),
            b"{\"x\":1}"
        );
        std::fs::create_dir(dir.path().join(OUTBOX)).unwrap();
        std::fs::write(dir.path().join(OUTBOX).join("a.json"), b"result").unwrap();
        assert_eq!(
            inbox.wait_result("a.json", Duration::ZERO).unwrap(),
            b"result"
        );
        // Same layout through `at`, as `accessctl send --inbox` names it.
        let at = Inbox::at(&dir.path().join(INBOX));
        assert_eq!(at.wait_result("a.json", Duration::ZERO).unwrap(), b"result");
    }

    #[test]
    fn a_result_swapped_for_a_symlink_is_refused() {
        let (dir, inbox) = state();
        std::fs::create_dir(dir.path().join(OUTBOX)).unwrap();
        std::fs::write(dir.path().join("elsewhere"), b"forged").unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("elsewhere"),
            dir.path().join(OUTBOX).join("a.json"),
        )
        .unwrap();
        let e = inbox.wait_result("a.json", Duration::ZERO).unwrap_err();
        assert_eq!(e.code(), Code::UnsafePath, "{e}");
    }

    #[test]
    fn names_sort_in_arrival_order_and_hidden_names_are_refused() {
        let a = Inbox::name_for(b"not an envelope");
        std::thread::sleep(Duration::from_micros(1));
        let b = Inbox::name_for(b"not an envelope");
        assert!(a < b, "{a} {b}");
        assert!(a.ends_with(".json") && !a.starts_with('.'), "{a}");
        let (_dir, inbox) = state();
        for bad in [".x.json", "a/b.json", ""] {
            assert!(inbox.drop_envelope(bad, b"{}").is_err(), "{bad:?}");
        }
    }
}
