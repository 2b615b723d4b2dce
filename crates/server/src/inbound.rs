//! tonic reads a unary (or server-streaming) call's request before any
//! handler runs, and answers what it cannot read itself: a message longer
//! than the limit is OUT_OF_RANGE, a body without a message or ending
//! inside one is INTERNAL. Neither is what happened: the first is a
//! request too large (RESOURCE_EXHAUSTED, as gRPC's own servers say), the
//! second a malformed request (INVALID_ARGUMENT; INTERNAL pages an
//! operator). This layer gives those answers the statuses
//! [`status::inbound`] says, before telemetry counts them.
//!
//! It looks only at trailers-only answers that carry their `Status` (tonic
//! attaches it to every answer it makes from one) and rewrites only those
//! `status::inbound` recognises; everything else passes untouched.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::Status;

use crate::status;

#[derive(Clone, Copy, Debug, Default)]
pub struct InboundErrors;

impl<S> tower::Layer<S> for InboundErrors {
    type Service = Inbound<S>;
    fn layer(&self, inner: S) -> Inbound<S> {
        Inbound { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Inbound<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for Inbound<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = self.inner.call(request);
        Box::pin(async move {
            let mut response = call.await?;
            rewrite(&mut response);
            Ok(response)
        })
    }
}

/// Replaces the status of a trailers-only answer when
/// [`status::inbound`] has another for it.
fn rewrite<R>(response: &mut http::Response<R>) {
    if !response.headers().contains_key(Status::GRPC_STATUS) {
        return;
    }
    let Some(said) = response.extensions().get::<Status>() else {
        return;
    };
    let Some(status) = status::inbound_rewrite(said) else {
        return;
    };
    let headers = response.headers_mut();
    headers.remove(Status::GRPC_STATUS);
    headers.remove(Status::GRPC_MESSAGE);
    headers.remove(Status::GRPC_STATUS_DETAILS);
    if status.add_header(headers).is_err() {
        // Our own statuses always encode; should one not, tonic's stays
        // rather than an answer without a status.
        tracing::error!(?status, "a rewritten status does not encode");
        return;
    }
    response.extensions_mut().insert(status);
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic_types::StatusExt;

    use super::*;

    fn answer(status: Status) -> http::Response<()> {
        status.into_http()
    }

    #[test]
    fn tonics_size_refusal_becomes_resource_exhausted() {
        let mut response = answer(Status::out_of_range(
            "Error, decoded message length too large: found 5242880 bytes, the limit is: 4194304 bytes",
        ));
        rewrite(&mut response);
        let status = Status::from_header_map(response.headers()).expect("a status");
        assert_eq!(status.code(), Code::ResourceExhausted);
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "REQUEST_TOO_LARGE");
        assert_eq!(info.metadata["size_bytes"], "5242880");
        assert_eq!(info.metadata["limit_bytes"], "4194304");
        let kept = response.extensions().get::<Status>().expect("the status");
        assert_eq!(kept.code(), Code::ResourceExhausted);
    }

    #[test]
    fn a_missing_message_becomes_malformed_request() {
        let mut response = answer(Status::internal("Missing request message."));
        rewrite(&mut response);
        let status = Status::from_header_map(response.headers()).expect("a status");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.get_details_error_info().expect("ErrorInfo").reason,
            "MALFORMED_REQUEST"
        );
    }

    #[test]
    fn other_answers_pass_untouched() {
        for said in [
            Status::internal("unexpected outcome"),
            Status::out_of_range("TOTALS_OVERFLOW"),
            Status::unavailable("the store is not open yet"),
        ] {
            let mut response = answer(said.clone());
            let before = response.headers().clone();
            rewrite(&mut response);
            assert_eq!(response.headers(), &before, "{said:?}");
        }
        // Without a Status attached (not tonic's), nothing is guessed.
        let mut response = answer(Status::internal("Missing request message."));
        response.extensions_mut().clear();
        let before = response.headers().clone();
        rewrite(&mut response);
        assert_eq!(response.headers(), &before);
    }
}
