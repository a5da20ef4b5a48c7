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
use crate::fsx::Dir;
use crate::state_dir::{private_file_meta, StateDir};

pub struct Pending {
    state: StateDir,
    dir: Dir,
    /// The directory was already there: this agent has had a broker session.
    pub existed: bool,
}

impl Pending {
    /// Open (creating, mode 0700) `<state_dir>/mqtt-pending`.
    pub fn open(state: &StateDir) -> Result<Pending> {
        let (dir, existed) = state.mqtt_pending()?;
        Ok(Pending {
            // The outbox is looked up at each recovery: the daemon's spool
            // creates it, maybe after the transport started.
            state: state.try_clone()?,
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
        self.dir.write_atomic(name, b"", &private_file_meta())
    }

    pub fn clear(&self, name: &str) -> Result<()> {
        self.dir.remove_file(name)?;
        Ok(())
    }

    /// The result the apply loop wrote for `name`, if it is still there.
    pub fn outbox_result(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let Some(outbox) = self.state.existing_outbox()? else {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_survive_reopen_and_find_outbox_results() {
        let t = tempfile::tempdir().unwrap();
        let p = Pending::open(&StateDir::open(t.path()).unwrap()).unwrap();
        p.mark("mqtt-2").unwrap();
        p.mark("mqtt-1").unwrap();
        drop(p);
        let p = Pending::open(&StateDir::open(t.path()).unwrap()).unwrap();
        assert_eq!(p.list().unwrap(), ["mqtt-1", "mqtt-2"]);
        assert!(p.outbox_result("mqtt-1").unwrap().is_none());
        std::fs::create_dir(t.path().join("outbox")).unwrap();
        std::fs::write(t.path().join("outbox/mqtt-1.json"), b"{}\n").unwrap();
        assert_eq!(p.outbox_result("mqtt-1").unwrap().unwrap(), b"{}");
        p.clear("mqtt-1").unwrap();
        assert_eq!(p.list().unwrap(), ["mqtt-2"]);
    }
}
