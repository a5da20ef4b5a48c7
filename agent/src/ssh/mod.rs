//! SSH: authorized_keys files in users' homes ([`authkeys`]), and sshd's
//! configuration, effective settings and service ([`sshd`]).

pub mod authkeys;
pub mod sshd;
