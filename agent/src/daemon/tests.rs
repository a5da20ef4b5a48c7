//! The daemon's mechanics with a recording handler: ordering, durability,
//! control messages, pruning, hostile or odd inbox entries. The real engine
//! is exercised end to end by `agent/tests/daemon_*.rs`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use super::*;
use crate::config::OutboxConfig;
use crate::engine::Status;
use crate::error::Code;
use crate::state_dir::StateDir;

/// Answers `result:<input>` and remembers every input and reconfiguration.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    configs: Arc<Mutex<Vec<Config>>>,
    /// Sent (once) when the n-th command is being handled.
    on_nth: Option<(usize, Control, UnboundedSender<Control>)>,
    /// A managed key expiry: `expire_keys` answers it until it has passed,
    /// then `None` (as the engine does once it removed the key).
    expiry: Option<SystemTime>,
    /// Every call, in order: `("expire", when)` or `("handle", when)`.
    calls: Arc<Mutex<Vec<(&'static str, SystemTime)>>>,
}

impl Handler for Recorder {
    fn handle(&mut self, envelope: &[u8]) -> Handled {
        self.calls
            .lock()
            .unwrap()
            .push(("handle", SystemTime::now()));
        let n = {
            let mut seen = self.seen.lock().unwrap();
            seen.push(envelope.to_vec());
            seen.len()
        };
        if let Some((at, c, tx)) = &self.on_nth {
            if *at == n {
                tx.send(*c).unwrap();
            }
        }
        let mut env = b"result:".to_vec();
        env.extend_from_slice(envelope);
        Handled {
            envelope: env,
            id: None,
            claimed_id: None,
            op: None,
            target_user: None,
            status: Status::Ok,
            code: Code::Ok,
            message: String::new(),
        }
    }
    fn reconfigure(&mut self, cfg: Config) {
        self.configs.lock().unwrap().push(cfg);
    }
    fn max_envelope_bytes(&self) -> usize {
        64 * 1024
    }
    fn expire_keys(&mut self) -> Option<SystemTime> {
        let now = SystemTime::now();
        self.calls.lock().unwrap().push(("expire", now));
        self.expiry.filter(|&t| t > now)
    }
}

fn config(state: &Path) -> Config {
    Config::parse_str(
        &format!(
            "instance_id = \"i-test\"\nstate_dir = \"{}\"\n",
            state.display()
        ),
        Path::new("test.toml"),
    )
    .unwrap()
}

/// Atomic drop, as the protocol asks writers to do.
fn drop_file(state: &Path, name: &str, body: &[u8]) {
    let tmp = state.join("inbox").join(format!(".{name}.tmp"));
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(&tmp, state.join("inbox").join(name)).unwrap();
}

fn wait_for(path: &Path) -> Vec<u8> {
    // Not a timing assertion: a bound so that a broken daemon fails the test
    // instead of hanging it.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if let Ok(b) = std::fs::read(path) {
            return b;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("no result at {}", path.display());
}

struct Running {
    ctl: UnboundedSender<Control>,
    thread: std::thread::JoinHandle<Result<()>>,
}

impl Running {
    fn stop(self) {
        let _ = self.ctl.send(Control::Shutdown);
        self.thread.join().unwrap().unwrap();
    }
}

/// Start the loop on its own thread; returns once the inbox is watched and
/// the backlog answered (the point where systemd would get READY=1 — here
/// the backlog check is the test's job).
fn start(state: &Path, handler: Recorder, reload_ok: bool) -> Running {
    start_with(state, handler, reload_ok, unbounded_channel())
}

fn start_with(
    state: &Path,
    mut handler: Recorder,
    reload_ok: bool,
    (ctl, rx): (
        UnboundedSender<Control>,
        tokio::sync::mpsc::UnboundedReceiver<Control>,
    ),
) -> Running {
    let state = state.to_path_buf();
    let cfg = config(&state);
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut spool = Spool::open(&StateDir::open(&state)?, cfg.outbox.clone())?;
            let good = cfg.clone();
            let mut reload = move || {
                if reload_ok {
                    Ok(Config {
                        max_ttl_secs: 42,
                        ..good.clone()
                    })
                } else {
                    Err(crate::error::Error::invalid("broken config"))
                }
            };
            run(&mut handler, &mut spool, cfg, &mut reload, rx).await
        })
    });
    Running { ctl, thread }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn seen(r: &Recorder) -> Vec<String> {
    r.seen
        .lock()
        .unwrap()
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect()
}

