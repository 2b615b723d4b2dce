//! Tally's gRPC API, package `tally.v1`, generated from `proto/tally/v1`.

pub mod codec;

pub use codec::{ERROR_DOMAIN, MALFORMED_REQUEST};

/// The generated messages and services of `tally.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    // The messages and the servers (with `crate::codec::ServerCodec`)...
    tonic::include_proto!("tally.v1");
    // ...and the clients, with tonic-prost's codec (see build.rs).
    include!(concat!(env!("OUT_DIR"), "/client/tally.v1.rs"));

    /// The encoded file descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("tally_v1_descriptor");
}
