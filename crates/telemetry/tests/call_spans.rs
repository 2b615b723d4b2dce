//! Which of a call's spans the log layer makes `tracing` create
//! (`tally_telemetry::log_filter`).
//!
//! One test in its own binary on purpose: `tracing` caches whether a
//! callsite is enabled across every subscriber alive in the process, so
//! scoped subscribers of tests running beside each other could answer for
//! one another.

use tally_telemetry::{CALL_SPAN_TARGETS, TelemetryConfig, log_filter};
use tracing::Level;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Layer, Registry};

fn config(filter: &str, traces: Option<&str>) -> TelemetryConfig {
    TelemetryConfig {
        traces_endpoint: traces.map(str::to_owned),
        log_filter: filter.to_owned(),
        ..TelemetryConfig::default()
    }
}

/// Under a log layer filtered for `config` and nothing else: whether each
/// call span target's INFO span is created, and whether an INFO line of
/// the engine is logged.
fn seen_with(config: &TelemetryConfig) -> ([bool; 3], bool) {
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::sink)
        .with_filter(log_filter(config));
    tracing::subscriber::with_default(Registry::default().with(logs), || {
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
fn call_spans_are_created_only_for_traces_or_when_the_filter_names_them() {
    // The targets the spans above use are the ones left out.
    assert_eq!(
        CALL_SPAN_TARGETS,
        ["tally::rpc", "tally::engine", "tally::store"]
    );

    // No exporter: no call spans, whatever the level; lines still logged.
    assert_eq!(seen_with(&config("info", None)), ([false; 3], true));
    assert_eq!(seen_with(&config("debug", None)), ([false; 3], true));

    // A filter that names a tally:: target decides for itself.
    assert_eq!(
        seen_with(&config("info,tally::rpc=info", None)),
        ([true, true, true], true)
    );
    assert_eq!(
        seen_with(&config("info,tally::store=warn", None)),
        ([true, true, false], true)
    );

    // Exported traces: every line of a call carries its spans.
    assert_eq!(
        seen_with(&config("info", Some("http://127.0.0.1:4317"))),
        ([true; 3], true)
    );

    // A warning under a call span target is a line, not a span: it passes.
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::sink)
        .with_filter(log_filter(&config("info", None)));
    tracing::subscriber::with_default(Registry::default().with(logs), || {
        assert!(tracing::event_enabled!(target: "tally::engine", Level::WARN));
    });
}
