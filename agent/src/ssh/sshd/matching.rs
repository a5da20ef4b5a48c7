//! Connections that satisfy a `Match` block, for `sshd -T -C`.
//!
//! `set_sshd` changes the keyword inside every Match block, and then asks
//! the real sshd what it reports for a connection that each block applies
//! to. This module builds that connection (a `-C` test spec) from the
//! block's criteria, with the semantics of OpenSSH's servconf.c
//! `match_cfg_line`, match.c `match_pattern_list` and addrmatch.c
//! `addr_match_list` (read in 8.4, 9.2 and 10.0):
//! - criteria on one line are ANDed; `Match all` stands alone; 10.0 also
//!   accepts `Criterion=value` and `invalid-user`;
//! - a pattern list matches when one positive pattern matches and no
//!   negated (`!`) one does, so a list of negations alone never matches;
//!   `*` and `?` are the only wildcards; User/Group/RDomain compare case
//!   sensitively, Host in lower case;
//! - Address/LocalAddress entries are CIDR (`10.0.0.0/8`, a bare address
//!   is a /32 or /128), or else wildcard patterns over the address text;
//! - Group needs a real user in the group (sshd calls `getgrouplist`), so
//!   one is looked up in the root's /etc/passwd and /etc/group;
//! - LocalPort is one port; in test mode a missing `lport` is fatal when
//!   any block has a LocalPort criterion, so every spec carries one;
//! - Version is decided by the sshd that is asked, which is the one that
//!   will run: it needs no field.
//!
//! When no connection can satisfy a block (negations only, two different
//! LocalPorts, a Group nobody is in), the reason is returned instead, for
//! the result to say that this block was not verified.

use std::net::IpAddr;

/// One criterion of a Match line, its pattern list as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Criterion {
    All,
    User(String),
    Group(String),
    Host(String),
    Address(String),
    LocalAddress(String),
    LocalPort(String),
    RDomain(String),
    InvalidUser,
    Version(String),
    /// Anything sshd would refuse (`sshd -t` fails first).
    Other(String),
}

/// Split a Match line's arguments into criteria; a `#` ends the line.
pub fn parse_criteria(args: &[String]) -> Vec<Criterion> {
    const WITH_EQ: &[&str] = &[
        "user",
        "group",
        "host",
        "address",
        "localaddress",
        "localport",
        "rdomain",
        "version",
    ];
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(attrib) = it.next() {
        if attrib.starts_with('#') {
            break;
        }
        let lower = attrib.to_ascii_lowercase();
        if lower == "all" {
            out.push(Criterion::All);
            continue;
        }
        if lower == "invalid-user" {
            out.push(Criterion::InvalidUser);
            continue;
        }
        let (name, value) = match lower.split_once('=') {
            Some((n, _)) if WITH_EQ.contains(&n) => {
                let v = &attrib[n.len() + 1..];
                (n.to_owned(), Some(v.to_owned()))
            }
            _ => (lower.clone(), it.next().cloned()),
        };
        let Some(value) = value.filter(|v| !v.is_empty() && !v.starts_with('#')) else {
            out.push(Criterion::Other(attrib.clone()));
            break;
        };
        out.push(match name.as_str() {
            "user" => Criterion::User(value),
            "group" => Criterion::Group(value),
            "host" => Criterion::Host(value),
            "address" => Criterion::Address(value),
            "localaddress" => Criterion::LocalAddress(value),
            "localport" => Criterion::LocalPort(value),
            "rdomain" => Criterion::RDomain(value),
            "version" => Criterion::Version(value),
            _ => Criterion::Other(attrib.clone()),
        });
    }
    out
}

/// A connection for `sshd -T -C`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec {
    pub user: Option<String>,
    pub host: Option<String>,
    pub addr: Option<String>,
    pub laddr: Option<String>,
    pub lport: Option<u16>,
    pub rdomain: Option<String>,
    pub invalid_user: bool,
}

