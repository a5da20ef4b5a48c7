//! Crypt strings: validating a given one, checking a plaintext against the
//! password policy, and hashing it with SHA-512 crypt exactly as libxcrypt
//! writes it.

use sha_crypt::{Algorithm, Params, PasswordHasher, ShaCrypt};

use super::{AccountsConfig, CryptHash, PasswordPolicy};
use crate::error::{Error, Result};
use crate::secret::Secret;

/// Accept `$6$`, `$5$` or `$y$` crypt strings whose shape libxcrypt would
/// produce. Anything that could break a shadow line (`:`, newline, other
/// control characters, whitespace) is refused, and so is every character
/// outside crypt's alphabet. The message never echoes the value.
pub(super) fn parse_crypt(s: &str) -> Result<CryptHash> {
    let bad = |why: &str| Err(Error::invalid(format!("password hash is not valid: {why}")));
    if s.len() > 512 {
        return bad("longer than 512 bytes");
    }
    if let Some(c) = s
        .bytes()
        .find(|&b| !(b.is_ascii_alphanumeric() || b"./$=".contains(&b)))
    {
        return bad(match c {
            b':' => "contains ':'",
            b'\n' | b'\r' => "contains a line break",
            c if c.is_ascii_whitespace() => "contains whitespace",
            c if c.is_ascii_control() || c >= 0x80 => "contains a control or non-ASCII character",
            _ => "contains a character outside the crypt alphabet",
        });
    }
    let parts: Vec<&str> = s.split('$').collect();
    // "", id, [param...], salt, hash
    let (id, rest) = match parts.as_slice() {
        ["", id, rest @ ..] => (*id, rest),
        _ => return bad("must start with $6$, $5$ or $y$"),
    };
    match id {
        "6" | "5" => {
            let (salt, hash) = match rest {
                [p, salt, hash] if p.starts_with("rounds=") => {
                    let n: u32 = p["rounds=".len()..]
                        .parse()
                        .map_err(|_| Error::invalid("password hash is not valid: bad rounds="))?;
                    if !(1000..=999_999_999).contains(&n) {
                        return bad("rounds out of range");
                    }
                    (*salt, *hash)
                }
                [salt, hash] => (*salt, *hash),
                _ => return bad("expected $ID$[rounds=N$]SALT$HASH"),
            };
            let want = if id == "6" { 86 } else { 43 };
            if salt.is_empty() || salt.len() > 16 || salt.contains('=') {
                return bad("salt must be 1 to 16 characters");
            }
            if hash.len() != want || hash.contains('=') {
                return bad("hash part has the wrong length");
            }
        }
        "y" => match rest {
            [params, salt, hash] if !params.is_empty() && !salt.is_empty() && hash.len() == 43 => {}
            _ => return bad("expected $y$PARAMS$SALT$HASH"),
        },
        _ => return bad("only $6$, $5$ and $y$ hashes are accepted"),
    }
    Ok(CryptHash(s.to_owned()))
}

/// Length in bytes and character classes (upper, lower, digit, other).
pub fn check_policy(policy: &PasswordPolicy, pw: &Secret) -> Result<()> {
    let b = pw.expose();
    if b.len() < policy.min_len || b.len() > policy.max_len {
        return Err(Error::WeakPassword(format!(
            "a password must be {} to {} bytes long",
            policy.min_len, policy.max_len
        )));
    }
    if b.iter().any(|&c| c == 0 || c == b'\n' || c == b'\r') {
        return Err(Error::WeakPassword(
            "a password must not contain NUL or line breaks".into(),
        ));
    }
    let classes = [
        b.iter().any(u8::is_ascii_uppercase),
        b.iter().any(u8::is_ascii_lowercase),
        b.iter().any(u8::is_ascii_digit),
        b.iter().any(|c| !c.is_ascii_alphanumeric()),
    ];
    let n = classes.iter().filter(|&&x| x).count();
    if n < usize::from(policy.min_classes) {
        return Err(Error::WeakPassword(format!(
            "a password needs at least {} of: upper case, lower case, digit, other character",
            policy.min_classes
        )));
    }
    Ok(())
}

/// SHA-512 crypt with a 16-character salt from the OS RNG.
pub fn hash(cfg: &AccountsConfig, pw: &Secret) -> Result<CryptHash> {
    check_policy(&cfg.policy, pw)?;
    let mut salt = [0u8; 12];
    getrandom::getrandom(&mut salt).map_err(|e| Error::Io {
        context: "reading the OS random number generator for a salt".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    sha512_crypt(pw.expose(), &salt, cfg.rounds)
}

/// `$6$SALT$HASH` (rounds 5000, libxcrypt's default, not written) or
/// `$6$rounds=N$SALT$HASH`. 12 salt bytes encode to exactly the 16
/// characters libxcrypt reads; sha-crypt 0.6's own `hash_password()` makes
/// 22, which libxcrypt cuts to 16 so that its string differs and PAM's
/// whole-string compare fails (ground-truth §2.4).
pub fn sha512_crypt(pw: &[u8], salt: &[u8; 12], rounds: u32) -> Result<CryptHash> {
    let params = Params::new(rounds).map_err(|_| {
        Error::invalid(format!(
            "SHA-512 crypt rounds {rounds} out of 1000..=999999999"
        ))
    })?;
    let h = ShaCrypt::new(Algorithm::Sha512Crypt, params)
        .hash_password_with_salt(pw, salt)
        .map_err(|e| Error::Io {
            context: "hashing the password".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
    let s = h.to_string();
    let s = if rounds == Params::RECOMMENDED_ROUNDS {
        s.replacen("$rounds=5000$", "$", 1)
    } else {
        s
    };
    parse_crypt(&s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    #[test]
    fn format_matches_libxcrypt() {
        let h = sha512_crypt(b"Secret123!", &[7u8; 12], 5000).unwrap();
        let s = h.as_str();
        assert!(s.starts_with("$6$") && !s.contains("rounds="), "{s}");
        let parts: Vec<&str> = s.split('$').collect();
        assert_eq!(parts[2].len(), 16);
        assert_eq!(parts[3].len(), 86);
        let h = sha512_crypt(b"Secret123!", &[7u8; 12], 10000).unwrap();
        assert!(h.as_str().starts_with("$6$rounds=10000$"));
    }

    #[test]
    fn policy() {
        let p = PasswordPolicy::default();
        for weak in ["short1A", "alllowercase", "ALLUPPER123", &"aA1".repeat(25)] {
            let e = check_policy(&p, &Secret::new(weak.into())).unwrap_err();
            assert_eq!(e.code(), Code::WeakPassword, "{weak}");
            assert!(!e.to_string().contains(weak));
        }
        check_policy(&p, &Secret::new(b"Good-pass1".to_vec())).unwrap();
    }

    #[test]
    fn crypt_validation() {
        let good = sha512_crypt(b"x", &[1u8; 12], 5000).unwrap();
        assert!(parse_crypt(good.as_str()).is_ok());
        assert!(parse_crypt(
            "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7"
        )
        .is_ok());
        for bad in [
            "",
            "$1$abc$def",
            "plain",
            "$6$salt:x$hash",
            "$6$salt\n$hash",
            "$6$ salt$hash",
            "!$6$x$y",
            "$6$$",
        ] {
            assert_eq!(
                parse_crypt(bad).unwrap_err().code(),
                Code::InvalidCommand,
                "{bad:?}"
            );
        }
    }
}
