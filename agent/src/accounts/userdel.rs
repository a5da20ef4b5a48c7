//! `userdel [-r]` (shadow 4.13): the user leaves passwd, shadow, every
//! group member list, gshadow and the subordinate id files; the private
//! group goes too when nobody else uses it.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::fsx::Dir;
use crate::names::UserName;
use crate::sys::System;

use super::db::{self, Table};
use super::logindefs::Defs;
use super::{home, invalidate_caches, load, load_required, lock, malformed, record, sudo, txn};
use super::{DeleteOptions, Deleted, RegularUids};
use crate::sessions;
use crate::ssh::authkeys;

/// How long processes found at a delete may take to exit on their own
/// before they make the user busy (an SSH session whose client just left).
const CLOSING: Duration = Duration::from_secs(1);

pub fn delete(
    sys: &System,
    user: &UserName,
    opts: DeleteOptions,
    timeout: Duration,
) -> Result<Deleted> {
    let name = user.as_str();
    let root = Dir::open(&sys.root)?;
    let etc = root.open_dir("etc")?;
    let defs = Defs::load(&etc, "login.defs", ' ')?;
    let range = RegularUids::load(&etc)?;

    // userdel's lock order: passwd, shadow, group, gshadow, subuid, subgid.
    let mut files = vec!["passwd", "shadow", "group"];
    for f in ["gshadow", "subuid", "subgid"] {
        if etc.stat_at(f)?.is_some() {
            files.push(f);
        }
    }
    let sudoers_d = etc.try_open_dir("sudoers.d")?;
    let rec;
    let mut deleted = Deleted::default();
    {
        let _locks = lock::Locks::acquire(&etc, &files, timeout)?;
        let (pw_data, mut passwd) = load_required(&etc, "passwd")?;
        let i = passwd
            .find(name)
            .ok_or_else(|| Error::UserNotFound(name.to_owned()))?;
        rec = record(&passwd.fields(i)).ok_or_else(|| malformed(&etc, "passwd", name))?;
        if rec.uid == 0 {
            return Err(Error::invalid(format!(
                "refusing to delete {name}: uid 0 is the superuser"
            )));
        }
        if !range.names(rec.uid) {
            return Err(Error::invalid(format!(
                "refusing to delete {name}: uid {} is a system account, outside \
                 UID_MIN..UID_MAX ({}..{}) of login.defs",
                rec.uid, range.min, range.max
            )));
        }
        // As userdel: a user with running processes is not deleted — their
        // sessions would run on under a uid without a name. Checked under
        // the locks, so the uid is still this user's.
        let busy = sessions::processes_of(&sys.root, rec.uid)?;
        let busy = match opts.terminate_sessions {
            true => busy,
            false => sessions::still_running(busy, CLOSING),
        };
        if !busy.is_empty() {
            if !opts.terminate_sessions {
                return Err(Error::UserBusy(format!(
                    "user {name} is currently used by process {}{}; nothing was changed \
                     (terminate_sessions: true ends them, then deletes the user)",
                    busy[0].pid,
                    match busy.len() {
                        1 => String::new(),
                        n => format!(" and {} more", n - 1),
                    }
                )));
            }
            drop(busy);
            let (ended, open) = sessions::end_all(&sys.root, rec.uid, name);
            // Nothing is written yet: a failed scan leaves the files as
            // they were (the processes ended so far are named in the log).
            let open = open.inspect_err(|_| {
                if !ended.is_empty() {
                    tracing::warn!(
                        user = name,
                        ended = ?ended.iter().map(|e| e.pid).collect::<Vec<_>>(),
                        "processes of the user were ended before the scan failed"
                    );
                }
            })?;
            if open > 0 {
                return Err(Error::UserBusy(format!(
                    "user {name} still has {open} running process(es) after {} were ended; \
                     the user was not deleted",
                    ended.len()
                )));
            }
            deleted.sessions_ended = ended;
        }
        passwd.remove(i);

        let mut t = txn::Txn::new();
        let (gr_data, mut group) = load_required(&etc, "group")?;
        let mut gshadow = load(&etc, "gshadow")?;
        drop_member(&mut group, 3, name);
        if let Some((_, gs)) = &mut gshadow {
            drop_member(gs, 2, name);
            drop_member(gs, 3, name);
        }
        // The private group: same name, the user's primary gid, no other
        // members, and nobody else's primary group.
        // getdef_bool: unset is "no" (Debian's login.defs says yes).
        let usergroups = defs.yes("USERGROUPS_ENAB");
        if usergroups {
            if let Some(gi) = group.find(name) {
                let f = group.fields(gi);
                let gid = f.get(2).and_then(|g| db::parse_num(g));
                let empty = f.get(3).is_none_or(Vec::is_empty);
                let others = passwd.numbers(3).any(|g| Some(g) == gid);
                if gid == Some(u64::from(rec.gid)) && empty && !others {
                    group.remove(gi);
                    if let Some((_, gs)) = &mut gshadow {
                        if let Some(si) = gs.find(name) {
                            gs.remove(si);
                        }
                    }
                }
            }
        }
        t.replace(&etc, "passwd", pw_data, passwd.to_bytes());
        if let Some((data, mut shadow)) = load(&etc, "shadow")? {
            if let Some(si) = shadow.find(name) {
                shadow.remove(si);
            }
            t.replace(&etc, "shadow", data, shadow.to_bytes());
        }
        t.replace(&etc, "group", gr_data, group.to_bytes());
        if let Some((data, gs)) = gshadow {
            t.replace(&etc, "gshadow", data, gs.to_bytes());
        }
        for f in ["subuid", "subgid"] {
            if let Some((data, mut table)) = load(&etc, f)? {
                while let Some(si) = table.find(name) {
                    table.remove(si);
                }
                t.replace(&etc, f, data, table.to_bytes());
            }
        }
        if let Some(d) = &sudoers_d {
            if let Some(old) = sudo::read_ours(d, user)? {
                t.remove(d, &sudo::dropin_name(user), old);
            }
        }
        // The record of the keys accessd added is this user's: a later user
        // of the same name must not have keys removed by it.
        let (keys_dir, record_name) = authkeys::managed_record(sys, user)?;
        if let Some(d) = &keys_dir {
            if let Some(old) = d.read(&record_name)? {
                t.remove(d, &record_name, old);
            }
        }
        t.commit()?;
        // From here on the user is deleted: the command is applied, and
        // whatever below does not complete is told in `warnings`, never
        // made a `failed` (PROTOCOL §4: failed leaves every file as it was).
        if opts.terminate_sessions {
            // A login that was between authentication and its setuid during
            // the scan runs as the uid now; it ends too.
            let (late, left) = sessions::end_all(&sys.root, rec.uid, name);
            deleted.sessions_ended.extend(late);
            match left {
                Ok(0) => {}
                Ok(n) => {
                    deleted.sessions_open = n;
                    deleted.warnings.push(format!(
                        "{n} process(es) that started under the uid during the delete \
                         still run"
                    ));
                }
                Err(e) => deleted.warnings.push(format!(
                    "processes that started under the uid during the delete could not be \
                     ended: {e}"
                )),
            }
        }
    }
    invalidate_caches(sys);

    if opts.remove_home {
        let home = rec.home.display();
        match home::remove(&root, &rec.home, rec.uid) {
            Ok(removed) => deleted.home_removed = Some(removed),
            Err(e) => {
                deleted.home_removed = Some(false);
                deleted
                    .warnings
                    .push(format!("its home {home} was not removed: {e}"));
            }
        }
        // userdel -r also removes the mail spool, when it is the user's.
        let mail = root.try_open_dir("var/mail").and_then(|d| match d {
            Some(mail) => match mail.stat_at(name)? {
                Some(st) if st.st_uid == rec.uid => mail.remove_file(name).map(|_| ()),
                _ => Ok(()),
            },
            None => Ok(()),
        });
        if let Err(e) = mail {
            deleted.warnings.push(format!(
                "its mail spool /var/mail/{name} was not removed: {e}"
            ));
        }
    }
    Ok(deleted)
}

fn drop_member(t: &mut Table, idx: usize, name: &str) {
    let hits: Vec<(usize, Vec<Vec<u8>>)> = t
        .entries()
        .filter(|(_, f)| f.get(idx).is_some_and(|m| db::is_member(m, name)))
        .collect();
    for (i, mut f) in hits {
        if let Some(kept) = db::without_member(&f[idx], name) {
            f[idx] = kept;
            t.set_fields(i, &f);
        }
    }
}
