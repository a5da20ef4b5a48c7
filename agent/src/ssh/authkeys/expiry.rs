//! Keys that end: the `expiry-time` option accessd writes on a line bound
//! with `expires_at` (so sshd refuses the key even when accessd is not
//! running), and the sweep that removes such lines once their time is due.
//!
//! sshd reads `expiry-time` with `parse_absolute_time`: `YYYYMMDDHHMMSS`
//! in the local time zone, or (OpenSSH 9.1 and later only) with a `Z`
//! suffix in UTC; 8.4 refuses the whole key when it sees the suffix. Which
//! form to write is decided from the version of the sshd that will read the
//! file: the `OpenSSH_X.Y` string in the root's sshd binary, read (never
//! run: in image mode it may not run on this host). When that version is
//! unknown, the local form is written, which every release reads.

use std::ffi::CStr;

use crate::fsx::Dir;
use crate::sys::System;

use super::line::parse_absolute_time;

/// How an `expiry-time` value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryForm {
    /// `YYYYMMDDHHMMSSZ`: OpenSSH 9.1 and later.
    Utc,
    /// `YYYYMMDDHHMMSS` in accessd's local time zone, which under systemd is
    /// sshd's (both read /etc/localtime).
    Local,
}

/// Where an `(major, minor)` OpenSSH version starts supporting `Z`.
const UTC_SINCE: (u32, u32) = (9, 1);

impl ExpiryForm {
    pub fn for_version(v: Option<(u32, u32)>) -> ExpiryForm {
        match v {
            Some(v) if v >= UTC_SINCE => ExpiryForm::Utc,
            _ => ExpiryForm::Local,
        }
    }

    /// The form for the sshd at `binary` (an absolute system path) under
    /// the root.
    pub fn for_sshd(sys: &System, binary: &std::path::Path) -> ExpiryForm {
        ExpiryForm::for_version(sshd_version(sys, binary))
    }
}

/// The OpenSSH version compiled into the sshd binary at `binary` under the
/// root, as `sshd -V` prints it: the binary holds `SSH_VERSION`
/// (`OpenSSH_9.2`) and `SSH_RELEASE` (`OpenSSH_9.2p1 Debian-2+deb12u3`) as
/// C strings. `None` when the file cannot be read, holds no such string, or
/// holds two different ones (then nothing is assumed).
pub fn sshd_version(sys: &System, binary: &std::path::Path) -> Option<(u32, u32)> {
    let rel = binary.strip_prefix("/").unwrap_or(binary);
    let dir = match rel.parent() {
        Some(p) if !p.as_os_str().is_empty() => {
            Dir::open(&sys.root).ok()?.try_open_dir(p).ok()??
        }
        _ => Dir::open(&sys.root).ok()?,
    };
    let name = rel.file_name()?.to_str()?;
    let data = dir.read(name).ok()??;
    version_in(&data.bytes)
}

/// The one OpenSSH version named by the NUL-terminated strings of `bin`.
pub fn version_in(bin: &[u8]) -> Option<(u32, u32)> {
    let mut found = None;
    for s in bin.split(|&b| b == 0) {
        let Some(rest) = s.strip_prefix(b"OpenSSH_") else {
            continue;
        };
        // SSH_VERSION is "X.Y" alone; SSH_RELEASE continues with "pN" and,
        // on distributions, " Vendor-..." — compat patterns such as
        // "OpenSSH_7.4*" or lists with ',' are neither.
        let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
        let a = digits(rest);
        if a == 0 || rest.get(a) != Some(&b'.') {
            continue;
        }
        let b = digits(&rest[a + 1..]);
        if b == 0 {
            continue;
        }
        let tail = &rest[a + 1 + b..];
        let release_tail = tail.first() == Some(&b'p')
            && digits(&tail[1..]) > 0
            && tail[1 + digits(&tail[1..])..]
                .first()
                .is_none_or(|&c| c == b' ');
        if !(tail.is_empty() || release_tail) || tail.contains(&b'*') || tail.contains(&b',') {
            continue;
        }
        let num = |d: &[u8]| std::str::from_utf8(d).ok()?.parse::<u32>().ok();
        let v = (num(&rest[..a])?, num(&rest[a + 1..a + 1 + b])?);
        match found {
            None => found = Some(v),
            Some(f) if f == v => {}
            Some(_) => return None,
        }
    }
    found
}

/// The `expiry-time` value that makes sshd refuse the key from second
/// `at` on (seconds since the epoch). sshd lets a key in while
/// `now <= expiry-time` (`auth_authorise_keyopts`), so the value is the
/// second before. `None` when no value of this form can say it (before
/// 1970, or a local time that sshd would read as a later instant).
pub fn expiry_time_value(at: u64, form: ExpiryForm) -> Option<String> {
    let last_ok = at.checked_sub(1).filter(|&t| t > 0)?;
    match form {
        ExpiryForm::Utc => {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(last_ok);
            let s = humantime::format_rfc3339_seconds(t).to_string();
            let digits: String = s.chars().filter(char::is_ascii_digit).collect();
            let v = format!("{digits}Z");
            // What sshd will make of it, by sshd's own algorithm.
            (parse_absolute_time(v.as_bytes()) == Some((last_ok, true))).then_some(v)
        }
        ExpiryForm::Local => local_value(last_ok),
    }
}

