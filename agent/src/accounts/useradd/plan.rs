//! What `useradd -m` would write, decided from data alone: the parsed
//! account databases, login.defs, /etc/default/useradd, the active sudoers
//! lines and the request go in; a [`Plan`] (ids, new tables, sudo grant,
//! home) or a [`PlanError`] comes out. No file is read or written here, so
//! every rule is testable without root; `useradd::create` reads, plans, and
//! commits.

use std::fmt;
use std::path::PathBuf;

use crate::error::Error;
use crate::fsx::Dir;
use crate::names::UserName;

use super::super::db::{self, Table};
use super::super::logindefs::Defs;
use super::super::sudo::{self, Grant, NoGrant};
use super::{add_member, drop_member, ADMIN_GROUPS};

/// The account databases (gshadow, subuid and subgid may be absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    pub passwd: Table,
    pub group: Table,
    pub shadow: Table,
    pub gshadow: Option<Table>,
    pub subuid: Option<Table>,
    pub subgid: Option<Table>,
}

/// Everything the plan depends on besides the databases.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub name: &'a UserName,
    /// The crypt hash for shadow; `None` locks the password (`!`).
    pub hash: Option<&'a str>,
    pub sudo: bool,
    /// Already checked against /etc/shells; `None` takes SHELL= of
    /// /etc/default/useradd.
    pub shell: Option<&'a str>,
    /// /etc/login.defs.
    pub defs: &'a Defs,
    /// /etc/default/useradd.
    pub dflt: &'a Defs,
    /// Active /etc/sudoers lines (`None`: no such file). Only read when
    /// `sudo` is asked for.
    pub sudoers: Option<&'a [String]>,
    /// shadow's lastchg field: days since the epoch, empty when unknown.
    pub today: &'a [u8],
}

/// How the new user gets sudo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SudoPlan {
    None,
    /// Membership of this admin group (already in `Plan::tables`).
    Group(String),
    /// The drop-in /etc/sudoers.d/`file` with `content`.
    Dropin {
        file: String,
        content: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub uid: u32,
    pub gid: u32,
    /// A group of the user's name is created (USERGROUPS_ENAB).
    pub private_group: bool,
    pub home: PathBuf,
    /// Mode of a home that is created (HOME_MODE, else from UMASK).
    pub home_mode: u32,
    /// The skeleton directory, relative to the root.
    pub skel: String,
    pub shell: String,
    /// The databases with the new entries and the admin-group changes.
    pub tables: Tables,
    pub sudo: SudoPlan,
}

/// Why useradd would not create the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    UserExists,
    /// A group of the user's name exists and a private group is wanted.
    GroupExists,
    /// login.defs has `{key}_MIN` above `{key}_MAX` (shadow's get_ranges:
    /// "Invalid configuration").
    InvertedRange {
        key: &'static str,
        min: u64,
        max: u64,
    },
    /// Every id of the range is taken.
    NoFreeId {
        what: &'static str,
        min: u64,
        max: u64,
    },
    NoFreeSubordinateRange {
        key: &'static str,
        count: u64,
    },
    Sudo(NoGrant),
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::UserExists => write!(f, "the user exists"),
            PlanError::GroupExists => write!(f, "a group of that name exists"),
            PlanError::InvertedRange { key, min, max } => write!(
                f,
                "invalid configuration in login.defs: {key}_MIN ({min}) is above {key}_MAX ({max})"
            ),
            PlanError::NoFreeId { what, min, max } => write!(f, "no free {what} in {min}..={max}"),
            PlanError::NoFreeSubordinateRange { key, count } => {
                write!(f, "no free subordinate {key} range of {count}")
            }
            PlanError::Sudo(NoGrant::NoSudoers) => write!(f, "cannot grant sudo: no sudoers"),
            PlanError::Sudo(NoGrant::NoWay) => write!(
                f,
                "cannot grant sudo: sudoers neither enables %sudo or %wheel nor includes /etc/sudoers.d"
            ),
        }
    }
}

