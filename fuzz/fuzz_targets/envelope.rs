#![no_main]
//! Placeholder: the envelope target is written by the engine work and
//! replaces this file at merge. It only has to compile until then.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = std::str::from_utf8(data);
});