impl Spec {
    /// The `-C` argument (`user=alice,addr=10.0.0.1,lport=22`).
    pub fn to_arg(&self) -> String {
        let mut parts = Vec::new();
        let fields = [
            ("user", &self.user),
            ("host", &self.host),
            ("addr", &self.addr),
            ("laddr", &self.laddr),
            ("rdomain", &self.rdomain),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                parts.push(format!("{k}={v}"));
            }
        }
        if let Some(p) = self.lport {
            parts.push(format!("lport={p}"));
        }
        if self.invalid_user {
            parts.push("invalid-user".to_owned());
        }
        parts.join(",")
    }
}

/// Local accounts as sshd's `getgrouplist` would see them in files.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    /// (user name, names of its groups: the primary one first).
    pub users: Vec<(String, Vec<String>)>,
}

impl Accounts {
    /// From the bytes of /etc/passwd and /etc/group; linear in their size
    /// (an image's files are hostile input).
    pub fn parse(passwd: &[u8], group: &[u8]) -> Accounts {
        use std::collections::HashMap;
        let group = String::from_utf8_lossy(group);
        let mut by_gid: HashMap<&str, &str> = HashMap::new();
        let mut member_of: HashMap<&str, Vec<&str>> = HashMap::new();
        for l in group.lines().filter(|l| !l.starts_with(['#', '+', '-'])) {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 || f[0].is_empty() {
                continue;
            }
            by_gid.entry(f[2]).or_insert(f[0]);
            for m in f[3].split(',').filter(|m| !m.is_empty()) {
                member_of.entry(m).or_default().push(f[0]);
            }
        }
        let passwd = String::from_utf8_lossy(passwd);
        let users = passwd
            .lines()
            .filter(|l| !l.starts_with(['#', '+', '-']))
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                let (name, gid) = (*f.first()?, *f.get(3)?);
                if name.is_empty() {
                    return None;
                }
                let mut names: Vec<String> =
                    by_gid.get(gid).map(|g| g.to_string()).into_iter().collect();
                for g in member_of.get(name).into_iter().flatten() {
                    if !names.iter().any(|n| n == g) {
                        names.push((*g).to_owned());
                    }
                }
                Some((name.to_owned(), names))
            })
            .collect();
        Accounts { users }
    }
}

/// sshd's `match_pattern`: `*` is any run, `?` one character. Matched
/// with one remembered star (O(len(s) * len(pattern)) at worst) rather
/// than by recursion, which a pattern such as `*a*a*a*...b` in a hostile
/// image would make exponential.
pub fn match_pattern(s: &str, pattern: &str) -> bool {
    let (s, p) = (s.as_bytes(), pattern.as_bytes());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if j < p.len() && (p[j] == b'?' || (p[j] != b'*' && p[j] == s[i])) {
            i += 1;
            j += 1;
        } else if j < p.len() && p[j] == b'*' {
            star = Some((j, i));
            j += 1;
        } else if let Some((sj, si)) = star {
            // Let the last star take one more character.
            star = Some((sj, si + 1));
            i = si + 1;
            j = sj + 1;
        } else {
            return false;
        }
    }
    p[j..].iter().all(|&c| c == b'*')
}

/// sshd's `match_pattern_list`: 1 positive, 0 none, -1 a negated match.
pub fn match_pattern_list(s: &str, list: &str, lower: bool) -> i32 {
    let mut positive = 0;
    for sub in list.split(',') {
        let (neg, pat) = match sub.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, sub),
        };
        let pat = if lower {
            pat.to_ascii_lowercase()
        } else {
            pat.to_owned()
        };
        if match_pattern(s, &pat) {
            if neg {
                return -1;
            }
            positive = 1;
        }
    }
    positive
}

/// An Address entry: a network, or a wildcard pattern (addrmatch.c tries
/// CIDR first and falls back to a pattern over the text).
enum AddrEntry {
    Net(IpAddr, u8),
    Pattern(String),
}

fn addr_entry(s: &str) -> AddrEntry {
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, l.parse::<u8>().ok()),
        None => (s, None),
    };
    match a.parse::<IpAddr>() {
        Ok(ip) => {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            match (s.contains('/'), len) {
                (false, _) => AddrEntry::Net(ip, max),
                (true, Some(l)) if l <= max => AddrEntry::Net(ip, l),
                _ => AddrEntry::Pattern(s.to_owned()),
            }
        }
        Err(_) => AddrEntry::Pattern(s.to_owned()),
    }
}

fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
        IpAddr::V6(v) => (u128::from(v), 128),
    }
}

fn mask(width: u8, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        let all = if width == 128 {
            u128::MAX
        } else {
            (1u128 << width) - 1
        };
        all & !((1u128 << (width - len)) - 1)
    }
}

fn in_net(addr: IpAddr, net: IpAddr, len: u8) -> bool {
    let ((a, wa), (n, wn)) = (bits(addr), bits(net));
    wa == wn && (a & mask(wa, len)) == (n & mask(wn, len))
}

/// sshd's `addr_match_list` (1 match, 0 none, -1 negated match).
pub fn addr_match_list(addr: &str, list: &str) -> i32 {
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return 0;
    };
    let mut ret = 0;
    for sub in list.split(',') {
        let (neg, e) = match sub.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, sub),
        };
        let hit = match addr_entry(e) {
            AddrEntry::Net(n, l) => in_net(ip, n, l),
            AddrEntry::Pattern(p) => match_pattern(addr, &p),
        };
        if hit {
            if neg {
                return -1;
            }
            ret = 1;
        }
    }
    ret
}

fn from_bits(v: u128, width: u8) -> IpAddr {
    if width == 32 {
        IpAddr::V4(std::net::Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(std::net::Ipv6Addr::from(v))
    }
}

/// Strings a wildcard pattern could stand for, for the given kind of field.
fn fill(pattern: &str, runs: &[&str], singles: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for r in runs {
        for q in singles {
            out.push(pattern.replace('*', r).replace('?', q));
        }
    }
    out
}

/// Positive entries of every list, as candidates.
fn positives(lists: &[&str]) -> Vec<String> {
    lists
        .iter()
        .flat_map(|l| l.split(','))
        .filter(|p| !p.starts_with('!') && !p.is_empty())
        .map(str::to_owned)
        .collect()
}

fn address_candidates(lists: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let entries: Vec<(bool, AddrEntry)> = lists
        .iter()
        .flat_map(|l| l.split(','))
        .map(|s| match s.strip_prefix('!') {
            Some(p) => (true, addr_entry(p)),
            None => (false, addr_entry(s)),
        })
        .collect();
    for (neg, e) in &entries {
        match e {
            AddrEntry::Net(ip, len) => {
                let (v, w) = bits(*ip);
                let m = mask(w, *len);
                let (first, last) = (v & m, (v & m) | (!m & mask(w, w)));
                // A host address first: it reads better in the result.
                let mut cands = vec![first.saturating_add(1), first, last.saturating_sub(1), last];
                if *neg {
                    // Just outside a negated network.
                    cands = vec![first.wrapping_sub(1), last.wrapping_add(1)];
                }
                out.extend(
                    cands
                        .into_iter()
                        .filter(|c| *c <= mask(w, w))
                        .map(|c| from_bits(c, w).to_string()),
                );
            }
            AddrEntry::Pattern(p) if !neg => out.extend(fill(
                p,
                &["1", "0", "1.1", "1.1.1", "10", "1:1"],
                &["1", "0"],
            )),
            AddrEntry::Pattern(_) => {}
        }
    }
    out.extend(["127.0.0.1", "10.0.0.1", "192.0.2.1", "::1", "2001:db8::1"].map(str::to_owned));
    out
}

/// The first candidate every list matches (`test` returns 1).
fn pick(cands: Vec<String>, lists: &[&str], test: impl Fn(&str, &str) -> i32) -> Option<String> {
    cands
        .into_iter()
        .filter(|c| !c.is_empty() && !c.contains(',') && !c.contains(char::is_whitespace))
        .find(|c| lists.iter().all(|l| test(c, l) == 1))
}

/// A connection that every Match line in `chain` (outermost first) accepts,
/// or why there is none. `free_port` is the local port used when no block
/// names one: a port no LocalPort criterion in the configuration names.
pub fn spec_for(
    chain: &[Vec<Criterion>],
    accounts: &Accounts,
    free_port: u16,
) -> Result<Spec, String> {
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let mut hosts = Vec::new();
    let mut addrs = Vec::new();
    let mut laddrs = Vec::new();
    let mut ports = Vec::new();
    let mut rdomains = Vec::new();
    let mut spec = Spec::default();
    for c in chain.iter().flatten() {
        match c {
            Criterion::All | Criterion::Version(_) => {}
            Criterion::User(l) => users.push(l.as_str()),
            Criterion::Group(l) => groups.push(l.as_str()),
            Criterion::Host(l) => hosts.push(l.as_str()),
            Criterion::Address(l) => addrs.push(l.as_str()),
            Criterion::LocalAddress(l) => laddrs.push(l.as_str()),
            Criterion::LocalPort(p) => ports.push(p.as_str()),
            Criterion::RDomain(l) => rdomains.push(l.as_str()),
            Criterion::InvalidUser => spec.invalid_user = true,
            Criterion::Other(a) => return Err(format!("sshd does not know the criterion {a}")),
        }
    }
    let never = |what: &str, lists: &[&str]| {
        format!(
            "no connection satisfies {what} {} (sshd needs a positive pattern that matches and no negated one)",
            lists.join(" and ")
        )
    };
    if !groups.is_empty() {
        let found = accounts.users.iter().find(|(name, gs)| {
            users
                .iter()
                .all(|l| match_pattern_list(name, l, false) == 1)
                && groups.iter().all(|l| {
                    let r: Vec<i32> = gs.iter().map(|g| match_pattern_list(g, l, false)).collect();
                    !r.contains(&-1) && r.contains(&1)
                })
        });
        match found {
            Some((name, _)) => spec.user = Some(name.clone()),
            None => {
                return Err(format!(
                    "no user in /etc/passwd and /etc/group is in a group matching {}{}",
                    groups.join(" and "),
                    if users.is_empty() {
                        String::new()
                    } else {
                        format!(" with a name matching {}", users.join(" and "))
                    }
                ))
            }
        }
    } else if !users.is_empty() {
        let mut cands = fill_all(&positives(&users), &["x", "", "root"], &["x"]);
        cands.extend(accounts.users.iter().map(|(n, _)| n.clone()));
        spec.user = Some(
            pick(cands, &users, |c, l| match_pattern_list(c, l, false))
                .ok_or_else(|| never("User", &users))?,
        );
    }
    if !hosts.is_empty() {
        let mut cands = fill_all(&positives(&hosts), &["x", "", "x.x"], &["x"]);
        cands.extend(["localhost", "host.example"].map(str::to_owned));
        let cands = cands.into_iter().map(|c| c.to_ascii_lowercase()).collect();
        spec.host = Some(
            pick(cands, &hosts, |c, l| match_pattern_list(c, l, true))
                .ok_or_else(|| never("Host", &hosts))?,
        );
    }
    if !addrs.is_empty() {
        spec.addr = Some(
            pick(address_candidates(&addrs), &addrs, addr_match_list)
                .ok_or_else(|| never("Address", &addrs))?,
        );
    }
    if !laddrs.is_empty() {
        spec.laddr = Some(
            pick(address_candidates(&laddrs), &laddrs, addr_match_list)
                .ok_or_else(|| never("LocalAddress", &laddrs))?,
        );
    }
    if !rdomains.is_empty() {
        let cands = fill_all(&positives(&rdomains), &["x", "0", ""], &["x"]);
        spec.rdomain = Some(
            pick(cands, &rdomains, |c, l| match_pattern_list(c, l, false))
                .ok_or_else(|| never("RDomain", &rdomains))?,
        );
    }
    let mut port: Option<u16> = None;
    for p in &ports {
        let n: u16 = p
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("LocalPort {p} is not a port"))?;
        if port.is_some_and(|q| q != n) {
            return Err(format!(
                "no connection satisfies LocalPort {}",
                ports.join(" and ")
            ));
        }
        port = Some(n);
    }
    spec.lport = Some(port.unwrap_or(free_port));
    Ok(spec)
}

