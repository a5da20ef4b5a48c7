//! The namespace holder: the process that owns a sandbox's mount
//! namespace, and the teardown that kills everything inside it.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread;
use std::time::Duration;

/// The rest of the holder's life. Drop kills the namespace when a test ends
/// or panics; this covers the test process being killed outright (a CI
/// timeout, ^C): when its parent is gone the holder SIGKILLs everything in
/// its namespace (sshd, sessions, accessd) and removes the throwaway tree
/// (`$1`, only ever a directory named accessd-e2e-*), which TempDir's Drop
/// would have removed.
const WATCHDOG: &str = r#"echo ready
exec </dev/null >/dev/null 2>&1
set +e
me=$(readlink /proc/$$/ns/mnt)
while kill -0 "$PPID"; do sleep 1; done
for p in /proc/[0-9]*; do
  pid=${p#/proc/}
  [ "$pid" != "$$" ] && [ "$(readlink "$p/ns/mnt")" = "$me" ] && kill -KILL "$pid"
done
case "$1" in /tmp/accessd-e2e-*|/*/accessd-e2e-*) rm -rf --one-file-system -- "$1" ;; esac
exit 0
"#;

/// Start the namespace holder: `unshare -m --propagation private` runs a
/// shell that bind-mounts the throwaway tree over the real paths, says
/// `ready`, and then waits as [`WATCHDOG`]. Returns the child, its pid (the
/// namespace's anchor) and its mount-namespace link.
pub(crate) fn enter_namespace(t: &Path) -> Holder {
    // `-n`: no utab bookkeeping under the host's /run for these mounts.
    let mut script = String::from(
        "set -eu\n\
         mount -n --bind \"$1/etc\" /etc\n\
         mount -n --bind \"$1/home\" /home\n\
         mount -n --bind \"$1/root\" /root\n\
         mount -n --bind \"$1/run\" /run\n\
         mount -n --bind \"$1/varlog\" /var/log\n",
    );
    if Path::new("/var/mail").is_dir() {
        script.push_str("mount -n --bind \"$1/varmail\" /var/mail\n");
    }
    script.push_str(WATCHDOG);
    // One failure to set up a namespace was seen once in many runs on a
    // busy shared machine and could not be reproduced; it is reported and
    // retried rather than failing a scenario that has not started yet.
    let mut failures = Vec::new();
    for _ in 0..3 {
        match spawn_holder(&script, t) {
            Ok(holder) => {
                for f in &failures {
                    eprintln!("warning: a namespace holder failed to start and was retried: {f}");
                }
                return holder;
            }
            Err(e) => failures.push(e),
        }
    }
    panic!(
        "could not set up the sandbox's mount namespace: {}",
        failures.join("; ")
    )
}

/// The namespace holder: child, pid, namespace link, namespace pin.
pub(crate) type Holder = (Child, u32, PathBuf, fs::File);

fn spawn_holder(script: &str, t: &Path) -> Result<Holder, String> {
    let mut child = Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(t)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start unshare: {e}"))?;
    let stdout: ChildStdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    let read = BufReader::new(stdout).read_line(&mut line);
    if line.trim() != "ready" {
        let _ = child.kill();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let status = child.wait();
        return Err(format!(
            "holder said {line:?} ({read:?}), exit {status:?}, stderr: {}",
            err.trim()
        ));
    }
    let pid = child.id();
    // Pinned before it is read: the holder is our unreaped child, so the
    // pid is still the holder's.
    let pin =
        fs::File::open(format!("/proc/{pid}/ns/mnt")).expect("open the holder's mount namespace");
    let mnt_ns =
        fs::read_link(format!("/proc/{pid}/ns/mnt")).expect("read the holder's mount namespace");
    let ours = fs::read_link("/proc/self/ns/mnt").expect("read our mount namespace");
    assert_ne!(mnt_ns, ours, "the holder is not in a namespace of its own");
    Ok((child, pid, mnt_ns, pin))
}

/// SIGKILL every process in the sandbox's mount namespace (sshd, its
/// sessions, accessd, the holder), until none is left. A namespace is
/// identified by its `/proc/PID/ns/mnt` link, so processes that daemonized
/// away from our children are found too.
pub(crate) fn kill_namespace(mnt_ns: &Path, holder: u32) {
    for _ in 0..50 {
        let mut found = false;
        if let Ok(rd) = fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                if fs::read_link(format!("/proc/{pid}/ns/mnt")).ok().as_deref() == Some(mnt_ns) {
                    // Zombies keep their ns link only while they have a mm;
                    // skip ones already dead (state Z).
                    let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                    if state
                        .rsplit(')')
                        .next()
                        .is_some_and(|s| s.trim_start().starts_with('Z'))
                    {
                        continue;
                    }
                    found = true;
                    kill_if_in(pid, mnt_ns);
                }
            }
        }
        if !found {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("warning: processes of sandbox namespace (holder {holder}) survived SIGKILL");
}

/// SIGKILL `pid` if it is (still) in `mnt_ns`. The pid is pinned with a
/// pidfd before its namespace is checked, so a pid that is recycled between
/// the scan and the signal can never make us kill an unrelated process.
fn kill_if_in(pid: i32, mnt_ns: &Path) {
    // SAFETY: plain syscalls on integers; the fd is closed below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int;
    if fd < 0 {
        let no_pidfd = std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS);
        if no_pidfd && fs::read_link(format!("/proc/{pid}/ns/mnt")).ok().as_deref() == Some(mnt_ns)
        {
            // Kernels before 5.3: the racy way is all there is.
            // SAFETY: a plain syscall on integers.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        return; // otherwise it is gone already
    }
    if fs::read_link(format!("/proc/{pid}/ns/mnt")).ok().as_deref() == Some(mnt_ns) {
        // SAFETY: fd is a pidfd we own; a null siginfo is allowed.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
    // SAFETY: fd is ours and not used again.
    unsafe { libc::close(fd) };
}
