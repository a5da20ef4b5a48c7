//! `<state_dir>/mqtt-pending/`: one empty marker file per command received
//! from the broker whose result the broker has not yet acknowledged.
//!
//! The marker is written (durably) before the command is handed to the apply
//! loop and removed when the broker PUBACKs the result. So after a crash or a
//! restart, every marker whose `<state_dir>/outbox/NAME.json` exists is a
//! result that may never have reached the broker: it is published again. A
//! marker without a result is a command that was never answered; the broker
//! still holds it (it was never acknowledged) and delivers it again, so the
//! marker is dropped.

use crate::error::Result;
use crate::fsx::{Dir, Meta};

pub const PENDING_DIR: &str = "mqtt-pending";
pub const OUTBOX_DIR: &str = "outbox";

pub struct Pending {
    state: Dir,
    dir: Dir,
    /// The directory was already there: this agent has had a broker session.
    pub existed: bool,
}

impl Pending {
    /// Open (creating, mode 0700) `<state_dir>/mqtt-pending`.
    pub fn open(state_dir: &std::path::Path) -> Result<Pending> {
        let state = Dir::open(state_dir)?;
        let (dir, existed) = match state.try_open_dir(PENDING_DIR)? {
            Some(d) => (d, true),
            None => (state.create_dir(PENDING_DIR, &private_meta(0o700))?, false),
        };
        Ok(Pending {
            state,
            dir,
            existed,
        })
    }

    /// Names of unacknowledged results, in arrival order (names sort so).
    pub fn list(&self) -> Result<Vec<String>> {
        Ok(self
            .dir
            .list()?
            .into_iter()
            .filter(|n| !n.starts_with('.'))
            .collect())
    }

    pub fn mark(&self, name: &str) -> Result<()> {
        self.dir.write_atomic(name, b"", &private_meta(0o600))
    }

    pub fn clear(&self, name: &str) -> Result<()> {
        self.dir.remove_file(name)?;
        Ok(())
    }

    /// The result the apply loop wrote for `name`, if it is still there.
    pub fn outbox_result(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let Some(outbox) = self.state.try_open_dir(OUTBOX_DIR)? else {
            return Ok(None);
        };
        // The outbox file is the envelope plus a newline; the MQTT message
        // is the envelope alone, as when it was first published.
        Ok(outbox.read(&format!("{name}.json"))?.map(|f| {
            let mut b = f.bytes;
            if b.last() == Some(&b'\n') {
                b.pop();
            }
            b
        }))
    }
}

fn private_meta(mode: u32) -> Meta {
    Meta::new(
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
        mode,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_survive_reopen_and_find_outbox_results() {
        let t = tempfile::tempdir().unwrap();
        let p = Pending::open(t.path()).unwrap();
        p.mark("mqtt-2").unwrap();
        p.mark("mqtt-1").unwrap();
        drop(p);
        let p = Pending::open(t.path()).unwrap();
        assert_eq!(p.list().unwrap(), ["mqtt-1", "mqtt-2"]);
        assert!(p.outbox_result("mqtt-1").unwrap().is_none());
        std::fs::create_dir(t.path().join("outbox")).unwrap();
        std::fs::write(t.path().join("outbox/mqtt-1.json"), b"{}\n").unwrap();
        assert_eq!(p.outbox_result("mqtt-1").unwrap().unwrap(), b"{}");
        p.clear("mqtt-1").unwrap();
        assert_eq!(p.list().unwrap(), ["mqtt-2"]);
    }
}
