//! The processes of a user, and ending them (`delete_user`'s `user_busy`
//! and `terminate_sessions`, PROTOCOL §3 "Sessions").
//!
//! Which processes count is what `userdel` counts (shadow-utils'
//! `lib/user_busy.c`): every process whose real, effective or saved uid is
//! the user's, and whose root directory is the system's root — with
//! `root` set to an image, processes chrooted into it. One more condition:
//! the process's `/etc` must be the root's `/etc`. A process that sees
//! another `/etc` (a container sharing the root filesystem, a test sandbox)
//! reads other account files, where that uid is somebody else. Both
//! conditions hold only for processes in accessd's own user namespace: in
//! a user namespace of their own, any user can chroot or mount another
//! `/etc`, and such processes always count ([`on_this_system`]).
//!
//! Every process is held by a pidfd from the moment it is found, and only
//! ever signalled through it: a pid that was recycled since is never hit.
//! Ending is SIGTERM, then SIGKILL for whatever is still running after
//! [`GRACE`].

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

pub mod by_key;
pub mod revoked;

use crate::error::{IoContext, Result};

/// From SIGTERM to SIGKILL (PROTOCOL: at most 2 s).
pub const GRACE: Duration = Duration::from_secs(2);
/// How long a SIGKILLed process may take to go (one in uninterruptible
/// sleep on a dead NFS server may take longer; it is then reported open).
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Scans of "end what is there, look again": a process may fork while its
/// siblings are being ended.
const ROUNDS: usize = 5;

/// A running process of the user, held by a pidfd.
#[derive(Debug)]
pub struct Process {
    pub pid: i32,
    /// The remote address of the SSH connection, for sshd's per-session
    /// process (the peer of its monitor's socket, see [`session_peer`]).
    pub from: Option<String>,
    pidfd: OwnedFd,
}

/// One process that was ended, as results list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ended {
    pub pid: i32,
    pub user: String,
    /// The key the session authenticated with, when it was ended for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// Opens a pidfd: [`pidfd_open`], or in tests a failure in its place.
pub(crate) type OpenPidfd = dyn Fn(i32) -> std::io::Result<OwnedFd>;

/// The running processes of `uid` on the system under `root`, in pid order.
pub fn processes_of(root: &Path, uid: u32) -> Result<Vec<Process>> {
    processes_of_with(root, uid, &pidfd_open)
}

fn processes_of_with(root: &Path, uid: u32, open: &OpenPidfd) -> Result<Vec<Process>> {
    let here = Here::of(root)?;
    let mut pids: Vec<i32> = fs::read_dir("/proc")
        .ctx(|| "listing /proc".to_string())?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    let mut out = Vec::new();
    for pid in pids {
        // Opened first: whatever is read below is then checked to belong
        // to this very process (it is still alive after the reads).
        let Some(pidfd) = held(pid, open)? else {
            continue;
        };
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        if !is_running_as(&status, uid) {
            continue;
        }
        if !on_this_system(pid, &here) {
            continue;
        }
        let from = session_peer(pid);
        if !alive(&pidfd) {
            continue;
        }
        out.push(Process { pid, from, pidfd });
    }
    Ok(out)
}

/// End every process of `uid` under `root`, looking again after each round
/// for processes that were started meanwhile. Returns what was ended and
/// how many processes are still running.
pub fn end_all(root: &Path, uid: u32, user: &str) -> Result<(Vec<Ended>, usize)> {
    let mut ended = Vec::new();
    for _ in 0..ROUNDS {
        let procs = processes_of(root, uid)?;
        if procs.is_empty() {
            return Ok((ended, 0));
        }
        let (done, _left) = end(procs, user);
        ended.extend(done);
    }
    let open = processes_of(root, uid)?.len();
    Ok((ended, open))
}

/// Those of `procs` still running after up to `within`: a session that is
/// closing (its client has gone, its processes are exiting) is not one that
/// keeps a user busy.
pub fn still_running(procs: Vec<Process>, within: Duration) -> Vec<Process> {
    wait_all(procs, Instant::now() + within).1
}

