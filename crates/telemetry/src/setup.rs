//! The pipeline: logs to stderr (text or JSON), and, when an OTLP endpoint
//! is configured, traces and metrics exported over OTLP/gRPC.
//!
//! Everything else is OpenTelemetry's standard environment, read by the
//! SDK and the exporter themselves: `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
//! `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_BSP_*`.
//!
//! A dead endpoint costs nothing on the request path: spans are batched
//! and metrics collected on the SDK's own threads, the exporter connects
//! lazily, and [`Telemetry::shutdown`] gives up after its timeout.

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::global;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{MetricExporter, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::{Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::names;

/// What to set up.
#[derive(Clone, Debug, Default)]
pub struct TelemetryConfig {
    /// The OTLP/gRPC endpoint for traces; `None` exports none.
    pub traces_endpoint: Option<String>,
    /// The OTLP/gRPC endpoint for metrics; `None` exports none.
    pub metrics_endpoint: Option<String>,
    /// How often metrics are exported; `None` leaves it to
    /// `OTEL_METRIC_EXPORT_INTERVAL` (60 s by default).
    pub metric_interval: Option<Duration>,
    /// Logs as JSON lines instead of text.
    pub json_logs: bool,
    /// Which logs to write, in tracing's `EnvFilter` syntax.
    pub log_filter: String,
}

impl TelemetryConfig {
    /// The endpoints from the standard variables:
    /// `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT`, else
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; a signal whose `OTEL_*_EXPORTER` is
    /// `none`, or everything when `OTEL_SDK_DISABLED=true`, is off.
    pub fn from_env(json_logs: bool, log_filter: impl Into<String>) -> Self {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let endpoint = |signal: &str| {
            let exporter = var(&format!("OTEL_{signal}_EXPORTER"));
            if disabled || exporter.is_some_and(|e| e.eq_ignore_ascii_case("none")) {
                return None;
            }
            var(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"))
                .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
        };
        TelemetryConfig {
            traces_endpoint: endpoint("TRACES"),
            metrics_endpoint: endpoint("METRICS"),
            metric_interval: None,
            json_logs,
            log_filter: log_filter.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("a tracing subscriber is already installed: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// The installed pipeline. Shut it down at exit so the last spans and
/// metrics leave the process.
#[derive(Debug)]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

/// Installs the global tracing subscriber and, for each configured
/// endpoint, the global OpenTelemetry provider. Call it inside the Tokio
/// runtime the server runs on: the exporter's connection lives there.
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    let resource = resource();
    let tracer_provider = match &config.traces_endpoint {
        Some(endpoint) => {
            let exporter = SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource.clone())
                    .build(),
            )
        }
        None => None,
    };
    let meter_provider = match &config.metrics_endpoint {
        Some(endpoint) => {
            let exporter = MetricExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()?;
            let mut reader = PeriodicReader::builder(exporter);
            if let Some(interval) = config.metric_interval {
                reader = reader.with_interval(interval);
            }
            Some(
                SdkMeterProvider::builder()
                    .with_reader(reader.build())
                    .with_resource(resource)
                    .build(),
            )
        }
        None => None,
    };

    let tracer = tracer_provider
        .as_ref()
        .map(|provider| provider.tracer(names::SCOPE));
    subscriber(config, tracer, std::io::stderr).try_init()?;

    global::set_text_map_propagator(TraceContextPropagator::new());
    if let Some(provider) = &tracer_provider {
        global::set_tracer_provider(provider.clone());
    }
    if let Some(provider) = &meter_provider {
        global::set_meter_provider(provider.clone());
    }
    Ok(Telemetry {
        tracer_provider,
        meter_provider,
    })
}

/// The subscriber [`init`] installs: logs to `writer`, filtered by
/// `config.log_filter` (see `log_filter` for what it adds), and spans to
/// OpenTelemetry when there is a `tracer`.
///
/// Without a tracer the OpenTelemetry layer is left out of the stack, not
/// put in as `None`: an absent optional layer declares an interest in every
/// callsite, so every INFO span would still be built (and entered at every
/// poll) for nobody.
pub fn subscriber<W>(
    config: &TelemetryConfig,
    tracer: Option<SdkTracer>,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    let logs = if config.json_logs {
        logs.json().boxed()
    } else {
        logs.boxed()
    };
    let logs = logs.with_filter(log_filter(config, tracer.is_some()));
    match tracer {
        // Spans go to OpenTelemetry whatever the log filter says: Tally's
        // own spans at INFO and above, none of its dependencies'.
        Some(tracer) => Box::new(
            tracing_subscriber::registry().with(logs).with(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(Targets::new().with_target("tally", Level::INFO)),
            ),
        ),
        None => Box::new(tracing_subscriber::registry().with(logs)),
    }
}

/// The targets of the spans Tally opens for every call: the server span,
/// the engine's command and batch spans, the store's client spans.
const CALL_SPAN_TARGETS: [&str; 3] = ["tally::rpc", "tally::engine", "tally::store"];

/// What the log layer writes: `config.log_filter`, with two additions.
///
/// The OpenTelemetry SDK logs its own doings at INFO; only its warnings
/// and errors (an unreachable collector) are worth a line, unless asked
/// for.
///
/// Without a tracer (`traced`), a call's spans would only decorate the few
/// lines logged while it is handled, yet creating them (their fields
/// formatted into strings, the span entered at every poll) cost about a
/// tenth of `tallyd`'s CPU per Debit under load (docs/benchmarks.md,
/// session 20). So the log layer leaves them out, and with nobody else
/// listening they are never created, unless the filter names a `tally::`
/// target itself. With a tracer they are created anyway, and every line of
/// a call carries them, its `trace_id` among them.
fn log_filter(config: &TelemetryConfig, traced: bool) -> EnvFilter {
    let mut directives = config.log_filter.clone();
    if !directives.contains("opentelemetry") {
        directives.push_str(",opentelemetry=warn");
    }
    if !traced && !directives.contains("tally::") {
        for target in CALL_SPAN_TARGETS {
            directives.push_str(&format!(",{target}=warn"));
        }
    }
    EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` win; otherwise the
/// service is `tallyd`, and each process gets an instance id so replicas'
/// series stay apart.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let mut builder = Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    let named = detected
        .get(&"service.name".into())
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if !named {
        builder = builder.with_service_name("tallyd");
    }
    if detected.get(&"service.instance.id".into()).is_none() {
        builder = builder.with_attribute(KeyValue::new(
            "service.instance.id",
            uuid::Uuid::now_v7().to_string(),
        ));
    }
    builder.build()
}

impl Telemetry {
    /// Whether anything is exported.
    pub fn is_exporting(&self) -> bool {
        self.tracer_provider.is_some() || self.meter_provider.is_some()
    }

    /// Exports what is buffered now. Blocks the calling thread: call it
    /// from `spawn_blocking`.
    pub fn flush(&self) {
        if let Some(provider) = &self.tracer_provider {
            let _ = provider.force_flush();
        }
        if let Some(provider) = &self.meter_provider {
            let _ = provider.force_flush();
        }
    }

    /// Flushes and stops the exporters, giving up after `timeout` so an
    /// unreachable collector never holds the process.
    pub async fn shutdown(self, timeout: Duration) {
        if !self.is_exporting() {
            return;
        }
        let stop = tokio::task::spawn_blocking(move || {
            if let Some(provider) = &self.tracer_provider {
                let _ = provider.shutdown_with_timeout(timeout);
            }
            if let Some(provider) = &self.meter_provider {
                let _ = provider.shutdown_with_timeout(timeout);
            }
        });
        if tokio::time::timeout(timeout, stop).await.is_err() {
            tracing::warn!(
                timeout_ms = timeout.as_millis() as u64,
                "telemetry did not flush in time; exiting without it"
            );
        }
    }
}
