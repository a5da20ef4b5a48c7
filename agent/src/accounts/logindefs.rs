//! /etc/login.defs (`KEY VALUE`) and /etc/default/useradd (`KEY=VALUE`),
//! read the way shadow-utils' getdef.c reads them.

use std::collections::HashMap;

use crate::error::Result;
use crate::fsx::Dir;

#[derive(Debug, Clone, Default)]
pub struct Defs {
    map: HashMap<String, String>,
}

impl Defs {
    /// `sep` is `' '` for login.defs (any whitespace) and `'='` for
    /// /etc/default/useradd. An absent file has no settings.
    pub fn load(dir: &Dir, name: &str, sep: char) -> Result<Defs> {
        let Some(data) = dir.read(name)? else {
            return Ok(Defs::default());
        };
        Ok(Defs::parse(&String::from_utf8_lossy(&data.bytes), sep))
    }

    pub fn parse(text: &str, sep: char) -> Defs {
        let mut map = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let split = if sep == ' ' {
                line.split_once(|c: char| c.is_ascii_whitespace())
            } else {
                line.split_once(sep)
            };
            if let Some((k, v)) = split {
                let v = v.trim().trim_matches('"');
                map.insert(k.trim().to_owned(), v.to_owned());
            }
        }
        Defs { map }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    /// A number as `strtol(s, NULL, 0)` reads it (so `022` is octal, as
    /// UMASK and HOME_MODE are written). Malformed values count as unset.
    pub fn num(&self, key: &str) -> Option<i64> {
        let v = self.get(key)?;
        let (neg, digits) = match v.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, v),
        };
        let n = if let Some(h) = digits
            .strip_prefix("0x")
            .or_else(|| digits.strip_prefix("0X"))
        {
            i64::from_str_radix(h, 16).ok()?
        } else if digits.len() > 1 && digits.starts_with('0') {
            i64::from_str_radix(&digits[1..], 8).ok()?
        } else {
            digits.parse().ok()?
        };
        Some(if neg { -n } else { n })
    }

    pub fn num_or(&self, key: &str, default: i64) -> i64 {
        self.num(key).unwrap_or(default)
    }

    pub fn yes(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v.eq_ignore_ascii_case("yes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_getdef() {
        let d = Defs::parse(
            "# c\nUMASK\t\t022\nUID_MIN  1000\nHOME_MODE 0700\nUSERGROUPS_ENAB yes\nX 0x10\n",
            ' ',
        );
        assert_eq!(d.num("UMASK"), Some(0o22));
        assert_eq!(d.num("UID_MIN"), Some(1000));
        assert_eq!(d.num("HOME_MODE"), Some(0o700));
        assert_eq!(d.num("X"), Some(16));
        assert!(d.yes("USERGROUPS_ENAB"));
        let u = Defs::parse("SHELL=/bin/sh\n# HOME=/home\n", '=');
        assert_eq!(u.get("SHELL"), Some("/bin/sh"));
        assert_eq!(u.get("HOME"), None);
    }
}