impl PlanError {
    /// The protocol error for user `name`; `etc` names the files.
    pub fn into_error(self, name: &str, etc: &Dir) -> Error {
        match self {
            PlanError::UserExists => Error::UserExists(name.to_owned()),
            PlanError::GroupExists => Error::invalid(format!(
                "group {name} already exists; useradd would refuse to create user {name} with a private group"
            )),
            PlanError::Sudo(e) => e.into_error(etc),
            e => Error::invalid(e.to_string()),
        }
    }
}

pub fn plan(input: &Input<'_>, tables: Tables) -> Result<Plan, PlanError> {
    let Tables {
        mut passwd,
        mut group,
        mut shadow,
        mut gshadow,
        mut subuid,
        mut subgid,
    } = tables;
    let (defs, dflt) = (input.defs, input.dflt);
    let name = input.name.as_str();
    let shell = match input.shell {
        Some(s) => s.to_owned(),
        None => dflt.get("SHELL").unwrap_or("/bin/sh").to_owned(),
    };
    let home = PathBuf::from(format!(
        "{}/{name}",
        dflt.get("HOME").unwrap_or("/home").trim_end_matches('/')
    ));
    // getdef_bool: unset is "no" (Debian's login.defs says yes).
    let usergroups = defs.yes("USERGROUPS_ENAB");

    if passwd.contains(name) || shadow.contains(name) {
        return Err(PlanError::UserExists);
    }
    if usergroups && (group.contains(name) || gshadow.as_ref().is_some_and(|t| t.contains(name))) {
        return Err(PlanError::GroupExists);
    }

    let (uid_min, uid_max) = range(defs, "UID")?;
    let uid = next_id(&passwd.numbers(2).collect::<Vec<_>>(), uid_min, uid_max).ok_or(
        PlanError::NoFreeId {
            what: "uid",
            min: uid_min,
            max: uid_max,
        },
    )?;
    let gid = if usergroups {
        let (gid_min, gid_max) = range(defs, "GID")?;
        private_gid(&group.numbers(2).collect::<Vec<_>>(), uid, gid_min, gid_max).ok_or(
            PlanError::NoFreeId {
                what: "gid",
                min: gid_min,
                max: gid_max,
            },
        )?
    } else {
        dflt.num_or("GROUP", 100) as u64
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
        if let Some(t) = &mut gshadow {
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
        s(input.hash.unwrap_or("!")),
        input.today.to_vec(),
        aging(defs.num_or("PASS_MIN_DAYS", -1)),
        aging(defs.num_or("PASS_MAX_DAYS", -1)),
        aging(defs.num_or("PASS_WARN_AGE", -1)),
        aging(dflt.num_or("INACTIVE", -1)),
        Vec::new(),
        Vec::new(),
    ]);
    for (t, key) in [(&mut subuid, "UID"), (&mut subgid, "GID")] {
        let Some(t) = t else { continue };
        let min = defs.num_or(&format!("SUB_{key}_MIN"), 100_000) as u64;
        let max = defs.num_or(&format!("SUB_{key}_MAX"), 600_100_000) as u64;
        let count = defs.num_or(&format!("SUB_{key}_COUNT"), 65536) as u64;
        if count == 0 || t.contains(name) {
            continue;
        }
        let start = free_range(t, min, max, count)
            .ok_or(PlanError::NoFreeSubordinateRange { key, count })?;
        t.push(&[s(name), n(start), n(count)]);
    }

    // Nothing of an earlier user of this name may carry over: useradd
    // would keep a stale `sudo`/`wheel` membership (a `userdel` of another
    // tool, a hand edit). It is taken away here, in the same transaction.
    for g in ADMIN_GROUPS {
        drop_member(&mut group, g, &[3], name);
        if let Some(t) = &mut gshadow {
            drop_member(t, g, &[2, 3], name);
        }
    }
    let sudo = if input.sudo {
        match sudo::choose_in(input.sudoers, &group, input.hash.is_some())
            .map_err(PlanError::Sudo)?
        {
            Grant::Group(g) => {
                add_member(&mut group, &g, 3, name);
                if let Some(t) = &mut gshadow {
                    add_member(t, &g, 3, name);
                }
                SudoPlan::Group(g)
            }
            Grant::Dropin => SudoPlan::Dropin {
                file: sudo::dropin_name(input.name),
                content: sudo::dropin_content(input.name, input.hash.is_some()),
            },
        }
    } else {
        SudoPlan::None
    };

    let home_mode = defs
        .num("HOME_MODE")
        .unwrap_or(0o777 & !defs.num_or("UMASK", 0o22)) as u32
        & 0o7777;
    Ok(Plan {
        uid: uid as u32,
        gid: gid as u32,
        private_group: usergroups,
        home,
        home_mode,
        skel: dflt.get("SKEL").unwrap_or("/etc/skel").to_owned(),
        shell,
        tables: Tables {
            passwd,
            group,
            shadow,
            gshadow,
            subuid,
            subgid,
        },
        sudo,
    })
}

