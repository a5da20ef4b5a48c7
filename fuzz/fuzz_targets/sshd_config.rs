#![no_main]
//! The sshd_config model: never panics, parse → render is the identity, and
//! a successful edit yields the requested value while touching nothing when
//! the value was already in effect.

use std::path::Path;

use accessd::ssh::sshd::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/etc/ssh/sshd_config");
    let cfg = Config::from_text(path, data);
    assert_eq!(cfg.files[0].render(), data);
    let _ = cfg.events();
    let before = cfg.value(&["passwordauthentication"]);
    let mut edited = cfg.clone();
    if edited
        .set("PasswordAuthentication", &[], "no", Some("00-accessd.conf"))
        .is_ok()
    {
        assert_eq!(
            edited.value(&["passwordauthentication"]).map(|v| v.to_ascii_lowercase()),
            Some("no".to_owned())
        );
        if before.is_some_and(|v| v.eq_ignore_ascii_case("no")) {
            assert_eq!(edited.files[0].render(), data);
        }
    }
});
