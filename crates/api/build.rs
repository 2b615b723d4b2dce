//! Generates the tally.v1 types and services from `proto/` into OUT_DIR,
//! with a vendored protoc so a fresh machine needs nothing installed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "account_service.proto",
        "catalog_service.proto",
        "credits.proto",
        "metering_service.proto",
        "reads.proto",
    ]
    .map(|name| proto_root.join("tally/v1").join(name));
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Maps in key order: a request's encoding is its idempotency
    // fingerprint, and a HashMap would encode the same request differently
    // from one decode to the next.
    config.btree_map(["."]);
    let descriptor = PathBuf::from(std::env::var("OUT_DIR")?).join("tally_v1_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor)
        .compile_with_config(config, &files, &[proto_root])?;
    Ok(())
}
