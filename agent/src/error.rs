//! One error type for the whole agent. Every variant maps to exactly one
//! protocol error code (PROTOCOL.md §4), so a result can always say *why*
//! in a form a control plane can branch on, and a message a human can act on.
//!
//! Messages name the file and the step that failed. They never carry a secret:
//! nothing in this module ever receives a password, only names and paths.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The protocol's `code` field (PROTOCOL.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    Ok,
    BadEnvelope,
    BadSignature,
    UnknownKey,
    InvalidCommand,
    Expired,
    NotYetValid,
    Replayed,
    WrongInstance,
    WeakPassword,
    UserNotFound,
    UserExists,
    UserBusy,
    ForeignGrant,
    UnsafePath,
    LockTimeout,
    SshdInvalid,
    RestartFailed,
    IoError,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "ok",
            Code::BadEnvelope => "bad_envelope",
            Code::BadSignature => "bad_signature",
            Code::UnknownKey => "unknown_key",
            Code::InvalidCommand => "invalid_command",
            Code::Expired => "expired",
            Code::NotYetValid => "not_yet_valid",
            Code::Replayed => "replayed",
            Code::WrongInstance => "wrong_instance",
            Code::WeakPassword => "weak_password",
            Code::UserNotFound => "user_not_found",
            Code::UserExists => "user_exists",
            Code::UserBusy => "user_busy",
            Code::ForeignGrant => "foreign_grant",
            Code::UnsafePath => "unsafe_path",
            Code::LockTimeout => "lock_timeout",
            Code::SshdInvalid => "sshd_invalid",
            Code::RestartFailed => "restart_failed",
            Code::IoError => "io_error",
        }
    }

    /// `rejected` codes mean nothing was attempted; the rest of the non-`ok`
    /// codes mean the command was attempted and rolled back (`failed`).
    pub fn is_rejection(self) -> bool {
        matches!(
            self,
            Code::BadEnvelope
                | Code::BadSignature
                | Code::UnknownKey
                | Code::InvalidCommand
                | Code::Expired
                | Code::NotYetValid
                | Code::Replayed
                | Code::WrongInstance
                | Code::WeakPassword
        )
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad envelope: {0}")]
    BadEnvelope(String),
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error("unknown key: {0}")]
    UnknownKey(String),
    #[error("invalid command: {0}")]
    InvalidCommand(String),
    #[error("expired: {0}")]
    Expired(String),
    #[error("not yet valid: {0}")]
    NotYetValid(String),
    #[error("command id {0:?} was already accepted")]
    Replayed(String),
    #[error("wrong instance: {0}")]
    WrongInstance(String),
    #[error("weak password: {0}")]
    WeakPassword(String),
    #[error("user {0:?} does not exist")]
    UserNotFound(String),
    #[error("user {0:?} already exists")]
    UserExists(String),
    /// The user has running processes (as `userdel` refuses them).
    #[error("{0}")]
    UserBusy(String),
    /// A sudo rule accessd did not write would contradict the result.
    #[error("{0}")]
    ForeignGrant(String),
    #[error("unsafe path {path}: {reason}")]
    UnsafePath { path: PathBuf, reason: String },
    #[error("timed out waiting for the lock on {0}; another tool (useradd, passwd, vipw) holds it, try again")]
    LockTimeout(PathBuf),
    #[error("sshd configuration rejected, every change rolled back: {0}")]
    SshdInvalid(String),
    #[error("restarting the ssh service failed: {0}")]
    RestartFailed(String),
    /// A configuration or key file is wrong: a startup problem, not I/O.
    /// The message names the file so the journal says what to fix.
    #[error("configuration {}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    /// A value accessd was given (in accessd.toml, on its command line, in
    /// its environment) that it cannot use; `setting` names it as the
    /// operator wrote it (`mqtt url "x"`).
    #[error("{setting}: {message}")]
    Setting { setting: String, message: String },
    /// A file whose content is not what it must be: damaged, edited by
    /// hand, or larger than accessd reads. The OS read it fine.
    #[error("{}: {message}", path.display())]
    BadFile { path: PathBuf, message: String },
    /// A change failed and undoing it failed too: the message says what
    /// failed first and what could not be put back.
    #[error("{0} (rollback incomplete)")]
    RollbackIncomplete(String),
    /// The way commands arrive stopped working (the inbox watch, the MQTT
    /// connection) for a reason that is not an OS error.
    #[error("{0}")]
    Transport(String),
    /// A client waited for an answer that did not come (the demo's outbox).
    #[error("timed out: {0}")]
    Timeout(String),
    /// A condition the code relies on did not hold: a bug, or a system that
    /// does not behave as documented (not bad input).
    #[error("internal error: {0}")]
    Internal(String),
    /// A program the agent runs to read something (`journalctl`) failed:
    /// the message names it and says how (exit status, its first line of
    /// stderr, an output bound it went over).
    #[error("{0}")]
    Program(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::BadEnvelope(_) => Code::BadEnvelope,
            Error::BadSignature(_) => Code::BadSignature,
            Error::UnknownKey(_) => Code::UnknownKey,
            Error::InvalidCommand(_) => Code::InvalidCommand,
            Error::Expired(_) => Code::Expired,
            Error::NotYetValid(_) => Code::NotYetValid,
            Error::Replayed(_) => Code::Replayed,
            Error::WrongInstance(_) => Code::WrongInstance,
            Error::WeakPassword(_) => Code::WeakPassword,
            Error::UserNotFound(_) => Code::UserNotFound,
            Error::UserExists(_) => Code::UserExists,
            Error::UserBusy(_) => Code::UserBusy,
            Error::ForeignGrant(_) => Code::ForeignGrant,
            Error::UnsafePath { .. } => Code::UnsafePath,
            Error::LockTimeout(_) => Code::LockTimeout,
            Error::SshdInvalid(_) => Code::SshdInvalid,
            Error::RestartFailed(_) => Code::RestartFailed,
            // Neither is a verdict on the command; the protocol has no
            // closer code than io_error for "the agent could not do it".
            Error::Config { .. }
            | Error::Setting { .. }
            | Error::BadFile { .. }
            | Error::RollbackIncomplete(_)
            | Error::Transport(_)
            | Error::Timeout(_)
            | Error::Internal(_)
            | Error::Program(_) => Code::IoError,
            Error::Io { .. } => Code::IoError,
        }
    }

    pub fn unsafe_path(path: impl AsRef<Path>, reason: impl Into<String>) -> Self {
        Error::UnsafePath {
            path: path.as_ref().to_path_buf(),
            reason: reason.into(),
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidCommand(msg.into())
    }

    /// An I/O error with `doing` (what it was for) in front of its
    /// context; any other error as it is (its message already says what
    /// is wrong). The code never changes.
    pub fn while_doing(self, doing: &str) -> Self {
        match self {
            Error::Io { context, source } => Error::Io {
                context: format!("{doing}: {context}"),
                source,
            },
            e => e,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The OS random number generator failed while `context`: an OS error with
/// its errno when getrandom(2) gave one, else getrandom's own (a
/// condition it documents as not happening on Linux).
pub fn random_failed(context: impl Into<String>, e: getrandom::Error) -> Error {
    match e.raw_os_error() {
        Some(errno) => Error::Io {
            context: context.into(),
            source: io::Error::from_raw_os_error(errno),
        },
        None => Error::Internal(format!("{}: {e}", context.into())),
    }
}

/// Attach "what was being done to which file" to an `io::Error`, at the
/// place of failure: `fs::read(p).ctx(|| format!("reading {}", p.display()))`.
pub trait IoContext<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: f(),
            source,
        })
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|errno| Error::Io {
            context: f(),
            source: io::Error::from(errno),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_protocol_strings() {
        for code in [
            Code::Ok,
            Code::BadEnvelope,
            Code::NotYetValid,
            Code::IoError,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn faults_that_are_not_os_errors_keep_the_protocol_code_io_error() {
        let path = PathBuf::from("/x");
        for e in [
            Error::Setting {
                setting: "mqtt url".into(),
                message: "m".into(),
            },
            Error::BadFile {
                path: path.clone(),
                message: "m".into(),
            },
            Error::Config {
                path,
                message: "m".into(),
            },
            Error::RollbackIncomplete("m".into()),
            Error::Transport("m".into()),
            Error::Timeout("m".into()),
            Error::Internal("m".into()),
        ] {
            assert_eq!(e.code(), Code::IoError, "{e:?}");
        }
    }

    #[test]
    fn a_random_number_failure_with_an_errno_stays_an_os_error() {
        let errno = std::num::NonZeroU32::new(libc::EIO as u32).unwrap();
        let e = random_failed("drawing a salt", getrandom::Error::from(errno));
        match &e {
            Error::Io { source, .. } => assert_eq!(source.raw_os_error(), Some(libc::EIO)),
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().starts_with("drawing a salt: "), "{e}");
    }

    #[test]
    fn io_context_names_the_step() {
        let e = Err::<(), _>(io::Error::from(io::ErrorKind::NotFound))
            .ctx(|| "reading /etc/shadow".into())
            .unwrap_err();
        assert_eq!(e.code(), Code::IoError);
        assert!(e.to_string().starts_with("reading /etc/shadow: "));
    }
}
