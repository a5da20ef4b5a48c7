//! `set_sudo` for a user who already exists (PROTOCOL §3, "Sudo"): grant as
//! `create_user` grants, revoke every grant accessd makes, and never claim
//! a state that `sudo -l -U USER` would contradict.
//!
//! The answer to "does the user have sudo" is the sudoers reader's
//! ([`sudo::Sudoers`]), asked about the files as they will be after the
//! change, before anything is written: a grant that would not show there, or
//! a revoke that a rule accessd did not write would undo (`foreign_grant`),
//! changes nothing.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::sudo::{self, Grant, Who};
use super::useradd::{add_member, drop_member, ADMIN_GROUPS};
use super::{load, load_required, lock, open_etc, txn};
use crate::error::{Error, Result};
use crate::fsx::Dir;
use crate::names::UserName;
use crate::sys::System;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SudoChange {
    /// false: the user's sudo was already as asked; nothing was written.
    pub changed: bool,
    pub sudo: bool,
    /// How sudo is granted afterwards (`group:sudo`, `dropin:/etc/sudoers.d/U`,
    /// or the rules that already granted it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<String>,
}

pub fn set(
    sys: &System,
    user: &UserName,
    want: bool,
    lock_timeout: Duration,
) -> Result<SudoChange> {
    let root = Dir::open(&sys.root)?;
    let etc = open_etc(sys)?;
    let name = user.as_str();
    // usermod -aG locks these; shadow is read for "has a usable password".
    let _locks = lock::Locks::acquire(
        &etc,
        &["passwd", "shadow", "group", "gshadow"],
        lock_timeout,
    )?;
    let (_, passwd) = load_required(&etc, "passwd")?;
    let Some(i) = passwd.find(name) else {
        return Err(Error::UserNotFound(name.to_owned()));
    };
    let rec =
        super::record(&passwd.fields(i)).ok_or_else(|| super::malformed(&etc, "passwd", name))?;
    let has_password = load(&etc, "shadow")?
        .and_then(|(_, t)| t.find(name).map(|i| t.fields(i)))
        .and_then(|f| f.get(1).cloned())
        .is_some_and(|h| h.starts_with(b"$"));
    let (gr_data, mut group) = load_required(&etc, "group")?;
    let mut gshadow = load(&etc, "gshadow")?;
    let sudoers_d = etc.try_open_dir("sudoers.d")?;
    let fname = sudo::dropin_name(user);
    let ours = match &sudoers_d {
        Some(d) => sudo::read_ours(d, user)?,
        None => None,
    };
    let our_path = Path::new("/etc/sudoers.d").join(&fname);

    let sudoers = sudo::Sudoers::load(&root)?;
    let now: Vec<sudo::Rule> = sudoers.rules_for(&Who::new(name, rec.uid, rec.gid, Some(&group)));
    let mut t = txn::Txn::new();
    let change = if want {
        if !now.is_empty() {
            return Ok(SudoChange {
                changed: false,
                sudo: true,
                grants: now.iter().map(ToString::to_string).collect(),
            });
        }
        match sudo::choose(&etc, &group, has_password)? {
            Grant::Group(g) => {
                add_member(&mut group, &g, 3, name);
                if let Some((_, t)) = &mut gshadow {
                    add_member(t, &g, 3, name);
                }
                let after = sudoers.rules_for(&Who::new(name, rec.uid, rec.gid, Some(&group)));
                if after.is_empty() {
                    return Err(Error::invalid(format!(
                        "joining group {g} would not give {name} sudo; nothing was changed"
                    )));
                }
                SudoChange {
                    changed: true,
                    sudo: true,
                    grants: vec![format!("group:{g}")],
                }
            }
            Grant::Dropin => {
                let d = match &sudoers_d {
                    Some(d) => d,
                    None => {
                        return Err(Error::invalid(format!(
                            "{} does not exist; sudo reads no drop-ins here",
                            etc.display("sudoers.d").display()
                        )))
                    }
                };
                if ours.is_none() && d.stat_at(&fname)?.is_some() {
                    return Err(Error::invalid(format!(
                        "{} exists and was not written by accessd; not replacing it",
                        d.display(&fname).display()
                    )));
                }
                let content = sudo::dropin_content(user, has_password);
                sudo::validate(sys, d, user, &content)?;
                let mut planned = sudoers.clone();
                planned.parse_text(&our_path, &String::from_utf8_lossy(&content));
                if planned
                    .rules_for(&Who::new(name, rec.uid, rec.gid, Some(&group)))
                    .is_empty()
                {
                    return Err(Error::invalid(format!(
                        "the drop-in would not give {name} sudo; nothing was changed"
                    )));
                }
                t.put(d, &fname, ours, content, sudo::dropin_meta());
                SudoChange {
                    changed: true,
                    sudo: true,
                    grants: vec![format!("dropin:{}", our_path.display())],
                }
            }
        }
    } else {
        for g in ADMIN_GROUPS {
            drop_member(&mut group, g, &[3], name);
            if let Some((_, t)) = &mut gshadow {
                drop_member(t, g, &[2, 3], name);
            }
        }
        // What still grants sudo once our drop-in and the admin groups are
        // gone is someone else's rule: leave it, and say so.
        let foreign: Vec<String> = sudoers
            .rules_for(&Who::new(name, rec.uid, rec.gid, Some(&group)))
            .into_iter()
            .filter(|r| !(ours.is_some() && r.file == our_path))
            .map(|r| r.to_string())
            .collect();
        if !foreign.is_empty() {
            return Err(Error::ForeignGrant(format!(
                "{name} keeps sudo through {} (not written by accessd); nothing was changed",
                foreign.join(", ")
            )));
        }
        if now.is_empty() {
            return Ok(SudoChange {
                changed: false,
                sudo: false,
                grants: Vec::new(),
            });
        }
        if let (Some(d), Some(old)) = (&sudoers_d, ours) {
            t.remove(d, &fname, old);
        }
        SudoChange {
            changed: true,
            sudo: false,
            grants: Vec::new(),
        }
    };
    t.replace(&etc, "group", gr_data, group.to_bytes());
    if let Some((data, table)) = gshadow {
        t.replace(&etc, "gshadow", data, table.to_bytes());
    }
    t.commit()?;
    drop(_locks);
    super::invalidate_caches(sys);
    Ok(change)
}