/// `{key}_MIN..={key}_MAX` of login.defs (defaults 1000 and 60000), refused
/// when inverted as shadow's get_ranges refuses it.
fn range(defs: &Defs, key: &'static str) -> Result<(u64, u64), PlanError> {
    let min = defs.num_or(&format!("{key}_MIN"), 1000) as u64;
    let max = defs.num_or(&format!("{key}_MAX"), 60000) as u64;
    if max < min {
        return Err(PlanError::InvertedRange { key, min, max });
    }
    Ok((min, max))
}

/// The private group's gid: useradd passes the uid to find_new_gid as the
/// preferred gid, which takes it only when it is inside GID_MIN..=GID_MAX
/// and no group has it; otherwise the gid is allocated like a uid.
fn private_gid(used: &[u64], uid: u64, min: u64, max: u64) -> Option<u64> {
    if (min..=max).contains(&uid) && !used.contains(&uid) {
        return Some(uid);
    }
    next_id(used, min, max)
}

/// shadow's find_new_uid (4.13, non-system): one more than the highest id
/// used in [min, max], or, when that overflows max, the lowest free id in
/// the range.
fn next_id(used: &[u64], min: u64, max: u64) -> Option<u64> {
    let highest = used
        .iter()
        .copied()
        .filter(|u| (min..=max).contains(u))
        .max();
    match highest {
        None if min <= max => Some(min),
        None => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN_DEFS: &str = "UID_MIN 1000\nUID_MAX 60000\nGID_MIN 1000\nGID_MAX 60000\n\
        USERGROUPS_ENAB yes\nUMASK 022\nHOME_MODE 0700\n";

    fn tables(passwd: &str, group: &str) -> Tables {
        Tables {
            passwd: Table::parse(passwd.as_bytes()),
            group: Table::parse(group.as_bytes()),
            shadow: Table::parse(b"root:*:19000:0:99999:7:::\n"),
            gshadow: Some(Table::parse(b"root:*::\nsudo:*::\n")),
            subuid: None,
            subgid: None,
        }
    }

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nsudo:x:27:\nusers:x:100:\nnogroup:x:65534:\n";

    struct Case {
        defs: Defs,
        dflt: Defs,
        sudoers: Option<Vec<String>>,
        name: UserName,
        hash: Option<&'static str>,
        sudo: bool,
    }

    impl Case {
        fn new(defs: &str) -> Case {
            Case {
                defs: Defs::parse(defs, ' '),
                dflt: Defs::parse("SHELL=/bin/sh\n", '='),
                sudoers: None,
                name: UserName::parse("bob").unwrap(),
                hash: None,
                sudo: false,
            }
        }

        fn run(&self, t: Tables) -> Result<Plan, PlanError> {
            let input = Input {
                name: &self.name,
                hash: self.hash,
                sudo: self.sudo,
                shell: None,
                defs: &self.defs,
                dflt: &self.dflt,
                sudoers: self.sudoers.as_deref(),
                today: b"20000",
            };
            plan(&input, t)
        }
    }

    fn new_line(t: &Table) -> String {
        let all = String::from_utf8(t.to_bytes()).unwrap();
        all.lines().last().unwrap().to_owned()
    }

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

    #[test]
    fn first_user_gets_uid_min_and_a_matching_private_group() {
        let p = Case::new(DEBIAN_DEFS).run(tables(PASSWD, GROUP)).unwrap();
        assert_eq!((p.uid, p.gid, p.private_group), (1000, 1000, true));
        assert_eq!(
            new_line(&p.tables.passwd),
            "bob:x:1000:1000::/home/bob:/bin/sh"
        );
        assert_eq!(new_line(&p.tables.group), "bob:x:1000:");
        assert_eq!(new_line(p.tables.gshadow.as_ref().unwrap()), "bob:!::");
        assert_eq!(new_line(&p.tables.shadow), "bob:!:20000::::::");
        assert_eq!(p.home, PathBuf::from("/home/bob"));
        assert_eq!((p.home_mode, p.skel.as_str()), (0o700, "/etc/skel"));
        assert_eq!(p.sudo, SudoPlan::None);
    }

    #[test]
    fn ids_below_uid_min_are_not_counted() {
        // System accounts (uid < UID_MIN) neither block nor raise the
        // allocation of a regular uid.
        let pw = format!("{PASSWD}daemon:x:1:1::/:/bin/false\nsvc:x:999:999::/:/bin/false\n");
        let p = Case::new(DEBIAN_DEFS).run(tables(&pw, GROUP)).unwrap();
        assert_eq!(p.uid, 1000);
    }

    #[test]
    fn uid_follows_the_highest_used_not_the_first_gap() {
        let pw = format!("{PASSWD}a:x:1000:1000::/:/bin/sh\nc:x:1005:1005::/:/bin/sh\n");
        let gr = format!("{GROUP}a:x:1000:\nc:x:1005:\n");
        let p = Case::new(DEBIAN_DEFS).run(tables(&pw, &gr)).unwrap();
        assert_eq!((p.uid, p.gid), (1006, 1006));
    }

    #[test]
    fn a_full_top_of_the_range_falls_back_to_the_lowest_gap() {
        let defs = "UID_MIN 1000\nUID_MAX 1002\nUSERGROUPS_ENAB yes\n";
        let pw = format!("{PASSWD}a:x:1000:100::/:/bin/sh\nc:x:1002:100::/:/bin/sh\n");
        let p = Case::new(defs).run(tables(&pw, GROUP)).unwrap();
        assert_eq!(p.uid, 1001);
    }

    #[test]
    fn a_full_uid_range_is_an_error() {
        let defs = "UID_MIN 1000\nUID_MAX 1001\nUSERGROUPS_ENAB yes\n";
        let pw = format!("{PASSWD}a:x:1000:100::/:/bin/sh\nc:x:1001:100::/:/bin/sh\n");
        let e = Case::new(defs).run(tables(&pw, GROUP)).unwrap_err();
        assert_eq!(
            e,
            PlanError::NoFreeId {
                what: "uid",
                min: 1000,
                max: 1001
            }
        );
    }

    #[test]
    fn a_uid_taken_as_a_gid_gives_the_private_group_the_next_free_gid() {
        // A group (no user) holds 1000..=1001: the user still gets uid 1000,
        // and its group the next gid after the highest used.
        let gr = format!("{GROUP}staff2:x:1000:\nstaff3:x:1001:\n");
        let p = Case::new(DEBIAN_DEFS).run(tables(PASSWD, &gr)).unwrap();
        assert_eq!((p.uid, p.gid), (1000, 1002));
        assert_eq!(new_line(&p.tables.group), "bob:x:1002:");
    }

    #[test]
    fn a_full_gid_range_is_an_error() {
        let defs = "GID_MIN 1000\nGID_MAX 1000\nUSERGROUPS_ENAB yes\n";
        let gr = format!("{GROUP}staff2:x:1000:\n");
        let e = Case::new(defs).run(tables(PASSWD, &gr)).unwrap_err();
        assert_eq!(
            e,
            PlanError::NoFreeId {
                what: "gid",
                min: 1000,
                max: 1000
            }
        );
    }

    #[test]
    fn the_private_group_gid_stays_inside_gid_min_max() {
        // useradd offers the uid to find_new_gid only as a preference,
        // which check_gid refuses outside GID_MIN..GID_MAX.
        let defs =
            "UID_MIN 1000\nUID_MAX 60000\nGID_MIN 2000\nGID_MAX 60000\nUSERGROUPS_ENAB yes\n";
        let p = Case::new(defs).run(tables(PASSWD, GROUP)).unwrap();
        assert_eq!((p.uid, p.gid), (1000, 2000));
        let defs = "UID_MIN 5000\nUID_MAX 6000\nGID_MIN 1000\nGID_MAX 2000\nUSERGROUPS_ENAB yes\n";
        let p = Case::new(defs).run(tables(PASSWD, GROUP)).unwrap();
        assert_eq!((p.uid, p.gid), (5000, 1000));
    }

    #[test]
    fn an_inverted_uid_range_is_refused() {
        let defs = "UID_MIN 5000\nUID_MAX 1000\nUSERGROUPS_ENAB yes\n";
        let e = Case::new(defs).run(tables(PASSWD, GROUP)).unwrap_err();
        assert_eq!(
            e,
            PlanError::InvertedRange {
                key: "UID",
                min: 5000,
                max: 1000
            }
        );
    }

    #[test]
    fn an_inverted_gid_range_is_refused_for_a_private_group() {
        let defs = "GID_MIN 5000\nGID_MAX 1000\nUSERGROUPS_ENAB yes\n";
        let e = Case::new(defs).run(tables(PASSWD, GROUP)).unwrap_err();
        assert!(
            matches!(e, PlanError::InvertedRange { key: "GID", .. }),
            "{e:?}"
        );
        // Without a private group no gid is allocated, as in useradd.
        let defs = "GID_MIN 5000\nGID_MAX 1000\n";
        let p = Case::new(defs).run(tables(PASSWD, GROUP)).unwrap();
        assert_eq!((p.gid, p.private_group), (100, false));
    }

    #[test]
    fn without_usergroups_the_default_group_and_no_new_group() {
        let mut c = Case::new("UID_MIN 1000\n");
        c.dflt = Defs::parse("GROUP=1234\nHOME=/srv/home/\nSHELL=/bin/bash\n", '=');
        let t = tables(PASSWD, GROUP);
        let groups_before = t.group.clone();
        let p = c.run(t).unwrap();
        assert_eq!((p.uid, p.gid, p.private_group), (1000, 1234, false));
        assert_eq!(p.tables.group, groups_before);
        assert_eq!(
            new_line(&p.tables.passwd),
            "bob:x:1000:1234::/srv/home/bob:/bin/bash"
        );
        // No HOME_MODE: from UMASK (022 when unset).
        assert_eq!(p.home_mode, 0o755);
    }

    #[test]
    fn an_existing_user_or_group_of_the_name_is_refused() {
        let pw = format!("{PASSWD}bob:x:1000:1000::/home/bob:/bin/sh\n");
        let e = Case::new(DEBIAN_DEFS).run(tables(&pw, GROUP)).unwrap_err();
        assert_eq!(e, PlanError::UserExists);
        let gr = format!("{GROUP}bob:x:1000:\n");
        let e = Case::new(DEBIAN_DEFS).run(tables(PASSWD, &gr)).unwrap_err();
        assert_eq!(e, PlanError::GroupExists);
        // Without private groups a group of that name is no obstacle.
        let p = Case::new("UID_MIN 1000\n")
            .run(tables(PASSWD, &gr))
            .unwrap();
        assert_eq!(p.uid, 1000);
    }

    #[test]
    fn shadow_line_carries_hash_and_aging() {
        let mut c = Case::new("PASS_MAX_DAYS 99999\nPASS_MIN_DAYS 0\nPASS_WARN_AGE 7\n");
        c.dflt = Defs::parse("INACTIVE=30\n", '=');
        c.hash = Some("$y$j9T$salt$hash");
        let p = c.run(tables(PASSWD, GROUP)).unwrap();
        assert_eq!(
            new_line(&p.tables.shadow),
            "bob:$y$j9T$salt$hash:20000:0:99999:7:30::"
        );
    }

    #[test]
    fn subordinate_ids_only_where_the_file_exists() {
        let mut t = tables(PASSWD, GROUP);
        t.subuid = Some(Table::parse(b"first:100000:65536\n"));
        let p = Case::new(DEBIAN_DEFS).run(t).unwrap();
        assert_eq!(
            new_line(p.tables.subuid.as_ref().unwrap()),
            "bob:165536:65536"
        );
        assert_eq!(p.tables.subgid, None);
    }

    fn sudoers(lines: &str) -> Option<Vec<String>> {
        Some(lines.lines().map(str::to_owned).collect())
    }

    #[test]
    fn sudo_with_a_password_is_membership_of_the_enabled_group() {
        let mut c = Case::new(DEBIAN_DEFS);
        c.sudo = true;
        c.hash = Some("$y$x");
        c.sudoers = sudoers("%sudo\tALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n");
        let p = c.run(tables(PASSWD, GROUP)).unwrap();
        assert_eq!(p.sudo, SudoPlan::Group("sudo".into()));
        let g = String::from_utf8(p.tables.group.to_bytes()).unwrap();
        assert!(g.contains("\nsudo:x:27:bob\n"), "{g}");
        let gs = String::from_utf8(p.tables.gshadow.unwrap().to_bytes()).unwrap();
        assert!(gs.contains("\nsudo:*::bob\n"), "{gs}");
    }

    #[test]
    fn sudo_without_a_password_is_a_nopasswd_dropin() {
        let mut c = Case::new(DEBIAN_DEFS);
        c.sudo = true;
        c.sudoers = sudoers("%sudo ALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n");
        let p = c.run(tables(PASSWD, GROUP)).unwrap();
        let SudoPlan::Dropin { file, content } = &p.sudo else {
            panic!("{:?}", p.sudo)
        };
        assert_eq!(file, "bob");
        let content = String::from_utf8(content.clone()).unwrap();
        assert!(
            content.ends_with("\nbob ALL=(ALL:ALL) NOPASSWD:ALL\n"),
            "{content}"
        );
        assert!(content.starts_with(sudo::MARKER));
        // No membership is given alongside the drop-in.
        assert!(String::from_utf8(p.tables.group.to_bytes())
            .unwrap()
            .contains("\nsudo:x:27:\n"));
    }

    #[test]
    fn sudo_needs_a_sudoers_that_allows_a_grant() {
        let mut c = Case::new(DEBIAN_DEFS);
        c.sudo = true;
        assert_eq!(
            c.run(tables(PASSWD, GROUP)).unwrap_err(),
            PlanError::Sudo(NoGrant::NoSudoers)
        );
        c.sudoers = sudoers("root ALL=(ALL:ALL) ALL\n");
        assert_eq!(
            c.run(tables(PASSWD, GROUP)).unwrap_err(),
            PlanError::Sudo(NoGrant::NoWay)
        );
    }

    #[test]
    fn a_stale_admin_membership_of_the_name_is_dropped() {
        let gr = "root:x:0:\nsudo:x:27:alice,bob\nwheel:x:10:bob\n";
        let p = Case::new(DEBIAN_DEFS).run(tables(PASSWD, gr)).unwrap();
        let g = String::from_utf8(p.tables.group.to_bytes()).unwrap();
        assert!(g.contains("\nsudo:x:27:alice\nwheel:x:10:\n"), "{g}");
    }
}
