#![no_main]
//! The authorized_keys splitter: never panics, parse → render is the
//! identity, key fields are sub-slices in order, and a line accessd accepts
//! from a command re-parses to the same key.

use accessd::ssh::authkeys::line::{parse_options, split, AuthKeysText, Entry};
use accessd::ssh::authkeys::KeyLine;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = AuthKeysText::parse(data);
    assert_eq!(text.render(), data);
    for raw in &text.lines {
        let body = AuthKeysText::body(raw);
        if let Entry::Key(f) = split(body) {
            // Fields appear in the line, in order, without overlapping.
            let start = body.as_ptr() as usize;
            let off = |s: &[u8]| s.as_ptr() as usize - start;
            assert!(off(f.key_type) + f.key_type.len() <= off(f.blob));
            if let Some(o) = f.options {
                assert!(off(o) + o.len() <= off(f.key_type));
            }
            if let Some(c) = f.comment {
                assert!(off(f.blob) + f.blob.len() <= off(c));
                assert!(off(c) + c.len() <= body.len());
            }
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        // Never panics (it calls getaddrinfo, strptime and mktime on
        // hostile text), and the earliest expiry-time is what it reports.
        if let Ok(o) = parse_options(s) {
            assert!(o.principals.is_none() || o.cert_authority);
        }
        if let Ok(k) = KeyLine::parse(s) {
            let again = KeyLine::parse(&k.render()).expect("a rendered line parses");
            assert_eq!(again.fingerprint(), k.fingerprint());
            assert_eq!(again.render(), k.render());
        }
    }
});
