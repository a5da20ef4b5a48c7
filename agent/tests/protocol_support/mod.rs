//! Shared rig for the protocol tests: a throwaway root built from copies of
//! the host's account files (the host's own files are only ever read), a
//! state directory, a control-plane key, and a fixed clock.
#![allow(dead_code)]

// A test binary that uses two support modules gets two copies of this
// small file; both are the same rule.
#[allow(clippy::duplicate_mod)]
#[path = "../gate/mod.rs"]
pub mod gate;

// The one wait loop of every suite (see ../wait/mod.rs), shared by path.
#[allow(clippy::duplicate_mod)]
#[path = "../wait/mod.rs"]
pub mod wait;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use accessd::config::Config;
use accessd::engine::{Engine, Handled};
use accessd::protocol::client::{self, CommandSpec};
use accessd::protocol::result::ResultPayload;
use accessd::sys::{FixedClock, System};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::Value;

/// 2026-11-29T18:05:00Z.
pub const NOW: u64 = 1_795_975_500;
pub const INSTANCE: &str = "i-test";
pub const KEY_ID: &str = "console";

pub const KEY1: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMU3PG77wArVV58QldS0w27ZKeU/f5DVdcL7Fbmo4fgY t1";
pub const KEY2: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBXdB9lpz81z0AvuKLmtI24gMsIGh7nh8EmbA3ZuBUAs t2";
pub const KEY2_FP: &str = "SHA256:uTcto66sT89aWBZ2S7upp5TUm7SDiS5ZQ8GNrUBDp6k";
pub const KEY3: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBIHFFlCu/Oq99411fri8wLav8eOvN/u5kKOkoE1lBq4VbMG1LjYennDd3WO0s6GUbaEBTkbW3sAOg/wOfqZwlXI= t3";

/// True when this test can run; outside CI a missing prerequisite skips
/// with a printed reason, in CI it fails loudly.
pub fn require(cond: bool, what: &str) -> bool {
    gate::require(cond, &format!("this test needs {what}"))
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub struct Rig {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub state: PathBuf,
    pub cp: SigningKey,
    pub now: SystemTime,
}

fn copy_tree(from: &Path, to: &Path) {
    let md = std::fs::symlink_metadata(from).unwrap();
    if md.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            copy_tree(&e.path(), &to.join(e.file_name()));
        }
    } else if md.is_file() {
        std::fs::copy(from, to).unwrap();
    }
    std::fs::set_permissions(to, md.permissions()).unwrap();
    let _ = std::os::unix::fs::lchown(to, Some(md.uid()), Some(md.gid()));
}