/// SIGTERM each process; SIGKILL those still running after [`GRACE`].
/// Returns the ended ones and those still running after that.
pub fn end(procs: Vec<Process>, user: &str) -> (Vec<Ended>, Vec<Process>) {
    for p in &procs {
        signal(&p.pidfd, libc::SIGTERM);
    }
    let (mut gone, left) = wait_all(procs, Instant::now() + GRACE);
    for p in &left {
        tracing::info!(pid = p.pid, "still running after SIGTERM; sending SIGKILL");
        signal(&p.pidfd, libc::SIGKILL);
    }
    let (killed, left) = wait_all(left, Instant::now() + KILL_WAIT);
    gone.extend(killed);
    let ended = gone
        .into_iter()
        .map(|p| Ended {
            pid: p.pid,
            user: user.to_owned(),
            fingerprint: None,
            from: p.from,
        })
        .collect();
    (ended, left)
}

/// Wait until each process has exited or `deadline` passed: (exited, left).
fn wait_all(mut procs: Vec<Process>, deadline: Instant) -> (Vec<Process>, Vec<Process>) {
    let mut gone = Vec::new();
    loop {
        let (now_gone, running): (Vec<_>, Vec<_>) =
            procs.into_iter().partition(|p| !alive(&p.pidfd));
        gone.extend(now_gone);
        procs = running;
        let now = Instant::now();
        if procs.is_empty() || now >= deadline {
            return (gone, procs);
        }
        // A pidfd is readable once its process has exited.
        let mut fds: Vec<libc::pollfd> = procs
            .iter()
            .map(|p| libc::pollfd {
                fd: p.pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = (deadline - now).as_millis().clamp(1, 100) as libc::c_int;
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs that
        // lives across the call; poll only writes their `revents`.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    }
}

/// Real, effective or saved uid is `uid` (as userdel checks), and the
/// process is not a zombie (it has exited; only its parent's wait is due).
fn is_running_as(status: &str, uid: u32) -> bool {
    let mut uid_match = false;
    let mut zombie = false;
    for line in status.lines() {
        if let Some(ids) = line.strip_prefix("Uid:") {
            uid_match = ids
                .split_whitespace()
                .take(3)
                .any(|v| v.parse::<u32>() == Ok(uid));
        } else if let Some(state) = line.strip_prefix("State:") {
            zombie = state.trim_start().starts_with('Z');
        }
    }
    uid_match && !zombie
}

fn identity(p: &Path) -> std::io::Result<(u64, u64)> {
    fs::metadata(p).map(|m| (m.dev(), m.ino()))
}

/// Where the processes that count run: the system's root and `/etc`,
/// and (on the live system) accessd's own user namespace.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Here {
    root: (u64, u64),
    etc: (u64, u64),
    /// accessd's user namespace, when `root` is the live system's `/`
    /// (in image mode only processes chrooted into the image count).
    userns: Option<(u64, u64)>,
}

impl Here {
    pub(crate) fn of(root: &Path) -> Result<Here> {
        let root_id = identity(root).ctx(|| format!("stat {}", root.display()))?;
        let etc = identity(&root.join("etc")).ctx(|| format!("stat {}/etc", root.display()))?;
        let live = identity(Path::new("/")).is_ok_and(|r| r == root_id);
        let userns = match live {
            true => Some(
                identity(Path::new("/proc/self/ns/user"))
                    .ctx(|| "stat /proc/self/ns/user".to_string())?,
            ),
            false => None,
        };
        Ok(Here {
            root: root_id,
            etc,
            userns,
        })
    }
}

/// Whether the process is on the system `here` describes: its root is
/// that root and its `/etc` that `/etc` — unless it is in another user
/// namespace than accessd's, when it always is. A process that sees
/// another root or `/etc` in accessd's own user namespace was put there by
/// root (a container sharing the root filesystem, a test sandbox): it
/// reads other account files, where its uid is somebody else. But any
/// user can make a user namespace of their own and mount another `/etc`
/// in it (`unshare -Urm`): its processes are still theirs.
///
/// `/proc/PID/root` is followed (it is the kernel's link to that root);
/// `etc` in it is not, so a process cannot make its `/etc` look like ours
/// with a symlink. A process we may not look into (without CAP_SYS_PTRACE)
/// counts as on this system: for `user_busy`, a false "not busy" is the
/// worse answer, and the shipped unit has the capability.
pub(crate) fn on_this_system(pid: i32, here: &Here) -> bool {
    let denied = |e: &std::io::Error| matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM));
    if let Some(own) = here.userns {
        match identity(Path::new(&format!("/proc/{pid}/ns/user"))) {
            Ok(ns) if ns != own => return true,
            Ok(_) => {}
            Err(e) => return denied(&e),
        }
    }
    let (root_id, etc_id) = (here.root, here.etc);
    let root = format!("/proc/{pid}/root");
    match fs::metadata(&root) {
        Ok(m) if (m.dev(), m.ino()) == root_id => {}
        Ok(_) => return false,
        Err(e) => return denied(&e),
    }
    match fs::symlink_metadata(format!("{root}/etc")) {
        Ok(m) => m.is_dir() && (m.dev(), m.ino()) == etc_id,
        Err(e) => denied(&e),
    }
}

