//! Bytes as a script of operations on one account of the core, with the
//! SPEC §4 invariants checked after every step: see
//! `tally_fuzz_targets::core_commands`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tally_fuzz_targets::core_commands(data);
});
