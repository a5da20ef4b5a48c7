//! delete_user and the user's running processes (PROTOCOL §3: `user_busy`,
//! `terminate_sessions`), through the engine on a throwaway root.
//!
//! The user's "session" is a child of this test that chroots into the
//! throwaway root and takes the user's uid, as a process of that system
//! would be: userdel (and accessd) count processes whose root is the
//! system's root, so the host's own processes never take part.

mod protocol_support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use accessd::engine::Status;
use accessd::error::Code;
use protocol_support::*;
use serde_json::json;

fn rig() -> Option<Rig> {
    if !require(is_root(), "root (chroot and setuid for the user's process)") {
        return None;
    }
    Some(Rig::new())
}

/// A process of this test, waiting for a signal inside `root` as uid:gid.
struct Session {
    pid: nix::unistd::Pid,
    reaped: Option<nix::sys::wait::WaitStatus>,
}

impl Session {
    fn id(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    fn running(&mut self) -> bool {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        if self.reaped.is_some() {
            return false;
        }
        match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)).unwrap() {
            WaitStatus::StillAlive => true,
            st => {
                self.reaped = Some(st);
                false
            }
        }
    }

    /// The signal that ended it (waits for it to end).
    fn wait_signal(&mut self) -> Option<i32> {
        let st = match self.reaped.take() {
            Some(st) => st,
            None => nix::sys::wait::waitpid(self.pid, None).unwrap(),
        };
        self.reaped = Some(st);
        match st {
            nix::sys::wait::WaitStatus::Signaled(_, sig, _) => Some(sig as i32),
            _ => None,
        }
    }

    fn kill(&mut self) {
        if self.running() {
            let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        }
        self.wait_signal();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            self.kill();
        }
    }
}

/// A process of uid:gid chrooted into `root` that waits for a signal; with
/// `stubborn`, it ignores SIGTERM (only SIGKILL ends it).
fn session(root: &Path, uid: u32, gid: u32, stubborn: bool) -> Session {
    let root = std::ffi::CString::new(root.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: the child runs only raw system calls (no allocation, no
    // locks, which another thread of this test may have held at the fork)
    // and never returns from this block.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => unsafe {
            if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                libc::_exit(101);
            }
            if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                || libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
                || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
            {
                libc::_exit(102);
            }
            if stubborn {
                libc::signal(libc::SIGTERM, libc::SIG_IGN);
            }
            loop {
                libc::pause();
            }
        },
        nix::unistd::ForkResult::Parent { child } => {
            let mut s = Session {
                pid: child,
                reaped: None,
            };
            // Wait until it runs as the user in the root (its uid changes
            // last), so the command sees it as the user's process.
            let want = format!("Uid:\t{uid}\t{uid}\t{uid}");
            let what = format!("the session process to take uid {uid}");
            protocol_support::wait::wait_until(&what, std::time::Duration::from_secs(10), || {
                let status =
                    std::fs::read_to_string(format!("/proc/{child}/status")).unwrap_or_default();
                if status.lines().any(|l| l.starts_with(&want)) {
                    return true;
                }
                assert!(s.running(), "the session process exited: {:?}", s.reaped);
                false
            });
            s
        }
    }
}

fn ids(rig: &Rig, user: &str) -> (u32, u32) {
    let md = std::fs::metadata(rig.root.join("home").join(user)).unwrap();
    (md.uid(), md.gid())
}

#[test]
fn delete_user_with_running_processes_is_user_busy_and_changes_nothing() {
    let Some(rig) = rig() else { return };
    let mut e = rig.engine();
    let h = e.handle(&rig.signed("c-1", "create_user", json!({"user": "alice"})));
    assert_eq!(h.code, Code::Ok, "{}", h.message);
    let (uid, gid) = ids(&rig, "alice");
    let mut s = session(&rig.root, uid, gid, false);
    let before = rig.snapshot();

    let h = e.handle(&rig.signed(
        "c-2",
        "delete_user",
        json!({"user": "alice", "remove_home": true}),
    ));
    assert_eq!(
        (h.code.as_str(), h.status),
        ("user_busy", Status::Failed),
        "{}",
        h.message
    );
    assert!(h.message.contains(&s.id().to_string()), "{}", h.message);
    assert_unchanged(&before, &rig.snapshot(), "user_busy");
    assert!(
        s.running(),
        "the process was ended without terminate_sessions"
    );

    // Once it is gone, the same command deletes the user.
    s.kill();
    let h = e.handle(&rig.signed("c-3", "delete_user", json!({"user": "alice"})));
    assert_eq!(h.code, Code::Ok, "{}", h.message);
}

#[test]
fn terminate_sessions_ends_every_process_then_deletes_the_user() {
    let Some(rig) = rig() else { return };
    let mut e = rig.engine();
    let h = e.handle(&rig.signed("c-1", "create_user", json!({"user": "bob"})));
    assert_eq!(h.code, Code::Ok, "{}", h.message);
    let (uid, gid) = ids(&rig, "bob");
    let mut polite = session(&rig.root, uid, gid, false);
    let mut stubborn = session(&rig.root, uid, gid, true);
    // Same uid, but on the host's root: not a process of this system's bob.
    let mut outsider = session(Path::new("/"), uid, gid, false);

    let h = e.handle(&rig.signed(
        "c-2",
        "delete_user",
        json!({"user": "bob", "terminate_sessions": true}),
    ));
    assert_eq!(h.code, Code::Ok, "{}", h.message);
    let p = payload(&agent_key(&e), &h);
    let mut pids: Vec<i64> = p.data["sessions_ended"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["user"], "bob");
            s["pid"].as_i64().unwrap()
        })
        .collect();
    pids.sort();
    let mut want = vec![i64::from(polite.id()), i64::from(stubborn.id())];
    want.sort();
    assert_eq!(pids, want, "{}", p.data);
    assert_eq!(p.data["sessions_open"], 0);
    assert_eq!(polite.wait_signal(), Some(libc::SIGTERM));
    assert_eq!(stubborn.wait_signal(), Some(libc::SIGKILL));
    assert!(outsider.running(), "a process of another root was ended");
    outsider.kill();
    let passwd = std::fs::read_to_string(rig.root.join("etc/passwd")).unwrap();
    assert!(
        !passwd.lines().any(|l| l.starts_with("bob:")),
        "bob is still there"
    );
}

#[test]
fn a_process_of_the_same_uid_on_another_root_does_not_make_the_user_busy() {
    let Some(rig) = rig() else { return };
    let mut e = rig.engine();
    let h = e.handle(&rig.signed("c-1", "create_user", json!({"user": "carol"})));
    assert_eq!(h.code, Code::Ok, "{}", h.message);
    let (uid, gid) = ids(&rig, "carol");
    let mut outsider = session(Path::new("/"), uid, gid, false);
    let h = e.handle(&rig.signed("c-2", "delete_user", json!({"user": "carol"})));
    assert_eq!(h.code, Code::Ok, "{}", h.message);
    assert!(outsider.running());
    outsider.kill();
}
