//! The authorized_keys line splitter, following sshd(8)
//! (`auth_check_authkeys_file`, `sshkey_advance_past_options`,
//! `sshauthopt_parse`, `opt_dequote` in OpenSSH).
//!
//! Works on bytes: a user's file need not be UTF-8, and every line accessd
//! does not change must be written back exactly as it was read. A file is
//! kept as its raw lines; [`AuthKeysText::render`] concatenates them, so
//! parse → render is the identity for any input.

/// sshd skips spaces and tabs (`skip_space`, `strcspn(cp, " \t")`).
fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Key type names sshd's `sshkey_read` recognises at the start of a line.
/// A first word that is not one of these is taken as the options field, as
/// sshd does when reading a key at the start of the line fails.
const SSHD_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-ed25519-cert-v01@openssh.com",
    "sk-ssh-ed25519@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ssh-rsa",
    "ssh-rsa-cert-v01@openssh.com",
    "rsa-sha2-256",
    "rsa-sha2-512",
    "ssh-dss",
    "ssh-dss-cert-v01@openssh.com",
    "ssh-xmss@openssh.com",
    "ssh-xmss-cert-v01@openssh.com",
    "ssh-mldsa44-ed25519@openssh.com",
];

/// The fields of one key line, as sub-slices of the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields<'a> {
    pub options: Option<&'a [u8]>,
    pub key_type: &'a [u8],
    pub blob: &'a [u8],
    /// Everything after the blob, without surrounding spaces/tabs/CR.
    pub comment: Option<&'a [u8]>,
}

/// What sshd would make of one line (without its `\n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    /// Empty, only whitespace, or `#` after leading whitespace.
    Comment,
    Key(Fields<'a>),
    /// sshd would skip it with an error (unterminated quote, no key after
    /// the options). Kept byte for byte.
    Invalid(&'static str),
}

/// Index just past the options field: the first space or tab outside double
/// quotes, where `\"` inside quotes does not end the quote
/// (`sshkey_advance_past_options`).
fn options_end(s: &[u8]) -> Result<usize, &'static str> {
    let mut quoted = false;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if !quoted && is_ws(c) {
            return Ok(i);
        }
        if c == b'\\' && i + 1 < s.len() && s[i + 1] == b'"' {
            i += 2;
            continue;
        }
        if c == b'"' {
            quoted = !quoted;
        }
        i += 1;
    }
    if quoted {
        Err("unterminated quote in the options")
    } else {
        Ok(s.len())
    }
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_ws(s[i]) {
        i += 1;
    }
    i
}

fn word_end(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && !is_ws(s[i]) && s[i] != b'\r' {
        i += 1;
    }
    i
}

/// Split one line (its `\n` removed) the way sshd reads it.
pub fn split(line: &[u8]) -> Entry<'_> {
    let start = skip_ws(line, 0);
    let rest = &line[start..];
    if rest.is_empty() || rest[0] == b'#' || rest == b"\r" {
        return Entry::Comment;
    }
    let first_end = word_end(line, start);
    let first = &line[start..first_end];
    let (options, type_start) = if is_known_type(first) {
        (None, start)
    } else {
        let end = match options_end(rest) {
            Ok(n) => start + n,
            Err(e) => return Entry::Invalid(e),
        };
        (Some(&line[start..end]), skip_ws(line, end))
    };
    let type_end = word_end(line, type_start);
    if type_end == type_start {
        return Entry::Invalid("no key after the options");
    }
    let key_type = &line[type_start..type_end];
    let blob_start = skip_ws(line, type_end);
    let blob_end = word_end(line, blob_start);
    if blob_end == blob_start {
        return Entry::Invalid("no key data after the key type");
    }
    let blob = &line[blob_start..blob_end];
    let comment_start = skip_ws(line, blob_end);
    let mut comment_end = line.len();
    while comment_end > comment_start
        && (is_ws(line[comment_end - 1]) || line[comment_end - 1] == b'\r')
    {
        comment_end -= 1;
    }
    let comment = (comment_end > comment_start).then(|| &line[comment_start..comment_end]);
    Entry::Key(Fields {
        options,
        key_type,
        blob,
        comment,
    })
}

fn is_known_type(word: &[u8]) -> bool {
    SSHD_KEY_TYPES.iter().any(|t| t.as_bytes() == word)
}

