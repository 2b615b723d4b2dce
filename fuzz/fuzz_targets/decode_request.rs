//! Bytes as a call to a tally.v1 method: see `tally_fuzz_targets::requests`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tally_fuzz_targets::decode_request(data);
});