fn new_state() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    Spool::open(&StateDir::open(&state).unwrap(), OutboxConfig::default()).unwrap();
    (t, state)
}

#[test]
fn directories_are_created_private() {
    let (_t, state) = new_state();
    for d in ["inbox", "outbox"] {
        let mode = std::fs::metadata(state.join(d))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode, 0o700, "{d}");
    }
}

#[test]
fn backlog_is_answered_in_lexical_order_ignoring_hidden_and_other_names() {
    let (_t, state) = new_state();
    for n in [
        "b.json",
        "a.json",
        "c.json",
        ".hidden.json",
        "notes.txt",
        "10.json",
        "9.json",
    ] {
        std::fs::write(state.join("inbox").join(n), n).unwrap();
    }
    let rec = Recorder::default();
    let run = start(&state, rec.clone(), true);
    wait_for(&state.join("outbox/c.json"));
    run.stop();
    assert_eq!(
        seen(&rec),
        ["10.json", "9.json", "a.json", "b.json", "c.json"]
    );
    assert_eq!(names(&state.join("inbox")), [".hidden.json", "notes.txt"]);
    assert_eq!(
        std::fs::read(state.join("outbox/a.json")).unwrap(),
        b"result:a.json\n"
    );
    let mode = std::fs::metadata(state.join("outbox/a.json"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn files_dropped_one_by_one_are_each_answered() {
    let (_t, state) = new_state();
    let rec = Recorder::default();
    let run = start(&state, rec.clone(), true);
    for i in 0..20 {
        let name = format!("{i:03}.json");
        drop_file(&state, &name, name.as_bytes());
        let result = wait_for(&state.join("outbox").join(&name));
        assert_eq!(result, format!("result:{name}\n").as_bytes());
        // The inbox file is gone once the answer is there... or a moment later.
        let start = Instant::now();
        while state.join("inbox").join(&name).exists() && start.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!state.join("inbox").join(&name).exists());
    }
    run.stop();
    assert_eq!(seen(&rec).len(), 20);
}

#[test]
fn a_burst_of_500_is_answered_completely_and_in_order() {
    let (_t, state) = new_state();
    let rec = Recorder::default();
    let run = start(&state, rec.clone(), true);
    let all: Vec<String> = (0..500).map(|i| format!("{i:04}.json")).collect();
    for n in &all {
        drop_file(&state, n, n.as_bytes());
    }
    wait_for(&state.join("outbox").join(all.last().unwrap()));
    let start = Instant::now();
    while names(&state.join("outbox")).len() < 500 && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    run.stop();
    assert_eq!(
        seen(&rec),
        all,
        "each file handled exactly once, in name order"
    );
    assert_eq!(names(&state.join("outbox")), all);
    assert!(names(&state.join("inbox")).is_empty());
}

#[test]
fn a_file_written_in_place_is_read_only_once_complete() {
    use std::io::Write;
    let (_t, state) = new_state();
    let rec = Recorder::default();
    let run = start(&state, rec.clone(), true);
    // Once this is answered the inbox is certainly being watched.
    drop_file(&state, "0-probe.json", b"probe");
    wait_for(&state.join("outbox/0-probe.json"));
    // A writer that ignores the protocol: creates NAME.json and fills it slowly.
    let path = state.join("inbox/slow.json");
    let mut f = std::fs::File::create(&path).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    f.write_all(b"first half,").unwrap();
    f.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    f.write_all(b" second half").unwrap();
    drop(f);
    let result = wait_for(&state.join("outbox/slow.json"));
    run.stop();
    assert_eq!(result, b"result:first half, second half\n");
    assert_eq!(seen(&rec), ["probe", "first half, second half"]);
}

#[test]
fn a_vanished_file_is_skipped() {
    let (_t, state) = new_state();
    let mut spool = Spool::open(&StateDir::open(&state).unwrap(), OutboxConfig::default()).unwrap();
    let mut rec = Recorder::default();
    assert_eq!(
        spool.process("gone.json", &mut rec).unwrap(),
        Outcome::Vanished
    );
    assert!(seen(&rec).is_empty());
    assert!(names(&state.join("outbox")).is_empty());
}

#[test]
fn a_symlink_in_the_inbox_is_answered_but_never_followed() {
    let (t, state) = new_state();
    let secret = t.path().join("secret");
    std::fs::write(&secret, "do not read").unwrap();
    std::os::unix::fs::symlink(&secret, state.join("inbox/link.json")).unwrap();
    let fifo = state.join("inbox/fifo.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut spool = Spool::open(&StateDir::open(&state).unwrap(), OutboxConfig::default()).unwrap();
    let mut rec = Recorder::default();
    assert_eq!(
        spool.process("fifo.json", &mut rec).unwrap(),
        Outcome::Answered
    );
    assert_eq!(
        spool.process("link.json", &mut rec).unwrap(),
        Outcome::Answered
    );
    assert_eq!(
        seen(&rec),
        ["", ""],
        "handler got empty input, not the target"
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "do not read");
    assert!(names(&state.join("inbox")).is_empty());
    assert_eq!(names(&state.join("outbox")), ["fifo.json", "link.json"]);
}

#[test]
fn a_crash_after_answering_is_not_answered_twice() {
    let (_t, state) = new_state();
    // As left by a crash between the durable result and the inbox unlink.
    std::fs::write(state.join("inbox/x.json"), "cmd").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(state.join("outbox/x.json"), "first answer\n").unwrap();
    let mut spool = Spool::open(&StateDir::open(&state).unwrap(), OutboxConfig::default()).unwrap();
    let mut rec = Recorder::default();
    assert_eq!(
        spool.process("x.json", &mut rec).unwrap(),
        Outcome::AlreadyAnswered
    );
    assert!(seen(&rec).is_empty());
    assert_eq!(
        std::fs::read(state.join("outbox/x.json")).unwrap(),
        b"first answer\n"
    );
    assert!(!state.join("inbox/x.json").exists());
}

#[test]
fn a_new_file_reusing_an_answered_name_is_handled() {
    let (_t, state) = new_state();
    std::fs::write(state.join("outbox/x.json"), "old answer\n").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(state.join("inbox/x.json"), "new").unwrap();
    let mut spool = Spool::open(&StateDir::open(&state).unwrap(), OutboxConfig::default()).unwrap();
    let mut rec = Recorder::default();
    assert_eq!(
        spool.process("x.json", &mut rec).unwrap(),
        Outcome::Answered
    );
    assert_eq!(
        std::fs::read(state.join("outbox/x.json")).unwrap(),
        b"result:new\n"
    );
}

#[test]
fn shutdown_finishes_the_command_in_progress_and_leaves_the_rest() {
    let (_t, state) = new_state();
    let all: Vec<String> = (0..50).map(|i| format!("{i:03}.json")).collect();
    for n in &all {
        std::fs::write(state.join("inbox").join(n), n).unwrap();
    }
    let (tx, rx) = unbounded_channel();
    let rec = Recorder {
        on_nth: Some((10, Control::Shutdown, tx.clone())),
        ..Default::default()
    };
    start_with(&state, rec.clone(), true, (tx, rx))
        .thread
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(
        seen(&rec),
        all[..10],
        "the 10th command finished, none after it started"
    );
    assert_eq!(names(&state.join("outbox")), all[..10]);
    assert_eq!(names(&state.join("inbox")), all[10..]);

    // After a restart the rest is applied, and nothing twice.
    let rec2 = Recorder::default();
    let run = start(&state, rec2.clone(), true);
    wait_for(&state.join("outbox").join(all.last().unwrap()));
    run.stop();
    assert_eq!(seen(&rec2), all[10..]);
    assert_eq!(names(&state.join("outbox")), all);
}

#[test]
fn reload_applies_a_good_config_and_keeps_the_old_one_on_error() {
    for ok in [true, false] {
        let (_t, state) = new_state();
        let rec = Recorder::default();
        let run = start(&state, rec.clone(), ok);
        run.ctl.send(Control::Reload).unwrap();
        // A command after the reload proves the reload was processed first.
        drop_file(&state, "after.json", b"x");
        wait_for(&state.join("outbox/after.json"));
        run.stop();
        let configs = rec.configs.lock().unwrap();
        if ok {
            assert_eq!(configs.len(), 1);
            assert_eq!(configs[0].max_ttl_secs, 42);
        } else {
            assert!(
                configs.is_empty(),
                "a broken config must not reach the handler"
            );
        }
    }
}

#[test]
fn pruning_keeps_at_most_max_files_newest_first_and_drops_old_results() {
    let (_t, state) = new_state();
    let cfg = OutboxConfig {
        max_age_secs: 3600,
        max_files: 3,
    };
    let mut spool = Spool::open(&StateDir::open(&state).unwrap(), cfg).unwrap();
    let mut rec = Recorder::default();
    for i in 0..5 {
        let n = format!("{i}.json");
        std::fs::write(state.join("inbox").join(&n), &n).unwrap();
        spool.process(&n, &mut rec).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::write(state.join("outbox/.tmp-not-a-result"), "x").unwrap();
    assert_eq!(spool.prune(SystemTime::now(), false).unwrap(), 2);
    assert_eq!(
        names(&state.join("outbox")),
        [".tmp-not-a-result", "2.json", "3.json", "4.json"]
    );
    // Two hours later everything is past max_age.
    let later = SystemTime::now() + Duration::from_secs(7200);
    assert_eq!(spool.prune(later, false).unwrap(), 3);
    assert_eq!(names(&state.join("outbox")), [".tmp-not-a-result"]);
}

#[test]
fn pruning_does_not_list_the_outbox_when_no_limit_can_be_crossed() {
    let (_t, state) = new_state();
    let mut spool = Spool::open(
        &StateDir::open(&state).unwrap(),
        OutboxConfig {
            max_age_secs: 3600,
            max_files: 10,
        },
    )
    .unwrap();
    spool.prune(SystemTime::now(), true).unwrap();
    // Written behind the spool's back: only a forced listing can see it.
    std::fs::write(state.join("outbox/old.json"), "x").unwrap();
    let later = SystemTime::now() + Duration::from_secs(7200);
    assert_eq!(spool.prune(later, false).unwrap(), 0);
    assert_eq!(spool.prune(later, true).unwrap(), 1);
}

#[test]
fn removing_the_inbox_stops_the_loop_with_an_error() {
    let (_t, state) = new_state();
    let run = start(&state, Recorder::default(), true);
    drop_file(&state, "probe.json", b"probe");
    wait_for(&state.join("outbox/probe.json"));
    std::fs::remove_dir_all(state.join("inbox")).unwrap();
    // A deadline, so that a loop that misses the removal fails the test
    // instead of hanging the whole suite.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run.thread.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the loop did not stop within 30 s of the inbox's removal"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = run.thread.join().unwrap().unwrap_err();
    assert!(
        err.to_string().contains("inbox directory was removed"),
        "{err}"
    );
}

/// Issue 12.4: an inbox file is read through one descriptor and at most
/// the envelope limit + 1 bytes of it reach the handler (which then answers
/// `bad_envelope` for its size), whatever size the file claims: a 64 GiB
/// sparse file made the agent allocate its st_size and abort.
#[test]
fn a_sparse_64_gib_inbox_file_is_read_only_to_the_envelope_limit() {
    let (_t, state) = new_state();
    let big = std::fs::File::create(state.join("inbox/big.json")).unwrap();
    big.set_len(64 << 30).unwrap();
    let mut spool = Spool::open(&StateDir::open(&state).unwrap(), OutboxConfig::default()).unwrap();
    let mut rec = Recorder::default();
    assert_eq!(
        spool.process("big.json", &mut rec).unwrap(),
        Outcome::Answered
    );
    let seen = rec.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].len(), rec.max_envelope_bytes() + 1);
    assert!(!state.join("inbox/big.json").exists());
}

fn expire_calls(r: &Recorder) -> Vec<SystemTime> {
    r.calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k == "expire")
        .map(|(_, t)| *t)
        .collect()
}

#[test]
fn the_loop_wakes_at_the_earliest_expiry_and_arms_nothing_after_it() {
    let (_t, state) = new_state();
    let at = SystemTime::now() + Duration::from_millis(500);
    let rec = Recorder {
        expiry: Some(at),
        ..Recorder::default()
    };
    let run = start(&state, rec.clone(), true);
    // Not a timing assertion: a bound so a broken timer fails, not hangs.
    let start = Instant::now();
    while !expire_calls(&rec).iter().any(|&t| t >= at) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the expiry timer never fired: {:?}",
            expire_calls(&rec)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Nothing expires any more: no timer, so no further wake-up at all
    // (load can only delay calls, never add them).
    let n = expire_calls(&rec).len();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(expire_calls(&rec).len(), n, "woke up with nothing due");
    run.stop();
}

#[test]
fn keys_due_at_startup_are_expired_before_the_backlog_is_answered() {
    let (_t, state) = new_state();
    std::fs::write(state.join("inbox/a.json"), "a").unwrap();
    let rec = Recorder::default();
    let run = start(&state, rec.clone(), true);
    wait_for(&state.join("outbox/a.json"));
    run.stop();
    let calls = rec.calls.lock().unwrap();
    let kinds: Vec<&str> = calls.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds.first(), Some(&"expire"), "{kinds:?}");
    assert!(kinds.contains(&"handle"), "{kinds:?}");
}