/// What sshd makes of an options field (its `struct sshauthopt`), as far
/// as accessd needs to know it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyOptions {
    pub restrict: bool,
    /// A CA line: sshd uses it only to check user certificates, never for a
    /// plain key login with the key itself.
    pub cert_authority: bool,
    pub command: Option<String>,
    pub principals: Option<String>,
    pub from: Option<String>,
    /// The earliest `expiry-time`, in seconds since the epoch, computed as
    /// sshd computes it (local time unless the value ends in `Z`/`UTC`).
    pub valid_before: Option<u64>,
    /// Some `expiry-time` ends in `Z` or `UTC`, which OpenSSH reads only
    /// since 9.1 (Debian 12); 8.4 (Debian 11) refuses the key.
    pub expiry_with_zone: bool,
}

/// Case-insensitive prefix test, as `strncasecmp(s, p, strlen(p)) == 0`.
fn starts_with_ci(s: &[u8], p: &str) -> bool {
    s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p.as_bytes())
}

/// `opt_flag`: `Some((value, consumed))` when `s` starts with `opt` (or
/// `no-opt`, where negation is allowed). A prefix match, as in sshd: what
/// follows the name is judged by the caller (a `,`, or the end).
fn opt_flag(s: &[u8], opt: &str, allow_negate: bool) -> Option<(bool, usize)> {
    let skip = if allow_negate && starts_with_ci(s, "no-") {
        3
    } else {
        0
    };
    starts_with_ci(&s[skip..], opt).then_some((skip == 0, skip + opt.len()))
}

/// `opt_match`: the name, case-insensitively, followed by `=`.
fn opt_match(s: &[u8], term: &str) -> Option<usize> {
    (starts_with_ci(s, term) && s.get(term.len()) == Some(&b'=')).then_some(term.len() + 1)
}

/// Parse an options field exactly as sshd's `sshauthopt_parse` does, then
/// refuse what its `auth_authorise_keyopts` refuses for every client
/// (`principals=` without `cert-authority`, a `from=` list with a malformed
/// entry). An error means sshd would never let this line's key log in, so a
/// command carrying it must not be answered ok.
///
/// `opts` is the options field of a line (up to the first space or tab
/// outside quotes); a key always follows it, which is why a trailing `,` is
/// fine, as it is for sshd. Identical in OpenSSH 8.4, 9.2 and 10.0 except
/// for `expiry-time` (see [`parse_absolute_time`]).
pub fn parse_options(opts: &str) -> Result<KeyOptions, String> {
    let b = opts.as_bytes();
    let mut o = KeyOptions::default();
    let mut i = 0;
    let mut permits = 0usize;
    while i < b.len() && !is_ws(b[i]) {
        let rest = &b[i..];
        // The same order as sshd: it matters, names are matched as prefixes.
        let flag = [
            ("restrict", false),
            ("cert-authority", false),
            ("port-forwarding", true),
            ("agent-forwarding", true),
            ("x11-forwarding", true),
            ("touch-required", true),
            ("verify-required", true),
            ("pty", true),
            ("user-rc", true),
        ]
        .into_iter()
        .find_map(|(name, neg)| opt_flag(rest, name, neg).map(|(v, n)| (name, v, n)));
        if let Some((name, value, n)) = flag {
            match name {
                "restrict" => o.restrict = true,
                "cert-authority" => o.cert_authority = value,
                _ => {}
            }
            i += n;
        } else if let Some((name, n)) = [
            "command",
            "principals",
            "from",
            "expiry-time",
            "environment",
            "permitopen",
            "permitlisten",
            "tunnel",
        ]
        .into_iter()
        .find_map(|name| opt_match(rest, name).map(|n| (name, n)))
        {
            let (value, next) = dequote(b, i + n)?;
            i = next;
            let once = |slot: &mut Option<String>| {
                if slot.is_some() {
                    return Err(format!("multiple \"{name}\" clauses"));
                }
                *slot = Some(value.clone());
                Ok(())
            };
            match name {
                "command" => once(&mut o.command)?,
                "principals" => once(&mut o.principals)?,
                "from" => once(&mut o.from)?,
                "expiry-time" => {
                    let (t, zoned) = parse_absolute_time(value.as_bytes())
                        .filter(|&(t, _)| t != 0)
                        .ok_or_else(|| format!("invalid expires time {value:?}"))?;
                    o.expiry_with_zone |= zoned;
                    o.valid_before = Some(o.valid_before.map_or(t, |old| old.min(t)));
                }
                "environment" => {
                    let ok = value
                        .split_once('=')
                        .is_some_and(|(n, _)| valid_env_name(n.as_bytes()));
                    if !ok {
                        return Err(format!("invalid environment string {value:?}"));
                    }
                }
                "permitopen" | "permitlisten" => {
                    if permits > SSH_AUTHOPT_PERMIT_MAX {
                        return Err("too many permission directives".into());
                    }
                    check_permit(&value, name == "permitlisten")?;
                    permits += 1;
                }
                _ => {
                    if a2tun(value.as_bytes()).is_none() {
                        return Err(format!("invalid tun device {value:?}"));
                    }
                }
            }
        }
        // An unknown name matches nothing and fails here, at the character
        // after the last option; an empty one (",,") is skipped, as in sshd.
        if i == b.len() || is_ws(b[i]) {
            break;
        }
        if b[i] != b',' {
            return Err(format!(
                "unknown key option at {:?}",
                String::from_utf8_lossy(&b[i..b.len().min(i + 40)])
            ));
        }
        i += 1;
    }
    if o.principals.is_some() && !o.cert_authority {
        return Err("principals= is only allowed with cert-authority".into());
    }
    if let Some(from) = &o.from {
        check_from(from)?;
    }
    Ok(o)
}

