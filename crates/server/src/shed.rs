//! Load shedding for the whole process: at most `--max-concurrent-calls`
//! calls in flight; past that a call is refused at once with
//! RESOURCE_EXHAUSTED (`SERVER_OVERLOADED`) and a retry hint, before it is
//! decoded, instead of queueing until memory runs out. Health checks and
//! `WatchAccount` streams (long-lived by design) are not counted. Each
//! account has its own limit too: its command queue (the engine's mailbox,
//! `ACCOUNT_OVERLOADED`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tally_telemetry::Metrics;
use tokio::sync::Semaphore;

use crate::status;

/// Paths that hold no permit.
fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path == "/tally.v1.AccountService/WatchAccount"
}

#[derive(Clone)]
pub struct ShedLoad {
    permits: Arc<Semaphore>,
    limit: usize,
    metrics: Metrics,
}

impl ShedLoad {
    pub fn new(limit: usize, metrics: Metrics) -> Self {
        ShedLoad {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            metrics,
        }
    }
}

impl<S> tower::Layer<S> for ShedLoad {
    type Service = Shedding<S>;
    fn layer(&self, inner: S) -> Shedding<S> {
        Shedding {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Shedding<S> {
    inner: S,
    layer: ShedLoad,
}

impl<S, B, R> tower::Service<http::Request<B>> for Shedding<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if exempt(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        let Ok(permit) = self.layer.permits.clone().try_acquire_owned() else {
            self.layer.metrics.shed("SERVER_OVERLOADED");
            let response = status::overloaded(
                "SERVER_OVERLOADED",
                format!(
                    "the server has {} calls in flight; try again shortly",
                    self.layer.limit
                ),
                &[("max_concurrent_calls", self.layer.limit.to_string())],
            )
            .into_http();
            return Box::pin(async move { Ok(response) });
        };
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await;
            drop(permit);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::watch;
    use tonic_types::StatusExt;
    use tower::{Layer, Service, ServiceExt};

    /// A service whose calls finish once the test opens the gate.
    #[derive(Clone)]
    struct Gate(watch::Receiver<bool>);

    impl tower::Service<http::Request<()>> for Gate {
        type Response = http::Response<()>;
        type Error = std::convert::Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let mut gate = self.0.clone();
            Box::pin(async move {
                gate.wait_for(|open| *open).await.expect("gate");
                Ok(http::Response::new(()))
            })
        }
    }

    fn call(path: &str) -> http::Request<()> {
        http::Request::builder().uri(path).body(()).unwrap()
    }

    fn grpc_status(response: &http::Response<()>) -> Option<tonic::Status> {
        tonic::Status::from_header_map(response.headers())
    }

    #[tokio::test]
    async fn calls_past_the_limit_are_refused_at_once_with_a_retry_hint() {
        let (open, gate) = watch::channel(false);
        let mut service = ShedLoad::new(2, Metrics::global()).layer(Gate(gate));
        let debit = "/tally.v1.MeteringService/Debit";
        let first = tokio::spawn(service.clone().oneshot(call(debit)));
        let second = tokio::spawn(service.clone().oneshot(call(debit)));
        // Both hold their permits until the gate opens.
        while service.layer.permits.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let refused = service
            .ready()
            .await
            .unwrap()
            .call(call(debit))
            .await
            .unwrap();
        let status = grpc_status(&refused).expect("a gRPC status");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let details = status.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, "SERVER_OVERLOADED");
        assert!(details.retry_info().unwrap().retry_delay.is_some());
        // Health checks and watches are let through while the limit is
        // reached: they wait on the gate like any call the service takes.
        let health = tokio::spawn(
            service
                .clone()
                .oneshot(call("/grpc.health.v1.Health/Check")),
        );
        let watch = tokio::spawn(
            service
                .clone()
                .oneshot(call("/tally.v1.AccountService/WatchAccount")),
        );
        open.send(true).unwrap();
        for task in [first, second, health, watch] {
            let response = task.await.unwrap().unwrap();
            assert!(grpc_status(&response).is_none(), "answered by the service");
        }
        // The permits came back.
        assert_eq!(service.layer.permits.available_permits(), 2);
    }
}