fn fill_all(patterns: &[String], runs: &[&str], singles: &[&str]) -> Vec<String> {
    patterns
        .iter()
        .flat_map(|p| fill(p, runs, singles))
        .collect()
}

/// A local port that no `LocalPort` criterion names (so that a spec without
/// a LocalPort of its own activates no such block by accident).
pub fn free_port<'a>(all: impl IntoIterator<Item = &'a Criterion>) -> u16 {
    let named: Vec<u16> = all
        .into_iter()
        .filter_map(|c| match c {
            Criterion::LocalPort(p) => p.parse().ok(),
            _ => None,
        })
        .collect();
    (22..=u16::MAX)
        .chain(1..22)
        .find(|p| !named.contains(p))
        .unwrap_or(22)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn spec(line: &str) -> Result<Spec, String> {
        let acc = Accounts::parse(
            b"root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nbob:x:1001:1001::/home/bob:/bin/sh\n",
            b"root:x:0:\nalice:x:1000:\nbob:x:1001:\nadmins:x:2000:bob\n",
        );
        spec_for(&[parse_criteria(&args(line))], &acc, 22)
    }

    #[test]
    fn pattern_lists_follow_match_c() {
        assert_eq!(match_pattern_list("bob", "*,!root", false), 1);
        assert_eq!(match_pattern_list("root", "*,!root", false), -1);
        // Negations alone never match.
        assert_eq!(match_pattern_list("bob", "!root", false), 0);
        assert_eq!(match_pattern_list("web1", "web?", false), 1);
        assert_eq!(match_pattern_list("Bob", "bob", false), 0);
        assert_eq!(
            match_pattern_list("x.example.com", "*.EXAMPLE.com", true),
            1
        );
    }

    #[test]
    fn a_pattern_full_of_stars_is_matched_without_backtracking_blowup() {
        let p = format!("{}b", "*a".repeat(2000));
        let s = "a".repeat(4000);
        assert!(!match_pattern(&s, &p));
        assert!(match_pattern(&format!("{s}b"), &p));
        assert!(match_pattern("abc", "a*c") && match_pattern("ac", "a*c"));
        assert!(!match_pattern("ab", "a*c") && match_pattern("", "*"));
        assert!(match_pattern("web1.example", "web?.*") && !match_pattern("web", "web?"));
    }

    #[test]
    fn addresses_follow_addrmatch_c() {
        assert_eq!(addr_match_list("10.1.2.3", "10.0.0.0/8"), 1);
        assert_eq!(addr_match_list("10.1.2.3", "10.0.0.0/8,!10.1.0.0/16"), -1);
        assert_eq!(addr_match_list("192.168.1.7", "192.168.1.*"), 1);
        assert_eq!(addr_match_list("::1", "::1"), 1);
        assert_eq!(addr_match_list("2001:db8::5", "2001:db8::/32"), 1);
        assert_eq!(addr_match_list("127.0.0.1", "0.0.0.0/0"), 1);
        assert_eq!(addr_match_list("::1", "0.0.0.0/0"), 0);
    }

    #[test]
    fn specs_satisfy_each_criterion() {
        let s = spec("Address 10.0.0.0/8,!10.0.0.0/9").unwrap();
        assert_eq!(
            addr_match_list(s.addr.as_deref().unwrap(), "10.0.0.0/8,!10.0.0.0/9"),
            1
        );
        assert_eq!(spec("User *,!root").unwrap().user.as_deref(), Some("x"));
        assert_eq!(spec("Group admins").unwrap().user.as_deref(), Some("bob"));
        assert_eq!(spec("Group alice").unwrap().user.as_deref(), Some("alice"));
        assert!(spec("Group wheel").unwrap_err().contains("no user"));
        assert!(spec("User !root").unwrap_err().contains("no connection"));
        assert_eq!(spec("LocalPort 2222").unwrap().lport, Some(2222));
        assert_eq!(
            spec("Host *.example.com").unwrap().host.as_deref(),
            Some("x.example.com")
        );
        let s = spec("User=alice Address=192.168.*").unwrap();
        assert_eq!(s.user.as_deref(), Some("alice"));
        assert_eq!(addr_match_list(s.addr.as_deref().unwrap(), "192.168.*"), 1);
        assert_eq!(spec("all").unwrap().to_arg(), "lport=22");
        assert_eq!(
            spec("User alice Address 127.0.0.0/8 # why")
                .unwrap()
                .to_arg(),
            "user=alice,addr=127.0.0.1,lport=22"
        );
    }
}
