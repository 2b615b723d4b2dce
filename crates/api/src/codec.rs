//! The codec tally.v1's servers decode requests with: prost's, except that
//! a body that is not a valid message answers INVALID_ARGUMENT, not
//! tonic-prost's INTERNAL. A malformed request is the caller's mistake;
//! INTERNAL pages an operator.
//!
//! Why here and not in the server's `status.rs`, where every other error
//! becomes a status: tonic decodes a unary request before any handler
//! runs, with the codec the generated service names, and answers a decode
//! error itself. The generated services live in this crate, so the codec
//! must too. It does no more than say what is wrong; the reason and domain
//! are the API's, shared with the server through [`ERROR_DOMAIN`] and
//! [`MALFORMED_REQUEST`].
//!
//! Only the servers use it: the generated clients keep tonic-prost's codec,
//! for which an undecodable response is the server's fault.

use std::collections::HashMap;

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every Tally error.
pub const ERROR_DOMAIN: &str = "tally";

/// The `ErrorInfo.reason` of a request whose body is not a valid message.
pub const MALFORMED_REQUEST: &str = "MALFORMED_REQUEST";

/// The status of a request body that does not decode. prost's message
/// names the field and what was wrong (a bad wire type, invalid UTF-8),
/// never the bytes.
pub fn malformed_request(error: impl std::fmt::Display) -> Status {
    Status::with_error_details(
        tonic::Code::InvalidArgument,
        format!("the request is not a valid message: {error}"),
        ErrorDetails::with_error_info(MALFORMED_REQUEST, ERROR_DOMAIN, HashMap::new()),
    )
}

/// [`ProstCodec`] with [`malformed_request`] for decode errors.
#[derive(Debug, Clone)]
pub struct ServerCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for ServerCodec<T, U> {
    fn default() -> Self {
        ServerCodec(ProstCodec::default())
    }
}

impl<T, U> Codec for ServerCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ServerDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ServerDecoder(self.0.decoder())
    }
}

/// Decodes as prost does; see [`malformed_request`].
#[derive(Debug, Clone, Default)]
pub struct ServerDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for ServerDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // prost's own decode, not the inner decoder's: its error is the
        // DecodeError itself, before tonic-prost turns it into INTERNAL.
        U::decode(buf).map(Some).map_err(malformed_request)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn a_body_that_does_not_decode_is_invalid_argument() {
        let error = crate::v1::DebitRequest::decode(&[0xff_u8; 16][..]).unwrap_err();
        let status = malformed_request(&error);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, MALFORMED_REQUEST);
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert!(status.message().contains("failed to decode"), "{status:?}");
    }
}