impl Rig {
    pub fn new() -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let state = tmp.path().join("state");
        for d in ["etc/default", "home", "etc/ssh", "etc/sudoers.d", "root"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        // Copies: the host's files are read, never written.
        for f in [
            "passwd",
            "group",
            "shadow",
            "gshadow",
            "login.defs",
            "shells",
            "skel",
            "default/useradd",
            "sudoers",
        ] {
            let src = Path::new("/etc").join(f);
            if src.exists() {
                copy_tree(&src, &root.join("etc").join(f));
            }
        }
        if !root.join("etc/sudoers").exists() {
            std::fs::write(
                root.join("etc/sudoers"),
                "root ALL=(ALL:ALL) ALL\n%sudo ALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n",
            )
            .unwrap();
        }
        std::fs::set_permissions(
            root.join("root"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        std::fs::write(
            root.join("etc/ssh/sshd_config"),
            "Include /etc/ssh/sshd_config.d/*.conf\nKbdInteractiveAuthentication no\nUsePAM yes\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.join("etc/ssh/sshd_config.d")).unwrap();
        Rig {
            tmp,
            root,
            state,
            cp: SigningKey::from_bytes(&[42; 32]),
            now: UNIX_EPOCH + Duration::from_secs(NOW),
        }
    }

    pub fn config(&self) -> Config {
        let text = format!(
            "instance_id = \"{INSTANCE}\"\nstate_dir = \"{}\"\nroot = \"{}\"\n[trust]\n{KEY_ID} = \"{}\"\n",
            self.state.display(),
            self.root.display(),
            accessd::protocol::dsse::encode_b64(self.cp.verifying_key().as_bytes())
        );
        Config::parse_str(&text, Path::new("test.toml")).unwrap()
    }

    pub fn system(&self) -> System {
        System::new(&self.root, &self.state).with_clock(Arc::new(FixedClock(self.now)))
    }

    pub fn engine(&self) -> Engine {
        Engine::new(self.config(), self.system()).unwrap()
    }

    /// An engine on a clock the test moves (steps, passing time, reboots),
    /// starting at `NOW` in a boot other than [`Rig::engine`]'s.
    pub fn engine_on(&self, clock: Arc<accessd::sys::TestClock>) -> Engine {
        let sys = System::new(&self.root, &self.state).with_clock(clock);
        Engine::new(self.config(), sys).unwrap()
    }

    /// The engine after a reboot: same state, another boot id.
    pub fn engine_after_reboot(&self) -> Engine {
        self.engine_on(Arc::new(accessd::sys::TestClock::at(self.now)))
    }

    /// A command valid at `NOW` (issued a minute before, 10 minutes long).
    pub fn spec(&self, id: &str, op: &str, args: Value) -> CommandSpec {
        CommandSpec {
            id: id.into(),
            instance_id: INSTANCE.into(),
            issued_at: self.now - Duration::from_secs(60),
            expires_at: self.now + Duration::from_secs(540),
            op: op.into(),
            args,
        }
    }

    pub fn signed(&self, id: &str, op: &str, args: Value) -> Vec<u8> {
        self.spec(id, op, args).sign(&self.cp, KEY_ID).into_bytes()
    }

    /// Every file under the root and the state dir's `staged/`: path →
    /// (content, mode, uid, gid). Two snapshots are equal iff nothing changed.
    pub fn snapshot(&self) -> Snapshot {
        let mut out = BTreeMap::new();
        walk(&self.root, &mut out);
        walk(&self.state.join("staged"), &mut out);
        out
    }

    /// [`Rig::snapshot`] without the `-` backups and the lock file that
    /// shadow-utils (and the accounts layer) refresh on every write: a
    /// rolled-back change leaves the primary files as they were.
    pub fn snapshot_without_backups(&self) -> Snapshot {
        let mut s = self.snapshot();
        s.retain(|p, _| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            !(p.starts_with(self.root.join("etc")) && (name.ends_with('-') || name == ".pwd.lock"))
        });
        s
    }

    pub fn shadow_hash(&self, user: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.root.join("etc/shadow")).unwrap();
        text.lines()
            .find(|l| l.split(':').next() == Some(user))
            .map(|l| l.split(':').nth(1).unwrap().to_owned())
    }
}

fn walk(p: &Path, out: &mut BTreeMap<PathBuf, (Vec<u8>, u32, u32, u32)>) {
    let Ok(md) = std::fs::symlink_metadata(p) else {
        return;
    };
    let content = if md.is_file() {
        std::fs::read(p).unwrap()
    } else if md.file_type().is_symlink() {
        std::fs::read_link(p)
            .unwrap()
            .into_os_string()
            .into_encoded_bytes()
    } else {
        Vec::new()
    };
    out.insert(p.to_path_buf(), (content, md.mode(), md.uid(), md.gid()));
    if md.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            walk(&e.unwrap().path(), out);
        }
    }
}

/// Verify a result envelope with the agent key and return its payload.
pub fn payload(agent: &VerifyingKey, h: &Handled) -> ResultPayload {
    let p = client::verify_result(agent, &h.envelope).expect("result verifies");
    assert_eq!(p.code, h.code);
    assert_eq!(p.status, h.status);
    assert_eq!(p.id, h.id);
    p
}

pub fn agent_key(e: &Engine) -> VerifyingKey {
    accessd::protocol::parse_public_key(&e.public_key()).unwrap()
}

pub type Snapshot = BTreeMap<PathBuf, (Vec<u8>, u32, u32, u32)>;

/// Panic naming the paths that differ between two snapshots.
pub fn assert_unchanged(before: &Snapshot, after: &Snapshot, what: &str) {
    let changed: Vec<_> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(changed.is_empty(), "{what}: changed on disk: {changed:?}");
}

impl Rig {
    /// A command envelope whose payload is `payload_json` byte for byte,
    /// signed by the trusted key: for payloads serde_json would never write
    /// (duplicate keys, odd escapes), with the times of [`Rig::spec`].
    pub fn signed_raw(&self, id: &str, op: &str, args_json: &str) -> Vec<u8> {
        use ed25519_dalek::Signer;
        let t = |s: SystemTime| accessd::protocol::format_time(s);
        let payload = format!(
            r#"{{"v":1,"id":"{id}","instance_id":"{INSTANCE}","issued_at":"{}","expires_at":"{}","op":"{op}","args":{args_json}}}"#,
            t(self.now - Duration::from_secs(60)),
            t(self.now + Duration::from_secs(540)),
        );
        let ty = accessd::protocol::COMMAND_TYPE;
        let sig = self
            .cp
            .sign(&accessd::protocol::dsse::pae(ty, payload.as_bytes()))
            .to_bytes();
        serde_json::json!({
            "payloadType": ty,
            "payload": accessd::protocol::dsse::encode_b64(payload.as_bytes()),
            "signatures": [{"keyid": KEY_ID, "sig": accessd::protocol::dsse::encode_b64(&sig)}],
        })
        .to_string()
        .into_bytes()
    }
}
