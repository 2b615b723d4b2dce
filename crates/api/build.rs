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
        "test_clock_service.proto",
    ]
    .map(|name| proto_root.join("tally/v1").join(name));
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Maps in key order: a request's encoding is its idempotency
    // fingerprint, and a HashMap would encode the same request differently
    // from one decode to the next.
    config.btree_map(["."]);
    // The messages and the servers. The servers decode with a codec that
    // answers INVALID_ARGUMENT to a body that is not a message (src/codec.rs).
    tonic_prost_build::configure()
        .build_client(false)
        .codec_path("crate::codec::ServerCodec")
        .file_descriptor_set_path(out_dir.join("tally_v1_descriptor.bin"))
        .compile_with_config(config, &files, std::slice::from_ref(&proto_root))?;

    // The clients, over the messages above, with tonic-prost's own codec:
    // a response that does not decode is the server's fault, not a bad
    // argument.
    let client_dir = out_dir.join("client");
    std::fs::create_dir_all(&client_dir)?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_server(false)
        .extern_path(".tally.v1", "crate::v1")
        .out_dir(&client_dir)
        .compile_with_config(config, &files, &[proto_root])?;
    Ok(())
}
