//! The fuzz targets on random input, a bounded number of cases (a few
//! seconds in a debug build): what `cargo test` can do of fuzzing without
//! a nightly compiler. Random bytes to every method, framed by the
//! harness or sent as the whole body; well-formed requests with bytes
//! flipped, inserted, removed or cut; random scripts for the core.

use proptest::prelude::*;
use tally_fuzz_targets::requests::RAW;
use tally_fuzz_targets::{core_commands, decode_request, seeds};

/// What to do to a request's bytes at a position (taken modulo its
/// length).
#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Cut(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), 1..=u8::MAX).prop_map(|(at, bits)| Mutation::Flip(at, bits)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert(at, byte)),
        2 => any::<usize>().prop_map(Mutation::Remove),
        1 => any::<usize>().prop_map(Mutation::Cut),
    ]
}

fn mutate(data: &mut Vec<u8>, mutation: &Mutation) {
    // The first byte picks the method and how it is sent: keep it.
    let len = data.len() - 1;
    let at = |i: usize| 1 + i % len.max(1);
    match *mutation {
        _ if len == 0 => {}
        Mutation::Flip(i, bits) => data[at(i)] ^= bits,
        Mutation::Insert(i, byte) => data.insert(at(i), byte),
        Mutation::Remove(i) => drop(data.remove(at(i))),
        Mutation::Cut(i) => data.truncate(at(i)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_to_any_method(
        first in any::<u8>(),
        rest in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        decode_request(&[vec![first], rest].concat());
    }

    #[test]
    fn well_formed_requests_mutated(
        seed in any::<prop::sample::Index>(),
        raw in any::<bool>(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let seeds = seeds::request_seeds();
        let ok: Vec<_> = seeds.iter().filter(|s| s.name.ends_with(".ok")).collect();
        let seed = seed.get(&ok);
        let mut data = seed.data.clone();
        if raw {
            let framed = tally_fuzz_targets::requests::frame(&data[1..]);
            data = [vec![data[0] | RAW], framed].concat();
        }
        for mutation in &mutations {
            mutate(&mut data, mutation);
        }
        decode_request(&data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_scripts_for_the_core(data in prop::collection::vec(any::<u8>(), 0..600)) {
        core_commands(&data);
    }
}
