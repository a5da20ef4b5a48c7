//! Crypt strings: validating a given one, checking a plaintext against the
//! password policy, and hashing it with SHA-512 crypt exactly as libxcrypt
//! writes it.

use sha_crypt::{Algorithm, Params, PasswordHasher, ShaCrypt};

use super::{AccountsConfig, CryptHash, PasswordPolicy};
use crate::error::{Error, Result};
use crate::secret::Secret;

/// The most SHA-crypt rounds (`$6$`/`$5$`) a given hash may ask for. Every
/// password attempt for the user — by anyone who can reach sshd — costs
/// that many rounds in PAM: 5000 (the default) take ~3 ms, 1,000,000
/// ~0.33 s, libxcrypt's own maximum 999,999,999 more than five minutes.
/// passlib's default (656,000) is within. docs/running.md "Limits".
pub const MAX_SHA_CRYPT_ROUNDS: u32 = 1_000_000;

/// The highest yescrypt cost (libxcrypt's `crypt_gensalt("$y$", cost)`,
/// 1..=11, default 5) a given hash may have. Cost 8 is N=2^15, r=32:
/// 128 MiB and ~0.14 s an attempt; 11 would be 1 GiB and ~1.2 s, and
/// sshd runs ten unauthenticated attempts at once. docs/running.md "Limits".
pub const MAX_YESCRYPT_COST: u32 = 8;

/// crypt's base-64 alphabet, in libxcrypt's order (value = index).
const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The parameter field of the `$y$` settings libxcrypt makes for `cost`:
/// flavour `j` (YESCRYPT_DEFAULTS), then log2(N) - 1 and r - 1, each one
/// character (values below 48 encode in one), and no optional p/t/g/NROM
/// group. The mapping is libxcrypt's `gensalt_yescrypt_rn`: costs 1-2 are
/// r = 8 with N = 2^(cost+9), costs 3-11 are r = 32 with N = 2^(cost+7).
fn yescrypt_params(cost: u32) -> [u8; 3] {
    let (n_log2, r) = if cost < 3 {
        (cost + 9, 8)
    } else {
        (cost + 7, 32)
    };
    [b'j', ITOA64[n_log2 as usize - 1], ITOA64[r - 1]]
}

/// Accept `$6$`, `$5$` or `$y$` crypt strings whose shape libxcrypt would
/// produce and whose cost is within [`MAX_SHA_CRYPT_ROUNDS`] /
/// [`MAX_YESCRYPT_COST`]. Anything that could break a shadow line (`:`,
/// newline, other control characters, whitespace) is refused, and so is
/// every character outside crypt's alphabet. The message never echoes the
/// value or any part of it.
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
                    let digits = &p["rounds=".len()..];
                    // Plain decimal only: libxcrypt's strtoul would also
                    // take what `parse` refuses and the reverse ("+5000").
                    let n: u32 = match digits.parse() {
                        Ok(n) if !digits.starts_with(['0', '+']) => n,
                        _ => return bad("rounds= must be a plain decimal number"),
                    };
                    if n < 1000 {
                        return bad("rounds below 1000");
                    }
                    if n > MAX_SHA_CRYPT_ROUNDS {
                        return Err(Error::invalid(format!(
                            "password hash is not valid: rounds above the limit of \
                             {MAX_SHA_CRYPT_ROUNDS} (each login attempt would pay them)"
                        )));
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
        "y" => {
            let [params, salt, hash] = rest else {
                return bad("expected $y$PARAMS$SALT$HASH");
            };
            if salt.is_empty() || salt.len() > 86 || salt.contains('=') {
                return bad("salt must be 1 to 86 characters");
            }
            if hash.len() != 43 || hash.contains('=') {
                return bad("hash part has the wrong length");
            }
            if !(1..=MAX_YESCRYPT_COST).any(|c| params.as_bytes() == yescrypt_params(c)) {
                return Err(Error::invalid(format!(
                    "password hash is not valid: yescrypt parameters other than \
                     libxcrypt's costs 1 to {MAX_YESCRYPT_COST} (each login attempt \
                     would pay them)"
                )));
            }
        }
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
    getrandom::getrandom(&mut salt).map_err(|e| {
        crate::error::random_failed("reading the OS random number generator for a salt", e)
    })?;
    sha512_crypt(pw.expose(), &salt, cfg.rounds)
}

/// `$6$SALT$HASH` (rounds 5000, libxcrypt's default, not written) or
/// `$6$rounds=N$SALT$HASH`. 12 salt bytes encode to exactly the 16
/// characters libxcrypt reads; sha-crypt 0.6's own `hash_password()` makes
/// 22, which libxcrypt cuts to 16 so that its string differs and PAM's
/// whole-string compare fails (ground-truth §2.4).
pub fn sha512_crypt(pw: &[u8], salt: &[u8; 12], rounds: u32) -> Result<CryptHash> {
    if rounds > MAX_SHA_CRYPT_ROUNDS {
        return Err(Error::invalid(format!(
            "SHA-512 crypt rounds {rounds} over the limit of {MAX_SHA_CRYPT_ROUNDS}"
        )));
    }
    let params = Params::new(rounds).map_err(|_| {
        Error::invalid(format!(
            "SHA-512 crypt rounds {rounds} out of 1000..={MAX_SHA_CRYPT_ROUNDS}"
        ))
    })?;
    let h = ShaCrypt::new(Algorithm::Sha512Crypt, params)
        .hash_password_with_salt(pw, salt)
        .map_err(|e| Error::Internal(format!("hashing the password: {e}")))?;
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