/// sshd's cap on permitopen + permitlisten entries of one line.
const SSH_AUTHOPT_PERMIT_MAX: usize = 4096;

/// `opt_dequote`: a value starts with `"`, `\"` is a quote, other
/// backslashes stay; returns the value and the index after the closing quote.
fn dequote(b: &[u8], start: usize) -> Result<(String, usize), String> {
    if b.get(start) != Some(&b'"') {
        return Err("option value is missing its opening quote".into());
    }
    let mut out = Vec::new();
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let v = String::from_utf8(out).map_err(|_| "option value is not UTF-8")?;
                return Ok((v, i + 1));
            }
            b'\\' if b.get(i + 1) == Some(&b'"') => {
                out.push(b'"');
                i += 2;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Err("option value is missing its closing quote".into())
}

/// `valid_env_name`: one or more ASCII letters, digits or `_`.
fn valid_env_name(n: &[u8]) -> bool {
    !n.is_empty() && n.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_')
}

/// OpenBSD's `strtonum` (over `strtoll` base 10, which skips leading C-locale
/// white space and takes one sign): the whole string must be the number.
fn strtonum(s: &[u8], min: i64, max: i64) -> Option<i64> {
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        i += 1;
    }
    let neg = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let digits = &s[i..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Saturating: anything that long is out of every range asked for here.
    let mut v: i128 = 0;
    for &d in digits {
        v = (v * 10 + i128::from(d - b'0')).min(i128::from(i64::MAX) + 1);
    }
    let v = if neg { -v } else { v };
    (i128::from(min)..=i128::from(max))
        .contains(&v)
        .then_some(v as i64)
}

/// `a2port`: a number 0..=65535, else a TCP service name from the services
/// database (as sshd looks it up, through NSS); `None` when neither.
fn a2port(s: &[u8]) -> Option<u16> {
    if let Some(n) = strtonum(s, 0, 65535) {
        return Some(n as u16);
    }
    tcp_service_port(s)
}

