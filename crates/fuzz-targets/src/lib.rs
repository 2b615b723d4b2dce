//! The bodies of Tally's fuzz targets, shared by the cargo-fuzz project
//! in `fuzz/` (outside the workspace: it needs a nightly compiler's
//! flags) and by this crate's tests, which `cargo test --workspace` runs:
//! they replay every file of the committed corpus (`fuzz/corpus/`) and run
//! the targets on random input for a bounded number of cases.
//!
//! - [`decode_request`]: bytes as a call to any method of tally.v1,
//!   through tonic's framing, the servers' codec, the handlers' validation
//!   and the mapping to statuses; every answer must be one a caller's
//!   bytes may get ([`requests::verdict`]).
//! - [`core_commands`]: bytes as a script of operations on one account of
//!   the pure core, with the SPEC §4 invariants checked after every step
//!   against the reference model (`tally_core::testing`).
//!
//! See docs/security.md, "Fuzzing".

pub mod requests;
pub mod seeds;

use std::path::PathBuf;

pub use requests::{Verdict, decode_request};

/// The fuzz targets, by the name of their corpus folder.
pub const TARGETS: [&str; 2] = ["decode_request", "core_commands"];

/// The fuzz target: any bytes are a script; panics when the core breaks
/// an invariant on it.
pub fn core_commands(data: &[u8]) {
    use tally_core::testing::{Run, Script};
    Run::script(Script::from_bytes(data)).check_log();
}

/// `fuzz/corpus/` in this repository.
pub fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}
