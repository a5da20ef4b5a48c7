//! Granting sudo the way the distribution expects it.
//!
//! - Where /etc/sudoers enables an admin group (`%sudo` on Debian/Ubuntu,
//!   `%wheel` on RHEL-likes) and the user has a password, membership of that
//!   group is the grant — what `usermod -aG sudo` does.
//! - Otherwise a drop-in `/etc/sudoers.d/NAME`, 0440 root:root, checked with
//!   `visudo -cf` before it is installed. A user without a password (the
//!   key-only `ecs-user` of the console, who is told to run `sudo su`) could
//!   never answer sudo's password prompt, so that drop-in says NOPASSWD.
//!
//! Our drop-ins start with [`MARKER`], so that `delete_user` and the
//! inventory only ever treat files accessd wrote as accessd's.

use crate::error::{Error, IoContext, Result};
use crate::fsx::{Dir, Meta};
use crate::names::UserName;
use crate::sys::{find_program, Cmd, System};

use super::db::{self, Table};

pub const MARKER: &str = "# Written by accessd: sudo for ";

#[derive(Debug, Clone)]
pub struct AdminGroup {
    pub name: String,
    pub gid: u32,
    pub members: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    Group(String),
    Dropin,
}

/// Active (uncommented) sudoers lines.
fn sudoers_lines(etc: &Dir) -> Result<Option<Vec<String>>> {
    Ok(etc.read("sudoers")?.map(|d| {
        String::from_utf8_lossy(&d.bytes)
            .lines()
            .map(|l| l.trim().to_owned())
            .collect()
    }))
}

/// Admin groups that /etc/sudoers enables and that exist in /etc/group.
pub fn enabled_admin_groups(etc: &Dir, group: Option<&Table>) -> Result<Vec<AdminGroup>> {
    let (Some(lines), Some(group)) = (sudoers_lines(etc)?, group) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for name in ["sudo", "wheel"] {
        let rule = format!("%{name}");
        let enabled = lines.iter().any(|l| {
            l.strip_prefix(&rule)
                .is_some_and(|rest| rest.starts_with([' ', '\t']))
        });
        if !enabled {
            continue;
        }
        if let Some(i) = group.find(name) {
            let f = group.fields(i);
            if let (Some(gid), Some(members)) = (f.get(2).and_then(|g| db::parse_num(g)), f.get(3))
            {
                out.push(AdminGroup {
                    name: name.to_owned(),
                    gid: gid as u32,
                    members: members.clone(),
                });
            }
        }
    }
    Ok(out)
}

/// How to grant sudo to a new user.
pub fn choose(etc: &Dir, group: &Table, has_password: bool) -> Result<Grant> {
    if has_password {
        if let Some(g) = enabled_admin_groups(etc, Some(group))?.into_iter().next() {
            return Ok(Grant::Group(g.name));
        }
    }
    let Some(lines) = sudoers_lines(etc)? else {
        return Err(Error::invalid(format!(
            "cannot grant sudo: {} does not exist (is sudo installed?)",
            etc.display("sudoers").display()
        )));
    };
    let includes = lines.iter().any(|l| {
        let mut w = l.split_whitespace();
        matches!(w.next(), Some("@includedir" | "#includedir"))
            && w.next() == Some("/etc/sudoers.d")
    });
    if !includes {
        return Err(Error::invalid(format!(
            "cannot grant sudo: {} neither enables %sudo or %wheel nor includes /etc/sudoers.d",
            etc.display("sudoers").display()
        )));
    }
    Ok(Grant::Dropin)
}

/// sudo skips drop-ins whose name contains `.` or ends in `~`.
pub fn dropin_name(user: &UserName) -> String {
    user.as_str().replace('.', "")
}

pub fn dropin_content(user: &UserName, has_password: bool) -> Vec<u8> {
    let rule = if has_password { "ALL" } else { "NOPASSWD:ALL" };
    format!("{MARKER}{user}\n{user} ALL=(ALL:ALL) {rule}\n").into_bytes()
}

pub fn dropin_meta() -> Meta {
    Meta::new(0, 0, 0o440)
}

/// The sudoers.d directory, created 0755 root:root as the sudo package has it.
pub fn open_dropin_dir(etc: &Dir) -> Result<Dir> {
    match etc.try_open_dir("sudoers.d")? {
        Some(d) => Ok(d),
        None => etc.create_dir("sudoers.d", &Meta::new(0, 0, 0o755)),
    }
}

/// Has accessd granted `user` sudo through a drop-in?
pub fn has_dropin(etc: &Dir, user: &UserName) -> Result<bool> {
    let Some(d) = etc.try_open_dir("sudoers.d")? else {
        return Ok(false);
    };
    Ok(read_ours(&d, user)?.is_some())
}

/// Our drop-in for `user`, if the file there is one accessd wrote.
pub fn read_ours(d: &Dir, user: &UserName) -> Result<Option<crate::fsx::FileData>> {
    let marker = format!("{MARKER}{user}\n");
    Ok(d.read(&dropin_name(user))?
        .filter(|f| f.bytes.starts_with(marker.as_bytes())))
}

/// Check `content` with `visudo -cf` before it is installed, when visudo is
/// available. The candidate is written under a name with a `.`, which sudo's
/// `@includedir` never reads, and removed afterwards.
pub fn validate(sys: &System, d: &Dir, user: &UserName, content: &[u8]) -> Result<()> {
    let Some(visudo) = find_program("visudo") else {
        return Ok(());
    };
    let check = format!("{}.accessd-check", dropin_name(user));
    d.write_atomic(&check, content, &dropin_meta())?;
    let path = d.display(&check);
    let cmd = Cmd::new(visudo).arg("-c").arg("-q").arg("-f").arg(&path);
    let out = sys
        .runner
        .run(&cmd)
        .ctx(|| format!("running {}", cmd.display()));
    let _ = d.remove_file(&check);
    let out = out?;
    if !out.status.success() {
        return Err(Error::Io {
            context: format!("checking the sudoers drop-in for {user} with visudo"),
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        });
    }
    Ok(())
}