/// For sshd's session process of a connection, the connection's peer:
/// the TCP peer of its monitor, a root-run process of a root-owned sshd
/// executable that is the process itself (root's sessions are not
/// privilege separated) or its parent (the privilege-separated child,
/// running as the user). Nothing the user sets decides (a process name is
/// theirs to choose, and their own processes' sockets are theirs to
/// open): a process of the user is only ever given a root process's peer.
fn session_peer(pid: i32) -> Option<String> {
    if !by_key::is_root_sshd(pid) {
        return None;
    }
    let (info, _) = by_key::proc_info(pid)?;
    let monitor = match info.uids == [0, 0, 0] {
        true => pid,
        false => info.ppid,
    };
    let (m, _) = by_key::proc_info(monitor)?;
    if m.uids != [0, 0, 0] || !by_key::is_root_sshd(monitor) {
        return None;
    }
    remote_address(monitor)
}

/// The peer address of the first established TCP connection the process
/// holds a socket of (looked up in its own network namespace).
fn remote_address(pid: i32) -> Option<String> {
    tcp_peers(pid).first().map(|a| a.ip().to_string())
}

/// The socket inodes among the process's open descriptors.
fn socket_inodes(pid: i32) -> Vec<u64> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let target = fs::read_link(e.path()).ok()?;
            let t = target.to_str()?;
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// The remote ends of the established TCP connections whose sockets the
/// process holds, as its own network namespace's tables list them.
fn tcp_peers(pid: i32) -> Vec<SocketAddr> {
    tcp_peers_cached(pid, &mut TcpTables::default())
}

/// The established TCP connections (peer, socket inode) of each network
/// namespace read so far, by the namespace's inode: one read of the
/// tables per namespace, however many processes are looked at (a host
/// with a thousand sessions would otherwise read its thousands of
/// connections a thousand times).
#[derive(Debug, Default)]
pub(crate) struct TcpTables(std::collections::HashMap<u64, Vec<(SocketAddr, u64)>>);

/// As [`tcp_peers`], reading each namespace's tables once into `tables`.
fn tcp_peers_cached(pid: i32, tables: &mut TcpTables) -> Vec<SocketAddr> {
    let inodes = socket_inodes(pid);
    if inodes.is_empty() {
        return Vec::new();
    }
    let read = || {
        let mut out = Vec::new();
        for table in ["tcp", "tcp6"] {
            let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
                continue;
            };
            out.extend(
                text.lines()
                    .skip(1)
                    .filter_map(parse_tcp_line)
                    .filter(|e| e.established)
                    .map(|e| (e.remote, e.inode)),
            );
        }
        out
    };
    let own;
    let entries = match fs::metadata(format!("/proc/{pid}/ns/net")) {
        Ok(m) => &*tables.0.entry(m.ino()).or_insert_with(read),
        // The namespace cannot be told: read this process's own view.
        Err(_) => {
            own = read();
            &own
        }
    };
    entries
        .iter()
        .filter(|(_, inode)| inodes.contains(inode))
        .map(|(remote, _)| *remote)
        .collect()
}

