//! Telemetry end to end: tallyd exports to an OTLP receiver running in
//! this test (the `opentelemetry-proto` crate's generated servers), and
//! what arrives is checked: the caller's trace continues through the RPC,
//! the command, the batch and the store call; the counters carry the
//! right values. One test: the providers are global to the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tally_e2e::*;
use tally_telemetry::TelemetryConfig;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// What the receiver got: every span, and the newest value of every
/// metric point (exports are cumulative), keyed by name and attributes.
#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<Span>>>,
    points: Arc<Mutex<HashMap<(String, Attributes), Point>>>,
}

type Attributes = Vec<(String, String)>;

/// Attributes as a test writes them.
type Attrs = Vec<(&'static str, &'static str)>;

#[derive(Clone, Debug, PartialEq)]
enum Point {
    Number(f64),
    Histogram { count: u64 },
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut points = self.points.lock().unwrap();
        for resource in request.into_inner().resource_metrics {
            let service = resource
                .resource
                .as_ref()
                .and_then(|r| text(&r.attributes, "service.name"));
            assert_eq!(
                service.as_deref(),
                Some("tallyd"),
                "the default service name"
            );
            for scope in resource.scope_metrics {
                for m in scope.metrics {
                    let mut record = |attributes: &[KeyValue], point: Point| {
                        points.insert((m.name.clone(), attributes_of(attributes)), point);
                    };
                    match m.data {
                        Some(metric::Data::Sum(sum)) => {
                            for p in sum.data_points {
                                record(&p.attributes, Point::Number(number(&p.value)));
                            }
                        }
                        Some(metric::Data::Gauge(gauge)) => {
                            for p in gauge.data_points {
                                record(&p.attributes, Point::Number(number(&p.value)));
                            }
                        }
                        Some(metric::Data::Histogram(histogram)) => {
                            for p in histogram.data_points {
                                record(&p.attributes, Point::Histogram { count: p.count });
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn number(value: &Option<number_data_point::Value>) -> f64 {
    match value {
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        Some(number_data_point::Value::AsDouble(d)) => *d,
        None => f64::NAN,
    }
}

fn value_text(kv: &KeyValue) -> Option<String> {
    match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(value_text)
}

fn attributes_of(attributes: &[KeyValue]) -> Attributes {
    let mut pairs: Attributes = attributes
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), value_text(kv)?)))
        .collect();
    pairs.sort();
    pairs
}

impl Received {
    fn point(&self, name: &str, attributes: &[(&str, &str)]) -> Option<Point> {
        let mut key: Attributes = attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        key.sort();
        self.points
            .lock()
            .unwrap()
            .get(&(name.to_owned(), key))
            .cloned()
    }

    /// The points of `name` whose attributes include `attributes`.
    fn points_with(&self, name: &str, attributes: &[(&str, &str)]) -> Vec<Point> {
        self.points
            .lock()
            .unwrap()
            .iter()
            .filter(|((n, attrs), _)| {
                n == name
                    && attributes
                        .iter()
                        .all(|(k, v)| attrs.iter().any(|(ak, av)| ak == k && av == v))
            })
            .map(|(_, p)| p.clone())
            .collect()
    }

    fn spans_of(&self, trace_id: &[u8]) -> Vec<Span> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

/// Polls until `check` passes; exports are periodic and batched.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never arrived: {what}");
}

fn traced<T>(message: T, trace_id: &str, parent: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent}-01").parse().unwrap(),
    );
    request
}

fn assert_attributes(span: &Span, expected: &[(&str, &str)]) {
    for (key, value) in expected {
        assert_eq!(
            text(&span.attributes, key).as_deref(),
            Some(*value),
            "{key} of span {}",
            span.name
        );
    }
}

fn child_of<'a>(spans: &'a [Span], parent: &Span, name: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == name && s.parent_span_id == parent.span_id)
        .unwrap_or_else(|| {
            let names: Vec<_> = spans.iter().map(|s| s.name.as_str()).collect();
            panic!("no span {name} under {}; have {names:?}", parent.name)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traced_calls_and_credit_metrics_reach_the_collector() {
    let received = Received::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(received.clone()))
            .add_service(MetricsServiceServer::new(received.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let telemetry = tally_telemetry::init(&TelemetryConfig {
        traces_endpoint: Some(endpoint.clone()),
        metrics_endpoint: Some(endpoint),
        metric_interval: Some(Duration::from_millis(200)),
        json_logs: false,
        log_filter: "warn".into(),
    })
    .expect("telemetry installs");
    let telemetry = Arc::new(telemetry);

    let server = TestServer::start().await;
    let mut accounts = server.accounts().await;
    let mut metering = server.metering().await;
    open(&mut accounts, "otel").await;
    grant(&mut accounts, "otel", "g-1", BucketKind::Monthly, 10_000).await;

    // A caller's trace: Reserve and Commit continue it.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let reserved = metering
        .reserve(traced(
            reserve_request("otel", "r-1", 4_000),
            trace_id,
            caller_span,
        ))
        .await
        .unwrap()
        .into_inner();
    metering
        .commit(traced(
            CommitRequest {
                idempotency_key: "c-1".into(),
                account_id: "otel".into(),
                reservation_id: reserved.reservation.unwrap().reservation_id,
                amount_millicredits: Some(3_000),
                dimensions: None,
            },
            trace_id,
            caller_span,
        ))
        .await
        .unwrap();
    // Released in full.
    let second = metering
        .reserve(reserve_request("otel", "r-2", 2_000))
        .await
        .unwrap()
        .into_inner();
    metering
        .release(ReleaseRequest {
            idempotency_key: "rel-2".into(),
            account_id: "otel".into(),
            reservation_id: second.reservation.unwrap().reservation_id,
        })
        .await
        .unwrap();
    // Refused, in a trace of its own.
    let refused_trace = "0af7651916cd43dd8448eb211c80319c";
    let refused = metering
        .reserve(traced(
            reserve_request("otel", "r-3", 50_000),
            refused_trace,
            caller_span,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "INSUFFICIENT_CREDITS");
    // Left open.
    metering
        .reserve(reserve_request("otel", "r-4", 1_000))
        .await
        .unwrap();
    // Finished past the balance: 1,000 held, 5,000 available, 4,000 over.
    let fifth = metering
        .reserve(reserve_request("otel", "r-5", 1_000))
        .await
        .unwrap()
        .into_inner();
    metering
        .commit(CommitRequest {
            idempotency_key: "c-5".into(),
            account_id: "otel".into(),
            reservation_id: fifth.reservation.unwrap().reservation_id,
            amount_millicredits: Some(10_000),
            dimensions: None,
        })
        .await
        .unwrap();
    // Probes are not traced.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();

    flush(&telemetry).await;

    // The trace: caller → RPC (server) → command → batch → store (client).
    let trace = hex(trace_id);
    eventually("the commit's store span", || {
        received
            .spans_of(&trace)
            .iter()
            .filter(|s| s.name == "sqlite append")
            .count()
            == 2
    })
    .await;
    let spans = received.spans_of(&trace);
    let rpc = spans
        .iter()
        .find(|s| s.name == "tally.v1.MeteringService/Reserve")
        .expect("the Reserve server span");
    assert_eq!(
        rpc.parent_span_id,
        hex(caller_span),
        "continues the caller's span"
    );
    assert_eq!(rpc.kind, SpanKind::Server as i32);
    assert_attributes(
        rpc,
        &[
            ("rpc.system", "grpc"),
            ("rpc.service", "tally.v1.MeteringService"),
            ("rpc.method", "Reserve"),
            ("rpc.grpc.status_code", "0"),
        ],
    );
    let command = child_of(&spans, rpc, "command reserve");
    assert_attributes(
        command,
        &[
            ("tally.account_id", "otel"),
            ("tally.action", "article.draft"),
            ("tally.outcome", "ok"),
        ],
    );
    let batch = child_of(&spans, command, "engine batch");
    let append = child_of(&spans, batch, "sqlite append");
    assert_eq!(append.kind, SpanKind::Client as i32);
    assert_attributes(
        append,
        &[
            ("db.system.name", "sqlite"),
            ("db.operation.name", "append"),
        ],
    );
    let commit = spans
        .iter()
        .find(|s| s.name == "tally.v1.MeteringService/Commit")
        .expect("the Commit server span");
    assert_eq!(commit.parent_span_id, hex(caller_span));
    child_of(&spans, commit, "command commit");

    // A refusal is the server working: status 9, the span not an error.
    eventually("the refused call's spans", || {
        received.spans_of(&hex(refused_trace)).len() >= 2
    })
    .await;
    let refused_spans = received.spans_of(&hex(refused_trace));
    let refused_rpc = refused_spans
        .iter()
        .find(|s| s.name == "tally.v1.MeteringService/Reserve")
        .unwrap();
    assert_attributes(refused_rpc, &[("rpc.grpc.status_code", "9")]);
    assert_ne!(
        refused_rpc.status.as_ref().map(|s| s.code),
        Some(2),
        "a refusal does not mark the span as an error"
    );
    let refused_command = child_of(&refused_spans, refused_rpc, "command reserve");
    assert_attributes(
        refused_command,
        &[("tally.outcome", "INSUFFICIENT_CREDITS")],
    );
    assert!(
        !received
            .spans
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.name.starts_with("grpc.health")),
        "health checks are not traced"
    );

    // The counters: exactly what was written.
    let draft = [
        ("tally.action", "article.draft"),
        ("tally.capability", "article"),
        ("tally.test_clock", "false"),
    ];
    let with = |extra: (&'static str, &'static str)| {
        let mut attributes = draft.to_vec();
        attributes.push(extra);
        attributes
    };
    // (metric, attributes, milli-credits or count)
    let expected: Vec<(&str, Attrs, f64)> = vec![
        (
            "tally.credits.granted",
            vec![
                ("tally.bucket.kind", "monthly"),
                ("tally.test_clock", "false"),
            ],
            10_000.0,
        ),
        ("tally.credits.reserved", draft.to_vec(), 8_000.0),
        ("tally.credits.committed", draft.to_vec(), 13_000.0),
        ("tally.credits.overage", draft.to_vec(), 4_000.0),
        (
            "tally.credits.released",
            with(("tally.release.reason", "committed")),
            1_000.0,
        ),
        (
            "tally.credits.released",
            with(("tally.release.reason", "released")),
            2_000.0,
        ),
        (
            "tally.refusals",
            vec![
                ("tally.reason", "INSUFFICIENT_CREDITS"),
                ("tally.command", "reserve"),
            ],
            1.0,
        ),
        ("tally.reservations.open", vec![], 1.0),
    ];
    for (name, attributes, value) in &expected {
        eventually(name, || {
            received.point(name, attributes) == Some(Point::Number(*value))
        })
        .await;
    }

    // Calls by method and code: 3 Reserves answered OK, 1 refused.
    let calls = |code: &'static str| {
        received.point(
            "rpc.server.call.duration",
            &[
                ("rpc.system", "grpc"),
                ("rpc.service", "tally.v1.MeteringService"),
                ("rpc.method", "Reserve"),
                ("rpc.grpc.status_code", code),
            ],
        )
    };
    eventually("Reserve calls by code", || {
        calls("0") == Some(Point::Histogram { count: 4 })
            && calls("9") == Some(Point::Histogram { count: 1 })
    })
    .await;
    assert!(
        received
            .points_with(
                "rpc.server.call.duration",
                &[("rpc.service", "grpc.health.v1.Health")]
            )
            .is_empty(),
        "health checks are not timed"
    );

    // Appends: every write committed once (open, grant, 4 reserves,
    // 2 commits, 1 release), none refused.
    eventually("append batch sizes", || {
        let batches = received.points_with(
            "tally.store.append.batch_size",
            &[("db.system.name", "sqlite")],
        );
        matches!(batches.as_slice(), [Point::Histogram { count }] if *count >= 9)
    })
    .await;
    assert!(
        !received
            .points_with("tally.store.append.duration", &[("tally.outcome", "ok")])
            .is_empty()
    );

    // Time runs out: the hold left open expires (a 300 s TTL), then what
    // is left of a promotion (10,000 granted, 4,000 of it repaying the
    // overage) expires an hour in.
    accounts
        .grant(GrantRequest {
            idempotency_key: "g-promo".into(),
            account_id: "otel".into(),
            kind: BucketKind::Promotional.into(),
            amount_millicredits: 10_000,
            expires_at: Some(prost_types::Timestamp {
                seconds: START.as_millis() / 1_000 + 3_600,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    server.advance(Duration::from_secs(7_200));
    let expired: Vec<(&str, Attrs, f64)> = vec![
        (
            "tally.credits.granted",
            vec![
                ("tally.bucket.kind", "promotional"),
                ("tally.test_clock", "false"),
            ],
            10_000.0,
        ),
        (
            "tally.credits.expired",
            vec![
                ("tally.bucket.kind", "promotional"),
                ("tally.test_clock", "false"),
            ],
            6_000.0,
        ),
        (
            "tally.credits.released",
            with(("tally.release.reason", "expired")),
            1_000.0,
        ),
        ("tally.reservations.open", vec![], 0.0),
    ];
    for (name, attributes, value) in &expired {
        eventually(name, || {
            received.point(name, attributes) == Some(Point::Number(*value))
        })
        .await;
    }

    // Credits of an account on a test clock count apart: dashboards of
    // real money leave them out by `tally.test_clock`.
    server
        .test_clocks()
        .await
        .create_test_clock(CreateTestClockRequest {
            test_clock_id: "sim".into(),
            frozen_time: Some(prost_types::Timestamp {
                seconds: 1_900_000_000,
                nanos: 0,
            }),
        })
        .await
        .unwrap();
    accounts
        .open_account(OpenAccountRequest {
            idempotency_key: "open-sim".into(),
            account_id: "simulated".into(),
            test_clock_id: "sim".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    grant(
        &mut accounts,
        "simulated",
        "g-sim",
        BucketKind::Monthly,
        5_000,
    )
    .await;
    metering
        .debit(DebitRequest {
            idempotency_key: "d-sim".into(),
            account_id: "simulated".into(),
            member_id: "alice".into(),
            action: "article.draft".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let on_test_clock: Vec<(&str, Attrs, f64)> = vec![
        (
            "tally.credits.granted",
            vec![
                ("tally.bucket.kind", "monthly"),
                ("tally.test_clock", "true"),
            ],
            5_000.0,
        ),
        (
            "tally.credits.committed",
            vec![
                ("tally.action", "article.draft"),
                ("tally.capability", "article"),
                ("tally.test_clock", "true"),
            ],
            2_000.0,
        ),
    ];
    for (name, attributes, value) in &on_test_clock {
        eventually(name, || {
            received.point(name, attributes) == Some(Point::Number(*value))
        })
        .await;
    }
    // The real account's figures did not move.
    assert_eq!(
        received.point(
            "tally.credits.granted",
            &[
                ("tally.bucket.kind", "monthly"),
                ("tally.test_clock", "false")
            ]
        ),
        Some(Point::Number(10_000.0))
    );

    // Every projection reports its lag.
    for projection in ["balances", "ledger", "usage"] {
        for name in ["tally.projection.lag", "tally.projection.lag.events"] {
            eventually(name, || {
                !received
                    .points_with(name, &[("tally.projection", projection)])
                    .is_empty()
            })
            .await;
        }
    }

    drop(server);

    // On PostgreSQL: its store spans, and the pool's gauges.
    let server = TestServer::start_with(Options {
        backend: Backend::Postgres,
        ..Options::default()
    })
    .await;
    let mut accounts = server.accounts().await;
    let mut metering = server.metering().await;
    open(&mut accounts, "otel-pg").await;
    grant(&mut accounts, "otel-pg", "g-1", BucketKind::Monthly, 10_000).await;
    let pg_trace = "5bf92f3577b34da6a3ce929d0e0e4736";
    metering
        .reserve(traced(
            reserve_request("otel-pg", "r-1", 1_000),
            pg_trace,
            caller_span,
        ))
        .await
        .unwrap();
    flush(&telemetry).await;
    eventually("the PostgreSQL append span", || {
        received
            .spans_of(&hex(pg_trace))
            .iter()
            .any(|s| s.name == "postgresql append")
    })
    .await;
    let pool = [("db.client.connection.pool.name", "tally")];
    eventually("the pool gauges", || {
        matches!(
            received.point("db.client.connection.max", &pool),
            Some(Point::Number(max)) if max >= 1.0
        ) && received
            .point("db.client.connection.pending_requests", &pool)
            .is_some()
            && received
                .points_with(
                    "db.client.connection.count",
                    &[("db.client.connection.state", "idle")],
                )
                .len()
                == 1
    })
    .await;
    eventually("PostgreSQL appends", || {
        !received
            .points_with(
                "tally.store.append.batch_size",
                &[("db.system.name", "postgresql")],
            )
            .is_empty()
    })
    .await;
    drop(server);

    match Arc::try_unwrap(telemetry) {
        Ok(telemetry) => telemetry.shutdown(Duration::from_secs(5)).await,
        Err(_) => panic!("the flush task still holds the telemetry"),
    }
}

/// Exports what is buffered now (the SDK blocks: off the runtime).
async fn flush(telemetry: &Arc<tally_telemetry::Telemetry>) {
    let telemetry = telemetry.clone();
    tokio::task::spawn_blocking(move || telemetry.flush())
        .await
        .unwrap();
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}