fn tcp_service_port(name: &[u8]) -> Option<u16> {
    extern "C" {
        // glibc and musl; not in the libc crate.
        fn getservbyname_r(
            name: *const libc::c_char,
            proto: *const libc::c_char,
            result_buf: *mut libc::servent,
            buf: *mut libc::c_char,
            buflen: libc::size_t,
            result: *mut *mut libc::servent,
        ) -> libc::c_int;
    }
    let name = std::ffi::CString::new(name).ok()?;
    let mut ent: libc::servent = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut result: *mut libc::servent = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives `ent`'s use.
    let rc = unsafe {
        getservbyname_r(
            name.as_ptr(),
            c"tcp".as_ptr(),
            &mut ent,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    Some(u16::from_be(ent.s_port as u16))
}

/// `a2tun` without a remote part: `any` (any case) or 0..=0x7ffffffd.
fn a2tun(s: &[u8]) -> Option<i64> {
    if s.eq_ignore_ascii_case(b"any") {
        return Some(0x7fff_ffff);
    }
    strtonum(s, 0, 0x7fff_ffff - 2)
}

/// `handle_permit`: `host:port` (`permitlisten` also takes a bare port),
/// the host possibly `[...]`, `:` or `/` before the port, port a number
/// 1..=65535, a service name or `*`.
fn check_permit(value: &str, allow_bare_port: bool) -> Result<(), String> {
    let v = if allow_bare_port && !value.contains(':') {
        format!("*:{value}")
    } else {
        value.to_owned()
    };
    let b = v.as_bytes();
    // hpdelim2
    let delim = if b.first() == Some(&b'[') {
        b.iter().position(|&c| c == b']').map(|p| p + 1)
    } else {
        Some(
            b.iter()
                .position(|&c| c == b':' || c == b'/')
                .unwrap_or(b.len()),
        )
    };
    let (host, port) = match delim {
        Some(d) if d == b.len() => (&b[..d], None),
        Some(d) if b[d] == b':' || b[d] == b'/' => (&b[..d], Some(&b[d + 1..])),
        _ => return Err(format!("invalid permission hostname in {value:?}")),
    };
    if host.len() >= 1025 {
        return Err(format!("invalid permission hostname in {value:?}"));
    }
    match port {
        Some(b"*") => Ok(()),
        Some(p) if a2port(p).is_some_and(|n| n > 0) => Ok(()),
        _ => Err(format!("invalid permission port in {value:?}")),
    }
}

/// The `from=` checks of `addr_match_list` that do not depend on the
/// client: an empty entry, or a network whose mask length is out of range
/// or leaves host bits set, makes sshd call the whole list invalid and
/// refuse the key for everybody. Other entries are host name or address
/// patterns (`*`, `?`) and fine.
fn check_from(list: &str) -> Result<(), String> {
    for entry in list.split(',') {
        let cp = entry.strip_prefix('!').unwrap_or(entry);
        if cp.is_empty() {
            return Err(format!("from={list:?} has an empty entry"));
        }
        if cidr_is_inconsistent(cp.as_bytes()) {
            return Err(format!(
                "from={list:?}: {cp:?} is not a valid network (mask length, or host bits set)"
            ));
        }
    }
    Ok(())
}

/// `addr_pton_cidr(...) == -2`: an address (parsed by getaddrinfo with
/// AI_NUMERICHOST, as sshd does) whose mask is too long or does not cover
/// the host bits. Anything that is not an address is a pattern: not -2.
fn cidr_is_inconsistent(entry: &[u8]) -> bool {
    if entry.len() >= 64 {
        return false; // strlcpy into char[64] fails: -1, a pattern
    }
    let (addr, mask) = match entry.iter().position(|&c| c == b'/') {
        Some(p) => match strtonum(&entry[p + 1..], 0, i64::from(i32::MAX)) {
            Some(m) => (&entry[..p], Some(m as u32)),
            None => return false,
        },
        None => (entry, None),
    };
    let Some(bytes) = numeric_address(addr) else {
        return false;
    };
    let width = bytes.len() as u32 * 8;
    let masklen = mask.unwrap_or(width);
    if masklen > width {
        return true;
    }
    // Host bits (those past masklen) must all be zero.
    bytes.iter().enumerate().any(|(k, &byte)| {
        let first_bit = k as u32 * 8;
        let keep = masklen.saturating_sub(first_bit).min(8);
        let host_mask = if keep == 8 { 0 } else { 0xffu8 >> keep };
        byte & host_mask != 0
    })
}

/// The address bytes (4 or 16) of a numeric host, via the C library's
/// `getaddrinfo(AI_NUMERICHOST)` — the parser sshd uses, with its
/// shorthands (`127.1`) and scope ids. Never a name lookup.
fn numeric_address(host: &[u8]) -> Option<Vec<u8>> {
    let host = std::ffi::CString::new(host).ok()?;
    // SAFETY: zeroed addrinfo is a valid "no hints" value.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_flags = libc::AI_NUMERICHOST;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: valid C strings and pointers; `res` is freed below.
    let rc = unsafe { libc::getaddrinfo(host.as_ptr(), std::ptr::null(), &hints, &mut res) };
    if rc != 0 || res.is_null() {
        return None;
    }
    // SAFETY: getaddrinfo succeeded, so `res` points to a valid list whose
    // ai_addr is a sockaddr of the family it names.
    let out = unsafe {
        let ai = &*res;
        match ai.ai_family {
            libc::AF_INET if !ai.ai_addr.is_null() => {
                let sa = &*(ai.ai_addr as *const libc::sockaddr_in);
                Some(sa.sin_addr.s_addr.to_ne_bytes().to_vec())
            }
            libc::AF_INET6 if !ai.ai_addr.is_null() => {
                let sa = &*(ai.ai_addr as *const libc::sockaddr_in6);
                Some(sa.sin6_addr.s6_addr.to_vec())
            }
            _ => None,
        }
    };
    // SAFETY: `res` came from getaddrinfo and is freed once.
    unsafe { libc::freeaddrinfo(res) };
    out
}

/// `parse_absolute_time` as in OpenSSH 9.2 and 10.0: `YYYYMMDD`,
/// `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS`, optionally ending in `Z` or `UTC`
/// (then UTC, else the local time zone); the C library's `strptime` must
/// consume it all and the time must not be before 1970. Returns the time and
/// whether a zone suffix was used. (8.4 accepts a superset of the forms
/// without a suffix, and no suffix; 10.1+ also accept years before 1970.)
pub fn parse_absolute_time(s: &[u8]) -> Option<(u64, bool)> {
    let mut l = s.len();
    let mut utc = false;
    if l > 1 && s[l - 1].eq_ignore_ascii_case(&b'z') {
        utc = true;
        l -= 1;
    } else if l > 3 && s[l - 3..].eq_ignore_ascii_case(b"UTC") {
        utc = true;
        l -= 3;
    }
    // `%.4s` etc. of the *whole* string: the pieces come from its start.
    let piece = |from: usize, n: usize| -> &[u8] { &s[from.min(s.len())..(from + n).min(s.len())] };
    let (fmt, parts): (&std::ffi::CStr, Vec<&[u8]>) = match l {
        8 => (c"%Y-%m-%d", vec![piece(0, 4), piece(4, 2), piece(6, 2)]),
        12 => (
            c"%Y-%m-%dT%H:%M",
            vec![
                piece(0, 4),
                piece(4, 2),
                piece(6, 2),
                piece(8, 2),
                piece(10, 2),
            ],
        ),
        14 => (
            c"%Y-%m-%dT%H:%M:%S",
            vec![
                piece(0, 4),
                piece(4, 2),
                piece(6, 2),
                piece(8, 2),
                piece(10, 2),
                piece(12, 2),
            ],
        ),
        _ => return None,
    };
    let seps: &[&[u8]] = &[b"-", b"-", b"T", b":", b":"];
    let mut buf = Vec::new();
    for (k, p) in parts.iter().enumerate() {
        if k > 0 {
            buf.extend_from_slice(seps[k - 1]);
        }
        buf.extend_from_slice(p);
    }
    // snprintf's %s stops at a NUL; a NUL makes this no time at all.
    let buf = std::ffi::CString::new(buf).ok()?;
    // SAFETY: zeroed `tm` is what sshd's memset gives strptime.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: valid C strings and a valid `tm`.
    let end = unsafe { libc::strptime(buf.as_ptr(), fmt.as_ptr(), &mut tm) };
    // SAFETY: strptime returns NULL or a pointer into `buf`.
    if end.is_null() || unsafe { *end } != 0 {
        return None;
    }
    // SAFETY: `tm` is initialised.
    let tt = unsafe {
        if utc {
            libc::timegm(&mut tm)
        } else {
            libc::mktime(&mut tm)
        }
    };
    (tt >= 0).then_some((tt as u64, utc))
}

/// A file as its raw lines; each keeps its `\n` (the last one may not).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthKeysText {
    pub lines: Vec<Vec<u8>>,
}

impl AuthKeysText {
    pub fn parse(bytes: &[u8]) -> Self {
        let lines = bytes
            .split_inclusive(|&b| b == b'\n')
            .map(<[u8]>::to_vec)
            .collect();
        AuthKeysText { lines }
    }

    pub fn render(&self) -> Vec<u8> {
        self.lines.concat()
    }

    /// The line without its `\n`, ready for [`split`].
    pub fn body(line: &[u8]) -> &[u8] {
        line.strip_suffix(b"\n").unwrap_or(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(line: &str) -> Fields<'_> {
        match split(line.as_bytes()) {
            Entry::Key(f) => f,
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    #[test]
    fn splits_like_sshd() {
        let f = key("  ssh-ed25519 AAAA c # not a comment marker ");
        assert_eq!(f.options, None);
        assert_eq!(f.key_type, b"ssh-ed25519");
        assert_eq!(f.blob, b"AAAA");
        assert_eq!(f.comment, Some(&b"c # not a comment marker"[..]));

        let f = key(r#"command="echo \"hi there\"",no-pty ssh-rsa AAAB x"#);
        assert_eq!(
            f.options,
            Some(&br#"command="echo \"hi there\"",no-pty"#[..])
        );
        assert_eq!(f.key_type, b"ssh-rsa");
        assert_eq!(f.comment, Some(&b"x"[..]));

        assert_eq!(split(b"   # comment"), Entry::Comment);
        assert_eq!(split(b"\t"), Entry::Comment);
        assert!(matches!(
            split(br#"from="x ssh-rsa AAAA"#),
            Entry::Invalid(_)
        ));
        assert!(matches!(split(b"restrict"), Entry::Invalid(_)));
    }

    #[test]
    fn options_follow_sshauthopt_parse() {
        let o = parse_options(r#"Restrict,COMMAND="a \"b\" \c",from="10.0.0.0/8""#).unwrap();
        assert!(o.restrict);
        assert_eq!(o.command.as_deref(), Some(r#"a "b" \c"#));
        assert_eq!(o.from.as_deref(), Some("10.0.0.0/8"));
        for good in [
            "no-pty,no-X11-forwarding",
            // sshd skips empty options and a comma before the key.
            ",pty",
            "pty,,user-rc",
            "pty,",
            "no-verify-required",
            r#"tunnel="ANY""#,
            r#"tunnel="+5""#,
            r#"permitlisten="8080",permitlisten="[::1]:80",permitopen="h/22""#,
            r#"permitopen=":ssh",permitopen="x:*""#,
            r#"expiry-time="20991231",expiry-time="209912312359Z""#,
            r#"cert-authority,principals="a,b""#,
            r#"from="!10.0.0.1,*.example.com,10.0.0.0/8,::1/128,fe80::/10,127.1""#,
            r#"from="foo/8,10.0.0.0/abc""#,
            r#"environment="A_1=x=y""#,
        ] {
            assert!(
                parse_options(good).is_ok(),
                "{good}: {:?}",
                parse_options(good)
            );
        }
        for bad in [
            "bogus",
            "restrictx",
            "command=x",
            r#"command="x"#,
            "no-restrict",
            "no-cert-authority",
            r#"command="x"y"#,
            r#"environment="=x""#,
            r#"environment="A-B=x""#,
            r#"environment="AB""#,
            r#"pty="x""#,
            r#"command="a",command="b""#,
            r#"from="a",from="b""#,
            r#"principals="a",principals="b",cert-authority"#,
            r#"principals="a""#,
            r#"expiry-time="tomorrow""#,
            r#"expiry-time="2099123""#,
            r#"expiry-time="20991301""#,
            r#"expiry-time="19691231Z""#,
            r#"expiry-time="19700101Z""#,
            r#"permitlisten="nonsense""#,
            r#"permitopen="host""#,
            r#"permitopen="host:0""#,
            r#"permitopen="host:65536""#,
            r#"permitopen="[::1:22""#,
            r#"permitopen="[::1]x22""#,
            r#"tunnel="-1""#,
            r#"tunnel="2147483646""#,
            r#"from="127.0.0.1/99""#,
            r#"from="10.0.0.1/8""#,
            r#"from="""#,
            r#"from="a,,b""#,
            r#"from="a,!""#,
            r#"from="::1/129""#,
        ] {
            assert!(parse_options(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expiry_times_follow_parse_absolute_time() {
        assert_eq!(
            parse_absolute_time(b"20300101Z"),
            Some((1_893_456_000, true))
        );
        assert_eq!(
            parse_absolute_time(b"203001010000utc"),
            Some((1_893_456_000, true))
        );
        assert_eq!(
            parse_absolute_time(b"20300101000001Z"),
            Some((1_893_456_001, true))
        );
        assert!(parse_absolute_time(b"20300101").is_some_and(|(_, z)| !z));
        for bad in [&b"2030010"[..], b"2030-01-01", b"2030010100Z", b"Z", b""] {
            assert_eq!(parse_absolute_time(bad), None, "{bad:?}");
        }
        let o = parse_options(r#"expiry-time="20400101Z",expiry-time="20300101Z""#).unwrap();
        assert_eq!(o.valid_before, Some(1_893_456_000), "the earliest wins");
        assert!(o.expiry_with_zone);
    }

    #[test]
    fn render_reproduces_input() {
        for input in [
            &b""[..],
            b"a\n\nb",
            b"\r\n# x\n ssh-rsa  AAAA  c \n",
            b"\xff\xfe",
        ] {
            assert_eq!(AuthKeysText::parse(input).render(), input);
        }
    }
}
