//! `useradd -m` as Debian 12's shadow 4.13 does it (ground-truth §3).

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::fsx::Dir;
use crate::sys::System;

use super::db::{self, Table};
use super::logindefs::Defs;
use super::sudo;
use super::{home, invalidate_caches, lastchg, load, load_required, lock, resolve_password, txn};
use super::{AccountsConfig, CreatedUser, NewUser};

mod plan;

use plan::{Plan, SudoPlan, Tables};

/// Read the databases under their locks, [`plan::plan`] the new user, then
/// commit the plan: files, sudo drop-in and home in one transaction.
pub fn create<T>(
    sys: &System,
    cfg: &AccountsConfig,
    spec: &NewUser,
    timeout: Duration,
    then: impl FnOnce(&CreatedUser) -> Result<T>,
) -> Result<(CreatedUser, T)> {
    let name = spec.name.as_str();
    let hash = spec
        .password
        .as_ref()
        .map(|p| resolve_password(cfg, p))
        .transpose()?;
    let root = Dir::open(&sys.root)?;
    let etc = root.open_dir("etc")?;
    let defs = Defs::load(&etc, "login.defs", ' ')?;
    let dflt = match etc.try_open_dir("default")? {
        Some(d) => Defs::load(&d, "useradd", '=')?,
        None => Defs::default(),
    };
    if let Some(s) = &spec.shell {
        check_shell(&etc, s)?;
    }
    let today = lastchg(sys);

    // useradd's lock order: passwd, subuid, subgid, group, gshadow, shadow.
    let mut files = vec!["passwd"];
    for f in ["subuid", "subgid", "group", "gshadow"] {
        if f == "group" || etc.stat_at(f)?.is_some() {
            files.push(f);
        }
    }
    files.push("shadow");
    let locks = lock::Locks::acquire(&etc, &files, timeout)?;

    let (pw_data, passwd) = load_required(&etc, "passwd")?;
    let (gr_data, group) = load_required(&etc, "group")?;
    let (sp_data, shadow) = load_required(&etc, "shadow")?;
    let (gshadow_data, gshadow) = load(&etc, "gshadow")?.unzip();
    let (subuid_data, subuid) = load(&etc, "subuid")?.unzip();
    let (subgid_data, subgid) = load(&etc, "subgid")?.unzip();
    let sudoers = match spec.sudo {
        true => sudo::sudoers_lines(&etc)?,
        false => None,
    };

    let input = plan::Input {
        name: &spec.name,
        hash: hash.as_ref().map(|h| h.as_str()),
        sudo: spec.sudo,
        shell: spec.shell.as_deref(),
        defs: &defs,
        dflt: &dflt,
        sudoers: sudoers.as_deref(),
        today: &today,
    };
    let tables = Tables {
        passwd,
        group,
        shadow,
        gshadow,
        subuid,
        subgid,
    };
    let plan = plan::plan(&input, tables).map_err(|e| e.into_error(name, &etc))?;
    let Plan {
        uid,
        gid,
        home,
        home_mode,
        skel,
        shell,
        tables,
        sudo: sudo_plan,
        ..
    } = plan;

    // /etc/sudoers.d/NAME stays after a plain `userdel`: a leftover of
    // ours is replaced or taken away in the same transaction.
    let sudoers_d = match &sudo_plan {
        SudoPlan::Dropin { .. } => Some(sudo::open_dropin_dir(&etc)?),
        _ => etc.try_open_dir("sudoers.d")?,
    };
    let fname = sudo::dropin_name(&spec.name);
    let stale_dropin = match &sudoers_d {
        Some(d) => sudo::read_ours(d, &spec.name)?,
        None => None,
    };
    let (sudo_grant, dropin) = match sudo_plan {
        SudoPlan::Group(g) => (Some(format!("group:{g}")), None),
        SudoPlan::Dropin { file, content } => {
            let d = sudoers_d.as_ref().expect("opened above for a drop-in");
            // A leftover of ours is replaced; someone else's file is not
            // ours to overwrite.
            if stale_dropin.is_none() && d.stat_at(&file)?.is_some() {
                return Err(Error::invalid(format!(
                    "{} exists and was not written by accessd; not replacing it",
                    d.display(&file).display()
                )));
            }
            sudo::validate(sys, d, &spec.name, &content)?;
            (Some(format!("dropin:/etc/sudoers.d/{file}")), Some(content))
        }
        SudoPlan::None => {
            // `sudo: false` must be true afterwards: a rule accessd did not
            // write that still grants the new user sudo makes it a lie, so
            // nothing is created (PROTOCOL "Sudo": foreign_grant).
            let who = sudo::Who::new(name, uid, gid, Some(&tables.group));
            let stale = Path::new("/etc/sudoers.d").join(&fname);
            let foreign: Vec<String> = sudo::Sudoers::load(&root)?
                .rules_for(&who)
                .into_iter()
                .filter(|r| !(stale_dropin.is_some() && r.file == stale))
                .map(|r| r.to_string())
                .collect();
            if !foreign.is_empty() {
                return Err(Error::ForeignGrant(format!(
                    "{name} would have sudo, which sudo: false forbids: {} (not written by accessd) \
                     grants it; nothing was changed",
                    foreign.join(", ")
                )));
            }
            (None, None)
        }
    };

    let mut t = txn::Txn::new();
    t.replace(&etc, "passwd", pw_data, tables.passwd.to_bytes());
    t.replace(&etc, "group", gr_data, tables.group.to_bytes());
    t.replace(&etc, "shadow", sp_data, tables.shadow.to_bytes());
    for (fname, data, table) in [
        ("gshadow", gshadow_data, tables.gshadow),
        ("subuid", subuid_data, tables.subuid),
        ("subgid", subgid_data, tables.subgid),
    ] {
        if let (Some(data), Some(table)) = (data, table) {
            t.replace(&etc, fname, data, table.to_bytes());
        }
    }
    if let Some(d) = &sudoers_d {
        match (dropin, stale_dropin) {
            (Some(content), old) => t.put(d, &fname, old, content, sudo::dropin_meta()),
            (None, Some(old)) => t.remove(d, &fname, old),
            (None, None) => {}
        }
    }
    // A key record left by an earlier user of this name (deleted by plain
    // userdel) is not this user's.
    let (keys_dir, record) = crate::ssh::authkeys::managed_record(sys, &spec.name)?;
    if let Some(d) = &keys_dir {
        if let Some(old) = d.read(&record)? {
            t.remove(d, &record, old);
        }
    }

    // The home is made before the files are committed, so that a failure
    // of either leaves neither (useradd would leave the account behind).
    let skel = root.try_open_dir(&skel)?;
    let created_home = home::create(&root, &home, uid, gid, home_mode, skel.as_ref())?;
    // An existing home is the user's to keep: note what `then` may add to
    // it (~/.ssh), so that an undo takes away only that.
    let had_ssh = created_home || home::has_entry(&root, &home, ".ssh");
    let created = CreatedUser {
        uid,
        gid,
        home: home.clone(),
        shell,
        sudo: sudo_grant,
    };
    let out = t.commit_then(|| {
        then(&created).inspect_err(|_| {
            // Whatever `then` recorded for the user goes with it; the
            // transaction's undo then puts back an older record, if any.
            if let Ok((Some(d), record)) = crate::ssh::authkeys::managed_record(sys, &spec.name) {
                let _ = d.remove_file(&record);
            }
            if !had_ssh {
                let _ = home::remove_empty(&root, &home, ".ssh");
            }
        })
    });
    let out = match out {
        Ok(v) => v,
        Err(e) => {
            if created_home {
                let _ = home::remove(&root, &home, uid);
            }
            return Err(e);
        }
    };
    drop(locks);
    invalidate_caches(sys);
    Ok((created, out))
}

