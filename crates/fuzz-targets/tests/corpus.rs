//! The committed corpus (`fuzz/corpus/<target>/`), replayed through the
//! same functions the fuzz targets call: every file, on every `cargo
//! test`, so what fuzzing once found stays covered without a nightly
//! compiler. And the corpus is what its generator writes, each seed
//! answered as it says.

use std::collections::BTreeSet;

use tally_fuzz_targets::requests::METHODS;
use tally_fuzz_targets::{TARGETS, core_commands, corpus_dir, decode_request, seeds};

fn files(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir().join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a corpus entry").path();
            let data = std::fs::read(&path).expect("a corpus file");
            (path.display().to_string(), data)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_file_of_the_corpus_runs_through_its_target() {
    for target in TARGETS {
        let files = files(target);
        assert!(files.len() >= 30, "{target}: only {} files", files.len());
        for (path, data) in files {
            let run = match target {
                "decode_request" => |data: &[u8]| drop(decode_request(data)),
                "core_commands" => core_commands,
                other => panic!("no target {other}"),
            };
            if let Err(panic) = std::panic::catch_unwind(|| run(&data)) {
                std::panic::resume_unwind(Box::new(format!(
                    "{path}: {}",
                    panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| panic.downcast_ref::<&str>().copied())
                        .unwrap_or("a panic")
                )));
            }
        }
    }
}

#[test]
fn the_committed_seeds_are_what_the_generator_writes() {
    let requests = seeds::request_seeds()
        .into_iter()
        .map(|seed| ("decode_request", seed.name, seed.data));
    let scripts = seeds::script_seeds()
        .into_iter()
        .map(|seed| ("core_commands", seed.name, seed.data));
    for (target, name, data) in requests.chain(scripts) {
        let path = corpus_dir().join(target).join(&name);
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run `cargo run -p tally-fuzz-targets --bin seed-corpus`",
                path.display()
            )
        });
        assert!(
            committed == data,
            "{} differs from what the generator writes; run `cargo run -p tally-fuzz-targets --bin seed-corpus`",
            path.display()
        );
    }
}

#[test]
fn each_request_seed_gets_its_answer() {
    let seeds = seeds::request_seeds();
    let mut methods = BTreeSet::new();
    for seed in &seeds {
        assert_eq!(decode_request(&seed.data), seed.expect, "{}", seed.name);
        methods.insert(seed.name.split('.').next().expect("a method").to_owned());
    }
    // A well-formed request and a bad one of every method.
    assert_eq!(methods.len(), METHODS.len(), "{methods:?}");
    for method in METHODS {
        let name = method.path.rsplit('/').next().unwrap();
        for what in ["ok", "bad-field", "sent-ok"] {
            assert!(
                seeds.iter().any(|s| s.name == format!("{name}.{what}")),
                "no {name}.{what}"
            );
        }
    }
}

/// The target's list of methods is tally.v1's, every method once: a new
/// RPC is fuzzed from the day it is added.
#[test]
fn the_targets_methods_are_the_apis() {
    use prost::Message as _;
    let set = prost_types::FileDescriptorSet::decode(tally_api::v1::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set");
    let api: BTreeSet<String> = set
        .file
        .iter()
        .flat_map(|file| {
            file.service.iter().flat_map(move |service| {
                service.method.iter().map(move |method| {
                    format!("/{}.{}/{}", file.package(), service.name(), method.name())
                })
            })
        })
        .collect();
    let fuzzed: BTreeSet<String> = METHODS.iter().map(|m| m.path.to_owned()).collect();
    assert_eq!(fuzzed.len(), METHODS.len(), "a method listed twice");
    assert_eq!(fuzzed, api);
}
