//! accessd: verify signed commands from a cloud control plane and apply them to
//! the login credentials of this instance.
//!
//! Map (which module owns what):
//! - [`sys`]: the seam to the machine — root directory, clock, process runner.
//! - [`confine`]: runs a disk image's own program (its sshd) with no power over the host.
//! - [`fsx`]: every file access below the root; symlink-safe walking and the one
//!   atomic-write routine.
//! - [`error`]: the error type; each variant is one protocol error code.
//! - [`names`], [`secret`], [`hex`], [`time`]: validated user names, zeroized
//!   passwords, the one hex encoding, the one RFC 3339 time form.
//! - [`userdb`]: the colon-separated account databases as tables, and the
//!   one read of a passwd entry (below `accounts` and `ssh`, which both need it).
//! - [`accounts`]: /etc/passwd, shadow, group, gshadow, subuid, subgid, homes.
//! - [`ssh`]: authorized_keys files and sshd's effective settings.
//! - [`config`](crate::config): `accessd.toml`.
//! - [`engine`]: the signed command path (envelope in, signed result out).
//! - [`daemon`]: `<state_dir>/inbox` → engine → `<state_dir>/outbox`, signals, systemd.
//! - [`inbox`]: the writer's side of the inbox (drop an envelope, wait for
//!   its result), for `accessctl send`, the demo and the tests.
//! - [`logging`]: stderr or journald, and the audit events (`MESSAGE_ID`s).
//! - [`protocol`]: DSSE envelopes, typed commands, results, and the client half.
//! - [`state_dir`]: the state directory's layout, trust check and private
//!   subdirectories; [`identity`], [`replay`], [`staging`], [`suspensions`]
//!   keep their records in it.
//! - [`inventory`]: the `inventory` op's report.
//! - [`sessions`]: a user's processes, found and ended through pidfds.
//! - [`mqtt`]: fleet delivery through an MQTT broker (transport and client).

pub mod accounts;
pub mod config;
pub mod confine;
pub mod daemon;
pub mod demo;
pub mod engine;
pub mod error;
pub mod fsx;
pub mod hex;
pub mod identity;
pub mod inbox;
pub mod inventory;
pub mod logging;
pub mod mqtt;
pub mod names;
pub mod protocol;
pub mod replay;
pub mod secret;
pub mod sessions;
pub mod ssh;
pub mod staging;
pub mod state_dir;
pub mod suspensions;
pub mod sys;
pub mod time;
pub mod userdb;
