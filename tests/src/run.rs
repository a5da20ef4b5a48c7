//! Running commands with a deadline.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Default limit for one external command; a hung tool fails the test
/// instead of hanging the suite.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished command left behind.
#[derive(Debug, Clone)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.status.success()
    }
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Run `cmd` to completion (stdin from `input`, or /dev/null), killing it
/// after `timeout`. Panics only when the command cannot be started or hangs.
pub fn run_with(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> Out {
    let shown = format!("{cmd:?}");
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
    if let Some(bytes) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("cannot write stdin of {shown}: {e}"));
    }
    let out_reader = drain(child.stdout.take().expect("piped stdout"));
    let err_reader = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{shown} did not finish within {timeout:?}");
            }
            Err(e) => panic!("waiting for {shown}: {e}"),
        }
    };
    Out {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

fn drain(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Run a host-side command (outside any sandbox) that must succeed.
pub(crate) fn host_ok(argv: &[&str]) -> String {
    let out = run_with(
        Command::new(argv[0]).args(&argv[1..]),
        None,
        COMMAND_TIMEOUT,
    );
    assert!(
        out.ok(),
        "{argv:?} failed ({}): {}{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out.stdout
}
