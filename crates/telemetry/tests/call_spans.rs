//! Which of a call's spans the installed subscriber
//! (`tally_telemetry::subscriber`) makes `tracing` build, and whether the
//! lines logged inside a call carry them.
//!
//! One test in its own binary on purpose: `tracing` caches whether a
//! callsite is enabled across every subscriber alive in the process, so
//! scoped subscribers of tests running beside each other could answer for
//! one another.

use std::io::Write;
use std::sync::{Arc, Mutex};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tally_telemetry::{TelemetryConfig, subscriber};

fn config(filter: &str) -> TelemetryConfig {
    TelemetryConfig {
        log_filter: filter.to_owned(),
        ..TelemetryConfig::default()
    }
}

/// The log output, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a call looks like under the subscriber `init` would install for
/// `config` (with a tracer when `traced`).
#[derive(Debug, PartialEq)]
struct Seen {
    /// Whether each call span target's INFO span is built: `tally::rpc`,
    /// `tally::engine`, `tally::store`.
    built: [bool; 3],
    /// Whether a WARN line of the engine logged inside the server span was
    /// written, and whether it names that span.
    logged: bool,
    carries_span: bool,
}

fn seen_with(config: &TelemetryConfig, traced: bool) -> Seen {
    // A provider without an exporter: spans are built and dropped.
    let provider = SdkTracerProvider::builder().build();
    let tracer = traced.then(|| provider.tracer("call-spans-test"));
    let output = Captured::default();
    let writer = {
        let output = output.clone();
        move || output.clone()
    };
    let built = tracing::subscriber::with_default(subscriber(config, tracer, writer), || {
        let rpc = tracing::info_span!(target: "tally::rpc", "rpc", rpc.method = "Debit");
        let built = [
            !rpc.is_disabled(),
            !tracing::info_span!(target: "tally::engine", "command").is_disabled(),
            !tracing::info_span!(target: "tally::store", "store").is_disabled(),
        ];
        rpc.in_scope(|| tracing::warn!(target: "tally_engine::actor", "batch failed"));
        built
    });
    let output = String::from_utf8(output.0.lock().unwrap().clone()).unwrap();
    Seen {
        built,
        logged: output.contains("batch failed"),
        // The span's field: in the line's span context only (ANSI colours,
        // on a terminal, split the context's text but not the value).
        carries_span: output.contains("Debit"),
    }
}

#[test]
fn call_spans_are_built_only_for_traces_or_when_the_filter_names_them() {
    let none = Seen {
        built: [false; 3],
        logged: true,
        carries_span: false,
    };
    let all = Seen {
        built: [true; 3],
        logged: true,
        carries_span: true,
    };

    // No exporter: no call spans, whatever the level; lines still logged,
    // without them.
    assert_eq!(seen_with(&config("info"), false), none);
    assert_eq!(seen_with(&config("debug"), false), none);

    // A filter that names a tally:: target decides for itself.
    assert_eq!(seen_with(&config("info,tally::rpc=info"), false), all);
    assert_eq!(
        seen_with(&config("info,tally::store=warn"), false),
        Seen {
            built: [true, true, false],
            ..all
        }
    );

    // Exported traces: spans are built, and every line of a call carries
    // them.
    assert_eq!(seen_with(&config("info"), true), all);
    // Built for OpenTelemetry even when the log filter wants no INFO.
    assert_eq!(seen_with(&config("warn"), true).built, [true; 3]);
}
