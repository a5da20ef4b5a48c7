//! Envelope and payload parsing under libFuzzer: whatever the bytes, the
//! parsers return an error instead of panicking, and a signed envelope
//! hands back exactly the bytes that were signed.
//! Run: `cargo +nightly fuzz run envelope -- -max_total_time=60`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    accessd::protocol::fuzz_envelope(data);
});
