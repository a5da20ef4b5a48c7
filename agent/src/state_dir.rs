//! The state directory (`state_dir`, /var/lib/accessd by default): the one
//! owner of its layout, of the rule that makes it trusted, and of how its
//! parts are created. Every module that keeps something there asks a
//! [`StateDir`] for its directory instead of knowing a name.
//!
//! | entry | kept by | what |
//! |---|---|---|
//! | `identity.key` | `identity` | the agent's Ed25519 seed (0600) |
//! | `replay/` | `replay` | accepted command ids |
//! | `staged/` | `staging` | next-boot password hashes |
//! | `locks/` | `suspensions` | the expiry dates `lock_user` replaced |
//! | `keys/` | `ssh::authkeys` | the keys accessd added, per user |
//! | `inbox/`, `outbox/` | `daemon::spool` | the file transport (PROTOCOL §5) |
//! | `mqtt-pending/` | `mqtt::pending` | results the broker has not acknowledged |
//! | `mqtt-relay.sock` | `mqtt::relay` | rumqttc's socket to the relay |
//!
//! **Trust.** The directory holds the identity key and the replay record,
//! so every process that uses it (the daemon, `apply`, `apply-staged`,
//! `identity`, the MQTT transport, the demo) refuses one that is owned by
//! another user than the effective one (root in production) or that group
//! or others can write. Both are checked on the opened descriptor.
//!
//! **Subdirectories** are made one way: `mkdirat(0700)` relative to the
//! opened state directory, a concurrent creation (`EEXIST`) is no error,
//! and the directory is then opened without following a symlink and its
//! owner and mode checked on its descriptor. One found with another owner
//! or group/other bits can only be root's own doing (the parent is not
//! writable by anyone else): it is made private again through the
//! descriptor, with a warning.

use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{mkdirat, Mode};
use nix::unistd::{linkat, unlinkat, UnlinkatFlags};

use crate::error::{Error, IoContext, Result};
use crate::fsx::{Dir, Meta};

/// The agent's identity seed.
pub const IDENTITY_KEY: &str = "identity.key";
/// Accepted command ids.
pub const REPLAY: &str = "replay";
/// Passwords staged for the next boot.
pub const STAGED: &str = "staged";
/// Account expiry dates that `lock_user` replaced.
pub const LOCKS: &str = "locks";
/// The record of the keys accessd added.
pub const KEYS: &str = "keys";
/// Command files in.
pub const INBOX: &str = "inbox";
/// Signed results out.
pub const OUTBOX: &str = "outbox";
/// One marker per MQTT command whose result the broker has not acknowledged.
pub const MQTT_PENDING: &str = "mqtt-pending";
/// The Unix socket between rumqttc and the relay.
pub const MQTT_RELAY_SOCKET: &str = "mqtt-relay.sock";

/// An opened, checked state directory.
#[derive(Debug)]
pub struct StateDir {
    dir: Dir,
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn egid() -> u32 {
    nix::unistd::getegid().as_raw()
}

/// Owner and mode of a file this process keeps in the state directory.
pub fn private_file_meta() -> Meta {
    Meta::new(euid(), egid(), 0o600)
}

impl StateDir {
    /// Create (0700, with missing parents) or open the state directory at
    /// `path`, and check that it can be trusted (module docs). The path is
    /// the operator's: symlinks in it are followed, like the root's.
    pub fn open(path: &Path) -> Result<StateDir> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .ctx(|| format!("creating state directory {}", path.display()))?;
        Self::trust(Dir::open(path)?)
    }

