//! The tower layer in front of every gRPC service: continues the caller's
//! W3C trace, opens the server span (OpenTelemetry's RPC conventions), and
//! times the call into `rpc.server.call.duration` once its status is known
//! (in the trailers, after the last message of a stream).
//!
//! Health checks pass through untouched: probes every few seconds would
//! only bury real traffic.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TraceId};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::field::Empty;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::Metrics;

/// gRPC status codes this layer needs by number.
const UNKNOWN: i64 = 2;
const CANCELLED: i64 = 1;

/// Wraps each call of the inner service in a server span and times it.
#[derive(Clone, Debug)]
pub struct GrpcTelemetryLayer {
    metrics: Metrics,
}

impl GrpcTelemetryLayer {
    pub fn new(metrics: Metrics) -> Self {
        GrpcTelemetryLayer { metrics }
    }
}

impl<S> tower::Layer<S> for GrpcTelemetryLayer {
    type Service = GrpcTelemetry<S>;
    fn layer(&self, inner: S) -> GrpcTelemetry<S> {
        GrpcTelemetry {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct GrpcTelemetry<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, RequestBody, ResponseBody> tower::Service<Request<RequestBody>> for GrpcTelemetry<S>
where
    S: tower::Service<Request<RequestBody>, Response = Response<ResponseBody>>,
    S::Future: Send + 'static,
    ResponseBody: Body + Unpin,
{
    type Response = Response<ObservedBody<ResponseBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let rpc = rpc_of(request.uri().path());
        let Some((service, method)) =
            rpc.filter(|(service, _)| !service.starts_with("grpc.health."))
        else {
            let response = self.inner.call(request);
            return Box::pin(async move { Ok(response.await?.map(ObservedBody::untraced)) });
        };
        let span = tracing::info_span!(
            target: "tally::rpc",
            "rpc",
            otel.name = %format!("{service}/{method}"),
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = Empty,
            trace_id = Empty,
        );
        let caller = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
        // A call without a (valid) traceparent starts a trace of its own.
        let _ = span.set_parent(caller);
        // In the span's fields, so every log line of the call (JSON logs
        // list the current span's fields) leads to its trace. Invalid when
        // traces are not exported.
        let trace_id = span.context().span().span_context().trace_id();
        if trace_id != TraceId::INVALID {
            span.record("trace_id", tracing::field::display(trace_id));
        }
        let call = Call {
            span: span.clone(),
            started: Instant::now(),
            service: service.to_owned(),
            method: method.to_owned(),
            metrics: self.metrics.clone(),
        };
        let response = self.inner.call(request).instrument(span);
        Box::pin(async move {
            match response.await {
                Ok(response) => {
                    // Errors and empty answers come "trailers-only": the
                    // status is in the headers and nothing follows.
                    if let Some(code) = grpc_status(response.headers()) {
                        call.finish(code);
                        Ok(response.map(ObservedBody::untraced))
                    } else {
                        Ok(response.map(|body| ObservedBody {
                            inner: body,
                            call: Some(call),
                        }))
                    }
                }
                Err(e) => {
                    call.finish(UNKNOWN);
                    Err(e)
                }
            }
        })
    }
}

/// `/tally.v1.MeteringService/Reserve` → (`tally.v1.MeteringService`, `Reserve`).
fn rpc_of(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty()).then_some((service, method))
}

fn grpc_status(headers: &HeaderMap) -> Option<i64> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// A call between its arrival and its status.
struct Call {
    span: Span,
    started: Instant,
    service: String,
    method: String,
    metrics: Metrics,
}

impl Call {
    fn finish(self, code: i64) {
        self.span.record("rpc.grpc.status_code", code);
        if is_server_error(code) {
            self.span.record("otel.status_code", "ERROR");
        }
        self.metrics
            .rpc_served(&self.service, &self.method, code, self.started.elapsed());
    }
}

/// The codes OpenTelemetry's RPC conventions count as a server's fault:
/// UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE,
/// DATA_LOSS. A refusal (FAILED_PRECONDITION, NOT_FOUND, ...) is the
/// server working.
fn is_server_error(code: i64) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// The response body, watched for the trailers that carry the status.
pub struct ObservedBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B> ObservedBody<B> {
    fn untraced(inner: B) -> Self {
        ObservedBody { inner, call: None }
    }

    fn finish(&mut self, code: i64) {
        if let Some(call) = self.call.take() {
            call.finish(code);
        }
    }
}

impl<B: Body + Unpin> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        // A stream's messages are produced as the body is polled: in the
        // call's span, so what they log and trace belongs to the call.
        let span = this.call.as_ref().map(|call| call.span.clone());
        let _entered = span.as_ref().map(Span::enter);
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => this.finish(UNKNOWN),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for ObservedBody<B> {
    /// The client went away before the status was sent (a watcher hanging
    /// up, a cancelled call).
    fn drop(&mut self) {
        self.finish(CANCELLED);
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_the_service_and_method() {
        assert_eq!(
            rpc_of("/tally.v1.MeteringService/Reserve"),
            Some(("tally.v1.MeteringService", "Reserve"))
        );
        assert_eq!(rpc_of("/"), None);
        assert_eq!(rpc_of("/only-a-service"), None);
        assert_eq!(rpc_of("/svc/"), None);
    }

    /// A log line written while a call is handled carries the call's
    /// trace id (the caller's, from its traceparent) in its span fields.
    #[test]
    fn log_lines_of_a_call_carry_its_trace_id() {
        use opentelemetry::trace::TracerProvider as _;
        use std::sync::{Arc, Mutex};
        use tower::{Layer, Service};
        use tracing_subscriber::layer::SubscriberExt;

        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(move || writer.clone()),
            )
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let _guard = tracing::subscriber::set_default(subscriber);

        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let request = http::Request::builder()
            .uri("/tally.v1.MeteringService/Debit")
            .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
            .body(())
            .unwrap();
        let inner = tower::service_fn(|_: Request<()>| async {
            tracing::info!("handled");
            Ok::<_, std::convert::Infallible>(Response::new(String::new()))
        });
        let mut service = GrpcTelemetryLayer::new(Metrics::global()).layer(inner);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(service.call(request)).unwrap();

        let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let line = logs
            .lines()
            .find(|line| line.contains("handled"))
            .expect("the handler's log line");
        assert!(
            line.contains(&format!("\"trace_id\":\"{trace}\"")),
            "{line}"
        );
    }

    #[test]
    fn only_server_faults_mark_the_span_as_an_error() {
        let faults: Vec<i64> = (0..=16).filter(|code| is_server_error(*code)).collect();
        assert_eq!(faults, vec![2, 4, 12, 13, 14, 15]);
    }
}
