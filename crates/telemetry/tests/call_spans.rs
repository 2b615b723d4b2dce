//! Which of a call's spans the installed subscriber
//! (`tally_telemetry::subscriber`) makes `tracing` build.
//!
//! One test in its own binary on purpose: `tracing` caches whether a
//! callsite is enabled across every subscriber alive in the process, so
//! scoped subscribers of tests running beside each other could answer for
//! one another.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tally_telemetry::{CALL_SPAN_TARGETS, TelemetryConfig, subscriber};
use tracing::Level;

fn config(filter: &str) -> TelemetryConfig {
    TelemetryConfig {
        log_filter: filter.to_owned(),
        ..TelemetryConfig::default()
    }
}

/// Under the subscriber `init` would install for `config` (with a tracer
/// when `traced`): whether each call span target's INFO span is built,
/// and whether an INFO line of the engine is enabled (for the log layer or,
/// when traced, as a span event).
fn seen_with(config: &TelemetryConfig, traced: bool) -> ([bool; 3], bool) {
    // A provider without an exporter: spans are built and dropped.
    let provider = SdkTracerProvider::builder().build();
    let tracer = traced.then(|| provider.tracer("call-spans-test"));
    tracing::subscriber::with_default(subscriber(config, tracer, std::io::sink), || {
        let spans = [
            !tracing::info_span!(target: "tally::rpc", "rpc").is_disabled(),
            !tracing::info_span!(target: "tally::engine", "command").is_disabled(),
            !tracing::info_span!(target: "tally::store", "store").is_disabled(),
        ];
        let line = tracing::event_enabled!(target: "tally_engine::actor", Level::INFO);
        (spans, line)
    })
}

#[test]
fn call_spans_are_built_only_for_traces_or_when_the_filter_names_them() {
    // The targets the spans above use are the ones left out.
    assert_eq!(
        CALL_SPAN_TARGETS,
        ["tally::rpc", "tally::engine", "tally::store"]
    );

    // No exporter: no call spans, whatever the level; lines still logged.
    assert_eq!(seen_with(&config("info"), false), ([false; 3], true));
    assert_eq!(seen_with(&config("debug"), false), ([false; 3], true));

    // A filter that names a tally:: target decides for itself.
    assert_eq!(
        seen_with(&config("info,tally::rpc=info"), false),
        ([true, true, true], true)
    );
    assert_eq!(
        seen_with(&config("info,tally::store=warn"), false),
        ([true, true, false], true)
    );

    // Exported traces: spans are built for OpenTelemetry, and every line of
    // a call carries them.
    assert_eq!(seen_with(&config("info"), true), ([true; 3], true));
    // Built for OpenTelemetry even when the log filter wants none.
    assert_eq!(seen_with(&config("warn"), true).0, [true; 3]);

    // A warning under a call span target is a line, not a span: it passes.
    tracing::subscriber::with_default(subscriber(&config("info"), None, std::io::sink), || {
        assert!(tracing::event_enabled!(target: "tally::engine", Level::WARN));
    });
}
