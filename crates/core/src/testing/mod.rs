//! What the core's property tests and the fuzz targets share (feature
//! `testing`): a reference model of one account ([`model`]), a run that
//! drives the aggregate with a script of operations and checks the SPEC §4
//! invariants after every step ([`run`]), and two ways to get scripts:
//! drawn by proptest ([`strategy`]) or read from bytes ([`script`]).
//!
//! Not part of the domain: nothing outside tests and `fuzz/` enables it.

pub mod model;
pub mod run;
pub mod script;
pub mod strategy;

pub use run::{Op, Run};
pub use script::Script;
