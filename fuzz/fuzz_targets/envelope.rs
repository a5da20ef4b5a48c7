//! Envelope and payload parsing under libFuzzer: whatever the bytes, the
//! parsers return an error instead of panicking, and a signed envelope
//! hands back exactly the bytes that were signed.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run envelope -- -max_total_time=60` (see scripts/test.d/30-fuzz.sh).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    accessd::protocol::fuzz_envelope(data);
});