/// `t` as local `YYYYMMDDHHMMSS` that sshd's `mktime` (with `tm_isdst`
/// zeroed, as sshd leaves it) reads back as `t`. Rendering with
/// `localtime_r` alone is not enough: with `tm_isdst = 0` the C library
/// takes a summer time as standard time, an hour later than meant, so the
/// rendered instant is moved back by what the read-back is off, and the
/// result is only accepted when it reads back exactly (or, in the hour a
/// clock goes back, earlier rather than later).
fn local_value(t: u64) -> Option<String> {
    let mut shown = t;
    let mut best: Option<(u64, String)> = None;
    for _ in 0..4 {
        let v = render_local(shown)?;
        let (back, _) = parse_absolute_time(v.as_bytes())?;
        if back == t {
            return Some(v);
        }
        if back < t && best.as_ref().is_none_or(|(b, _)| back > *b) {
            best = Some((back, v.clone()));
        }
        // Move what is shown by the error, and try again.
        shown = if back > t {
            shown.checked_sub(back - t)?
        } else {
            shown + (t - back)
        };
    }
    best.map(|(_, v)| v)
}

fn render_local(t: u64) -> Option<String> {
    let tt = libc::time_t::try_from(t).ok()?;
    // SAFETY: zeroed `tm` is a valid out-parameter; localtime_r is reentrant.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::localtime_r(&tt, &mut tm) };
    if r.is_null() {
        return None;
    }
    let mut buf = [0 as libc::c_char; 32];
    // SAFETY: valid buffer, format and `tm`.
    let n = unsafe { libc::strftime(buf.as_mut_ptr(), buf.len(), c"%Y%m%d%H%M%S".as_ptr(), &tm) };
    if n != 14 {
        return None;
    }
    // SAFETY: strftime wrote a NUL-terminated string of n bytes.
    let s = unsafe { CStr::from_ptr(buf.as_ptr()) };
    s.to_str().ok().map(str::to_owned)
}

// The one CI/skip rule of the test suites (agent/tests/gate), included by
// path as the suites include it; the library's other tests use it from
// here (a file loaded as two modules is one too many).
#[cfg(test)]
#[path = "../../../tests/gate/mod.rs"]
pub(crate) mod gate;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_read_from_ssh_version_and_not_from_compat_patterns() {
        let bin = b"\x7fELF\0OpenSSH_2.*,OpenSSH_3.0*\0OpenSSH_7.4*\0OpenSSH_9.2\0\
                    OpenSSH_9.2p1 Debian-2+deb12u3\0OpenSSH_%s\0";
        assert_eq!(version_in(bin), Some((9, 2)));
        assert_eq!(version_in(b"OpenSSH_8.4p1\0OpenSSH_8.4\0"), Some((8, 4)));
        assert_eq!(version_in(b"OpenSSH_10.0\0"), Some((10, 0)));
        // Two different versions: nothing is assumed.
        assert_eq!(version_in(b"OpenSSH_8.4\0OpenSSH_9.2\0"), None);
        assert_eq!(version_in(b"OpenSSH_7.4*\0OpenSSH_5*\0"), None);
        assert_eq!(version_in(b""), None);
    }

    #[test]
    fn the_z_suffix_is_only_written_for_openssh_9_1_and_later() {
        assert_eq!(ExpiryForm::for_version(Some((8, 4))), ExpiryForm::Local);
        assert_eq!(ExpiryForm::for_version(Some((9, 0))), ExpiryForm::Local);
        assert_eq!(ExpiryForm::for_version(Some((9, 1))), ExpiryForm::Utc);
        assert_eq!(ExpiryForm::for_version(Some((10, 0))), ExpiryForm::Utc);
        assert_eq!(ExpiryForm::for_version(None), ExpiryForm::Local);
    }

    #[test]
    fn the_installed_sshd_version_is_what_sshd_v_prints() {
        // The oracle is the real binary. Where none is installed the test
        // is skipped visibly, and fails under CI (the shared gate), rather
        // than showing as a pass that checked nothing.
        let bin = std::path::Path::new("/usr/sbin/sshd");
        if !gate::require(bin.exists(), "no /usr/sbin/sshd to ask for its version") {
            return;
        }
        let out = std::process::Command::new(bin).arg("-V").output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        let v = text
            .split("OpenSSH_")
            .nth(1)
            .expect("sshd -V names OpenSSH");
        let mut parts = v.split(|c: char| !c.is_ascii_digit());
        let major: u32 = parts.next().unwrap().parse().unwrap();
        let minor: u32 = parts.next().unwrap().parse().unwrap();
        let sys = System::new("/", "/nonexistent");
        assert_eq!(sshd_version(&sys, bin), Some((major, minor)), "{text}");
    }

    #[test]
    fn the_utc_value_makes_sshd_refuse_the_key_from_the_given_second() {
        // 2030-01-01T00:00:00Z: sshd lets the key in through 23:59:59.
        let v = expiry_time_value(1_893_456_000, ExpiryForm::Utc).unwrap();
        assert_eq!(v, "20291231235959Z");
        assert_eq!(
            parse_absolute_time(v.as_bytes()),
            Some((1_893_455_999, true))
        );
        assert_eq!(expiry_time_value(1, ExpiryForm::Utc), None);
    }

    #[test]
    fn the_local_value_reads_back_as_the_same_instant_in_summer_and_winter() {
        // Whatever this process's zone is, sshd's own reading (mktime with
        // tm_isdst = 0) of the value gives back the instant meant, or an
        // earlier one — never a later one.
        for at in [
            1_893_456_000u64,
            1_909_094_400,
            1_782_864_000,
            1_798_761_600,
        ] {
            let v = expiry_time_value(at, ExpiryForm::Local).unwrap();
            assert_eq!(v.len(), 14, "{v}");
            let (back, zoned) = parse_absolute_time(v.as_bytes()).unwrap();
            assert!(!zoned);
            assert!(back < at, "{v} reads as {back}, not before {at}");
        }
    }
}
