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

/// One option of an options field: lower-cased name, de-quoted value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOption {
    pub name: String,
    pub value: Option<String>,
}

/// Flags sshd accepts (`opt_flag`); the bool says whether `no-` may negate it.
const FLAG_OPTIONS: &[(&str, bool)] = &[
    ("restrict", false),
    ("cert-authority", false),
    ("port-forwarding", true),
    ("agent-forwarding", true),
    ("x11-forwarding", true),
    ("touch-required", true),
    ("verify-required", false),
    ("pty", true),
    ("user-rc", true),
];

/// Options that take a quoted value (`opt_match` + `opt_dequote`).
const VALUE_OPTIONS: &[&str] = &[
    "command",
    "principals",
    "from",
    "expiry-time",
    "environment",
    "permitopen",
    "permitlisten",
    "tunnel",
];

/// Parse an options field as `sshauthopt_parse` does: comma-separated,
/// case-insensitive names, values in double quotes with `\"` as the only
/// escape. Anything sshd would refuse is an error (the key would be ignored
/// by sshd, so accepting it would report a success that logs nobody in).
pub fn parse_options(opts: &str) -> Result<Vec<KeyOption>, String> {
    let b = opts.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let name_end = b[i..]
            .iter()
            .position(|&c| c == b'=' || c == b',')
            .map_or(b.len(), |n| i + n);
        let name = opts[i..name_end].to_ascii_lowercase();
        if name_end < b.len() && b[name_end] == b'=' {
            if !VALUE_OPTIONS.contains(&name.as_str()) {
                return Err(format!(
                    "option {name:?} is not a known option with a value"
                ));
            }
            let (value, next) = dequote(opts, name_end + 1)?;
            check_value(&name, &value)?;
            out.push(KeyOption {
                name,
                value: Some(value),
            });
            i = next;
        } else {
            let known = FLAG_OPTIONS.iter().any(|&(f, negatable)| {
                name == f || (negatable && name.strip_prefix("no-") == Some(f))
            });
            if !known {
                return Err(format!("unsupported key option {name:?}"));
            }
            out.push(KeyOption { name, value: None });
            i = name_end;
        }
        if i == b.len() {
            return Ok(out);
        }
        if b[i] != b',' {
            return Err("invalid option string: expected ',' between options".into());
        }
        i += 1;
        if i == b.len() {
            return Err("invalid option string: trailing ','".into());
        }
    }
}

/// `opt_dequote`: a value starts with `"`, `\"` is a quote, other
/// backslashes stay; returns the value and the index after the closing quote.
fn dequote(s: &str, start: usize) -> Result<(String, usize), String> {
    let b = s.as_bytes();
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

fn check_value(name: &str, value: &str) -> Result<(), String> {
    let env_ok = |v: &str| {
        v.split_once('=').is_some_and(|(n, _)| {
            !n.is_empty() && n.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
        })
    };
    match name {
        "environment" if !env_ok(value) => Err("environment= needs NAME=value".into()),
        "tunnel" if value != "any" && value.parse::<u32>().is_err() => {
            Err("tunnel= needs a number".into())
        }
        "permitopen" if !value.contains(':') => Err("permitopen= needs host:port".into()),
        _ => Ok(()),
    }
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
        assert_eq!(o[0].name, "restrict");
        assert_eq!(o[1].value.as_deref(), Some(r#"a "b" \c"#));
        assert_eq!(o[2].value.as_deref(), Some("10.0.0.0/8"));
        assert!(parse_options("no-pty,no-X11-forwarding").is_ok());
        for bad in [
            "bogus",
            "command=x",
            r#"command="x"#,
            "no-restrict",
            "pty,",
            r#"command="x"y"#,
            r#"environment="=x""#,
            r#"pty="x""#,
        ] {
            assert!(parse_options(bad).is_err(), "{bad}");
        }
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
