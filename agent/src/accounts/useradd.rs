//! `useradd -m` as Debian 12's shadow 4.13 does it (ground-truth §3).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::fsx::Dir;
use crate::sys::System;

use super::db::{self, Table};
use super::logindefs::Defs;
use super::sudo::{self, Grant};
use super::{home, invalidate_caches, lastchg, load, load_required, lock, resolve_password, txn};
use super::{AccountsConfig, CreatedUser, NewUser};

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
    let shell = match &spec.shell {
        Some(s) => {
            check_shell(&etc, s)?;
            s.clone()
        }
        None => dflt.get("SHELL").unwrap_or("/bin/sh").to_owned(),
    };
    let home = PathBuf::from(format!(
        "{}/{name}",
        dflt.get("HOME").unwrap_or("/home").trim_end_matches('/')
    ));
    // getdef_bool: unset is "no" (Debian's login.defs says yes).
    let usergroups = defs.yes("USERGROUPS_ENAB");
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

    let (pw_data, mut passwd) = load_required(&etc, "passwd")?;
    let (gr_data, mut group) = load_required(&etc, "group")?;
    let (sp_data, mut shadow) = load_required(&etc, "shadow")?;
    let mut gshadow = load(&etc, "gshadow")?;
    let mut subuid = load(&etc, "subuid")?;
    let mut subgid = load(&etc, "subgid")?;

    if passwd.contains(name) || shadow.contains(name) {
        return Err(Error::UserExists(name.to_owned()));
    }
    if usergroups
        && (group.contains(name) || gshadow.as_ref().is_some_and(|(_, t)| t.contains(name)))
    {
        return Err(Error::invalid(format!(
            "group {name} already exists; useradd would refuse to create user {name} with a private group"
        )));
    }

    let uid_min = defs.num_or("UID_MIN", 1000) as u64;
    let uid_max = defs.num_or("UID_MAX", 60000) as u64;
    let gid_min = defs.num_or("GID_MIN", 1000) as u64;
    let gid_max = defs.num_or("GID_MAX", 60000) as u64;
    let uid = next_id(&passwd.numbers(2).collect::<Vec<_>>(), uid_min, uid_max)
        .ok_or_else(|| Error::invalid(format!("no free uid in {uid_min}..={uid_max}")))?;
    let used_gids: Vec<u64> = group.numbers(2).collect();
    let gid = if !usergroups {
        dflt.num_or("GROUP", 100) as u64
    } else if !used_gids.contains(&uid) {
        // useradd prefers gid == uid when that gid is free.
        uid
    } else {
        next_id(&used_gids, gid_min, gid_max)
            .ok_or_else(|| Error::invalid(format!("no free gid in {gid_min}..={gid_max}")))?
    };

    let s = |v: &str| v.as_bytes().to_vec();
    let n = |v: u64| v.to_string().into_bytes();
    passwd.push(&[
        s(name),
        s("x"),
        n(uid),
        n(gid),
        Vec::new(),
        s(&home.to_string_lossy()),
        s(&shell),
    ]);
    if usergroups {
        group.push(&[s(name), s("x"), n(gid), Vec::new()]);
        if let Some((_, t)) = &mut gshadow {
            t.push(&[s(name), s("!"), Vec::new(), Vec::new()]);
        }
    }
    // -1 ("not set") is written as an empty field, as putspent does.
    let aging = |v: i64| {
        if v < 0 {
            Vec::new()
        } else {
            v.to_string().into_bytes()
        }
    };
    shadow.push(&[
        s(name),
        hash.as_ref().map_or(s("!"), |h| s(h.as_str())),
        today,
        aging(defs.num_or("PASS_MIN_DAYS", -1)),
        aging(defs.num_or("PASS_MAX_DAYS", -1)),
        aging(defs.num_or("PASS_WARN_AGE", -1)),
        aging(dflt.num_or("INACTIVE", -1)),
        Vec::new(),
        Vec::new(),
    ]);
    for (t, key) in [(&mut subuid, "UID"), (&mut subgid, "GID")] {
        let Some((_, t)) = t else { continue };
        let min = defs.num_or(&format!("SUB_{key}_MIN"), 100_000) as u64;
        let max = defs.num_or(&format!("SUB_{key}_MAX"), 600_100_000) as u64;
        let count = defs.num_or(&format!("SUB_{key}_COUNT"), 65536) as u64;
        if count == 0 || t.contains(name) {
            continue;
        }
        let start = free_range(t, min, max, count)
            .ok_or_else(|| Error::invalid(format!("no free subordinate {key} range of {count}")))?;
        t.push(&[s(name), n(start), n(count)]);
    }

    // Nothing of an earlier user of this name may carry over: useradd
    // would keep a stale `sudo`/`wheel` membership (a `userdel` of another
    // tool, a hand edit) and /etc/sudoers.d/NAME stays after a plain
    // `userdel`. Both are taken away here, in the same transaction.
    for g in ADMIN_GROUPS {
        drop_member(&mut group, g, &[3], name);
        if let Some((_, t)) = &mut gshadow {
            drop_member(t, g, &[2, 3], name);
        }
    }
    let sudoers_d = match spec.sudo {
        true => Some(sudo::open_dropin_dir(&etc)?),
        false => etc.try_open_dir("sudoers.d")?,
    };
    let fname = sudo::dropin_name(&spec.name);
    let stale_dropin = match &sudoers_d {
        Some(d) => sudo::read_ours(d, &spec.name)?,
        None => None,
    };

    let mut sudo_grant = None;
    let mut dropin = None;
    if spec.sudo {
        let d = sudoers_d.as_ref().expect("opened above for sudo");
        match sudo::choose(&etc, &group, hash.is_some())? {
            Grant::Group(g) => {
                add_member(&mut group, &g, 3, name);
                if let Some((_, t)) = &mut gshadow {
                    add_member(t, &g, 3, name);
                }
                sudo_grant = Some(format!("group:{g}"));
            }
            Grant::Dropin => {
                let content = sudo::dropin_content(&spec.name, hash.is_some());
                // A leftover of ours is replaced; someone else's file is not
                // ours to overwrite.
                if stale_dropin.is_none() && d.stat_at(&fname)?.is_some() {
                    return Err(Error::invalid(format!(
                        "{} exists and was not written by accessd; not replacing it",
                        d.display(&fname).display()
                    )));
                }
                sudo::validate(sys, d, &spec.name, &content)?;
                sudo_grant = Some(format!("dropin:/etc/sudoers.d/{fname}"));
                dropin = Some(content);
            }
        }
    } else {
        // `sudo: false` must be true afterwards: a rule accessd did not
        // write that still grants the new user sudo makes it a lie, so
        // nothing is created (PROTOCOL "Sudo": foreign_grant).
        let who = sudo::Who::new(name, uid as u32, gid as u32, Some(&group));
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
    }

    let mut t = txn::Txn::new();
    t.replace(&etc, "passwd", pw_data, passwd.to_bytes());
    t.replace(&etc, "group", gr_data, group.to_bytes());
    t.replace(&etc, "shadow", sp_data, shadow.to_bytes());
    for (fname, f) in [("gshadow", gshadow), ("subuid", subuid), ("subgid", subgid)] {
        if let Some((data, table)) = f {
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
    let home_mode = defs
        .num("HOME_MODE")
        .unwrap_or(0o777 & !defs.num_or("UMASK", 0o22)) as u32
        & 0o7777;
    let skel_path = dflt.get("SKEL").unwrap_or("/etc/skel");
    let skel = root.try_open_dir(skel_path)?;
    let created_home = home::create(
        &root,
        &home,
        uid as u32,
        gid as u32,
        home_mode,
        skel.as_ref(),
    )?;
    // An existing home is the user's to keep: note what `then` may add to
    // it (~/.ssh), so that an undo takes away only that.
    let had_ssh = created_home || home::has_entry(&root, &home, ".ssh");
    let created = CreatedUser {
        uid: uid as u32,
        gid: gid as u32,
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
                let _ = home::remove(&root, &home, uid as u32);
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

/// shadow's find_new_uid: one more than the highest id used in [min, max],
/// or, when that overflows max, the lowest free id in the range.
fn next_id(used: &[u64], min: u64, max: u64) -> Option<u64> {
    let highest = used
        .iter()
        .copied()
        .filter(|u| (min..=max).contains(u))
        .max();
    match highest {
        None => Some(min),
        Some(h) if h < max => Some(h + 1),
        Some(_) => (min..=max).find(|c| !used.contains(c)),
    }
}

/// The lowest start in [min, max] with `count` ids free of every existing
/// range (shadow's find_free_range over subuid/subgid).
fn free_range(t: &Table, min: u64, max: u64, count: u64) -> Option<u64> {
    let mut ranges: Vec<(u64, u64)> = t
        .entries()
        .filter_map(|(_, f)| Some((db::parse_num(f.get(1)?)?, db::parse_num(f.get(2)?)?)))
        .collect();
    ranges.sort_unstable();
    let mut start = min;
    for (s, c) in ranges {
        if s.saturating_add(c) <= start {
            continue;
        }
        if s >= start.saturating_add(count) {
            break;
        }
        start = s.saturating_add(c);
    }
    (start.checked_add(count)?.saturating_sub(1) <= max).then_some(start)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_like_find_new_uid() {
        assert_eq!(next_id(&[0, 1, 65534], 1000, 60000), Some(1000));
        assert_eq!(next_id(&[0, 1000, 1005], 1000, 60000), Some(1006));
        assert_eq!(next_id(&[1000, 1002], 1000, 1002), Some(1001));
        assert_eq!(next_id(&[1000, 1001], 1000, 1001), None);
    }

    #[test]
    fn subordinate_ranges() {
        let t = Table::parse(b"a:100000:65536\n");
        assert_eq!(free_range(&t, 100000, 600100000, 65536), Some(165536));
        let t = Table::parse(b"");
        assert_eq!(free_range(&t, 100000, 600100000, 65536), Some(100000));
        let t = Table::parse(b"a:165536:65536\n");
        assert_eq!(free_range(&t, 100000, 600100000, 65536), Some(100000));
    }
}
