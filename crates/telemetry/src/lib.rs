//! How Tally is observed. [`names`] declares every metric and attribute
//! once; [`Metrics`] holds the instruments the engine and the server
//! record into; [`GrpcTelemetryLayer`] traces and times each gRPC call;
//! [`init`] installs logging and the OTLP export of traces and metrics.

mod grpc;
mod metrics;
pub mod names;
mod setup;

pub use grpc::{GrpcTelemetry, GrpcTelemetryLayer, ObservedBody};
pub use metrics::{AccountClock, AppendOutcome, Metrics, ReleaseReason, observe_f64, observe_u64};
pub use setup::{Telemetry, TelemetryConfig, TelemetryError, init, subscriber};