/// The groups that grant sudo on the distributions accessd supports.
pub(super) const ADMIN_GROUPS: [&str; 2] = ["sudo", "wheel"];

/// Take `name` out of the member fields `idx` of `group`'s entry.
pub(super) fn drop_member(t: &mut Table, group: &str, idx: &[usize], name: &str) {
    let Some(i) = t.find(group) else { return };
    let mut f = t.fields(i);
    let mut changed = false;
    for &k in idx {
        if let Some(kept) = f.get(k).and_then(|m| db::without_member(m, name)) {
            f[k] = kept;
            changed = true;
        }
    }
    if changed {
        t.set_fields(i, &f);
    }
}

/// The shell must be one /etc/shells lists (under the root).
fn check_shell(etc: &Dir, shell: &str) -> Result<()> {
    let listed = etc.read("shells")?.is_some_and(|d| {
        String::from_utf8_lossy(&d.bytes)
            .lines()
            .map(str::trim)
            .any(|l| !l.starts_with('#') && l == shell)
    });
    if !listed {
        return Err(Error::invalid(format!(
            "shell {:?} is not listed in {}",
            crate::names::truncate_for_message(shell),
            etc.display("shells").display()
        )));
    }
    Ok(())
}

pub(super) fn add_member(t: &mut Table, group: &str, idx: usize, name: &str) {
    if let Some(i) = t.find(group) {
        let mut f = t.fields(i);
        if f.len() > idx {
            f[idx] = db::with_member(&f[idx], name);
            t.set_fields(i, &f);
        }
    }
}
