//! Writes the seed corpus of the fuzz targets into `fuzz/corpus/<target>/`
//! (or under the folder given as the first argument):
//!
//! ```sh
//! cargo run -p tally-fuzz-targets --bin seed-corpus
//! ```
//!
//! Files the fuzzer added beside the seeds are left alone; a seed file
//! whose content changed is rewritten.

use std::path::PathBuf;

use tally_fuzz_targets::{corpus_dir, seeds};

fn main() -> std::io::Result<()> {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(corpus_dir);
    let requests = seeds::request_seeds()
        .into_iter()
        .map(|seed| (seed.name, seed.data));
    let scripts = seeds::script_seeds()
        .into_iter()
        .map(|seed| (seed.name, seed.data));
    for (target, files) in [
        ("decode_request", requests.collect::<Vec<_>>()),
        ("core_commands", scripts.collect()),
    ] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, data) in &files {
            std::fs::write(dir.join(name), data)?;
        }
        println!("{}: {} seeds", dir.display(), files.len());
    }
    Ok(())
}
