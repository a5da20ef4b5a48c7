//! SSH: authorized_keys files in users' homes ([`authkeys`]), and sshd's
//! configuration, effective settings and service ([`sshd`]), and who
//! logged in with what, from sshd's log ([`logins`]).

pub mod authkeys;
pub mod logins;
pub mod sshd;
