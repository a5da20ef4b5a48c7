//! Harness for the end-to-end suite (scenarios in `tests/tests/*.rs`).
//!
//! Every test gets a [`Sandbox`]: a private mount namespace in which
//! throwaway directories are bind-mounted over `/etc` (a copy of the host's),
//! `/home`, `/root`, `/run`, `/var/log` and `/var/mail` (fresh and empty), a
//! real Debian `sshd` with a cloud image's layout listening on 127.0.0.1 and a
//! free port, and — once [`Sandbox::start_agent`] is called — the built
//! `accessd` daemon, configured to trust a control-plane key the test holds.
//!
//! The test process is multithreaded, so it cannot `unshare` itself. Instead
//! a holder process (`unshare -m` + a shell that waits) owns the namespace;
//! every command of a scenario runs inside it with `nsenter -t PID -m`, and
//! files are read through `/proc/PID/root`. Teardown ([`Drop`]) kills every
//! process whose mount namespace is the sandbox's, so nothing survives a
//! panicking test, and then checks that the host's account and ssh files are
//! byte for byte what they were before the first sandbox of this test binary
//! existed (see [`HostSnapshot`]).
//!
//! Commands are signed with `accessctl sign` and delivered with `accessctl
//! send`, which waits for the daemon's result and verifies its signature with
//! the agent's public key (`accessd identity`). Logins are real: `ssh -i` for
//! keys, `sshpass` for passwords, and a login counts only when the remote
//! `id -un` prints the user.

// Each module owns one part of the harness; the scenarios import what they
// need from the crate root, re-exported below.
mod bins;
mod clock;
mod control;
mod host_guard;
mod login;
mod namespace;
mod preflight;
mod run;
mod sandbox;
mod sshd;

/// The one skip rule of every suite (agent/tests/gate), shared by path so
/// that the scenarios in tests/tests skip the same way.
#[path = "../../agent/tests/gate/mod.rs"]
pub mod gate;

/// The one wait loop of every suite (agent/tests/wait), shared by path.
#[path = "../../agent/tests/wait/mod.rs"]
pub mod wait;
#[cfg(test)]
mod wait_tests;

pub use serde_json::Value;

pub use bins::{accessctl_bin, accessd_bin};
pub use clock::{days_since_epoch, rfc3339_at, rfc3339_from_now, unix_now};
pub use control::{Cmd, Reply, AGENT_CONFIG, CONTROL_KEY_ID};
pub use host_guard::{assert_host_untouched, HostSnapshot};
pub use login::{ClientKey, KeyKind, Login};
pub use preflight::sandbox;
pub use run::{run_with, Out};
pub use sandbox::Sandbox;
pub use sshd::{CLOUD_INIT_DROPIN, SSHD};
pub use wait::wait_until;
