//! Tally's gRPC API, package `tally.v1`, generated from `proto/tally/v1`.

/// The generated messages and services of `tally.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("tally.v1");

    /// The encoded file descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("tally_v1_descriptor");
}