    /// Like [`StateDir::open`], but `None` when there is no directory at
    /// `path` (nothing is created): for readers that have nothing to do then.
    pub fn open_existing(path: &Path) -> Result<Option<StateDir>> {
        match Dir::open(path) {
            Ok(dir) => Self::trust(dir).map(Some),
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn trust(dir: Dir) -> Result<StateDir> {
        let st = dir.stat()?;
        let refuse = |why: String| {
            Err(Error::unsafe_path(
                dir.path(),
                format!(
                    "state directory {why}; it holds the agent's identity key and replay record"
                ),
            ))
        };
        if st.st_mode & 0o022 != 0 {
            return refuse(format!(
                "has mode {:04o}, writable by group or others",
                st.st_mode & 0o7777
            ));
        }
        if st.st_uid != euid() {
            return refuse(format!("is owned by uid {}, not {}", st.st_uid, euid()));
        }
        Ok(StateDir { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Another handle on the same, already checked, directory.
    pub fn try_clone(&self) -> Result<StateDir> {
        Ok(StateDir {
            dir: self.dir.try_clone()?,
        })
    }

    /// The state directory itself (for the files at its top: the identity).
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// `replay/`, created when missing.
    pub fn replay(&self) -> Result<Dir> {
        self.private_dir(REPLAY).map(|(d, _)| d)
    }

    /// `staged/`, created when missing.
    pub fn staged(&self) -> Result<Dir> {
        self.private_dir(STAGED).map(|(d, _)| d)
    }

    /// `locks/`, created when missing.
    pub fn locks(&self) -> Result<Dir> {
        self.private_dir(LOCKS).map(|(d, _)| d)
    }

    /// `keys/`, created when missing.
    pub fn keys(&self) -> Result<Dir> {
        self.private_dir(KEYS).map(|(d, _)| d)
    }

    /// `keys/` if it exists (readers: no record yet means no managed key).
    pub fn existing_keys(&self) -> Result<Option<Dir>> {
        self.existing_private_dir(KEYS)
    }

    /// `inbox/`, created when missing.
    pub fn inbox(&self) -> Result<Dir> {
        self.private_dir(INBOX).map(|(d, _)| d)
    }

    /// `outbox/`, created when missing.
    pub fn outbox(&self) -> Result<Dir> {
        self.private_dir(OUTBOX).map(|(d, _)| d)
    }

    /// `outbox/` if it exists.
    pub fn existing_outbox(&self) -> Result<Option<Dir>> {
        self.existing_private_dir(OUTBOX)
    }

    /// `mqtt-pending/`, created when missing, and whether it was already
    /// there (this agent has had a broker session before).
    pub fn mqtt_pending(&self) -> Result<(Dir, bool)> {
        self.private_dir(MQTT_PENDING)
    }

    /// Where the MQTT relay listens. A path, because `bind` takes one; it
    /// is under the directory checked when this `StateDir` was opened.
    pub fn mqtt_relay_socket(&self) -> PathBuf {
        self.dir.display(MQTT_RELAY_SOCKET)
    }

    /// Create (0700) or open the subdirectory `name`, then make sure by its
    /// descriptor that it is ours and private. `true`: it existed before.
    fn private_dir(&self, name: &str) -> Result<(Dir, bool)> {
        let existed = match mkdirat(self.dir.as_fd(), name, Mode::from_bits_truncate(0o700)) {
            Ok(()) => false,
            // Made earlier, or just now by another process (the daemon and
            // `apply-staged` may start together).
            Err(Errno::EEXIST) => true,
            Err(e) => {
                return Err(e)
                    .ctx(|| format!("creating directory {}", self.dir.display(name).display()))
            }
        };
        let dir = self.dir.open_dir(name)?;
        make_private(&dir, existed)?;
        Ok((dir, existed))
    }

    fn existing_private_dir(&self, name: &str) -> Result<Option<Dir>> {
        let Some(dir) = self.dir.try_open_dir(name)? else {
            return Ok(None);
        };
        make_private(&dir, true)?;
        Ok(Some(dir))
    }
}

/// Owner ours, mode 0700, set through the descriptor where it is not. A
/// new directory may differ only by the umask (silently corrected); an
/// existing one that differs is reported.
fn make_private(dir: &Dir, existed: bool) -> Result<()> {
    let st = dir.stat()?;
    let mode = st.st_mode & 0o7777;
    if st.st_uid == euid() && st.st_gid == egid() && mode == 0o700 {
        return Ok(());
    }
    if existed && (st.st_uid != euid() || mode & 0o077 != 0) {
        tracing::warn!(
            "{} had owner {}:{} and mode {mode:04o}; making it {}:{} 0700",
            dir.path().display(),
            st.st_uid,
            st.st_gid,
            euid(),
            egid()
        );
    }
    dir.set_meta(euid(), egid(), 0o700)
}

/// Write `data` to `name` in `dir` only if `name` does not exist yet,
/// atomically (never a partial file) and durably. Returns `false` if it
/// already existed (nothing written). `link()` is what makes it exclusive:
/// two processes writing the same name end with one file, the first.
pub fn write_new(dir: &Dir, name: &str, data: &[u8], meta: &Meta) -> Result<bool> {
    let mut nonce = [0u8; 8];
    getrandom::getrandom(&mut nonce).map_err(|e| {
        crate::error::random_failed(
            format!(
                "naming a temporary file for {}",
                dir.display(name).display()
            ),
            e,
        )
    })?;
    let tmp = format!(".new-{name}-{}", crate::hex::encode(&nonce));
    dir.write_atomic(&tmp, data, meta)?;
    let linked = linkat(
        dir.as_fd(),
        tmp.as_str(),
        dir.as_fd(),
        name,
        AtFlags::empty(),
    );
    let _ = unlinkat(dir.as_fd(), tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    match linked {
        Ok(()) => {
            dir.sync()?;
            Ok(true)
        }
        Err(Errno::EEXIST) => Ok(false),
        Err(e) => Err(e).ctx(|| format!("publishing {}", dir.display(name).display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn set_mode(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_missing_state_dir_is_created_0700() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a/state");
        StateDir::open(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o700);
    }

    #[test]
    fn a_group_or_world_writable_state_dir_is_refused() {
        for mode in [0o770, 0o707, 0o1777] {
            let t = tempfile::tempdir().unwrap();
            set_mode(t.path(), mode);
            let e = StateDir::open(t.path()).unwrap_err();
            assert_eq!(e.code(), crate::error::Code::UnsafePath, "{mode:o}: {e}");
            assert!(e.to_string().contains("writable by group or others"), "{e}");
            assert!(StateDir::open_existing(t.path()).is_err());
        }
    }

    #[test]
    fn a_state_dir_owned_by_another_user_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(t.path(), Some(65534), None).unwrap();
        let e = StateDir::open(t.path()).unwrap_err();
        assert!(e.to_string().contains("owned by uid 65534"), "{e}");
    }

    #[test]
    fn a_readable_state_dir_is_accepted() {
        let t = tempfile::tempdir().unwrap();
        set_mode(t.path(), 0o755);
        StateDir::open(t.path()).unwrap();
    }

    #[test]
    fn subdirectories_are_created_0700_and_existing_ones_made_private() {
        let t = tempfile::tempdir().unwrap();
        let state = StateDir::open(t.path()).unwrap();
        let (_, existed) = state.mqtt_pending().unwrap();
        assert!(!existed);
        let (_, existed) = state.mqtt_pending().unwrap();
        assert!(existed);
        std::fs::create_dir(t.path().join(REPLAY)).unwrap();
        set_mode(&t.path().join(REPLAY), 0o777);
        state.replay().unwrap();
        state.staged().unwrap();
        for d in [MQTT_PENDING, REPLAY, STAGED] {
            let md = std::fs::metadata(t.path().join(d)).unwrap();
            assert_eq!((md.mode() & 0o7777, md.uid()), (0o700, euid()), "{d}");
        }
    }

    #[test]
    fn a_symlink_in_place_of_a_subdirectory_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), t.path().join(KEYS)).unwrap();
        let state = StateDir::open(t.path()).unwrap();
        assert_eq!(
            state.keys().unwrap_err().code(),
            crate::error::Code::UnsafePath
        );
        assert_eq!(
            state.existing_keys().unwrap_err().code(),
            crate::error::Code::UnsafePath
        );
    }

    #[test]
    fn racing_first_uses_of_a_subdirectory_all_succeed() {
        let t = tempfile::tempdir().unwrap();
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| StateDir::open(t.path()).unwrap().keys().map(|_| ())))
                .collect();
            for h in hs {
                h.join().unwrap().unwrap();
            }
        });
    }

    #[test]
    fn write_new_never_replaces_and_leaves_no_temporary_file() {
        let t = tempfile::tempdir().unwrap();
        let state = StateDir::open(t.path()).unwrap();
        let d = state.dir();
        assert!(write_new(d, "x", b"1", &private_file_meta()).unwrap());
        assert!(!write_new(d, "x", b"2", &private_file_meta()).unwrap());
        assert_eq!(std::fs::read(t.path().join("x")).unwrap(), b"1");
        assert_eq!(d.list().unwrap(), ["x"]);
    }
}