/// One line of /proc/net/tcp or tcp6.
#[derive(Debug, PartialEq, Eq)]
struct TcpEntry {
    remote: SocketAddr,
    established: bool,
    inode: u64,
}

fn parse_tcp_line(line: &str) -> Option<TcpEntry> {
    let f: Vec<&str> = line.split_whitespace().collect();
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
    if f.len() < 10 {
        return None;
    }
    Some(TcpEntry {
        remote: parse_proc_socket(f[2])?,
        established: f[3] == "01",
        inode: f[9].parse().ok()?,
    })
}

/// `0100007F:D431` (IPv4) or 32 hex digits (IPv6) as /proc/net/tcp* writes
/// them: each 32-bit word in host byte order, the port in hex. An IPv4
/// address mapped into IPv6 (a dual-stack listener) reads as the IPv4 one,
/// as sshd logs it.
fn parse_proc_socket(s: &str) -> Option<SocketAddr> {
    let (hex, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    if hex.len() % 8 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok())
        .collect::<Option<_>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => {
            let a: [u8; 16] = bytes.try_into().ok()?;
            canonical(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
fn parse_proc_addr(s: &str) -> Option<String> {
    parse_proc_socket(s).map(|a| a.ip().to_string())
}

/// A pidfd for `pid` opened by `open`; `None` when there is no such
/// process (ESRCH: it exited since /proc was listed). Any other failure is
/// an error — ENOSYS (a kernel before 5.3), EMFILE (the descriptor limit),
/// EPERM (a seccomp filter): taking it for "gone" would report a busy user
/// as idle, or a live session as ended.
pub(crate) fn held(pid: i32, open: &OpenPidfd) -> Result<Option<OwnedFd>> {
    match open(pid) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(None),
        Err(e) => Err(e).ctx(|| format!("opening a pidfd for process {pid} (needs Linux 5.3)")),
    }
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Signal the process the pidfd refers to; false once it has been reaped.
fn signal(pidfd: &OwnedFd, sig: libc::c_int) -> bool {
    // SAFETY: a valid pidfd, a signal number, no siginfo (NULL), no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    r == 0
}

/// Whether the process is still running. A pidfd is readable once its
/// process has exited — a zombie included, which a signal would still
/// "reach" until its parent reaps it.
fn alive(pidfd: &OwnedFd) -> bool {
    let mut fds = [libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: one valid pollfd, polled without waiting.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
    n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_matched_as_userdel_matches_them() {
        let st = |uids: &str, state: &str| format!("Name:\tx\nState:\t{state}\nUid:\t{uids}\n");
        assert!(is_running_as(
            &st("1001\t1001\t1001\t1001", "S (sleeping)"),
            1001
        ));
        // A set-uid program started by the user: the real uid is theirs.
        assert!(is_running_as(&st("1001\t0\t0\t0", "R (running)"), 1001));
        assert!(is_running_as(&st("0\t0\t1001\t0", "S (sleeping)"), 1001));
        // The fs uid alone is not counted (nor by userdel).
        assert!(!is_running_as(&st("0\t0\t0\t1001", "S (sleeping)"), 1001));
        assert!(!is_running_as(
            &st("1001\t1001\t1001\t1001", "Z (zombie)"),
            1001
        ));
        assert!(!is_running_as(&st("10011\t10011\t10011\t10011", "S"), 1001));
    }

    #[test]
    fn proc_net_addresses() {
        assert_eq!(
            parse_proc_addr("0100007F:D431").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            parse_proc_addr("0000000000000000FFFF00000100007F:0016").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            parse_proc_addr("00000000000000000000000001000000:0016").as_deref(),
            Some("::1")
        );
        assert_eq!(parse_proc_addr("zz"), None);
    }

    #[test]
    fn proc_net_tcp_lines_are_parsed_for_v4_v6_and_mapped_peers() {
        let v4 = "   3: 0100007F:0016 0100007F:9C40 01 00000000:00000000 \
                  00:00000000 00000000     0        0 123456 1 0000000000000000 20 4 30 10 -1";
        assert_eq!(
            parse_tcp_line(v4),
            Some(TcpEntry {
                remote: "127.0.0.1:40000".parse().unwrap(),
                established: true,
                inode: 123456,
            })
        );
        let v6 = "   0: 00000000000000000000000001000000:0016 \
                  00000000000000000000000001000000:9C41 01 00000000:00000000 \
                  00:00000000 00000000     0        0 777 1 0000000000000000 20 4 30 10 -1";
        assert_eq!(
            parse_tcp_line(v6).unwrap().remote,
            "[::1]:40001".parse().unwrap()
        );
        let mapped = "   1: 0000000000000000FFFF00000100007F:0016 \
                      0000000000000000FFFF00000100007F:9C42 01 00000000:00000000 \
                      00:00000000 00000000     0        0 778 1 0000000000000000 20 4 30 10 -1";
        assert_eq!(
            parse_tcp_line(mapped).unwrap().remote,
            "127.0.0.1:40002".parse().unwrap()
        );
        // A listening socket is not a connection.
        let listen = "   2: 00000000:0016 00000000:0000 0A 00000000:00000000 \
                      00:00000000 00000000     0        0 779 1 0000000000000000 100 0 0 10 0";
        assert!(!parse_tcp_line(listen).unwrap().established);
        assert_eq!(
            parse_tcp_line("  sl  local_address rem_address   st tx_queue"),
            None
        );
        assert_eq!(parse_proc_socket("0100007F:XYZ"), None);
        assert_eq!(parse_proc_socket("0100007:0016"), None);
    }

    #[test]
    fn the_peer_of_a_real_connection_is_read_from_proc() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let peers = tcp_peers(std::process::id() as i32);
        // The accepted socket's peer is the client's address and port.
        assert!(
            peers.contains(&client.local_addr().unwrap()),
            "{peers:?} lacks {:?}",
            client.local_addr()
        );
        // Read through the per-namespace cache: the same answer, the
        // tables read once for this namespace however often asked.
        let mut tables = TcpTables::default();
        let me = std::process::id() as i32;
        assert_eq!(tcp_peers_cached(me, &mut tables), peers);
        assert_eq!(tcp_peers_cached(me, &mut tables), peers);
        assert_eq!(tables.0.len(), 1);
    }

    #[test]
    fn a_process_that_has_exited_is_never_signalled() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let fd = pidfd_open(child.id() as i32).unwrap();
        child.wait().unwrap();
        // The pid may be reused from here on; the pidfd still names the
        // process that exited, so nothing is signalled.
        assert!(!alive(&fd));
        assert!(!signal(&fd, libc::SIGTERM));
    }

    #[test]
    fn a_zombie_counts_as_exited() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let fd = pidfd_open(child.id() as i32).unwrap();
        // Not reaped yet: a zombie until wait().
        let deadline = Instant::now() + Duration::from_secs(30);
        while alive(&fd) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!alive(&fd));
        child.wait().unwrap();
    }

    #[test]
    fn a_pidfd_that_cannot_be_opened_fails_the_scan_unless_the_process_is_gone() {
        let failing = |errno: i32| move |_| Err(std::io::Error::from_raw_os_error(errno));
        // SAFETY: geteuid takes nothing and cannot fail.
        let me = unsafe { libc::geteuid() };
        let root = Path::new("/");
        // This test's own process at least.
        assert!(!processes_of(root, me).unwrap().is_empty());
        for errno in [libc::ENOSYS, libc::EMFILE, libc::EPERM] {
            let e = processes_of_with(root, me, &failing(errno)).unwrap_err();
            assert!(e.to_string().contains("pidfd"), "{e}");
        }
        // ESRCH: it exited after /proc was listed, it is not running.
        assert!(processes_of_with(root, me, &failing(libc::ESRCH))
            .unwrap()
            .is_empty());
    }

    /// `sh -c script` run by `argv` (as a throwaway uid), once it has
    /// exec'd `sleep` (its setup done).
    fn sleeper(argv: &[&str], script: &str) -> std::process::Child {
        let child = std::process::Command::new(argv[0])
            .args(&argv[1..])
            .args(["sh", "-c", script])
            .spawn()
            .unwrap();
        let comm = format!("/proc/{}/comm", child.id());
        let deadline = Instant::now() + Duration::from_secs(30);
        while fs::read_to_string(&comm).unwrap_or_default().trim_end() != "sleep" {
            assert!(Instant::now() < deadline, "{argv:?} never reached sleep");
            std::thread::sleep(Duration::from_millis(10));
        }
        child
    }

    #[test]
    fn a_process_in_a_user_namespace_of_its_own_is_still_the_users() {
        // SAFETY: geteuid takes nothing and cannot fail.
        if !crate::ssh::authkeys::expiry::gate::require(
            unsafe { libc::geteuid() } == 0,
            "root (setpriv to a throwaway uid)",
        ) {
            return;
        }
        // A uid of a private range no account has, one per test process.
        let uid = 2_900_000 + std::process::id() % 90_000;
        let as_uid = format!("--reuid={uid}");
        let as_gid = format!("--regid={uid}");
        let setpriv = ["setpriv", &as_uid, &as_gid, "--clear-groups"];
        // What any local user can do: a user namespace of their own with a
        // mount namespace in it, and another /etc there.
        let mut argv = setpriv.to_vec();
        argv.extend(["unshare", "-Urm"]);
        let mut hidden = sleeper(&argv, "mount -t tmpfs x /etc && exec sleep 30");
        let pid = hidden.id() as i32;
        assert_ne!(
            identity(Path::new(&format!("/proc/{pid}/ns/user"))).unwrap(),
            identity(Path::new("/proc/self/ns/user")).unwrap()
        );
        let found = processes_of(Path::new("/"), uid).unwrap();
        hidden.kill().unwrap();
        hidden.wait().unwrap();
        assert_eq!(found.iter().map(|p| p.pid).collect::<Vec<_>>(), [pid]);

        // A mount namespace root made (a sandbox, a container sharing the
        // root filesystem) in this user namespace: its /etc is another
        // system's accounts, its uid somebody else's.
        let script = format!(
            "mount -t tmpfs x /etc && exec {} sleep 30",
            setpriv.join(" ")
        );
        let mut sandboxed = sleeper(&["unshare", "-m", "--propagation", "private"], &script);
        let found = processes_of(Path::new("/"), uid).unwrap();
        sandboxed.kill().unwrap();
        sandboxed.wait().unwrap();
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_user_process_named_like_sshd_is_given_no_from() {
        // SAFETY: geteuid takes nothing and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        if !crate::ssh::authkeys::expiry::gate::require(root, "root (setpriv to a throwaway uid)") {
            return;
        }
        // A process of the user that holds a TCP connection and is named
        // `sshd` (its name is the user's choice: prctl, or any program
        // copied under that name; here even a root-owned one).
        let uid = 2_900_000 + (std::process::id() + 1) % 90_000;
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let sshd = dir.path().join("sshd");
        fs::copy("/bin/bash", &sshd).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut child = std::process::Command::new("setpriv")
            .args([&format!("--reuid={uid}"), &format!("--regid={uid}")])
            .arg("--clear-groups")
            .arg(&sshd)
            .args([
                "-c",
                &format!("exec 3<>/dev/tcp/127.0.0.1/{port}; read -t 30 -u 3"),
            ])
            .spawn()
            .unwrap();
        let (_conn, _) = listener.accept().unwrap();
        let pid = child.id() as i32;
        let found = processes_of(Path::new("/"), uid).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found.iter().map(|p| p.pid).collect::<Vec<_>>(), [pid]);
        assert_eq!(found[0].from, None, "a forged sshd was given a peer");
    }
}
